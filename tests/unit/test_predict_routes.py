"""The predict path in-process (TestClient over stand-in handles, no Ray): several images, video,
NDJSON, annotated images, and what each costs against a key's limit.

The stand-in model finds one person at (10, 20, 110, 220) of whatever array it gets; what needs
the real model (each entry equal to its single-image answer) is in tests/test_video_and_batches.py.
"""

from __future__ import annotations

import asyncio
import io
import json

import cv2
import numpy as np
import pytest
from PIL import Image

from deployments.config import EndpointArgs
from deployments.ingress import IngressApp
from shared.assets import example_image
from tests.fakes import FakeModel
from tests.samples import rotated_with_exif
from tests.unit import test_ingress_routes as routes
from tests.unit.test_ingress_routes import (
    LIMIT,
    PREFIX,
    assert_error,
    auth,
    client_for,
    dedicated_app,
    shared_app,
)
from tests.videos import bus_video

# The route tests' own fixtures: a key store with one key, bus.jpg, every body checked.
store, key, bus, checked_responses = routes.store, routes.key, routes.bus, routes.checked_responses

SHARED = "/api/models/yolo26n/predict"
DEDICATED = f"{PREFIX}/predict"


@pytest.fixture(scope="module")
def zidane() -> bytes:
    return example_image("zidane.jpg").read_bytes()


def files(*images: bytes) -> list[tuple[str, tuple[str, bytes]]]:
    return [("file", (f"image{i}.jpg", data)) for i, data in enumerate(images)]


def test_several_images_answer_in_the_order_sent(store, key, bus, zidane) -> None:
    client, model = shared_app(store)
    r = client.post(SHARED, headers=auth(key), files=files(bus, zidane, bus))
    assert r.status_code == 200, r.text
    body = r.json()
    assert [image["shape"] for image in body["images"]] == [[1080, 810], [720, 1280], [1080, 810]]
    assert body["metadata"]["imageCount"] == 3
    # Each letterbox-resized for imgsz 640 (shared/letterbox.py).
    assert sorted(shape for _, shape in model.seen) == sorted(
        [(640, 480, 3), (360, 640, 3), (640, 480, 3)]
    )
    # Each image counts as one request against the key's limit.
    assert r.headers["X-RateLimit-Remaining"] == str(LIMIT - 3)


def test_images_that_do_not_fit_the_limit_whole_are_a_429_that_counts_nothing(
    store, key, bus
) -> None:
    client, model = shared_app(store)
    one = client.post(SHARED, headers=auth(key), files=files(bus))
    assert one.headers["X-RateLimit-Remaining"] == str(LIMIT - 1)
    refused = client.post(SHARED, headers=auth(key), files=files(bus, bus, bus))
    assert_error(refused, 429, "3 images count as 3 requests")
    assert int(refused.headers["Retry-After"]) >= 1
    assert len(model.seen) == 1  # the refused request reached no model
    two = client.post(SHARED, headers=auth(key), files=files(bus, bus))
    assert two.status_code == 200 and two.headers["X-RateLimit-Remaining"] == "0"


def test_at_most_16_images_and_their_sum_within_the_limit(store, key) -> None:
    client, _ = dedicated_app(store)
    tiny = io.BytesIO()
    Image.new("RGB", (32, 32)).save(tiny, "PNG")
    r = client.post(DEDICATED, headers=auth(key), files=files(*[tiny.getvalue()] * 17))
    assert_error(r, 400, "at most 16")
    client, _ = dedicated_app(store, max_upload_mb=1)
    half = np.random.default_rng(0).integers(0, 255, (600, 600, 3), np.uint8)
    png = cv2.imencode(".png", half)[1].tobytes()  # ~1 MB of noise each
    assert len(png) > 512 * 1024
    assert_error(client.post(DEDICATED, headers=auth(key), files=files(png, png)), 413, "1 MB")


def test_ndjson_streams_one_line_per_image_then_the_metadata(store, key, bus, zidane) -> None:
    client, _ = dedicated_app(store)
    r = client.post(
        DEDICATED,
        headers={**auth(key), "Accept": "application/x-ndjson"},
        files=files(bus, zidane),
    )
    assert r.status_code == 200 and r.headers["content-type"] == "application/x-ndjson"
    lines = [json.loads(line) for line in r.text.splitlines()]
    assert [line.get("shape") for line in lines[:2]] == [[1080, 810], [720, 1280]]
    assert lines[2]["metadata"]["imageCount"] == 2 and len(lines) == 3


def test_a_video_on_the_shared_route_is_a_400_pointing_to_dedicated_endpoints(store, key) -> None:
    client, model = shared_app(store)
    r = client.post(SHARED, headers=auth(key), files={"file": ("v.mp4", bus_video("mp4"))})
    assert_error(r, 400, "Video is supported on dedicated endpoints")
    assert model.seen == []


