"""Video on dedicated endpoints, several images per request and annotated images, on the real
Ray Serve with real weights: each entry must equal the single-image answer of what it holds.

Videos are written here from bus.jpg frames (tests/videos.py); `decoded_frames` is how an
independent decoder sees them, so each processed frame can be sent on its own as a lossless
PNG and the two answers compared.
"""

from __future__ import annotations

import io
import json
import socket
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import requests
from PIL import Image
from ultralytics_platform import Platform

from tests.conftest import RATE_LIMIT_WINDOW_S
from tests.live_deployments import new_key
from tests.test_metrics import scrape, total
from tests.videos import CONTAINERS, bus_video, decoded_frames

ENDPOINT = "/endpoints/yolo26n/predict"
FORWARDED = "/api/deployments/me/yolo26n/predict"
BOX_TOL_PX = 1.0  # batched and single inference may differ in the last float bits
CONF_TOL = 0.01
LABEL_CHAR_PX = 24  # wider than a character of a label drawn on a 1080 px image


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def post(server, path: str, files, data=None, headers=None, **kwargs) -> requests.Response:
    return requests.post(
        server.url(path),
        headers={**server.headers(), **(headers or {})},
        files=files,
        data=data or {},
        timeout=300,
        **kwargs,
    )


def assert_same_results(got: list[dict], expected: list[dict]) -> None:
    assert [r["class"] for r in got] == [r["class"] for r in expected], (got, expected)
    for a, b in zip(got, expected, strict=True):
        assert abs(a["confidence"] - b["confidence"]) <= CONF_TOL
        for k in ("x1", "y1", "x2", "y2"):
            assert abs(a["box"][k] - b["box"][k]) <= BOX_TOL_PX, (k, a["box"], b["box"])


@pytest.fixture(scope="module")
def video() -> bytes:
    # OpenCV's mp4v writer, as the issue has it: 12 frames of the bus moving right.
    return bus_video("mp4", frames=12, fps=10, size=(640, 480))


@pytest.mark.parametrize("path", [ENDPOINT, FORWARDED])
def test_each_frame_equals_a_single_image_predict_of_that_frame(
    server, model_stats, video: bytes, path: str
) -> None:
    before = model_stats("yolo26n")["batch_sizes"]
    r = post(server, path, {"file": ("bus.mp4", video)}, {"vid_stride": "2"})
    assert r.status_code == 200, r.text
    body = r.json()
    images = body["images"]
    assert [image["frame"] for image in images] == [0, 2, 4, 6, 8, 10]
    assert [image["timestamp"] for image in images] == pytest.approx([0, 0.2, 0.4, 0.6, 0.8, 1.0])
    assert body["metadata"]["imageCount"] == 6
    assert body["metadata"]["video"]["vidStride"] == 2
    frames = decoded_frames(video)
    for image in images:
        assert image["shape"] == [480, 640] and set(image["speed"]) == {
            "preprocess",
            "inference",
            "postprocess",
        }
        single = post(server, ENDPOINT, {"file": ("frame.png", png(frames[image["frame"]]))})
        assert single.status_code == 200, single.text
        assert image["results"], "the bus and its passengers are found in every frame"
        assert_same_results(image["results"], single.json()["images"][0]["results"])
    # The frames went to the model together: its batches filled.
    after = model_stats("yolo26n")["batch_sizes"]
    grown = {size: after.get(size, 0) - before.get(size, 0) for size in after}
    assert max(size for size, n in grown.items() if n > 0) > 1, grown


@pytest.mark.parametrize("container", CONTAINERS)
def test_every_container_is_accepted(server, container: str) -> None:
    video = bus_video(container, frames=3, fps=10, size=(320, 240))
    r = post(server, ENDPOINT, {"file": (f"bus.{container}", video)})
    assert r.status_code == 200, r.text
    assert [image["frame"] for image in r.json()["images"]] == [0, 1, 2]


