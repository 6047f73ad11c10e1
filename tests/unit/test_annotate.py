"""Annotated images: results drawn on bus.jpg in Ultralytics' look, and encoded."""

from __future__ import annotations

import json
import subprocess
import sys
import tracemalloc

import cv2
import numpy as np
import pytest

from shared import annotate as A
from shared.annotate import ANNOTATED_TYPES, annotate, encode
from shared.assets import example_image

PALETTE = A._PALETTE


@pytest.fixture(scope="module")
def bus() -> np.ndarray:
    image = cv2.cvtColor(cv2.imread(str(example_image("bus.jpg"))), cv2.COLOR_BGR2RGB)
    image.flags.writeable = False  # any write to the input raises
    return image


def det(cls: int, name: str, conf: float, x1: float, y1: float, x2: float, y2: float) -> dict:
    box = {"x1": x1, "y1": y1, "x2": x2, "y2": y2}
    return {"class": cls, "name": name, "confidence": conf, "box": box}


# Roughly what yolo11n finds on bus.jpg, most confident first as the API returns them.
DETECTIONS = [
    det(5, "bus", 0.94, 17.2, 230.5, 801.6, 768.4),
    det(0, "person", 0.89, 48.6, 398.5, 245.3, 902.7),
    det(0, "person", 0.88, 670.3, 380.1, 810.0, 876.4),
    det(0, "person", 0.86, 221.4, 405.8, 344.9, 857.5),
    det(0, "person", 0.62, 0.0, 550.5, 63.0, 873.4),
]

# A standing person in the left person's box (COCO order); the left ear and the right wrist are
# low-confidence and the right eye is "missing" at (0, 0).
KEYPOINTS = [
    (150, 470), (160, 460), (0, 0), (172, 465), (128, 465), (195, 540), (105, 540),
    (215, 630), (85, 630), (225, 710), (75, 710), (180, 700), (120, 700),
    (185, 800), (115, 800), (190, 890), (110, 890),
]  # fmt: skip
LOW_CONF = {3, 10}


def geometry(image: np.ndarray) -> tuple[int, float, int]:
    """Line width, font scale and font thickness, as Annotator computes them."""
    lw = max(round(sum(image.shape[:2]) / 2 * 0.003), 2)
    return lw, lw / 3, max(lw - 1, 1)


def label_size(image: np.ndarray, label: str) -> tuple[int, int]:
    _, sf, tf = geometry(image)
    (w, h), _ = cv2.getTextSize(label, 0, sf, tf)
    return w, h + 3


def untouched(image: np.ndarray, results: list[dict], polygons: bool = False) -> np.ndarray:
    """True where nothing may be drawn: away from every box (or OBB), its line and its label."""
    keep = np.ones(image.shape[:2], bool)
    lw = geometry(image)[0]
    m = lw + 2  # half the line, anti-aliasing and rounding, with room to spare
    for r in results:
        if polygons:
            o = r["obb"]
            xs, ys = [o[f"x{i}"] for i in range(1, 5)], [o[f"y{i}"] for i in range(1, 5)]
            x1, y1, x2, y2, lx, ly = min(xs), min(ys), max(xs), max(ys), xs[0], ys[0]
        else:
            b = r["box"]
            x1, y1, x2, y2 = b["x1"], b["y1"], b["x2"], b["y2"]
            lx, ly = x1, y1
        w, h = label_size(image, f"{r['name']} {r['confidence']:.2f}")
        lx = min(lx, image.shape[1] - w)
        for ax1, ay1, ax2, ay2 in ((x1, y1, x2, y2), (lx, ly - h, lx + w, ly + h)):
            keep[max(int(ay1) - m, 0) : int(ay2) + m, max(int(ax1) - m, 0) : int(ax2) + m] = False
    return keep


def changed(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a != b).any(-1)


