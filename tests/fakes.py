"""Stand-ins for Serve deployment handles, for the in-process tests of the ingress and its gate.

They answer what the real deployments answer (the limiter with the real SlidingWindow), through
the handle's call shape: `handle.options(...).method.remote(*args)`, awaited.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import numpy as np

from shared.ratelimit import RateLimit, SlidingWindow


class _Call:
    """What `.remote()` returns: awaitable once, like a DeploymentResponse."""

    def __init__(self, answer: Callable[[], Any]):
        self.answer = answer

    def __await__(self):
        yield from asyncio.sleep(0).__await__()
        return self.answer()


class _Method:
    def __init__(self, fn: Callable[..., Any]):
        self.fn = fn

    def remote(self, *args: Any) -> _Call:
        return _Call(lambda: self.fn(*args))


class FakeLimiter:
    """The Limiter deployment's handle, counting with the real sliding window."""

    def __init__(self, limit: RateLimit, clock: Callable[[], float] = lambda: 0.0, shards: int = 1):
        self.window = SlidingWindow(limit)
        self.calls = 0
        self.keys: set[str] = set()  # every key id it was asked about
        self.acquire = _Method(self._acquire)
        self.top_up = _Method(self._top_up)
        self.shards = _Method(lambda: shards)
        self.clock = clock

    def _acquire(self, key_id: str, limit: int | None):
        self.calls += 1
        self.keys.add(key_id)
        return self.window.acquire(key_id, self.clock(), limit)

    def _top_up(self, key_id: str, limit: int | None, held: int, cost: int):
        self.calls += 1
        self.keys.add(key_id)
        return self.window.top_up(key_id, self.clock(), limit, held, cost)


class FakeModel:
    """A model deployment's handle that finds one person at (10, 20, 110, 220) of any image,
    in the coordinates of the array it was sent, or raises `fails` when set."""

    def __init__(self, fails: Exception | None = None):
        self.fails = fails
        self.seen: list[tuple[str, tuple[int, ...]]] = []  # (model ID, array shape) per call
        self.predict = _Method(self._predict)
        self.describe = _Method(self._describe)

    def options(self, **_: Any) -> FakeModel:
        return self

    def _predict(self, model_id: str, image: np.ndarray, conf: float, iou: float, imgsz: int):
        if self.fails is not None:
            raise self.fails
        self.seen.append((model_id, image.shape))
        return {
            "task": "detect",
            "names": ["person", "bicycle"],
            "boxes": np.array([[10.0, 20.0, 110.0, 220.0]], np.float32),
            "confidence": np.array([0.875], np.float32),
            "classes": np.array([0]),
            "speed": {"preprocess": 1.0, "inference": 2.0, "postprocess": 0.5},
            "model": f"{model_id}.pt",
            "versions": {"ultralytics": "test"},
            "timing": {"queue": 0.1, "replica": 3.6},
        }

    def _describe(self, model_id: str | None) -> dict[str, Any]:
        return {
            "model_id": model_id or "yolo26n",
            "model": "yolo26n.pt",
            "task": "detect",
            "names": ["person", "bicycle"],
            "imgsz": 640,
            "device": "cpu",
            "versions": {},
        }


