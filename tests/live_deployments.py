"""Watching an API-created deployment on the live cluster through the official SDK."""

from __future__ import annotations

import time
import uuid
from typing import Any

import requests
from ultralytics_platform import Platform
from ultralytics_platform import types as sdk

from shared import keys
from tests.sdk_types import assert_sdk_type

READY_S = 240  # a new application: its replicas start and load their weights
OWNER = "acme"


def wait_for(
    client: Platform, slug: str, status: str, timeout_s: float = READY_S
) -> dict[str, Any]:
    """Retrieve until `status`; each answer held to the SDK's type, and one that waits says
    what for."""
    deadline = time.monotonic() + timeout_s
    while True:
        body = client.deployments.retrieve(OWNER, slug)
        assert_sdk_type(body, sdk.DeploymentsRetrieveResponse)
        deployment = body["deployment"]
        if deployment["status"] == status:
            return deployment
        if deployment["status"] in ("creating", "deploying"):
            assert deployment.get("statusMessage"), deployment
        assert time.monotonic() < deadline, deployment
        time.sleep(1)


def new_key(server, name: str, **rules: Any) -> str:
    """A key of its own (a unique name: module fixtures may run twice in a session, when
    ordering splits a module), once the ingress replicas accept it."""
    key = keys.create_key(server.keys_file, f"{name}-{uuid.uuid4().hex[:8]}", **rules)
    deadline = time.monotonic() + 30
    while requests.get(server.url("/api/models"), headers=server.headers(key)).status_code != 200:
        assert time.monotonic() < deadline, "the new key was never accepted"
        time.sleep(0.5)
    return key