def edge_pixels(x1: float, y1: float, x2: float, y2: float, shape) -> list[tuple[int, int]]:
    """(row, col) points along the segment from (x1, y1) to (x2, y2), inside the image."""
    n = int(max(abs(x2 - x1), abs(y2 - y1))) + 1
    xs = np.linspace(x1, x2, n).astype(int).clip(0, shape[1] - 1)
    ys = np.linspace(y1, y2, n).astype(int).clip(0, shape[0] - 1)
    return list(zip(ys.tolist(), xs.tolist(), strict=True))


def box_edges(b: dict, shape) -> list[tuple[int, int]]:
    x1, y1, x2, y2 = b["x1"], b["y1"], b["x2"], b["y2"]
    corners = [(x1, y1), (x2, y1), (x2, y2), (x1, y2)]
    return [
        p
        for (ax, ay), (bx, by) in zip(corners, corners[1:] + corners[:1], strict=True)
        for p in edge_pixels(ax, ay, bx, by, shape)
    ]


def label_rect(image: np.ndarray, r: dict) -> np.ndarray:
    b = r["box"]
    w, h = label_size(image, f"{r['name']} {r['confidence']:.2f}")
    x, y = int(b["x1"]), int(b["y1"])
    return image[y - h + 1 : y, x + 1 : x + w] if y >= h else image[y + 1 : y + h, x + 1 : x + w]


def most_common_colour(pixels: np.ndarray) -> tuple[int, ...]:
    values, counts = np.unique(pixels.reshape(-1, 3), axis=0, return_counts=True)
    return tuple(values[counts.argmax()].tolist())


def check_common(bus: np.ndarray, out: np.ndarray, before: np.ndarray) -> None:
    assert out.shape == bus.shape and out.dtype == bus.dtype
    assert out is not bus and out.flags.writeable
    assert np.array_equal(bus, before), "the input array is unchanged"


# detect


def test_detect_draws_every_box_and_nothing_else(bus) -> None:
    before = bus.copy()
    out = annotate(bus, DETECTIONS, "detect")
    check_common(bus, out, before)
    diff = changed(out, bus)
    for r in DETECTIONS:
        edges = box_edges(r["box"], bus.shape)
        assert all(diff[p] for p in edges), f"every pixel on the {r['name']} box's edges changed"
    keep = untouched(bus, DETECTIONS)
    assert keep.mean() > 0.15, "the test leaves a real area to check"
    assert np.array_equal(out[keep], bus[keep])


def test_detect_colours_follow_the_palette_by_class_index(bus) -> None:
    # Classes 0, 5 and 25 (25 cycles back to palette[5]), in boxes that do not overlap.
    results = [
        det(0, "person", 0.87, 50, 400, 245, 905),
        det(5, "bus", 0.5, 400, 100, 600, 300),
        det(25, "umbrella", 0.31, 400, 600, 600, 700),
    ]
    out = annotate(bus, results, "detect")
    dark, white = (17, 31, 104), (255, 255, 255)  # Annotator.get_txt_color for these colours
    for r, colour, text in zip(
        results, (PALETTE[0], PALETTE[5], PALETTE[5]), (white, dark, dark), strict=True
    ):
        b = r["box"]
        mid_x, mid_y = int((b["x1"] + b["x2"]) / 2), int((b["y1"] + b["y2"]) / 2)
        for row, col in ((mid_y, b["x1"]), (mid_y, b["x2"]), (b["y2"], mid_x)):
            assert tuple(out[row, col].tolist()) == colour
        label = label_rect(out, r)
        assert most_common_colour(label) == colour, "label background in the box colour"
        assert (label == text).all(-1).any(), "label text in the contrast colour"
    assert PALETTE[0] == (4, 42, 255) and PALETTE[5] == (255, 111, 221)


