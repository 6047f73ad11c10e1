"""Inference parameters from a multipart form: parsing, ranges and defaults, per the spec."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from shared.errors import bad_request

CONF_RANGE = (0.01, 1.0)
IOU_RANGE = (0.0, 0.95)
IMGSZ_RANGE = (32, 1280)
DECIMALS_RANGE = (0, 10)
_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


@dataclass(frozen=True)
class PredictParams:
    conf: float = 0.25
    iou: float = 0.70
    imgsz: int = 640
    normalize: bool = False
    decimals: int = 5

    def model_args(self) -> tuple[float, float, int]:
        """The part that changes what the model computes (and so what may share a batch)."""
        return (self.conf, self.iou, self.imgsz)


def _single(form: Mapping[str, Sequence[str]], name: str) -> str | None:
    values = form.get(name) or []
    if len(values) > 1:
        raise bad_request(f"Parameter '{name}' was given {len(values)} times; give it once")
    return values[0].strip() if values else None


def _number(raw: str, name: str, low: float, high: float) -> float:
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (low <= value <= high):  # also rejects nan and inf
        raise bad_request(f"Invalid '{name}': must be a number between {low:g} and {high:g}")
    return value


def _integer(raw: str, name: str, low: int, high: int) -> int:
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (low <= value <= high) or value != int(value):
        raise bad_request(f"Invalid '{name}': must be an integer between {low} and {high}")
    return int(value)


def _boolean(raw: str, name: str) -> bool:
    lowered = raw.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise bad_request(f"Invalid '{name}': must be true or false")


def parse_params(form: Mapping[str, Sequence[str]], *, default_imgsz: int = 640) -> PredictParams:
    """Read conf/iou/imgsz/normalize/decimals from form values (each name -> list of values)."""
    conf, iou, imgsz, normalize, decimals = (
        _single(form, n) for n in ("conf", "iou", "imgsz", "normalize", "decimals")
    )
    defaults = PredictParams(imgsz=default_imgsz)
    return PredictParams(
        conf=defaults.conf if conf in (None, "") else _number(conf, "conf", *CONF_RANGE),
        iou=defaults.iou if iou in (None, "") else _number(iou, "iou", *IOU_RANGE),
        imgsz=defaults.imgsz if imgsz in (None, "") else _integer(imgsz, "imgsz", *IMGSZ_RANGE),
        normalize=False if normalize in (None, "") else _boolean(normalize, "normalize"),
        decimals=(
            defaults.decimals
            if decimals in (None, "")
            else _integer(decimals, "decimals", *DECIMALS_RANGE)
        ),
    )
