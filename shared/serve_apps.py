"""Serve's application details, read as dedicated endpoints: pure parsing, no Ray.

What `get_serve_details()` reports of an application running a `Model` deployment: its status
and messages, route prefix, replicas, resources, and the args it was deployed with.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from typing import Any

from shared.registry import is_valid_model_id

MODEL_DEPLOYMENT = "Model"
_MESSAGE_CHARS = 600  # long enough for Serve's resources required and available
# How Serve's controller says a replica cannot be placed (deployment_state.py): it keeps
# trying forever, which the deployments API reports as a failure instead.
UNSCHEDULABLE = "to be scheduled"
# Serve's slow-startup message names both: "Resources required for each replica: {...}, total
# resources available: {...}".
_RESOURCES = re.compile(
    r"required for each replica: (\{[^}]*\}), total resources available: (\{[^}]*\})"
)


def unschedulable(message: str) -> bool:
    """Serve's report of replicas that no node can take (the deployment has failed)."""
    return UNSCHEDULABLE in message and cannot_fit(message)


def cannot_fit(message: str) -> bool:
    """Whether Serve's "taken more than 10s to be scheduled" is for replicas no node can take
    (more of a resource than the cluster has free), rather than a slow start on a busy machine.
    A message it cannot read counts as cannot-fit, as before it was parsed."""
    found = _RESOURCES.search(message)
    if found is None:
        return True
    try:
        # JSON in Ray 2.60's message, a Python dict's repr in others: both are literals.
        required, available = (ast.literal_eval(part) for part in found.groups())
        return any(float(need) > float(available.get(name, 0)) for name, need in required.items())
    except (ValueError, SyntaxError, TypeError, AttributeError):
        return True


def _text(value: Any) -> str:
    # Serve's statuses are str enums, whose str() is "ReplicaState.RUNNING" on Python 3.11.
    return str(getattr(value, "value", value) or "")


def _summary(message: str) -> str:
    """The first line of a Serve message: a failed deploy's message goes on with a traceback,
    which stays in Serve's logs (SECURITY.md: no traceback in a response)."""
    line = next((part.strip() for part in message.splitlines() if part.strip()), "")
    return line[:_MESSAGE_CHARS]


@dataclass(frozen=True)
class Endpoint:
    """A dedicated endpoint as Serve reports it."""

    name: str  # the Serve application's name: the endpoint's slug
    model_id: str | None  # registry model ID; None while it cannot be known (see _model_ids)
    status: str  # Serve's application status: RUNNING, DEPLOYING, DEPLOY_FAILED, ...
    message: str  # Serve's application message, first line
    deployment_message: str  # the Model deployment's message, first line
    route_prefix: str | None  # None: not exposed over HTTP
    deployed_at_s: float  # when the app was last deployed (Unix seconds)
    running_replicas: int
    target_replicas: int
    num_cpus: float  # per model replica
    memory_bytes: float  # reserved per model replica; 0: none reserved (Ray schedules on CPUs)
    min_replicas: int  # the autoscaling bounds; both num_replicas without autoscaling
    max_replicas: int

    def platform_status(self) -> tuple[str, str]:
        """The official SDK's status and status message ("" for none)."""
        if self.status == "RUNNING":
            return "ready", ""
        message = self.deployment_message
        if self.status == "DEPLOYING" and unschedulable(message):
            return "failed", message
        if self.status == "DEPLOYING":
            waiting = (
                f"waiting for replicas to start ({self.running_replicas} of "
                f"{self.target_replicas} running)"
            )
            return "deploying", self.deployment_message or waiting
        if self.status in ("DEPLOY_FAILED", "UNHEALTHY"):
            return "failed", self.message or self.deployment_message or self.status
        if self.status == "DELETING":
            return "stopping", self.message
        return "deploying", self.status  # NOT_STARTED, or a status newer than this code


def parse_endpoint(name: str, app: dict[str, Any]) -> Endpoint:
    model = app["deployments"][MODEL_DEPLOYMENT]
    config = model.get("deployment_config") or {}
    actor = config.get("ray_actor_options") or {}
    # With autoscaling, Serve reports its whole config (bounds included) and no num_replicas.
    autoscaling = config.get("autoscaling_config") or {}
    fixed = config.get("num_replicas")
    fixed = fixed if isinstance(fixed, int) else model.get("target_num_replicas", 0)
    args = (app.get("deployed_app_config") or {}).get("args") or {}
    model_id = args.get("model")
    return Endpoint(
        name=name,
        model_id=model_id if isinstance(model_id, str) and is_valid_model_id(model_id) else None,
        status=_text(app.get("status")),
        message=_summary(app.get("message") or ""),
        deployment_message=_summary(model.get("message") or ""),
        route_prefix=app.get("route_prefix"),
        deployed_at_s=float(app.get("last_deployed_time_s") or 0),
        running_replicas=sum(
            _text(r.get("state")) == "RUNNING" for r in model.get("replicas") or ()
        ),
        target_replicas=int(model.get("target_num_replicas") or 0),
        num_cpus=float(actor.get("num_cpus") or 0),
        memory_bytes=float(actor.get("memory") or 0),
        min_replicas=int(autoscaling.get("min_replicas", fixed)),
        max_replicas=int(autoscaling.get("max_replicas", fixed)),
    )
