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
    ordering splits a module), once every ingress replica accepts it."""
    key = keys.create_key(server.keys_file, f"{name}-{uuid.uuid4().hex[:8]}", **rules)
    # Every ingress replica reloads the store on its own: six listings in a row accept it
    # (listings count against no default limit).
    accepted, deadline = 0, time.monotonic() + 30
    while accepted < 6:
        listed = requests.get(server.url("/api/models"), headers=server.headers(key), timeout=30)
        accepted = accepted + 1 if listed.status_code == 200 else 0
        assert time.monotonic() < deadline, "an ingress replica never accepted the new key"
        time.sleep(0.2)
    return key