def test_label_goes_inside_a_box_at_the_top_and_left_of_the_right_edge(bus) -> None:
    top = det(0, "person", 0.87, 300, 2, 500, 300)
    right = det(7, "truck", 0.66, 780, 500, 809, 700)
    out = annotate(bus, [top, right], "detect")
    w, h = label_size(bus, "person 0.87")
    assert most_common_colour(out[4 : 2 + h, 302 : 300 + w]) == PALETTE[0]
    w, h = label_size(bus, "truck 0.66")
    x = bus.shape[1] - w
    assert most_common_colour(out[500 - h + 1 : 500, x + 1 : bus.shape[1]]) == PALETTE[7]


ULTRALYTICS_CHILD = """
import json, sys, cv2, numpy as np
from ultralytics.utils.plotting import Annotator, colors
from shared.annotate import annotate
from shared.assets import example_image
bgr = cv2.imread(str(example_image("bus.jpg")))
results = json.loads(sys.argv[1])
an = Annotator(bgr.copy(), example="abc")
for r in reversed(results):
    b = r["box"]
    label = f"{r['name']} {r['confidence']:.2f}"
    an.box_label([b["x1"], b["y1"], b["x2"], b["y2"]], label, color=colors(r["class"], True))
ours = annotate(np.ascontiguousarray(bgr[..., ::-1]), results, "detect")
print(json.dumps({
    "same_pixels": bool(np.array_equal(ours, an.result()[..., ::-1])),
    "palette": [list(c) for c in colors.palette],
    "pose_palette": colors.pose_palette.tolist(),
    "skeleton": an.skeleton,
    "limb_color": an.limb_color.tolist(),
    "kpt_color": an.kpt_color.tolist(),
}))
"""


@pytest.fixture(scope="module")
def ultralytics() -> dict:
    # In a child: importing ultralytics loads torch, which must stay out of this process.
    args = [sys.executable, "-c", ULTRALYTICS_CHILD, json.dumps(DETECTIONS)]
    done = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_matches_ultralytics_annotator_pixel_for_pixel(ultralytics) -> None:
    assert ultralytics["same_pixels"], "Annotator.box_label's cv2 drawing, channel-swapped"


def test_copied_constants_match_ultralytics(ultralytics) -> None:
    assert [list(c) for c in A._PALETTE] == ultralytics["palette"]
    assert [list(c) for c in A._POSE_PALETTE] == ultralytics["pose_palette"]
    assert [list(s) for s in A._SKELETON] == ultralytics["skeleton"]
    assert [list(A._POSE_PALETTE[i]) for i in A._LIMB_COLOR_INDEX] == ultralytics["limb_color"]
    assert [list(A._POSE_PALETTE[i]) for i in A._KPT_COLOR_INDEX] == ultralytics["kpt_color"]


# segment


def test_segment_blends_the_polygon_and_draws_the_box(bus) -> None:
    bus_polygon = [[20, 240], [795, 235], [800, 760], [25, 765]]
    person_polygon = [[100, 410], [200, 410], [240, 900], [55, 900]]
    results = [
        {**DETECTIONS[0], "segments": bus_polygon},
        {**DETECTIONS[1], "segments": person_polygon},
    ]
    before = bus.copy()
    out = annotate(bus, results, "segment")
    check_common(bus, out, before)
    keep = untouched(bus, results)
    assert np.array_equal(out[keep], bus[keep])
    diff = changed(out, bus)
    for r in results:
        assert all(diff[p] for p in box_edges(r["box"], bus.shape))
    # Well inside the person polygon and away from every line and label: the 50% blend, over
    # the bus's blend where the person stands inside the bus polygon too.
    inner = np.zeros(bus.shape[:2], np.uint8)
    cv2.fillPoly(inner, [np.int32([[120, 450], [180, 450], [200, 850], [90, 850]])], 1)
    inner = inner.astype(bool)
    person = cv2.addWeighted(bus, 0.5, np.full_like(bus, PALETTE[0]), 0.5, 0)
    under_bus = cv2.addWeighted(bus, 0.5, np.full_like(bus, PALETTE[5]), 0.5, 0)
    both = cv2.addWeighted(under_bus, 0.5, np.full_like(bus, PALETTE[0]), 0.5, 0)
    for rows, expected in ((slice(450, 755), both), (slice(780, 850), person)):
        region = inner[rows]
        assert region.sum() > 1000
        assert np.array_equal(out[rows][region], expected[rows][region])


