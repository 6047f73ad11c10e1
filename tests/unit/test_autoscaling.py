"""The queue-based autoscaling decision and the presets, without Ray running."""

from __future__ import annotations

import pytest
from ray.serve.config import AutoscalingConfig

from autoscaling import presets
from autoscaling.policies import QueueLengthPolicy, desired_replicas


def test_backlog_adds_replicas_in_proportion() -> None:
    # 1 replica at target 2 with 8 requests: a backlog of 6, absorbed by 2 more replicas.
    assert desired_replicas(1, 8, target_ongoing=2, target_queued=1) == 3


def test_load_within_target_keeps_replicas() -> None:
    assert desired_replicas(2, 4, target_ongoing=2, target_queued=1) == 2
    assert desired_replicas(2, 5, target_ongoing=2, target_queued=1) == 2  # backlog 0.5/replica


def test_half_idle_replicas_shrink() -> None:
    assert desired_replicas(4, 2, target_ongoing=2, target_queued=1) == 1
    assert desired_replicas(2, 0, target_ongoing=2, target_queued=1) == 0  # bounds clamp later


def test_from_zero_any_request_wants_one() -> None:
    assert desired_replicas(0, 0, target_ongoing=2, target_queued=1) == 0
    assert desired_replicas(0, 3, target_ongoing=2, target_queued=1) == 1


@pytest.mark.parametrize("name", sorted(presets.PRESETS))
def test_presets_are_valid_serve_configs(name: str) -> None:
    config = AutoscalingConfig(**presets.resolve(name))
    assert config.min_replicas <= config.max_replicas


def test_overrides_and_unknown_presets() -> None:
    assert presets.resolve("latency-first", {"max_replicas": 2})["max_replicas"] == 2
    assert presets.resolve(None) is None
    with pytest.raises(ValueError, match="unknown autoscaling preset"):
        presets.resolve("fastest")


def test_policy_rejects_nonsense_targets() -> None:
    with pytest.raises(ValueError):
        QueueLengthPolicy(target_queued=0)
