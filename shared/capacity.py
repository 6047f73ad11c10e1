"""How many of each Serve process a load needs, from measured CPU costs (docs/scaling.md).

Every figure is CPU time per unit of work, measured on the 2-core benchmark machine
(bench/README.md says where each comes from). Replica counts are sized to keep each process at
most `BUSY` of one core, so that a burst finds room and p99 stays near p50. k8s/generate.py
sizes the KubeRay manifest with `plan`, and a test checks that the manifest says what this does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

BUSY = 0.7  # the share of a core each process is planned to use


@dataclass(frozen=True)
class UnitCosts:
    """CPU seconds per unit, yolo26n at imgsz 640 on bus.jpg and zidane.jpg."""

    # One CPU model replica (one ONNX Runtime thread): 94-105 ms per image (2026-12-02).
    model_per_image: float = 0.100
    # A dedicated endpoint's ingress replica: decode, letterbox, JSON: 33-35 ms per image.
    ingress_per_image: float = 0.034
    # The HTTP proxy, per image request with its upload: 13-14 ms.
    proxy_per_image: float = 0.0135
    # A rejected request (401 or 429): the proxy 4 ms and the shared ingress 3.5 ms.
    proxy_per_rejection: float = 0.004
    ingress_per_rejection: float = 0.0035
    # One limiter shard, per admission: 0.77 cores at 442 admissions/s (2026-12-03).
    limiter_per_admission: float = 0.0017


MEASURED = UnitCosts()


@dataclass(frozen=True)
class Load:
    """What one application is asked to do, per second."""

    images: float  # predictions served
    rejections: float = 0.0  # 401s and 429s answered
    counted: bool = False  # the shared route: every request is an admission by the limiter


@dataclass(frozen=True)
class Plan:
    cpu_model_replicas: int  # one core each; on a GPU one replica per GPU instead
    ingress_replicas: int
    proxy_cores: float  # spread over the proxies, one per node (EveryNode)
    limiter_shards: int  # 0: the app is not counted


def _replicas(seconds_per_s: float) -> int:
    return max(1, math.ceil(round(seconds_per_s / BUSY, 9)))


def plan(load: Load, costs: UnitCosts = MEASURED) -> Plan:
    admissions = load.images + load.rejections if load.counted else 0.0
    return Plan(
        cpu_model_replicas=_replicas(load.images * costs.model_per_image),
        ingress_replicas=_replicas(
            load.images * costs.ingress_per_image + load.rejections * costs.ingress_per_rejection
        ),
        proxy_cores=(
            load.images * costs.proxy_per_image + load.rejections * costs.proxy_per_rejection
        )
        / BUSY,
        limiter_shards=_replicas(admissions * costs.limiter_per_admission) if admissions else 0,
    )


# What k8s/rayservice.yaml is sized for, per model application: the CPU side of 40 images per
# second (what one GPU does per second was not measured here; docs/scaling.md says how to
# resize), with as many rejections again on the shared route.
KUBERAY_LOAD = {
    "shared": Load(images=40, rejections=40, counted=True),
    "endpoint": Load(images=40),
}
