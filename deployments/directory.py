"""Where dedicated endpoints are found in Serve: its application details, and their models.

Endpoints are the applications that run a `Model` deployment (shared/serve_apps.py reads them),
so adding one to serve_config.yaml is all it takes. One read of Serve's application details
(what `serve.status()` reads too, before it keeps only the statuses) gives each endpoint's
status, route prefix, replicas and resources, and the args it was deployed with.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ray import serve
from ray.serve.context import _get_global_client
from ray.serve.handle import DeploymentHandle

from shared.serve_apps import MODEL_DEPLOYMENT


def serve_details() -> dict[str, Any]:
    """Serve's details of every application ({} before Serve has started): one controller call,
    the one `serve.status()` makes (it then drops all but the statuses)."""
    client = _get_global_client(raise_if_no_controller_running=False)
    return client.get_serve_details() if client is not None else {}


def model_handle(name: str) -> DeploymentHandle:
    return serve.get_deployment_handle(MODEL_DEPLOYMENT, app_name=name)


class CachedHandles:
    """One handle per endpoint name, made once: a handle sets up its router on first use."""

    def __init__(self, make: Callable[[str], DeploymentHandle]):
        self._make = make
        self._handles: dict[str, DeploymentHandle] = {}

    def __call__(self, name: str) -> DeploymentHandle:
        if name not in self._handles:
            self._handles[name] = self._make(name)
        return self._handles[name]
