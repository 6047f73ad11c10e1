"""Prometheus metrics, end to end: known requests in, exact counter and histogram moves out.

The numbers are read the way Prometheus reads them: Ray's metrics port scraped over HTTP and
parsed with prometheus_client's text parser. Ray exports on a timer, so every check polls with
a deadline, and each baseline is taken only once our series have stopped moving (an earlier
test's requests may still be on their way to the exporter).
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from deployments.metrics import ALL_METRICS
from shared import keys
from shared.registry import PROJECT_ROOT
from tests.promql import dashboard_exprs, exported_names, metric_names
from tests.videos import bus_video

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
Expectation = tuple[str, Mapping[str, str], float]

SHARED_ROUTE = "/api/models/{model_id}/predict"
DEDICATED_ROUTE = "/predict"
WRONG_KEY = "ul_" + "0" * 40
# Longer than Ray's export period (10 s), so a scrape unchanged that long has nothing in flight.
QUIET_S = 12.0
DEADLINE_S = 90.0


def scrape(url: str) -> Samples:
    text = requests.get(url, timeout=10).text
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def total(samples: Samples, name: str, **labels: str) -> float:
    """Sum over every series of `name` whose labels include `labels` (all replicas, all nodes)."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


def settled_scrape(url: str) -> Samples:
    names = exported_names()
    deadline = time.monotonic() + DEADLINE_S

    def ours() -> Samples:
        return {k: v for k, v in scrape(url).items() if k[0] in names}

    last = ours()
    quiet_since = time.monotonic()
    while time.monotonic() - quiet_since < QUIET_S:
        assert time.monotonic() < deadline, "our metrics never stopped changing"
        time.sleep(1)
        current = ours()
        if current != last:
            last, quiet_since = current, time.monotonic()
    return last


def delta(before: Samples, after: Samples, name: str, labels: Mapping[str, str]) -> float:
    return total(after, name, **labels) - total(before, name, **labels)


def assert_deltas(url: str, before: Samples, expected: list[Expectation]) -> Samples:
    """Poll until every expected move has arrived (or the deadline), then demand exact moves:
    a counter that moved too far fails as surely as one that did not move."""
    deadline = time.monotonic() + DEADLINE_S
    while True:
        after = scrape(url)
        if all(delta(before, after, n, ls) >= want for n, ls, want in expected):
            break
        if time.monotonic() > deadline:
            break
        time.sleep(1)
    wrong = [
        f"{name}{dict(labels)}: moved {delta(before, after, name, labels)}, expected {want}"
        for name, labels, want in expected
        if delta(before, after, name, labels) != pytest.approx(want)
    ]
    assert not wrong, "\n".join(wrong)
    return after


def post(url: str, headers: dict[str, str], image: bytes | None) -> tuple[requests.Response, int]:
    """POST a predict request; returns the response and the exact body length sent."""
    files = {"file": ("image", image)} if image is not None else None
    prepared = requests.Request("POST", url, headers=headers, files=files).prepare()
    with requests.Session() as session:
        response = session.send(prepared, timeout=120)
    return response, len(prepared.body or b"")


@pytest.fixture(scope="module")
def metrics_url(server) -> str:
    return f"http://127.0.0.1:{server.ports.metrics}/metrics"


@pytest.fixture(scope="module")
def png(zidane: Path) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.open(zidane).save(buffer, format="PNG")
    return buffer.getvalue()


def test_requests_stages_and_batches_move_by_the_right_amounts(
    server, metrics_url: str, bus: Path, png: bytes
) -> None:
    jpeg = bus.read_bytes()
    shared_url = server.url("/api/models/yolo26n/predict")
    dedicated_url = server.url("/endpoints/yolo26n/predict")
    before = settled_scrape(metrics_url)

    sent = 0
    # One after another, so that every batch holds exactly one request.
    for image in (jpeg, jpeg, png):
        response, length = post(shared_url, server.headers(), image)
        assert response.status_code == 200, response.text
        sent += length
    # No body: a 401 is answered before the body is read, so it adds no received bytes.
    response, _ = post(shared_url, server.headers(WRONG_KEY), None)
    assert response.status_code == 401, response.text
    response, _ = post(dedicated_url, server.headers(), jpeg)
    assert response.status_code == 200, response.text
    response, _ = post(dedicated_url, server.headers(WRONG_KEY), None)
    assert response.status_code == 401, response.text

    shared = {"application": "shared"}
    dedicated = {"application": "yolo26n"}
    ok = {"route": SHARED_ROUTE, "status": "200"}
    expected: list[Expectation] = [
        ("ray_yolo_requests_total", {**shared, **ok}, 3),
        ("ray_yolo_requests_total", {**shared, "route": SHARED_ROUTE, "status": "401"}, 1),
        ("ray_yolo_request_seconds_count", {**shared, **ok}, 3),
        ("ray_yolo_received_bytes_total", {**shared, "route": SHARED_ROUTE}, sent),
        ("ray_yolo_unauthorized_total", shared, 1),
        ("ray_yolo_rate_limited_total", shared, 0),
        ("ray_yolo_images_total", {**shared, "format": "jpeg"}, 2),
        ("ray_yolo_images_total", {**shared, "format": "png"}, 1),
        ("ray_yolo_decode_seconds_count", {**shared, "format": "jpeg"}, 2),
        ("ray_yolo_decode_seconds_count", {**shared, "format": "png"}, 1),
        ("ray_yolo_requests_total", {**dedicated, "route": DEDICATED_ROUTE, "status": "200"}, 1),
        ("ray_yolo_requests_total", {**dedicated, "route": DEDICATED_ROUTE, "status": "401"}, 1),
        ("ray_yolo_unauthorized_total", dedicated, 1),
        ("ray_yolo_images_total", {**dedicated, "format": "jpeg"}, 1),
    ]
    for app, count in (("shared", 3), ("yolo26n", 1)):
        model = {"application": app, "model": "yolo26n"}
        for stage in ("queue_wait", "preprocess", "inference", "postprocess"):
            expected.append((f"ray_yolo_{stage}_seconds_count", model, count))
        # `count` batches of one; the half-integer buckets keep the sum exact.
        expected += [
            ("ray_yolo_batch_size_count", {"application": app}, count),
            ("ray_yolo_batch_size_sum", {"application": app}, count),
            ("ray_yolo_batch_size_bucket", {"application": app, "le": "0.5"}, 0),
            ("ray_yolo_batch_size_bucket", {"application": app, "le": "1.5"}, count),
        ]
    assert_deltas(metrics_url, before, expected)


