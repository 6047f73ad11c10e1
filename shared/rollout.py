"""How a dedicated endpoint's change rolls out: beside its running replicas, or in their place.

Serve's default rollout stops a deployment's old replicas before it starts their replacements
(`max_surge_percent` 0): a one-replica endpoint then answers nothing until the new replica has
loaded its model, and a request held by a stopping replica past its grace period fails. With
`max_surge_percent` 100 the new replicas start beside the old, which serve until they are
ready; but a surge replica that no node can take waits forever (and the control plane fails
the deployment). So the control plane surges only where the cluster has room for every new
replica now, placed node by node as Ray would, and otherwise lets Serve replace in place.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

SURGE = 100  # percent of the target replicas started beside the old ones
IN_PLACE = 0


def fits(
    free_per_node: Iterable[Mapping[str, float]], need: Mapping[str, float], count: int
) -> bool:
    """Whether `count` replicas that each need `need` fit on these nodes' free resources
    (first fit: a replica takes one node, as a Ray actor does)."""
    nodes = [dict(node) for node in free_per_node]
    wanted = {name: amount for name, amount in need.items() if amount > 0}
    for _ in range(count):
        node = next(
            (
                n
                for n in nodes
                if all(n.get(name, 0.0) >= amount for name, amount in wanted.items())
            ),
            None,
        )
        if node is None:
            return False
        for name, amount in wanted.items():
            node[name] -= amount
    return True


def surge_percent(
    free_per_node: Iterable[Mapping[str, float]],
    model_need: Mapping[str, float],
    ingress_need: Mapping[str, float],
    replicas: int,
) -> int:
    """`max_surge_percent` for a rollout of `replicas` model replicas (and one ingress beside
    each, at most): SURGE where all of them fit beside what runs now, else IN_PLACE."""
    if replicas <= 0:
        return IN_PLACE  # nothing runs yet: nothing to keep serving
    together = {
        name: model_need.get(name, 0.0) + ingress_need.get(name, 0.0)
        for name in {*model_need, *ingress_need}
    }
    return SURGE if fits(free_per_node, together, replicas) else IN_PLACE