def test_segment_changes_only_pixels_inside_the_polygon(bus) -> None:
    triangle = [[100, 500], [200, 500], [150, 800]]
    r = {**det(3, "motorcycle", 0.7, 60, 420, 300, 880), "segments": triangle}
    out = annotate(bus, [r], "segment")
    inside = np.zeros(bus.shape[:2], np.uint8)
    cv2.fillPoly(inside, [np.int32(triangle)], 1)
    inside = cv2.dilate(inside, np.ones((3, 3), np.uint8)).astype(bool)
    keep = untouched(bus, [r])
    keep[420 + 8 : 880 - 8, 60 + 8 : 300 - 8] = True  # the box's interior, off its lines and label
    keep &= ~inside
    assert np.array_equal(out[keep], bus[keep])
    assert changed(out, bus)[inside].mean() > 0.9


# pose


def pose_result(kpts=KEYPOINTS, low=LOW_CONF) -> dict:
    keypoints = [
        {"x": float(x), "y": float(y), "conf": 0.2 if i in low else 0.9}
        for i, (x, y) in enumerate(kpts)
    ]
    return {**DETECTIONS[1], "keypoints": keypoints}


def test_pose_draws_confident_keypoints_and_their_limbs(bus) -> None:
    nobody = {**DETECTIONS[2], "keypoints": [{"x": 700.0, "y": 500.0, "conf": 0.0}] * 17}
    results = [pose_result(), nobody]
    before = bus.copy()
    out = annotate(bus, results, "pose")
    check_common(bus, out, before)
    diff = changed(out, bus)
    for i, (x, y) in enumerate(KEYPOINTS):
        near = diff[y - 1 : y + 2, x - 1 : x + 2]
        if i in LOW_CONF or (x, y) == (0, 0):
            assert not near.any(), f"keypoint {i} is not drawn"
        else:
            assert near.all(), f"keypoint {i} is drawn"
    assert not diff[490:510, 690:710].any(), "conf-0 keypoints are not drawn"
    assert not diff[:20, :20].any(), "a keypoint at (0, 0) is not drawn"
    # The shown keypoints' colours, as Ultralytics' look has them: COCO-pose palette, swapped.
    # (Limbs are drawn over the keypoints: look just off the limbs.)
    assert tuple(out[536, 195].tolist()) == A._pose_color(A._KPT_COLOR_INDEX[5])
    assert tuple(out[474, 150].tolist()) == A._pose_color(A._KPT_COLOR_INDEX[0])
    # Limbs: the left shin (skeleton[0], colour 9) is drawn; the right forearm, to a
    # low-confidence wrist, is not.
    assert tuple(out[845, 187].tolist()) == A._pose_color(9)
    assert not diff[665:675, 78:82].any()
    keep = untouched(bus, results)
    assert np.array_equal(out[keep], bus[keep])


# obb


def obb_result(corners, cls=9, name="boat", conf=0.77) -> dict:
    xs, ys = [c[0] for c in corners], [c[1] for c in corners]
    obb = {f"{a}{i + 1}": float(c[j]) for i, c in enumerate(corners) for j, a in enumerate("xy")}
    return {**det(cls, name, conf, min(xs), min(ys), max(xs), max(ys)), "obb": obb}