def test_a_video_answers_one_entry_per_processed_frame(store, key) -> None:
    client, model = dedicated_app(store)
    video = bus_video("mp4", frames=7, fps=10, size=(320, 240))
    r = client.post(
        DEDICATED, headers=auth(key), files={"file": ("v.mp4", video)}, data={"vid_stride": "3"}
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert [image["frame"] for image in body["images"]] == [0, 3, 6]
    assert [image["timestamp"] for image in body["images"]] == pytest.approx([0.0, 0.3, 0.6])
    assert all(image["shape"] == [240, 320] for image in body["images"])
    assert body["metadata"]["imageCount"] == 3
    assert body["metadata"]["video"]["vidStride"] == 3
    assert [shape for _, shape in model.seen] == [(240, 320, 3)] * 3


def test_a_video_over_the_frame_limit_is_a_400(store, key) -> None:
    client, _ = dedicated_app(store, max_video_frames=2)
    video = bus_video("mp4", frames=5, size=(320, 240))
    r = client.post(DEDICATED, headers=auth(key), files={"file": ("v.mp4", video)})
    assert_error(r, 400, "Video too long")


def test_a_video_streams_as_ndjson(store, key) -> None:
    client, _ = dedicated_app(store)
    video = bus_video("webm", frames=4, size=(320, 240))
    r = client.post(
        DEDICATED,
        headers={**auth(key), "Accept": "application/x-ndjson"},
        files={"file": ("v.webm", video)},
    )
    lines = [json.loads(line) for line in r.text.splitlines()]
    assert [line.get("frame") for line in lines[:-1]] == [0, 1, 2, 3]
    assert lines[-1]["metadata"]["imageCount"] == 4


def test_a_corrupt_video_is_a_400_even_when_streaming(store, key) -> None:
    client, _ = dedicated_app(store)
    video = bus_video("mp4", frames=4, size=(320, 240))
    broken = video[:64] + b"\x00" * 256  # a real header, then nothing a demuxer can read
    for accept in ("application/json", "application/x-ndjson"):
        r = client.post(
            DEDICATED, headers={**auth(key), "Accept": accept}, files={"file": ("v.mp4", broken)}
        )
        assert_error(r, 400, "video")


@pytest.mark.parametrize("media_type", ["image/jpeg", "image/png", "image/webp"])
def test_an_annotated_image_has_the_inputs_size_and_the_box_drawn(
    store, key, bus, media_type
) -> None:
    client, _ = dedicated_app(store)
    r = client.post(DEDICATED, headers={**auth(key), "Accept": media_type}, files=files(bus))
    assert r.status_code == 200 and r.headers["content-type"] == media_type
    drawn = cv2.imdecode(np.frombuffer(r.content, np.uint8), cv2.IMREAD_COLOR)
    original = cv2.imdecode(np.frombuffer(bus, np.uint8), cv2.IMREAD_COLOR)
    assert drawn.shape == original.shape
    # The stand-in's box, (10, 20)-(110, 220) of the 640-pixel array the model got, is drawn
    # at 1080 / 640 times that in the original: its left edge at x = 16.9, from y = 33.8 down.
    edge = np.abs(drawn[60:340, 16:19].astype(int) - original[60:340, 16:19]).mean()
    away = np.abs(drawn[600:900, 400:700].astype(int) - original[600:900, 400:700]).mean()
    assert edge > 40 and away < (3 if media_type == "image/png" else 12)


def test_annotated_output_is_for_one_image(store, key, bus) -> None:
    client, _ = dedicated_app(store)
    accept = {**auth(key), "Accept": "image/png"}
    assert_error(client.post(DEDICATED, headers=accept, files=files(bus, bus)), 406, "one image")
    video = bus_video("mp4", frames=2, size=(320, 240))
    r = client.post(DEDICATED, headers=accept, files={"file": ("v.mp4", video)})
    assert_error(r, 406, "video")


def test_an_accept_nothing_offered_is_a_406(store, key, bus) -> None:
    client, model = dedicated_app(store)
    r = client.post(DEDICATED, headers={**auth(key), "Accept": "text/plain"}, files=files(bus))
    assert_error(r, 406, "Not acceptable")
    assert model.seen == []


def test_an_annotated_image_keeps_the_upright_orientation(store, key) -> None:
    # Stored turned on its side with EXIF orientation 6: upright it is the bus, 810 x 1080.
    client, _ = dedicated_app(store)
    rotated = rotated_with_exif("PNG")
    r = client.post(DEDICATED, headers={**auth(key), "Accept": "image/png"}, files=files(rotated))
    assert r.status_code == 200, r.text
    assert Image.open(io.BytesIO(r.content)).size == (810, 1080)


def test_an_annotated_answer_carries_the_limit_headers(store, key, bus) -> None:
    client, _ = shared_app(store)
    r = client.post(SHARED, headers={**auth(key), "Accept": "image/jpeg"}, files=files(bus))
    assert r.status_code == 200 and r.headers["X-RateLimit-Remaining"] == str(LIMIT - 1)


def test_a_406_for_several_annotated_images_counts_nothing(store, key, bus) -> None:
    client, model = shared_app(store)
    refused = client.post(
        SHARED, headers={**auth(key), "Accept": "image/jpeg"}, files=files(bus, bus)
    )
    assert_error(refused, 406, "one image")
    # The admission's own count stays (as for any 4xx after it), the second image's does not.
    r = client.post(SHARED, headers=auth(key), files=files(bus))
    assert r.headers["X-RateLimit-Remaining"] == str(LIMIT - 2) and len(model.seen) == 1


def test_ndjson_that_fails_at_once_gets_its_real_status(store, key) -> None:
    client, _ = dedicated_app(store)
    ndjson = {**auth(key), "Accept": "application/x-ndjson"}
    r = client.post(DEDICATED, headers=ndjson, files=files(b"not an image at all"))
    assert_error(r, 400, "Invalid image")


def test_videos_past_the_replicas_slots_are_a_503(store, key) -> None:
    config = EndpointArgs(name="yolo26n", model="yolo26n", keys_file=str(store), limiter_app=None)
    ingress = IngressApp(FakeModel(), config)  # type: ignore[arg-type]
    ingress.video_slots = asyncio.Semaphore(0)  # every slot taken
    client = client_for(ingress, root_path=PREFIX)
    video = bus_video("mp4", frames=2, size=(160, 120))
    r = client.post(DEDICATED, headers=auth(key), files={"file": ("v.mp4", video)})
    assert_error(r, 503, "videos are being processed")
    assert r.headers["Retry-After"] == "5"
