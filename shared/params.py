"""Inference parameters from the predict form (multipart or urlencoded): parsing, ranges, defaults.

Every rejection is a 400 that names the field and what it accepts, so a client can fix the
request from the message alone. Unknown fields are rejected too: a typo such as `confidence`
would otherwise silently run with the default.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from shared.errors import bad_request

CONF_RANGE = (0.01, 1.0)
IOU_RANGE = (0.0, 0.95)
IMGSZ_RANGE = (32, 1280)
DECIMALS_RANGE = (0, 10)
VID_STRIDE_RANGE = (1, 1000)
# `vid_stride` (every n-th frame of a video) is accepted with images too, where it means nothing.
PARAMETERS = ("conf", "iou", "imgsz", "normalize", "decimals", "vid_stride")
# A Platform parameter the official SDK may send that means nothing here (depth-map bit
# depth): accepted and ignored, so SDK calls work unchanged.
PLATFORM_ONLY = ("bits",)
_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}
_SHOWN = 24  # how much of a bad value to echo back


@dataclass(frozen=True)
class PredictParams:
    conf: float = 0.25
    iou: float = 0.70
    imgsz: int = 640
    normalize: bool = False
    decimals: int = 5
    vid_stride: int = 1

    def model_args(self) -> tuple[float, float, int]:
        """The part that changes what the model computes (and so what may share a batch)."""
        return (self.conf, self.iou, self.imgsz)


def _got(raw: str) -> str:
    shown = raw if len(raw) <= _SHOWN else raw[:_SHOWN] + "..."
    return f"got {shown!r}"


def _single(form: Mapping[str, Sequence[str]], name: str) -> str | None:
    values = form.get(name) or []
    if len(values) > 1:
        raise bad_request(f"Invalid '{name}': given {len(values)} times, give it once")
    return values[0].strip() if values else None


def _number(raw: str, name: str, low: float, high: float) -> float:
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (low <= value <= high):  # also rejects nan and inf
        raise bad_request(f"Invalid '{name}': must be a number from {low} to {high}, {_got(raw)}")
    return value


def _integer(raw: str, name: str, low: int, high: int) -> int:
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (low <= value <= high) or value != int(value):
        raise bad_request(f"Invalid '{name}': must be an integer from {low} to {high}, {_got(raw)}")
    return int(value)


def _boolean(raw: str, name: str) -> bool:
    lowered = raw.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise bad_request(f"Invalid '{name}': must be true or false, {_got(raw)}")


def parse_params(form: Mapping[str, Sequence[str]], *, default_imgsz: int = 640) -> PredictParams:
    """Read the parameters from form values (each name -> list of values).

    `form` holds the request's non-image fields only. An absent field takes its default; a
    present one, even empty, must be valid.
    """
    unknown = sorted(set(form) - set(PARAMETERS) - set(PLATFORM_ONLY))
    if unknown:
        raise bad_request(
            f"Unknown parameter '{unknown[0][:_SHOWN]}': expected 'file' or 'source' and "
            f"optionally {', '.join(PARAMETERS)}"
        )
    conf, iou, imgsz, normalize, decimals, vid_stride = (_single(form, n) for n in PARAMETERS)
    defaults = PredictParams(imgsz=default_imgsz)
    return PredictParams(
        conf=defaults.conf if conf is None else _number(conf, "conf", *CONF_RANGE),
        iou=defaults.iou if iou is None else _number(iou, "iou", *IOU_RANGE),
        imgsz=defaults.imgsz if imgsz is None else _integer(imgsz, "imgsz", *IMGSZ_RANGE),
        normalize=defaults.normalize if normalize is None else _boolean(normalize, "normalize"),
        decimals=(
            defaults.decimals
            if decimals is None
            else _integer(decimals, "decimals", *DECIMALS_RANGE)
        ),
        vid_stride=(
            defaults.vid_stride
            if vid_stride is None
            else _integer(vid_stride, "vid_stride", *VID_STRIDE_RANGE)
        ),
    )