def test_obb_draws_the_oriented_polygon_with_its_label_at_the_first_corner(bus) -> None:
    corners = [[300.5, 300.2], [600.7, 250.1], [650.3, 500.9], [350.2, 550.4]]
    tilted = [[100, 150], [250, 100], [260, 200], [110, 250]]
    results = [obb_result(corners), obb_result(tilted, cls=1, name="ship", conf=0.5)]
    before = bus.copy()
    out = annotate(bus, results, "obb")
    check_common(bus, out, before)
    diff = changed(out, bus)
    for r in results:
        o = r["obb"]
        pts = [(o[f"x{i}"], o[f"y{i}"]) for i in range(1, 5)]
        for (ax, ay), (bx, by) in zip(pts, pts[1:] + pts[:1], strict=True):
            assert all(diff[p] for p in edge_pixels(ax, ay, bx, by, bus.shape))
    # The axis-aligned box's corners off the polygon stay as they were: no box is drawn.
    assert not diff[255:262, 640:648].any() and not diff[540:548, 640:648].any()
    assert tuple(out[400, 320].tolist()) == PALETTE[9], "the left edge, (300, 300)-(350, 550)"
    w, h = label_size(bus, "boat 0.77")
    assert most_common_colour(out[300 - h + 1 : 300, 301 : 300 + w]) == PALETTE[9]
    keep = untouched(bus, results, polygons=True)
    assert np.array_equal(out[keep], bus[keep])


# classify

TOP5 = [
    {"class": 779, "name": "school bus", "confidence": 0.62},
    {"class": 654, "name": "minibus", "confidence": 0.2},
    {"class": 874, "name": "trolleybus", "confidence": 0.1},
    {"class": 705, "name": "passenger car", "confidence": 0.03},
    {"class": 817, "name": "sports car", "confidence": 0.01},
]


def test_classify_writes_the_top5_at_the_top_left(bus) -> None:
    before = bus.copy()
    out = annotate(bus, TOP5, "classify")
    check_common(bus, out, before)
    _, sf, tf = geometry(bus)
    x0 = round(bus.shape[0] * 0.03)
    lines, y = [], x0
    for r in TOP5:
        (w, h), base = cv2.getTextSize(f"{r['name']} {r['confidence']:.2f}", 0, sf, tf)
        lines.append((slice(y, y + h + base + tf), slice(x0, x0 + w + 1)))
        y += h + base + tf
    keep = np.ones(bus.shape[:2], bool)
    for rows, cols in lines:
        keep[rows.start : rows.stop + 1, cols.start : cols.stop + 2] = False
    assert np.array_equal(out[keep], bus[keep])
    diff = changed(out, bus)
    for rows, cols in lines:
        assert diff[rows, cols].mean() > 0.9, "a grey box behind each line"
        assert (out[rows, cols] == 255).all(-1).any(), "white text"
    grey = cv2.addWeighted(bus[x0, x0], 1 - 128 / 255, np.full(3, 64, np.uint8), 128 / 255, 0)
    assert np.array_equal(out[x0, x0], grey.ravel())


def test_classify_draws_at_most_five_lines(bus) -> None:
    six = [*TOP5, {"class": 1, "name": "goldfish", "confidence": 0.001}]
    assert np.array_equal(annotate(bus, six, "classify"), annotate(bus, TOP5, "classify"))


# encode


@pytest.mark.parametrize("media_type", ANNOTATED_TYPES)
def test_encode_decodes_back_to_the_same_size(bus, media_type) -> None:
    data = encode(bus, media_type)
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert decoded.shape == bus.shape
    decoded = cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)
    if media_type == "image/png":
        assert np.array_equal(decoded, bus), "PNG is lossless, in RGB order"
    else:
        assert np.abs(decoded.astype(np.int16) - bus).mean() < 4, "RGB order kept"
    magic = {"image/jpeg": b"\xff\xd8\xff", "image/png": b"\x89PNG\r\n\x1a\n"}
    if media_type == "image/webp":
        assert data[:4] == b"RIFF" and data[8:12] == b"WEBP"
    else:
        assert data.startswith(magic[media_type])


# robustness


ROBUST = {
    "outside": det(0, "person", 0.5, -500, -400, -100, -50),
    "beyond-bottom-right": det(2, "car", 0.5, 900, 1200, 1500, 1800),
    "straddling": det(1, "bicycle", 0.5, -100, 1000, 900, 1200),
    "huge": det(3, "motorcycle", 0.5, -1e12, -1e15, 1e18, 1e12),
    "zero-area": det(4, "airplane", 0.5, 300, 300, 300, 300),
    "inverted": det(6, "train", 0.5, 500, 600, 400, 500),
}


