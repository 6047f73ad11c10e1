"""Application builders that serve_config.yaml imports (`import_path: deployments.app:...`)."""

from __future__ import annotations

from typing import Any

from ray.serve import Application

from deployments.ingress import Ingress
from deployments.model import ModelServer


def build_shared(args: dict[str, Any]) -> Application:
    """The shared predict service: one ingress in front of a multiplexed pool of all models."""
    pool = ModelServer.options(name="ModelPool").bind(
        registry=args.get("registry"),
        preload=args.get("preload", []),
        max_models_per_replica=int(args.get("max_models_per_replica", 3)),
    )
    config = {
        "mode": "shared",
        "registry": args.get("registry"),
        "keys_file": args.get("keys_file", ".keys/keys.json"),
        "max_upload_mb": args.get("max_upload_mb", 10),
    }
    return Ingress.bind(pool, config)


def build_endpoint(args: dict[str, Any]) -> Application:
    """A dedicated endpoint: its own ingress and replicas for one model."""
    model = ModelServer.options(name="Model").bind(
        registry=args.get("registry"), model_id=args["model"]
    )
    config = {
        "mode": "dedicated",
        "registry": args.get("registry"),
        "keys_file": args.get("keys_file", ".keys/keys.json"),
        "max_upload_mb": args.get("max_upload_mb", 10),
        "endpoint_name": args["name"],
        "model_id": args["model"],
    }
    return Ingress.bind(model, config)
