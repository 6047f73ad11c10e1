"""Which dedicated endpoints are running, for the SDK's `/api/deployments/...` route.

Endpoints are found by asking Serve which applications run a `Model` deployment, so adding
an endpoint to serve_config.yaml is all it takes; answers are cached for a few seconds.
"""

from __future__ import annotations

import asyncio
import time

from ray import serve
from ray.serve.handle import DeploymentHandle

from deployments import model_calls
from shared.registry import is_valid_model_id

CACHE_S = 5.0
MODEL_DEPLOYMENT = "Model"


class EndpointDirectory:
    def __init__(self) -> None:
        self._running: set[str] = set()
        self._checked = 0.0
        self._targets: dict[str, tuple[DeploymentHandle, str]] = {}

    async def _refresh(self) -> None:
        if time.monotonic() - self._checked < CACHE_S:
            return
        status = await asyncio.to_thread(serve.status)
        self._running = {
            name
            for name, app in status.applications.items()
            if app.status == "RUNNING" and MODEL_DEPLOYMENT in app.deployments
        }
        self._checked = time.monotonic()

    async def lookup(self, name: str) -> tuple[DeploymentHandle, str] | None:
        """(model handle, registry model ID) of endpoint `name`, or None if there is none."""
        if not is_valid_model_id(name):
            return None
        await self._refresh()
        if name not in self._running:
            return None
        if name not in self._targets:
            handle = serve.get_deployment_handle(MODEL_DEPLOYMENT, app_name=name)
            info = await model_calls.describe(handle, None)
            self._targets[name] = (handle, info["model_id"])
        return self._targets[name]