@pytest.mark.parametrize("task", ["detect", "segment", "pose", "obb"])
@pytest.mark.parametrize("case", sorted(ROBUST))
def test_odd_coordinates_never_raise(bus, task, case) -> None:
    r = dict(ROBUST[case])
    b = r["box"]
    corners = [(b["x1"], b["y1"]), (b["x2"], b["y1"]), (b["x2"], b["y2"]), (b["x1"], b["y2"])]
    r["segments"] = [list(c) for c in corners]
    r["keypoints"] = [{"x": b["x1"], "y": b["y2"], "conf": 0.9}] * 17
    r["obb"] = obb_result(corners)["obb"]
    out = annotate(bus, [r], task)
    assert out.shape == bus.shape and out.dtype == np.uint8


@pytest.mark.parametrize(
    ("task", "extra"),
    [
        ("segment", {"segments": []}),
        ("segment", {"segments": [[10.0, 10.0], [20.0, 20.0]]}),
        ("pose", {"keypoints": [{"x": 100.0, "y": 500.0, "conf": 0.0}] * 17}),
        ("pose", {"keypoints": []}),
        ("pose", {"keypoints": [{"x": 100.0, "y": 500.0, "conf": 0.9}] * 5}),
    ],
)
def test_empty_segments_and_keypoints(bus, task, extra) -> None:
    r = {**DETECTIONS[1], **extra}
    out = annotate(bus, [r], task)
    assert out.shape == bus.shape
    keep = untouched(bus, [r])
    if task == "pose" and len(extra["keypoints"]) == 5:
        assert changed(out, bus)[495:506, 95:106].any(), "non-COCO keypoints drawn, no limbs"
    elif task == "pose":
        keep[398 + 8 : 902 - 8, 48 + 8 : 245 - 8] = True  # nothing drawn inside the box
    assert np.array_equal(out[keep], bus[keep])


@pytest.mark.parametrize("task", ["detect", "segment", "pose", "obb", "classify"])
def test_no_results_is_an_unchanged_copy(bus, task) -> None:
    out = annotate(bus, [], task)
    assert np.array_equal(out, bus) and out is not bus


def test_unknown_task_is_refused(bus) -> None:
    with pytest.raises(ValueError):
        annotate(bus, DETECTIONS, "depth")


def test_a_24_megapixel_mask_stays_small_in_memory() -> None:
    big = np.full((4000, 6000, 3), 90, np.uint8)
    cover = [[-10.0, -10.0], [6010.0, -5.0], [6005.0, 4010.0], [-5.0, 4005.0]]
    r = {**det(0, "person", 0.9, 0, 0, 6000, 4000), "segments": cover}
    huge = {
        **det(1, "bicycle", 0.5, -1e9, 10, 1e9, 3000),
        "segments": [[-1e9, 0], [1e9, 0], [0, 1e9]],
    }
    tracemalloc.start()
    try:
        out = annotate(big, [r, huge], "segment")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert out.shape == big.shape
    assert peak < big.nbytes * 1.25, f"peak {peak / 2**20:.0f} MiB: one copy and small bands"
    # Both masks cover the middle of the image: blended with one colour, then the other.
    once = cv2.addWeighted(big[:1, :1], 0.5, np.uint8([[PALETTE[0]]]), 0.5, 0)
    twice = cv2.addWeighted(once, 0.5, np.uint8([[PALETTE[1]]]), 0.5, 0)
    assert (out[2000, 1000:5000] == twice[0, 0]).all()


def test_importing_the_module_loads_neither_torch_nor_ultralytics() -> None:
    code = "import sys, shared.annotate; sys.exit(bool({'torch', 'ultralytics'} & {*sys.modules}))"
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0