def serve_app(
    name: str,
    model: str | None,
    status: str = "RUNNING",
    *,
    message: str = "",
    deployment_message: str = "",
    running: int = 1,
    target: int = 1,
    num_cpus: float = 1,
    autoscaling: tuple[int, int] | None = (1, 4),
    deployed_at: float = 1767225600.0,
) -> dict[str, Any]:
    """One dedicated endpoint's entry in Serve's application details, built with Ray's own
    schema models and dumped as the controller dumps them (`exclude_unset`, enums kept), so
    the directory reads here what it reads from a live cluster. `model` None: an app Serve
    kept no config for."""
    from ray.serve.config import AutoscalingConfig
    from ray.serve.schema import (
        APIType,
        ApplicationDetails,
        DeploymentDetails,
        DeploymentSchema,
        ReplicaDetails,
        ServeApplicationSchema,
        ServeInstanceDetails,
    )

    config = DeploymentSchema(name="Model", ray_actor_options={"num_cpus": num_cpus})
    if autoscaling is None:
        config.num_replicas = target
    else:
        low, high = autoscaling
        config.autoscaling_config = AutoscalingConfig(
            min_replicas=low, max_replicas=high
        ).model_dump()
    replicas = [
        ReplicaDetails(replica_id=f"{name}-{i}", state="RUNNING", start_time_s=deployed_at)
        for i in range(running)
    ]
    model_deployment = DeploymentDetails(
        name="Model",
        status="HEALTHY" if status == "RUNNING" else "UPDATING",
        status_trigger="CONFIG_UPDATE_COMPLETED",
        message=deployment_message,
        deployment_config=config,
        target_num_replicas=target,
        required_resources={"CPU": num_cpus},
        replicas=replicas,
    )
    deployed_config = None
    if model is not None:
        deployed_config = ServeApplicationSchema(
            name=name,
            route_prefix=f"/endpoints/{name}",
            import_path="deployments.app:build_endpoint",
            args={"name": name, "model": model, "num_cpus": num_cpus},
        )
    app = ApplicationDetails(
        name=name,
        route_prefix=f"/endpoints/{name}",
        docs_path=None,
        status=status,
        message=message,
        last_deployed_time_s=deployed_at,
        deployed_app_config=deployed_config,
        source=APIType.DECLARATIVE,
        deployments={"Model": model_deployment},
        external_scaler_enabled=False,
    )
    details = ServeInstanceDetails(proxies={}, applications={name: app})
    dumped = details._get_user_facing_json_serializable_dict(exclude_unset=True)
    return dumped["applications"][name]


class LocalHandle:
    """A deployment's handle over an instance in this process: `handle.method.remote(*args)`
    calls the method (awaited when it is a coroutine function)."""

    def __init__(self, target: Any):
        self.target = target

    def options(self, **_: Any) -> LocalHandle:
        return self

    def __getattr__(self, name: str) -> _Method:
        method = getattr(self.target, name)
        if asyncio.iscoroutinefunction(method):
            return _AsyncMethod(method)  # type: ignore[return-value]
        return _Method(method)


class _AsyncMethod:
    def __init__(self, fn: Callable[..., Any]):
        self.fn = fn

    def remote(self, *args: Any) -> Any:
        return self.fn(*args)


class FakeServeApps:
    """Serve as the control plane sees it: application details (as `serve_app` builds them)
    that its deploys and deletes change. A deploy appears as DEPLOYING; `run(name)` makes it
    RUNNING, as Serve would once its replicas start."""

    def __init__(self, applications: dict[str, dict[str, Any]] | None = None):
        self.applications: dict[str, dict[str, Any]] = dict(applications or {})
        self.deployed: list[tuple[str, Any]] = []  # (name, EndpointArgs) per deploy
        self.deleted: list[str] = []
        self.refuse: Exception | None = None  # what the next deploys raise, when set
        self.linger = False  # deleted applications stay DELETING until `gone(name)`
        # Deploys appear as Serve first lists them: by name, before their deployments exist.
        self.bare = False
        # What each node has free, as Ray reports it (deployments/control_plane.py).
        self.free: list[dict[str, float]] = [{"CPU": 16.0, "memory": 64.0 * 2**30}]

    def free_resources(self) -> list[dict[str, float]]:
        return [dict(node) for node in self.free]

    def details(self) -> dict[str, Any]:
        return {"applications": dict(self.applications)}

    def deploy(self, name: str, args: Any) -> None:
        if self.refuse is not None:
            raise self.refuse
        self.deployed.append((name, args))
        app = serve_app(name, None, "DEPLOYING", running=0, num_cpus=args.num_cpus)
        if self.bare:
            app = {**app, "deployments": {}}
        self.applications[name] = app

    def run(self, name: str, **kwargs: Any) -> None:
        self.applications[name] = serve_app(name, None, **kwargs)

    def delete(self, name: str) -> None:
        self.deleted.append(name)
        if self.linger:
            self.applications[name] = {**self.applications[name], "status": "DELETING"}
        else:
            self.applications.pop(name, None)

    def gone(self, name: str) -> None:
        self.applications.pop(name, None)
