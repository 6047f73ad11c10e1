"""A deployment's lifecycle: what the API shows of it, and what Serve must do next. No Ray.

Two kinds of deployments are shown alike: the endpoints of serve_config.yaml (Serve's
applications, read-only here) and the API-created ones (a `DeploymentRecord` each, realised as
a Serve application of the same name). For the latter, `status` is the record read against its
application, and `next_step` is the one thing the control plane does about the difference.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from shared.deployment_store import DeploymentRecord
from shared.serve_apps import Endpoint, unschedulable

DeploymentStatus = Literal["creating", "deploying", "ready", "stopping", "stopped", "failed"]
Step = Literal["deploy", "delete", "fail", "forget", "wait"]
GIB = 2**30


@dataclass(frozen=True)
class DeploymentView:
    """One deployment as every route of the API shows it."""

    slug: str
    name: str
    owner: str | None  # None: an endpoint of serve_config.yaml, every owner's to call
    model_id: str | None  # None: not known yet (an endpoint whose model has not answered)
    status: DeploymentStatus
    status_message: str  # "" when there is nothing to say (ready)
    route_prefix: str  # where Serve routes it once it runs
    cpu: float
    memory_gi: float
    min_instances: int
    max_instances: int
    created_at_s: float
    updated_at_s: float
    deployed_at_s: float | None  # the last deploy, when there is one
    project: str | None = None
    region: str | None = None  # as requested at creation; None: the cluster's own
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def managed(self) -> bool:
        """Whether the API manages it (an endpoint of serve_config.yaml is read-only here)."""
        return self.owner is not None

    def visible_to(self, owner: str) -> bool:
        return self.owner is None or self.owner == owner


def route_prefix(slug: str) -> str:
    return f"/endpoints/{slug}"


def config_view(endpoint: Endpoint) -> DeploymentView:
    status, message = endpoint.platform_status()
    deployed = endpoint.deployed_at_s
    return DeploymentView(
        slug=endpoint.name,
        name=endpoint.name,
        owner=None,
        model_id=endpoint.model_id,
        status=status,  # type: ignore[arg-type]  # platform_status answers these literals
        status_message=message,
        route_prefix=endpoint.route_prefix or route_prefix(endpoint.name),
        cpu=endpoint.num_cpus,
        memory_gi=round(endpoint.memory_bytes / GIB, 3),
        min_instances=endpoint.min_replicas,
        max_instances=endpoint.max_replicas,
        # Serve keeps one time per application, its last deploy: no creation time of its own.
        created_at_s=deployed,
        updated_at_s=deployed,
        deployed_at_s=deployed,
    )


def status(record: DeploymentRecord, app: Endpoint | None) -> tuple[DeploymentStatus, str]:
    """The SDK's status of a record whose Serve application is `app` (None: there is none)."""
    if record.desired == "deleted":
        return "stopping", "Deleting: its replicas are shutting down"
    if record.desired == "stopped":
        if app is not None:
            return "stopping", "Stopping: its replicas are shutting down"
        return "stopped", "Stopped: no replicas run; start it to serve again"
    if record.failure is not None:
        return "failed", record.failure
    if app is None or app.status == "DELETING":
        if record.deployed_generation is None:
            return "creating", "Creating its Serve application"
        return "deploying", "Deploying again: waiting for its Serve application"
    if record.deployed_generation != record.generation:
        return "deploying", "Rolling out the change"
    platform, message = app.platform_status()
    return platform, message  # type: ignore[return-value]  # the same literals


def next_step(record: DeploymentRecord, app: Endpoint | None, listed: bool | None = None) -> Step:
    """What the control plane does next so that Serve matches the record. `listed`: Serve has
    an application of this name at all (default: `app` is not None). Serve lists a new
    application a moment before its deployments, and so before it reads as an `Endpoint`: such
    an application must still be deleted, not forgotten, and not deployed a second time."""
    exists = app is not None if listed is None else listed
    if app is not None and app.status == "DELETING":
        return "wait"  # Serve takes no new deploy of a name it is deleting
    if record.desired == "deleted":
        return "delete" if exists else "forget"
    if record.desired == "stopped" or record.failure is not None:
        return "delete" if exists else "wait"
    if record.deployed_generation != record.generation or not exists:
        return "deploy"
    if app is not None and app.status == "DEPLOYING" and unschedulable(app.deployment_message):
        return "fail"
    return "wait"


def record_view(
    record: DeploymentRecord, app: Endpoint | None, bounds: tuple[int, int]
) -> DeploymentView:
    """`record` as shown; `bounds`: its replicas' (min, max) while Serve reports none."""
    state, message = status(record, app)
    low, high = (app.min_replicas, app.max_replicas) if app is not None else bounds
    return DeploymentView(
        slug=record.slug,
        name=record.name,
        owner=record.owner,
        model_id=record.model,
        status=state,
        status_message=message,
        route_prefix=route_prefix(record.slug),
        cpu=record.cpu,
        memory_gi=record.memory_gi,
        min_instances=low,
        max_instances=high,
        created_at_s=record.created_at,
        updated_at_s=record.updated_at,
        deployed_at_s=app.deployed_at_s if app is not None else None,
        project=record.project,
        region=record.region,
        metadata=record.metadata,
    )
