"""Results drawn onto the input image, in Ultralytics' look, for `Accept: image/*` predicts.

Runs in the ingress, which must never load torch: so no `ultralytics` import here. The
palettes, skeleton and layout below are copied by value from `ultralytics.utils.plotting`
(`Colors`, `Annotator`) and `Results.plot` (AGPL-3.0, as this project is). Drawing uses only
OpenCV's built-in Hershey font, so nothing is ever downloaded.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import cv2
import numpy as np

MediaType = Literal["image/jpeg", "image/png", "image/webp"]
ANNOTATED_TYPES: tuple[MediaType, ...] = ("image/jpeg", "image/png", "image/webp")

# Colors.palette, RGB. Our image is RGB, so these are drawn as they are.
_PALETTE: tuple[tuple[int, int, int], ...] = tuple(
    (int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16))
    for h in (
        "042AFF", "0BDBEB", "F3F3F3", "00DFB7", "111F68", "FF6FDD", "FF444F", "CCED00", "00F344",
        "BD00FF", "00B4FF", "DD00BA", "00FFFF", "26C000", "01FFB3", "7D24FF", "7B0068", "FF1B6C",
        "FC6D2F", "A2FF0B",
    )
)  # fmt: skip
# Annotator.dark_colors: palette entries that take dark text; every other entry takes white.
_DARK_TEXT = (17, 31, 104)
_DARK_BACKGROUNDS = frozenset({1, 2, 3, 5, 7, 8, 12, 14, 19})

# Colors.pose_palette, with Annotator's limb_color / kpt_color indices into it.
_POSE_PALETTE: tuple[tuple[int, int, int], ...] = (
    (255, 128, 0), (255, 153, 51), (255, 178, 102), (230, 230, 0), (255, 153, 255),
    (153, 204, 255), (255, 102, 255), (255, 51, 255), (102, 178, 255), (51, 153, 255),
    (255, 153, 153), (255, 102, 102), (255, 51, 51), (153, 255, 153), (102, 255, 102),
    (51, 255, 51), (0, 255, 0), (0, 0, 255), (255, 0, 0), (255, 255, 255),
)  # fmt: skip
_LIMB_COLOR_INDEX = (9, 9, 9, 9, 7, 7, 7, 0, 0, 0, 0, 0, 16, 16, 16, 16, 16, 16, 16)
_KPT_COLOR_INDEX = (16, 16, 16, 16, 16, 0, 0, 0, 0, 0, 0, 9, 9, 9, 9, 9, 9)
# Annotator.skeleton: COCO-pose limbs, 1-based keypoint indices.
_SKELETON = (
    (16, 14), (14, 12), (17, 15), (15, 13), (12, 13), (6, 12), (7, 13), (6, 7), (6, 8),
    (7, 9), (8, 10), (9, 11), (2, 3), (1, 2), (1, 3), (2, 4), (3, 5), (4, 6), (5, 7),
)  # fmt: skip

_KPT_CONF = 0.25  # Annotator.kpts' conf_thres: fainter keypoints (and their limbs) are not drawn
_KPT_RADIUS = 5  # Results.plot's kpt_radius: fixed, not scaled with the image
_MASK_ALPHA = 0.5
_BAND_PIXELS = 1 << 20
_CLASSIFY_BOX = (64, 64, 64)  # Results.plot's (64, 64, 64, 128) RGBA line background
_CLASSIFY_BOX_ALPHA = 128 / 255

_ENCODE = {
    "image/jpeg": (".jpg", [cv2.IMWRITE_JPEG_QUALITY, 90]),
    "image/png": (".png", []),
    "image/webp": (".webp", [cv2.IMWRITE_WEBP_QUALITY, 90]),
}


def _color(class_index: int) -> tuple[int, int, int]:
    """`colors(class_index)` in RGB: the palette, cycled."""
    return _PALETTE[int(class_index) % len(_PALETTE)]


def _text_color(class_index: int) -> tuple[int, int, int]:
    """Annotator.get_txt_color for a palette colour: dark text on the light entries."""
    return _DARK_TEXT if int(class_index) % len(_PALETTE) in _DARK_BACKGROUNDS else (255, 255, 255)


def _pose_color(palette_index: int) -> tuple[int, int, int]:
    # Ultralytics draws these RGB triples onto its BGR image, so they appear channel-swapped:
    # swapping them here keeps the same look on our RGB image.
    r, g, b = _POSE_PALETTE[palette_index]
    return b, g, r


def _line_width(shape: Sequence[int]) -> int:
    return max(round(sum(shape[:2]) / 2 * 0.003), 2)


def annotate(image: np.ndarray, results: Sequence[Mapping[str, Any]], task: str) -> np.ndarray:
    """A copy of `image` (H, W, 3 RGB uint8, upright, original resolution) with `results` drawn."""
    if task not in ("detect", "segment", "pose", "obb", "classify"):
        raise ValueError(f"unknown task {task!r}")
    out = np.array(image, order="C", copy=True)
    if not results:
        return out
    pen = _Pen(out)
    if task == "classify":
        pen.top5(results)
        return out
    if task == "segment":
        for r in results:
            pen.mask(r.get("segments") or [], _color(r["class"]))
    # Reversed, as Results.plot does: the first (most confident) result ends up on top.
    for r in reversed(results):
        label = f"{r['name']} {float(r['confidence']):.2f}"
        if task == "obb":
            o = r["obb"]
            corners = [[o[f"x{i}"], o[f"y{i}"]] for i in range(1, 5)]
            pen.box_label(corners, label, r["class"], polygon=True)
        else:
            b = r["box"]
            pen.box_label([[b["x1"], b["y1"]], [b["x2"], b["y2"]]], label, r["class"])
    if task == "pose":
        for r in reversed(results):
            pen.keypoints(r.get("keypoints") or [])
    return out


def encode(image: np.ndarray, media_type: MediaType) -> bytes:
    """RGB uint8 array -> JPEG (quality 90), PNG or WebP (quality 90) bytes, via cv2.imencode."""
    ext, params = _ENCODE[media_type]
    ok, data = cv2.imencode(ext, cv2.cvtColor(image, cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise ValueError(f"OpenCV could not encode a {image.shape} image as {media_type}")
    return data.tobytes()


class _Pen:
    """Annotator's cv2 path, drawing in place on one RGB image."""

    def __init__(self, im: np.ndarray) -> None:
        self.im = im
        self.h, self.w = im.shape[:2]
        self.lw = _line_width(im.shape)
        self.tf = max(self.lw - 1, 1)  # font thickness
        self.sf = self.lw / 3  # font scale
        # cv2 takes int32 coordinates and overflows on huge ones: clamp far-off points to a
        # margin. Boxes look the same; only a polygon reaching that far is bent, off-image.
        self.margin = 2 * (self.h + self.w)

    def points(self, xy: Any) -> np.ndarray:
        p = np.nan_to_num(np.asarray(xy, dtype=np.float64).reshape(-1, 2))
        p[:, 0] = p[:, 0].clip(-self.margin, self.w + self.margin)
        p[:, 1] = p[:, 1].clip(-self.margin, self.h + self.margin)
        return p.astype(np.int32)  # truncates, as Annotator's int() does

    def box_label(self, xy: Any, label: str, cls: int, polygon: bool = False) -> None:
        c = _color(cls)
        p = self.points(xy)
        if polygon:
            cv2.polylines(self.im, [p], True, c, self.lw)
        else:
            cv2.rectangle(self.im, p[0].tolist(), p[1].tolist(), c, self.lw, cv2.LINE_AA)
        (w, h), _ = cv2.getTextSize(label, 0, fontScale=self.sf, thickness=self.tf)
        h += 3  # pad the text
        x, y = int(p[0, 0]), int(p[0, 1])
        outside = y >= h  # room above the box; else the label goes just inside its top
        x = max(min(x, self.w - w), 0)  # Annotator keeps labels off the right edge; also the left
        cv2.rectangle(self.im, (x, y), (x + w, y - h if outside else y + h), c, -1, cv2.LINE_AA)
        origin = (x, y - 2 if outside else y + h - 1)
        cv2.putText(self.im, label, origin, 0, self.sf, _text_color(cls), self.tf, cv2.LINE_AA)

    def mask(self, polygon: Sequence[Sequence[float]], c: tuple[int, int, int]) -> None:
        if len(polygon) < 3:
            return
        p = self.points(polygon)
        x0, y0 = np.maximum(p.min(0), 0).tolist()
        x1, y1 = np.minimum(p.max(0) + 1, (self.w, self.h)).tolist()
        if x0 >= x1 or y0 >= y1:
            return
        # Blend the polygon's bounding rectangle in bands of about a million pixels, so that a
        # mask over most of a 24-megapixel image costs a few MB, not copies of the image.
        rows = max(_BAND_PIXELS // (x1 - x0), 1)
        paint = np.full((min(rows, y1 - y0), x1 - x0, 3), c, np.uint8)
        inside = np.empty(paint.shape[:2], np.uint8)
        for top in range(y0, y1, rows):
            band = self.im[top : min(top + rows, y1), x0:x1]
            m = inside[: len(band)]
            m[:] = 0
            cv2.fillPoly(m, [p - np.int32((x0, top))], 1)
            blended = cv2.addWeighted(band, 1 - _MASK_ALPHA, paint[: len(band)], _MASK_ALPHA, 0)
            cv2.copyTo(blended, m, band)  # in place: band is a view of the image

    def keypoints(self, kpts: Sequence[Mapping[str, float]]) -> None:
        if not kpts:
            return
        xy = self.points([[k["x"], k["y"]] for k in kpts])
        shown = [
            float(k.get("conf", 1.0)) >= _KPT_CONF and (k["x"], k["y"]) != (0, 0) for k in kpts
        ]
        is_pose = len(kpts) == 17
        for i, (pt, ok) in enumerate(zip(xy.tolist(), shown, strict=True)):
            if ok:
                # Other layouts: colors(i), which Ultralytics also draws unswapped onto BGR.
                c = _pose_color(_KPT_COLOR_INDEX[i]) if is_pose else _color(i)[::-1]
                cv2.circle(self.im, pt, _KPT_RADIUS, c, -1, cv2.LINE_AA)
        if not is_pose:
            return
        thickness = -(-self.lw // 2)
        for (a, b), ci in zip(_SKELETON, _LIMB_COLOR_INDEX, strict=True):
            a, b = a - 1, b - 1
            if shown[a] and shown[b] and min(*xy[a], *xy[b]) >= 0:
                c = _pose_color(ci)
                cv2.line(self.im, xy[a].tolist(), xy[b].tolist(), c, thickness, cv2.LINE_AA)

    def top5(self, results: Sequence[Mapping[str, Any]]) -> None:
        ranked = sorted(results, key=lambda r: -float(r["confidence"]))[:5]
        # Results.plot's text block: at (3% of the height) both ways, one line per class, white
        # on a half-transparent grey. Ultralytics draws it with PIL and Arial; this is the cv2
        # equivalent at the label font's size.
        x = y = round(self.h * 0.03)
        for r in ranked:
            line = f"{r['name']} {float(r['confidence']):.2f}"
            (w, h), base = cv2.getTextSize(line, 0, fontScale=self.sf, thickness=self.tf)
            bottom = y + h + base + self.tf
            roi = self.im[max(y, 0) : min(bottom, self.h), max(x, 0) : min(x + w + 1, self.w)]
            if roi.size:
                grey = np.full_like(roi, _CLASSIFY_BOX)
                roi[:] = cv2.addWeighted(roi, 1 - _CLASSIFY_BOX_ALPHA, grey, _CLASSIFY_BOX_ALPHA, 0)
            cv2.putText(
                self.im, line, (x, y + h), 0, self.sf, (255, 255, 255), self.tf, cv2.LINE_AA
            )
            y = bottom
