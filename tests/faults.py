"""Test-only deployments for fault injection: nothing here is imported by the service.

`build_stalling_endpoint` is a dedicated endpoint built exactly like the real one (the same
Ingress, argument model and deployment options), whose model is the real `ModelServer` with one
difference: a request with `conf=HANG_CONF` never returns. Its worker thread stays wedged, as
inference stuck in native code would: cancelling the request does not free it, and the
production health check fails once a call has been stuck past the app's `model_timeout_s`, so
Serve replaces the replica.
A request with `conf=FAIL_CONF` raises inside the model, as a bug would.

Ray workers import this module by name, so the test config gives the app
`runtime_env: {env_vars: {PYTHONPATH: <project root>}}` (see `stalling_app`).
"""

from __future__ import annotations

import threading
from typing import Any

from ray import serve
from ray.serve import Application

from deployments.app import model_options
from deployments.config import EndpointArgs
from deployments.ingress import Ingress
from deployments.model import ModelServer
from shared.registry import PROJECT_ROOT

HANG_CONF = 0.0123  # a confidence no test sends by chance: this request never returns
FAIL_CONF = 0.0124  # ... and this one fails inside the model
FAILURE = "injected failure reading /etc/yolo-endpoints/secret"  # must never reach a client
DEPLOYMENT = "StallingModel"
WEDGED_FOR_S = 600  # bounded, so a forgotten replica's thread ends eventually


class _StallingModelServer(ModelServer.func_or_class):  # type: ignore[name-defined,misc]
    """The real ModelServer, whose inference wedges or fails on two magic confidences. The
    production health check (`ModelServer.check_health`) is what must notice the wedge."""

    async def __init__(self, args: EndpointArgs):
        await super().__init__(args)
        self._release = threading.Event()  # never set: the wedged thread only times out

    def _infer(self, loaded: Any, images: list, conf: float, iou: float, imgsz: int) -> list:
        if conf == HANG_CONF:
            self._release.wait(WEDGED_FOR_S)
        if conf == FAIL_CONF:
            raise RuntimeError(FAILURE)
        return super()._infer(loaded, images, conf, iou, imgsz)


StallingModelServer = serve.deployment(_StallingModelServer, name=DEPLOYMENT)


def build_stalling_endpoint(raw_args: dict[str, Any]) -> Application:
    args = EndpointArgs.model_validate(raw_args)
    model = StallingModelServer.options(**model_options(args, DEPLOYMENT)).bind(args)
    return Ingress.bind(model, args)


def stalling_app(
    name: str, runtime_env: dict[str, Any], keys_file: str, **args: Any
) -> dict[str, Any]:
    """The serve_config application block for a stalling endpoint at `/endpoints/{name}`.

    Health checks every second so that a stuck replica is replaced within seconds; one request
    at a time per replica, so that a small `max_queued_requests` is easy to exceed.
    """
    env = {**runtime_env.get("env_vars", {}), "PYTHONPATH": str(PROJECT_ROOT)}
    return {
        "name": name,
        "route_prefix": f"/endpoints/{name}",
        "import_path": "tests.faults:build_stalling_endpoint",
        "runtime_env": {**runtime_env, "env_vars": env},
        "args": {
            "name": name,
            "model": "yolo26n",
            "keys_file": keys_file,
            "num_cpus": 1,
            **args,
        },
        "deployments": [
            {
                "name": DEPLOYMENT,
                "max_ongoing_requests": 1,
                "health_check_period_s": 1,
                "health_check_timeout_s": 5,
                "user_config": {"max_batch_size": 1, "batch_wait_timeout_s": 0},
            }
        ],
    }
