"""A custom Ray Serve autoscaling policy that scales on requests waiting per replica.

Ray's default policy scales on ongoing requests against a target. For a batching model server
what hurts users is the backlog: requests beyond what a replica is already working on. This
policy adds replicas in proportion to that backlog and removes them when replicas sit half idle.
Ray wraps every custom policy with the config's min/max bounds and up/downscale delays, so those
are not repeated here.
"""

from __future__ import annotations

import math
from typing import Any

from ray.serve.config import AutoscalingContext


def desired_replicas(
    replicas: int, requests: float, target_ongoing: float, target_queued: float
) -> int:
    """Pure decision: how many replicas this load wants.

    `requests` counts every request in the deployment: running, waiting in a replica's batch
    queue, or waiting at a handle for a free replica. Those beyond `target_ongoing` per replica
    are the backlog.
    """
    if replicas <= 0:
        return 1 if requests > 0 else 0
    backlog = max(0.0, requests - replicas * target_ongoing)
    if backlog / replicas > target_queued:
        # Enough extra replicas to take the backlog at their target load.
        return replicas + math.ceil(backlog / (target_ongoing + target_queued))
    if requests < replicas * target_ongoing / 2:
        return math.ceil(requests / target_ongoing)
    return replicas


class QueueLengthPolicy:
    """`policy_function: autoscaling.policies:QueueLengthPolicy` with `policy_kwargs`."""

    def __init__(self, target_queued: float = 1.0):
        if target_queued <= 0:
            raise ValueError("target_queued must be positive")
        self.target_queued = target_queued

    def __call__(self, ctx: AutoscalingContext) -> tuple[int, dict[str, Any]]:
        decision = desired_replicas(
            ctx.current_num_replicas,
            ctx.total_num_requests,
            ctx.config.get_target_ongoing_requests(),
            self.target_queued,
        )
        return decision, {}