def test_a_burst_is_counted_once_per_request_whatever_the_batches(
    server, metrics_url: str, zidane: Path
) -> None:
    image = zidane.read_bytes()
    url = server.url("/endpoints/yolo26n-seg/predict")
    app = {"application": "yolo26n-seg"}
    model = {**app, "model": "yolo26n-seg"}
    before = settled_scrape(metrics_url)
    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda _: post(url, server.headers(), image)[0], range(8)))
    assert [r.status_code for r in responses] == [200] * 8
    after = assert_deltas(
        metrics_url,
        before,
        [
            ("ray_yolo_batch_size_sum", app, 8),  # every request in exactly one batch
            ("ray_yolo_queue_wait_seconds_count", model, 8),
            ("ray_yolo_inference_seconds_count", model, 8),
            ("ray_yolo_requests_total", {**app, "route": DEDICATED_ROUTE, "status": "200"}, 8),
        ],
    )
    batches = delta(before, after, "ray_yolo_batch_size_count", app)
    assert 1 <= batches <= 8


def test_429s_are_counted_per_application(server, metrics_url: str) -> None:
    # A key of its own gets the application's limit (the main test key is exempt).
    key = keys.create_key(server.keys_file, f"metrics-{time.time_ns()}")
    url = server.url("/api/models/yolo26n/predict")
    deadline = time.monotonic() + 30
    while post(url, server.headers(key), None)[0].status_code == 401:  # until the ring reloads
        assert time.monotonic() < deadline, "the new key was never accepted"
        time.sleep(0.5)
    before = settled_scrape(metrics_url)
    # Bodyless requests pass the limiter (then fail with 400), so the burst is fast.
    responses = [post(url, server.headers(key), None)[0] for _ in range(25)]
    limited = sum(r.status_code == 429 for r in responses)
    assert limited >= 2, [r.status_code for r in responses]
    shared = {"application": "shared"}
    # The first 429 is the ingress's; it holds, so the proxy's edge answers the rest itself.
    assert_deltas(
        metrics_url,
        before,
        [
            ("ray_yolo_rate_limited_total", shared, 1),
            ("ray_yolo_requests_total", {**shared, "status": "429"}, 1),
            ("ray_yolo_held_answers_total", {**shared, "status": "429"}, limited - 1),
            ("ray_yolo_unauthorized_total", shared, 0),
        ],
    )


def test_every_metric_is_exported_and_every_dashboard_name_exists(server, metrics_url: str) -> None:
    """By now each of our metrics has series (model loads happened at deploy time; a video
    sent here counts its frames), and so must each Ray built-in the dashboard queries: a
    misspelt one would only show an empty panel."""
    video = bus_video("mp4", frames=2, size=(160, 120))
    sent = requests.post(
        server.url("/endpoints/yolo26n/predict"),
        headers=server.headers(),
        files={"file": ("v.mp4", video)},
        timeout=120,
    )
    assert sent.status_code == 200, sent.text
    deadline = time.monotonic() + DEADLINE_S
    while True:
        present = {name for name, _ in scrape(metrics_url)}
        missing = [s.name for s in ALL_METRICS if not set(s.exported) & present]
        if not missing or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert not missing, f"not exported: {missing}"
    dashboard = json.loads((PROJECT_ROOT / "k8s" / "grafana-dashboard.json").read_text())
    used = {name for expr in dashboard_exprs(dashboard) for name in metric_names(expr)}
    absent = sorted(used - present)
    assert not absent, f"the dashboard queries metrics that are not exported: {absent}"
