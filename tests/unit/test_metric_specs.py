"""The metric definitions: valid names, bounded labels only, buckets that mean what they say."""

from __future__ import annotations

import re

from deployments.metrics import (
    ALL_METRICS,
    BATCH_SIZE,
    INGRESS_METRICS,
    MODEL_METRICS,
    PROXY_METRICS,
)

# Labels whose values come from a bounded set the service controls.
BOUNDED_LABELS = {"route", "status", "format", "model"}


def test_names_are_unique_valid_prometheus_names() -> None:
    names = [spec.name for spec in ALL_METRICS]
    assert len(names) == len(set(names))
    assert all(re.fullmatch(r"yolo_[a-z_]+", n) for n in names)
    assert set(INGRESS_METRICS).isdisjoint(MODEL_METRICS)


def test_labels_are_bounded_and_never_about_keys() -> None:
    for spec in INGRESS_METRICS + MODEL_METRICS:
        assert set(spec.tags) <= BOUNDED_LABELS, spec.name
        # Ray adds these itself in a replica and refuses them as user tags.
        assert not {"application", "deployment", "replica"} & set(spec.tags)
    for spec in PROXY_METRICS:
        # The proxy is no replica: it names the application itself, as Serve's own proxy
        # metrics do (the Serve apps are a bounded set, like the routes).
        assert set(spec.tags) <= BOUNDED_LABELS | {"application"}, spec.name


def test_histogram_buckets_ascend_and_counters_have_none() -> None:
    for spec in ALL_METRICS:
        if spec.kind == "histogram":
            assert list(spec.buckets) == sorted(set(spec.buckets)) and spec.buckets[0] > 0
            assert spec.name.endswith("_seconds") or spec is BATCH_SIZE
        else:
            assert spec.kind == "counter" and not spec.buckets


def test_batch_size_buckets_make_the_sum_exact() -> None:
    # Ray's agent re-records each observation at its bucket's midpoint (the first bucket's lower
    # edge being 0), so a size is summed exactly when its bucket's midpoint is that size.
    bounds = list(BATCH_SIZE.buckets)
    for size in range(1, 17):
        i = next(i for i, b in enumerate(bounds) if size <= b)
        lower = bounds[i - 1] if i else 0.0
        assert (lower + bounds[i]) / 2 == size
