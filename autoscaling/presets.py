"""Named autoscaling presets that serve_config.yaml refers to by name (`autoscaling: NAME`).

Each preset is a Ray Serve `autoscaling_config`; an endpoint may also give a full config
(a mapping) instead of a name, or override single fields of a preset with `autoscaling_overrides`.
"""

from __future__ import annotations

from typing import Any

QUEUE_POLICY = "autoscaling.policies:QueueLengthPolicy"

PRESETS: dict[str, dict[str, Any]] = {
    # Add replicas as soon as requests wait; shrink slowly. For interactive traffic.
    "latency-first": {
        "min_replicas": 1,
        "max_replicas": 4,
        "target_ongoing_requests": 2,
        "upscale_delay_s": 3,
        "downscale_delay_s": 120,
        "policy": {"policy_function": QUEUE_POLICY, "policy_kwargs": {"target_queued": 1}},
    },
    # Let queues fill so batches are full before scaling out. For bulk traffic.
    "throughput-first": {
        "min_replicas": 1,
        "max_replicas": 8,
        "target_ongoing_requests": 8,
        "upscale_delay_s": 15,
        "downscale_delay_s": 300,
        "policy": {"policy_function": QUEUE_POLICY, "policy_kwargs": {"target_queued": 8}},
    },
    # Nothing runs while idle; the first request pays a cold start.
    "scale-to-zero": {
        "min_replicas": 0,
        "initial_replicas": 1,
        "max_replicas": 4,
        "target_ongoing_requests": 2,
        "upscale_delay_s": 3,
        "downscale_delay_s": 600,
        "policy": {"policy_function": QUEUE_POLICY, "policy_kwargs": {"target_queued": 2}},
    },
}


def resolve(
    autoscaling: str | dict[str, Any] | None, overrides: dict[str, Any] | None = None
) -> dict[str, Any] | None:
    """A preset name, a full config, or None (fixed replicas) -> a Serve autoscaling_config."""
    if autoscaling is None:
        return None
    if isinstance(autoscaling, str):
        if autoscaling not in PRESETS:
            raise ValueError(f"unknown autoscaling preset {autoscaling!r}; one of {list(PRESETS)}")
        config = {**PRESETS[autoscaling]}
    else:
        config = {**autoscaling}
    return {**config, **(overrides or {})}
