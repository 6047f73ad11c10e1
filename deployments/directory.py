"""Which dedicated endpoints exist, for the SDK's `/api/deployments/...` routes.

Endpoints are found by asking Serve which applications run a `Model` deployment, so adding
an endpoint to serve_config.yaml is all it takes; answers are cached for a few seconds. One
read of Serve's application details (what `serve.status()` reads too, before it keeps only the
statuses) gives each endpoint's status, route prefix, replicas and resources, and the args it
was deployed with: its registry model ID.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from ray import serve
from ray.serve.context import _get_global_client
from ray.serve.handle import DeploymentHandle

from deployments import model_calls
from shared.registry import is_valid_model_id

logger = logging.getLogger("ray.serve")

CACHE_S = 5.0
MODEL_DEPLOYMENT = "Model"
DESCRIBE_TIMEOUT_S = 10.0  # asking a model its ID, where Serve kept no config to read it from
_MESSAGE_CHARS = 200


def serve_details() -> dict[str, Any]:
    """Serve's details of every application ({} before Serve has started): one controller call,
    the one `serve.status()` makes (it then drops all but the statuses)."""
    client = _get_global_client(raise_if_no_controller_running=False)
    return client.get_serve_details() if client is not None else {}


def model_handle(name: str) -> DeploymentHandle:
    return serve.get_deployment_handle(MODEL_DEPLOYMENT, app_name=name)


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


def _endpoint(name: str, app: dict[str, Any]) -> Endpoint:
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


class EndpointDirectory:
    def __init__(
        self,
        details: Callable[[], dict[str, Any]] = serve_details,
        handle: Callable[[str], DeploymentHandle] = model_handle,
    ) -> None:
        # Both replaceable: the in-process tests read fake details and reach fake handles.
        self._details = details
        self._handle = handle
        self._endpoints: dict[str, Endpoint] = {}
        self._checked = -CACHE_S
        self._lock = asyncio.Lock()
        self._handles: dict[str, DeploymentHandle] = {}
        self._described: dict[tuple[str, float], str] = {}  # (name, deployed at) -> model ID

    async def _refresh(self) -> None:
        async with self._lock:  # one read of Serve's details per interval, however many ask
            if time.monotonic() - self._checked < CACHE_S:
                return
            details = await asyncio.to_thread(self._details)
            found = [
                _endpoint(name, app)
                for name, app in (details.get("applications") or {}).items()
                if MODEL_DEPLOYMENT in (app.get("deployments") or {})
            ]
            self._endpoints = {e.name: e for e in await self._model_ids(found)}
            self._checked = time.monotonic()

    async def _model_ids(self, found: list[Endpoint]) -> list[Endpoint]:
        """Endpoints whose model ID their args do not give (Serve keeps no config for an app
        deployed from code, nor while it is deleted) ask their model, once per deploy; one
        that is not running stays without one."""

        async def ask(endpoint: Endpoint) -> Endpoint:
            if endpoint.model_id is not None or endpoint.status != "RUNNING":
                return endpoint
            key = (endpoint.name, endpoint.deployed_at_s)
            if key not in self._described:
                try:
                    info = await model_calls.describe(
                        self.handle(endpoint.name), None, DESCRIBE_TIMEOUT_S
                    )
                except Exception as exc:  # the listing goes on without this model's ID
                    logger.warning("endpoint %s: no model ID (%s)", endpoint.name, exc)
                    return endpoint
                self._described[key] = info["model_id"]
            return replace(endpoint, model_id=self._described[key])

        return list(await asyncio.gather(*(ask(e) for e in found)))

    def handle(self, name: str) -> DeploymentHandle:
        """The handle of endpoint `name`'s model deployment."""
        if name not in self._handles:
            self._handles[name] = self._handle(name)
        return self._handles[name]

    async def endpoints(self) -> list[Endpoint]:
        """Every dedicated endpoint Serve has, whatever its status, by name."""
        await self._refresh()
        return sorted(self._endpoints.values(), key=lambda e: e.name)

    async def find(self, name: str) -> Endpoint | None:
        """Endpoint `name`, whatever its status, or None if there is none."""
        if not is_valid_model_id(name):
            return None
        await self._refresh()
        return self._endpoints.get(name)

    async def lookup(self, name: str) -> tuple[DeploymentHandle, str] | None:
        """(model handle, registry model ID) of running endpoint `name`, or None if there is
        no such endpoint running."""
        endpoint = await self.find(name)
        if endpoint is None or endpoint.status != "RUNNING" or endpoint.model_id is None:
            return None
        return self.handle(name), endpoint.model_id