def test_ndjson_streams_each_frame_then_the_metadata(server, video: bytes) -> None:
    with post(
        server,
        ENDPOINT,
        {"file": ("bus.mp4", video)},
        {"vid_stride": "3"},
        headers={"Accept": "application/x-ndjson"},
        stream=True,
    ) as r:
        assert r.status_code == 200 and r.headers["content-type"] == "application/x-ndjson"
        lines = [json.loads(line) for line in r.iter_lines() if line]
    assert [line["frame"] for line in lines[:-1]] == [0, 3, 6, 9]
    assert lines[-1]["metadata"]["imageCount"] == 4


def test_a_client_that_disconnects_stops_the_decoding(server) -> None:
    long_video = bus_video("mkv", frames=400, fps=25, size=(320, 240))
    metrics_url = f"http://127.0.0.1:{server.ports.metrics}/metrics"
    start = total(scrape(metrics_url), "ray_yolo_video_frames_total")
    boundary = "disconnectboundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="v.mkv"\r\n'
        "Content-Type: video/x-matroska\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    body = head + long_video + tail
    with socket.create_connection(("127.0.0.1", server.ports.http), timeout=60) as sock:
        request = (
            f"POST {ENDPOINT} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {server.key}\r\nAccept: application/x-ndjson\r\n"
            f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        sock.sendall(request + body)
        received = b""
        while received.count(b"\n{") < 3:  # the headers, then a few frames' lines
            chunk = sock.recv(65536)
            assert chunk, received
            received += chunk
    # Gone after a few frames: the decoding stops, far short of 400 frames. Ray exports
    # counters every few seconds; wait until the count has stopped moving.
    deadline = time.monotonic() + 60
    seen = -1.0
    while time.monotonic() < deadline:
        time.sleep(12)
        now = total(scrape(metrics_url), "ray_yolo_video_frames_total") - start
        if now == seen:
            break
        seen = now
    assert 3 <= seen < 200, seen


def test_a_video_on_the_shared_route_is_a_400(server, video: bytes) -> None:
    r = post(server, "/api/models/yolo26n/predict", {"file": ("bus.mp4", video)})
    assert r.status_code == 400
    assert "Video is supported on dedicated endpoints" in r.json()["error"]


def test_a_video_over_the_image_limit_fits_the_video_limit(server) -> None:
    # Noise compresses badly: a few dozen MJPEG frames are over the 10 MB image limit.
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (480, 640, 3), np.uint8) for _ in range(4)]
    handle = cv2.VideoWriter()
    path = Path(server.config_path).parent / "noise.avi"
    handle.open(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 10.0, (640, 480))
    for i in range(60):
        handle.write(frames[i % 4])
    handle.release()
    data = path.read_bytes()
    assert len(data) > 11 * 1024 * 1024, len(data)
    r = post(server, ENDPOINT, {"file": ("noise.avi", data)}, {"vid_stride": "30"})
    assert r.status_code == 200, r.text
    assert [image["frame"] for image in r.json()["images"]] == [0, 30]
    shared = post(server, "/api/models/yolo26n/predict", {"file": ("noise.avi", data)})
    assert shared.status_code == 413


# -- several images ----------------------------------------------------------------------------
def test_several_images_each_equal_their_single_answer(server, bus: Path, zidane: Path) -> None:
    paths = [bus, zidane, bus]
    files = [("file", (p.name, p.read_bytes())) for p in paths]
    r = post(server, "/api/models/yolo26n/predict", files)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["metadata"]["imageCount"] == 3
    for path, image in zip(paths, body["images"], strict=True):
        single = server.predict("yolo26n", path).json()["images"][0]
        assert image["shape"] == single["shape"]
        assert_same_results(image["results"], single["results"])


