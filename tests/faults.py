"""Test-only deployments for fault injection: nothing here is imported by the service.

`build_stalling_endpoint` is a dedicated endpoint built exactly like the real one (the same
Ingress, argument model and deployment options), whose model is the real `ModelServer` with one
difference: a request with `conf=HANG_CONF` never returns. Its worker thread stays wedged, as
inference stuck in native code would: cancelling the request does not free it, and the replica's
health check fails once a call has been stuck for `stuck_after_s`, so Serve replaces the replica.
A request with `conf=FAIL_CONF` raises inside the model, as a bug would.

Ray workers import this module by name, so the test config gives the app
`runtime_env: {env_vars: {PYTHONPATH: <project root>}}` (see `stalling_app`).
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

from pydantic import Field
from ray import serve
from ray.serve import Application

from deployments.app import EndpointArgs, _ingress_config, _model_options
from deployments.ingress import Ingress
from deployments.model import ModelServer
from shared.registry import PROJECT_ROOT

HANG_CONF = 0.0123  # a confidence no test sends by chance: this request never returns
FAIL_CONF = 0.0124  # ... and this one fails inside the model
FAILURE = "injected failure reading /etc/yolo-endpoints/secret"  # must never reach a client
DEPLOYMENT = "StallingModel"
WEDGED_FOR_S = 600  # bounded, so a forgotten replica's thread ends eventually


class _StallingModelServer(ModelServer.func_or_class):  # type: ignore[name-defined,misc]
    async def __init__(self, *, stuck_after_s: float, **kwargs: Any):
        await super().__init__(**kwargs)
        self.stuck_after_s = stuck_after_s
        self.stuck_since: float | None = None
        self._release = threading.Event()  # never set: the wedged thread only times out

    async def predict(
        self, model_id: str, image: Any, conf: float, iou: float, imgsz: int
    ) -> dict[str, Any]:
        if conf == HANG_CONF:
            self.stuck_since = self.stuck_since or time.monotonic()
            await asyncio.to_thread(self._release.wait, WEDGED_FOR_S)
        if conf == FAIL_CONF:
            raise RuntimeError(FAILURE)
        return await super().predict(model_id, image, conf, iou, imgsz)

    def check_health(self) -> None:
        if self.stuck_since is not None:
            stuck_s = time.monotonic() - self.stuck_since
            if stuck_s > self.stuck_after_s:
                raise RuntimeError(f"a model call has been stuck for {stuck_s:.0f} s")


StallingModelServer = serve.deployment(_StallingModelServer, name=DEPLOYMENT)


class StallingArgs(EndpointArgs):
    stuck_after_s: float = Field(2, gt=0)


def build_stalling_endpoint(raw_args: dict[str, Any]) -> Application:
    args = StallingArgs.model_validate(raw_args)
    model = StallingModelServer.options(**_model_options(args, DEPLOYMENT)).bind(
        registry=args.registry,
        model_id=args.model,
        backend=args.backend,
        stuck_after_s=args.stuck_after_s,
    )
    return Ingress.bind(
        model, _ingress_config(args, mode="dedicated", endpoint_name=args.name, model_id=args.model)
    )


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
