"""The shared app's ingress over the real control plane, in-process: its SQLite records in a
temporary directory, Serve and the models stand-ins (tests/fakes.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from starlette.testclient import TestClient

from deployments.config import SharedArgs
from deployments.control_plane import ControlPlaneApp
from deployments.ingress import IngressApp
from tests.fakes import FakeLimiter, FakeModel, FakeServeApps, LocalHandle, serve_app

LIMIT = 3
DEPLOYED_AT = 1767225600.0  # 2026-01-01T00:00:00Z


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def apps() -> dict[str, dict[str, Any]]:
    """What Serve reports: one endpoint running, one deploying, and the shared app (which
    runs no `Model` deployment, so it is no endpoint)."""
    shared = serve_app("shared", None)
    shared["deployments"] = {"ModelPool": shared["deployments"]["Model"]}
    return {
        "shared": shared,
        "yolo26n": serve_app("yolo26n", "yolo26n", deployed_at=DEPLOYED_AT),
        "yolo26n-seg": serve_app(
            "yolo26n-seg", "yolo26n-seg", "DEPLOYING", running=0, target=1, deployed_at=DEPLOYED_AT
        ),
    }


class App:
    """The shared app's ingress and control plane over a stand-in Serve and model."""

    def __init__(
        self,
        store: Path,
        applications: dict[str, dict[str, Any]] | None = None,
        database: Path | None = None,
    ):
        self.model = FakeModel()
        config = SharedArgs(
            keys_file=str(store),
            rate_limit={"requests": LIMIT, "window_s": 60},
            control_plane={"database": str(database or store.parent / "deployments.sqlite")},
        )
        self.serve = FakeServeApps(applications if applications is not None else apps())
        self.details_read = 0
        real_details = self.serve.details

        def read() -> dict[str, Any]:
            self.details_read += 1
            return real_details()

        self.serve.details = read  # type: ignore[method-assign]
        self.control = ControlPlaneApp(
            config, app_name="shared", apps=self.serve, reconcile_loop=False
        )
        self.ingress = IngressApp(
            self.model,  # type: ignore[arg-type]
            config,
            [FakeLimiter(config.rate_limit.limit())],  # type: ignore[list-item]
            LocalHandle(self.control),  # type: ignore[arg-type]
        )
        self.handles: list[str] = []

        def handle(name: str) -> FakeModel:
            self.handles.append(name)
            return self.model

        self.ingress.model_handle = handle  # type: ignore[assignment]
        self.client = TestClient(
            self.ingress.__serve_build_asgi_app__(), raise_server_exceptions=False
        )

    def reconcile(self) -> None:
        asyncio.run(self.control.reconcile())
