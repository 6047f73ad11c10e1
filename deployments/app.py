"""Application builders that serve_config.yaml imports (`import_path: deployments.app:...`).

Each builder validates its application's `args` into its typed config (deployments/config.py),
so a typo in the YAML fails the deploy with a clear message instead of running with a default,
and hands that one object to the ingress and the model deployment as it is.
"""

from __future__ import annotations

from typing import Any

from ray.serve import Application

from autoscaling import presets
from deployments.config import CommonArgs, EndpointArgs, SharedArgs
from deployments.control_plane import ControlPlane
from deployments.ingress import Ingress
from deployments.limiter import Limiter, shard_name
from deployments.model import ModelServer


def model_options(args: CommonArgs, name: str) -> dict[str, Any]:
    """The model deployment's Serve options from an app's args."""
    actor: dict[str, Any] = {"num_cpus": args.num_cpus, "num_gpus": args.num_gpus}
    if args.memory_gi is not None:
        actor["memory"] = int(args.memory_gi * 2**30)  # Ray's memory resource is in bytes
    options: dict[str, Any] = {
        "name": name,
        "ray_actor_options": actor,
        "user_config": args.batching.model_dump(),
        "max_queued_requests": args.max_queued_requests,
    }
    autoscaling = presets.resolve(args.autoscaling, args.autoscaling_overrides)
    if autoscaling:
        options["autoscaling_config"] = autoscaling
    else:
        options["num_replicas"] = args.num_replicas
    if isinstance(args, EndpointArgs):
        options["max_surge_percent"] = args.rollout_surge_percent
    return options


def build_shared(raw_args: dict[str, Any]) -> Application:
    """The shared predict service: one ingress in front of a multiplexed pool of all models."""
    args = SharedArgs.model_validate(raw_args)
    pool = ModelServer.options(**model_options(args, "ModelPool")).bind(args)
    # Each key is counted by one Limiter shard for every Ingress replica: the limit stays exact.
    shards = args.rate_limit.shards
    limiters = [
        Limiter.options(name=shard_name(i)).bind(args.rate_limit.limit(), shards)
        for i in range(shards)
    ]
    # The SDK's deployments API: records in SQLite, each its own Serve application.
    control = ControlPlane.bind(args)
    return Ingress.bind(pool, args, limiters, control)


def build_endpoint(raw_args: dict[str, Any]) -> Application:
    """A dedicated endpoint: its own ingress and replicas for one model, no rate limit."""
    args = EndpointArgs.model_validate(raw_args)
    model = ModelServer.options(**model_options(args, "Model")).bind(args)
    ingress = Ingress.options(
        max_surge_percent=args.rollout_surge_percent,
        # A stopping ingress holds its requests while the new model loads (an in-place
        # rollout): past Serve's default 20 s grace they would fail instead.
        graceful_shutdown_timeout_s=args.model_timeout_s + 10,
    )
    return ingress.bind(model, args)
