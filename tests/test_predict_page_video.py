"""The Predict page's video and annotated-download features in a real browser (Debian's Chromium
via Playwright) against real Serve, real weights and real video files (tests/videos.py).

The truth for a video is the NDJSON answer the page itself received, read from Playwright's
response; the page's overlay and results must show the entry of the frame the player is on.
Chromium cannot play MPEG-4 part 2 (OpenCV's `mp4v`), so the videos played here are WebM (VP8).
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pytest
from PIL import Image

from tests import test_predict_page as predict_page
from tests.videos import bus_video

# The browser and the page helper of tests/test_predict_page.py: one Chromium per module, one
# fresh context per page, each failing its test on a script error or a CSP violation.
browser = predict_page.browser
open_page = predict_page.open_page
PredictPage = predict_page.PredictPage
is_predict = predict_page.is_predict
pytestmark = predict_page.pytestmark

ENDPOINT = "/endpoints/yolo26n"
FRAMES, FPS = 12, 10
VIDEO_EXTENSIONS = [".asf", ".avi", ".gif", ".m4v", ".mkv", ".mov", ".mp4", ".mpeg", ".mpg"]
VIDEO_EXTENSIONS += [".ts", ".webm", ".wmv"]
STREAM_TIMEOUT_MS = 180_000  # a whole video through the model on a shared CPU


@pytest.fixture(scope="module")
def webm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("videos") / "bus.webm"
    path.write_bytes(bus_video("webm", frames=FRAMES, fps=FPS, size=(640, 480)))
    return path


def stream_video(tab: PredictPage, action) -> tuple[list[dict], dict]:
    """Do `action`, wait for the page to have read the whole NDJSON answer it causes, and
    return that answer's entries and metadata (what the page was sent)."""
    with tab.page.expect_response(lambda r: is_predict(r.request), timeout=60_000) as info:
        action()
    response = info.value
    assert response.status == 200
    assert response.request.headers.get("accept") == "application/x-ndjson"
    assert response.headers["content-type"].startswith("application/x-ndjson")
    tab.page.wait_for_selector("#app[data-state=done]", timeout=STREAM_TIMEOUT_MS)
    response.finished()
    lines = [json.loads(line) for line in response.text().splitlines() if line.strip()]
    *entries, last = lines
    assert "metadata" in last, last
    return entries, last["metadata"]


def overlay_box_lefts(tab: PredictPage) -> list[float]:
    xs = tab.page.eval_on_selector_all(
        "#overlay rect.box", "els => els.map(e => e.getAttribute('x'))"
    )
    return sorted(float(x) for x in xs)


def truth_box_lefts(entry: dict) -> list[float]:
    return sorted(round(r["box"]["x1"], 1) for r in entry["results"])


def assert_shows_frame(tab: PredictPage, entry: dict) -> None:
    """The overlay and the results card show this entry (and only it)."""
    tab.page.wait_for_selector(f"#overlay[data-frame='{entry['frame']}']", timeout=30_000)
    results = entry["results"]
    assert tab.count("#overlay g.det") == len(results)
    assert tab.count("#detections li") == len(results)
    assert tab.page.locator("#det-count").text_content() == str(len(results))
    shown = overlay_box_lefts(tab)
    assert shown == pytest.approx(truth_box_lefts(entry), abs=0.06)
    assert tab.page.locator("#speed-meta").text_content().startswith(f"Frame {entry['frame']} ")


def middle_person_left(entry: dict) -> float:
    """The left edge of the second person from the left in the bus video (the one fully in the
    picture throughout): the person box furthest right among those left of the middle."""
    lefts = [
        r["box"]["x1"] for r in entry["results"] if r["name"] == "person" and r["box"]["x2"] < 400
    ]
    assert lefts, entry["results"]
    return max(lefts)


def seek(tab: PredictPage, seconds: float) -> None:
    tab.page.evaluate(f"document.getElementById('clip').currentTime = {seconds}")