def test_each_image_counts_against_the_limit_and_a_misfit_counts_nothing(
    server, tiny_png: bytes
) -> None:
    key = new_key(server, "images")
    auth = {"Authorization": f"Bearer {key}"}
    # Tiny images: the whole sequence must run well inside one 10 s window.
    image = ("file", ("tiny.png", tiny_png))

    def send(n: int) -> requests.Response:
        return requests.post(
            server.url("/api/models/yolo26n/predict"), headers=auth, files=[image] * n, timeout=120
        )

    first = send(1)
    assert first.status_code == 200, first.text
    remaining = int(first.headers["X-RateLimit-Remaining"])
    two = send(2)
    assert two.status_code == 200 and int(two.headers["X-RateLimit-Remaining"]) == remaining - 2
    most = send(remaining - 3)  # all but one of the rest (at most 16 images a request)
    assert most.status_code == 200 and most.headers["X-RateLimit-Remaining"] == "1"
    refused = send(2)
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
    assert "2 images count as 2 requests" in refused.json()["error"]
    assert refused.headers["X-RateLimit-Remaining"] == "1"  # it counted nothing
    fits = send(1)
    assert fits.status_code == 200 and fits.headers["X-RateLimit-Remaining"] == "0"
    assert RATE_LIMIT_WINDOW_S  # the window rolls on its own: nothing to restore


# -- annotated images ----------------------------------------------------------------------------
def away_from(results: list[dict], shape: tuple[int, int], margin: int) -> np.ndarray:
    """True where no result reaches: its box, and the keypoints it draws (which may lie
    outside it) with the limbs between them, widened by `margin` for lines and labels."""
    mask = np.ones(shape, bool)
    for result in results:
        box = result["box"]
        xs, ys = [box["x1"], box["x2"]], [box["y1"], box["y2"]]
        for point in result.get("keypoints", ()):
            if point["conf"] >= 0.25:  # what Ultralytics (and shared/annotate.py) draws
                xs.append(point["x"])
                ys.append(point["y"])
        x1, y1 = max(0, int(min(xs)) - margin), max(0, int(min(ys)) - margin)
        x2, y2 = int(max(xs)) + margin, int(max(ys)) + margin
        mask[y1:y2, x1:x2] = False
        # Its label, `name 0.87` above the box, may be wider than the box.
        label = len(result["name"]) + 5
        top, left = max(0, int(box["y1"]) - margin), max(0, int(box["x1"]) - margin)
        mask[top : int(box["y1"]) + margin, left : int(box["x1"]) + LABEL_CHAR_PX * label] = False
    return mask


@pytest.mark.parametrize(
    ("path", "model"),
    [
        (ENDPOINT, "yolo26n"),
        ("/endpoints/yolo26n-seg/predict", "yolo26n-seg"),
        ("/api/models/yolo11n-pose/predict", "yolo11n-pose"),
    ],
)
def test_an_annotated_image_is_the_input_with_its_results_drawn(
    server, bus: Path, path: str, model: str
) -> None:
    data = bus.read_bytes()
    answer = post(server, path, {"file": ("bus.jpg", data)}).json()["images"][0]["results"]
    assert answer
    r = post(server, path, {"file": ("bus.jpg", data)}, headers={"Accept": "image/png"})
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    drawn = np.asarray(Image.open(io.BytesIO(r.content)).convert("RGB")).astype(int)
    original = cv2.cvtColor(cv2.imread(str(bus)), cv2.COLOR_BGR2RGB).astype(int)
    assert drawn.shape == original.shape  # the original resolution and orientation
    changed = np.abs(drawn - original).sum(axis=2) > 0
    for result in answer:
        box = result["box"]
        x1, y1, x2, y2 = (round(box[k]) for k in ("x1", "y1", "x2", "y2"))
        x1, x2 = max(x1, 0), min(x2, original.shape[1] - 1)
        y2 = min(y2, original.shape[0] - 1)
        edge = changed[max(y1, 0) : y2, max(x1 - 1, 0) : x1 + 2]
        assert edge.mean() > 0.8, (result["name"], edge.mean())
    away = away_from(answer, original.shape[:2], margin=40)
    assert away.any() and not changed[away].any()


def test_the_official_sdk_sends_a_video_to_a_deployment(server, video: bytes) -> None:
    client = Platform(api_key=server.key, base_url=server.base_url, timeout=120)
    body = client.deployments.predict(
        "me", "yolo26n", body={"file": ("bus.mp4", video), "vid_stride": 6}
    )
    assert [image["frame"] for image in body["images"]] == [0, 6]
    assert body["metadata"]["imageCount"] == 2
