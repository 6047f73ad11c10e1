"""The capacity model (shared/capacity.py): replicas from measured CPU costs."""

from __future__ import annotations

import pytest

from shared.capacity import BUSY, MEASURED, Load, plan


def test_the_bench_machines_own_load_plans_what_it_runs() -> None:
    # bench.run's dedicated endpoint served 8.5 img/s on two model replicas and one ingress.
    sized = plan(Load(images=8.5))
    assert (sized.cpu_model_replicas, sized.ingress_replicas, sized.limiter_shards) == (2, 1, 0)


@pytest.mark.parametrize("images", [1, 40, 100, 1000])
def test_every_process_stays_under_the_planned_share_of_a_core(images: float) -> None:
    load = Load(images=images, rejections=images, counted=True)
    sized = plan(load)
    assert images * MEASURED.model_per_image / sized.cpu_model_replicas <= BUSY
    ingress = images * (MEASURED.ingress_per_image + MEASURED.ingress_per_rejection)
    assert ingress / sized.ingress_replicas <= BUSY
    assert 2 * images * MEASURED.limiter_per_admission / sized.limiter_shards <= BUSY
    # And no more than needed: one replica fewer would be over.
    if sized.ingress_replicas > 1:
        assert ingress / (sized.ingress_replicas - 1) > BUSY


def test_only_the_shared_route_needs_limiter_shards() -> None:
    assert plan(Load(images=500)).limiter_shards == 0
    assert plan(Load(images=500, counted=True)).limiter_shards == 2
