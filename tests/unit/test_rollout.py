"""Whether a dedicated endpoint's rollout starts its new replicas beside the old ones."""

from __future__ import annotations

from shared.rollout import IN_PLACE, SURGE, fits, surge_percent

GIB = 2.0**30
MODEL = {"CPU": 1.0, "memory": 2 * GIB, "GPU": 0.0}
INGRESS = {"CPU": 0.1}


def test_replicas_are_placed_node_by_node_not_across_leftovers() -> None:
    two_halves = [{"CPU": 0.6}, {"CPU": 0.6}]
    assert not fits(two_halves, {"CPU": 1.0}, 1)  # 1.2 CPUs free in all, but on no one node
    assert fits([{"CPU": 0.6}, {"CPU": 2.0}], {"CPU": 1.0}, 2)
    assert not fits([{"CPU": 0.6}, {"CPU": 2.0}], {"CPU": 1.0}, 3)


def test_a_resource_asked_for_none_of_is_not_needed() -> None:
    assert fits([{"CPU": 1.0}], {"CPU": 1.0, "GPU": 0.0}, 1)
    assert not fits([{"CPU": 1.0}], {"CPU": 1.0, "GPU": 1.0}, 1)


def test_surge_where_every_new_replica_fits_beside_the_running_ones() -> None:
    roomy = [{"CPU": 4.0, "memory": 16 * GIB}]
    assert surge_percent(roomy, MODEL, INGRESS, replicas=2) == SURGE
    assert surge_percent(roomy, MODEL, INGRESS, replicas=4) == IN_PLACE  # 4.4 CPUs wanted
    # The model's own CPU fits, its memory and the ingress beside it do not.
    assert surge_percent([{"CPU": 1.05, "memory": 16 * GIB}], MODEL, INGRESS, 1) == IN_PLACE
    assert surge_percent([{"CPU": 8.0, "memory": GIB}], MODEL, INGRESS, 1) == IN_PLACE


def test_nothing_running_or_nothing_known_is_in_place() -> None:
    assert surge_percent([{"CPU": 8.0, "memory": 16 * GIB}], MODEL, INGRESS, 0) == IN_PLACE
    assert surge_percent([], MODEL, INGRESS, 1) == IN_PLACE