def test_endpoint_page_plays_a_video_with_each_frames_overlay(server, open_page, webm) -> None:
    tab = open_page(server.key)
    tab.open(f"{ENDPOINT}/")
    tab.page.wait_for_selector("#model-task:text('detect')")
    accept = tab.page.get_attribute("#file-input", "accept").split(",")
    assert set(VIDEO_EXTENSIONS) <= set(accept) and {".jpg", ".png", "image/*"} <= set(accept)
    assert not tab.page.locator("#vid-stride-param").is_visible()  # for videos only

    def upload() -> None:
        tab.page.set_input_files("#file-input", str(webm))

    entries, metadata = stream_video(tab, upload)
    assert urlparse(tab.predicts[-1].url).path == f"{ENDPOINT}/predict"
    sent = {"conf": "0.25", "iou": "0.70", "imgsz": "640", "vid_stride": "1"}
    assert tab.sent_forms()[-1] == sent
    assert [e["frame"] for e in entries] == list(range(FRAMES))
    assert metadata["imageCount"] == FRAMES and metadata["video"]["vidStride"] == 1
    progress = tab.page.locator("#video-progress").text_content()
    assert progress.startswith(f"{FRAMES} / {FRAMES} frames"), progress
    assert json.loads(tab.page.locator("#json").text_content()) == {
        "images": entries,
        "metadata": metadata,
    }

    # The local file plays in a <video>, with the overlay laid exactly over it.
    clip = tab.page.locator("#clip")
    assert clip.is_visible() and not tab.page.locator("#preview").is_visible()
    assert clip.evaluate("v => [v.controls, v.muted, v.playsInline]") == [True, True, True]
    tab.page.wait_for_function(
        "() => document.getElementById('clip').readyState >= 2", timeout=30_000
    )
    assert clip.evaluate("v => v.duration") == pytest.approx(FRAMES / FPS, abs=0.11)
    assert tab.page.get_attribute("#overlay", "viewBox") == "0 0 640 480"
    video_box, overlay_box = clip.bounding_box(), tab.page.locator("#overlay").bounding_box()
    for side in ("x", "y", "width", "height"):
        assert overlay_box[side] == pytest.approx(video_box[side], abs=0.5), side
    assert tab.page.locator("#download-annotated").is_disabled()  # images only

    # At time 0: frame 0's boxes. Seeking to between frames 8 and 9: frame 8's, further right.
    assert_shows_frame(tab, entries[0])
    assert entries[0]["results"], "the bus video's first frame has detections"
    seek(tab, 0.85)
    assert_shows_frame(tab, entries[8])
    assert middle_person_left(entries[8]) > middle_person_left(entries[0]) + 20
    seek(tab, 0.35)
    assert_shows_frame(tab, entries[3])

    # The stride is a parameter like the others: a change runs the video again, in one request.
    assert tab.page.locator("#vid-stride-param").is_visible()

    def stride_three() -> None:
        tab.page.focus("#vid-stride")
        tab.page.keyboard.press("ArrowRight")
        tab.page.keyboard.press("ArrowRight")

    before = len(tab.predicts)
    entries, metadata = stream_video(tab, stride_three)
    assert len(tab.predicts) == before + 1
    assert tab.sent_forms()[-1]["vid_stride"] == "3"
    assert [e["frame"] for e in entries] == [0, 3, 6, 9]
    assert metadata["video"]["vidStride"] == 3
    assert tab.page.locator("#video-progress").text_content().startswith("4 / 4 frames")
    seek(tab, 0.55)  # frames 3 (0.3 s) and 6 (0.6 s) processed: 0.55 s shows frame 3's
    assert_shows_frame(tab, entries[1])


def test_endpoint_page_stops_a_video_over_the_limit(server, open_page, tmp_path: Path) -> None:
    tab = open_page(server.key)
    tab.open(f"{ENDPOINT}/")
    big = tmp_path / "long.mp4"
    with big.open("wb") as file:
        file.truncate(100 * 1024 * 1024 + 1)  # sparse: nothing is really written
    tab.page.set_input_files("#file-input", str(big))
    message = tab.page.locator("#message-text").text_content()
    assert "the limit for videos is 100 MB" in message
    assert tab.predicts == []


def test_shared_page_refuses_a_video_with_a_readable_message(server, open_page, webm) -> None:
    tab = open_page(server.key)
    tab.open("/")
    tab.wait_models()
    assert ".webm" not in tab.page.get_attribute("#file-input", "accept").split(",")
    tab.page.set_input_files("#file-input", str(webm))
    message = tab.page.locator("#message")
    message.wait_for()
    assert "Video is supported on dedicated endpoints" in message.text_content()
    assert tab.predicts == []  # said before sending: no request against the key's limit


@pytest.mark.parametrize("prefix", ["", ENDPOINT])
def test_download_annotated_image(server, open_page, bus: Path, prefix: str) -> None:
    tab = open_page(server.key)
    tab.open(f"{prefix}/")
    if not prefix:
        tab.wait_models()
    download = tab.page.locator("#download-annotated")
    assert download.is_disabled()  # no image result yet

    def upload() -> None:
        tab.page.set_input_files("#file-input", str(bus))

    tab.infer(upload)
    tab.page.wait_for_selector("#download-annotated:not([disabled])")
    before = len(tab.predicts)
    with tab.page.expect_download(timeout=60_000) as info:
        download.click()
    saved = info.value
    assert saved.failure() is None
    assert saved.suggested_filename == "bus-annotated.png"
    request = tab.predicts[before]
    assert request.headers.get("accept") == "image/png"
    assert urlparse(request.url).path == (
        f"{prefix}/predict" if prefix else "/api/models/yolo26n/predict"
    )
    assert tab.sent_forms()[-1] == {"conf": "0.25", "iou": "0.70", "imgsz": "640"}

    data = Path(saved.path()).read_bytes()
    with Image.open(io.BytesIO(data)) as annotated:
        assert annotated.format == "PNG"
        assert annotated.size == (810, 1080)  # bus.jpg's own size
        drawn = np.asarray(annotated.convert("RGB"))
    with Image.open(bus) as original:
        assert original.size == (810, 1080)
        plain = np.asarray(original.convert("RGB"))
    assert not np.array_equal(drawn, plain)  # the results are drawn on it
    tab.page.wait_for_selector("#download-annotated:not([disabled])")
