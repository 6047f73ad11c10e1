"""The Predict page's deployment cards in a real browser (Debian's Chromium via Playwright)
against real Serve: a dedicated endpoint created from the page, watched until ready, used
through its card's own Predict tab, stopped and deleted, each step a request of the real API.

As tests/test_predict_page.py (whose browser, page helper and fixtures these reuse), every test
fails on any uncaught script error or Content-Security-Policy violation.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from urllib.parse import urlparse

import pytest
import requests

from shared import keys
from shared.assets import example_image
from shared.registry import PROJECT_ROOT
from tests import test_predict_page as predict_page

READY_S = 240  # a new application: its replicas start and load their weights
OWNER = "cards"
SLUG = "card-demo"
CARD = f"[data-testid=deployment-card][data-slug='{SLUG}']"
SCREENSHOT = PROJECT_ROOT / "artifacts" / "deployment-cards.png"
METRICS_SCREENSHOT = PROJECT_ROOT / "artifacts" / "deployment-cards-metrics.png"

# The browser and the page helper of tests/test_predict_page.py: one Chromium per module, one
# context per test, failures (uncaught errors, CSP violations) asserted at teardown.
browser = predict_page.browser
open_page = predict_page.open_page
PredictPage = predict_page.PredictPage

pytestmark = pytest.mark.skipif(
    not Path(predict_page.CHROMIUM).exists() and not os.environ.get("CI"),
    reason="needs Debian's chromium: apt-get install chromium",
)


@pytest.fixture(scope="module")
def deployer(server) -> str:
    key = keys.create_key(server.keys_file, "cards", owner=OWNER, scope="deploy")
    _wait_for_key(server, key)
    return key


def _wait_for_key(server, key: str) -> None:
    """Ingress replicas read the key store again within a second or so."""
    deadline = time.monotonic() + 30
    while requests.get(server.url("/api/models"), headers=server.headers(key)).status_code != 200:
        assert time.monotonic() < deadline, "the new key was never accepted"
        time.sleep(0.5)


def _path(request) -> str:
    return urlparse(request.url).path


def _call(method: str, path: str):
    """A response predicate: the answer to `method path`."""
    return lambda r: r.request.method == method and _path(r.request) == path


def open_deployments(tab: PredictPage) -> None:
    """Open the page's Deployments section and wait for its first listing."""
    tab.page.click("#deployments > summary")
    tab.page.wait_for_selector("#deployments[data-loaded=true]", timeout=30_000)


def card_status(tab: PredictPage, status: str, timeout_s: float) -> None:
    tab.page.wait_for_selector(f"{CARD}[data-status={status}]", timeout=timeout_s * 1000)
    shown = tab.page.locator(f"{CARD} [data-testid=deployment-status]").text_content()
    assert shown.lower() == status


def test_a_deployment_created_used_stopped_and_deleted_from_its_card(
    server, open_page, deployer: str
) -> None:
    api = server.url(f"/api/deployments/{OWNER}/{SLUG}")
    tab = open_page()
    try:
        tab.open("/")
        tab.page.fill("#key-input", deployer)
        tab.page.click("#key-save")
        tab.wait_models()
        open_deployments(tab)

        # Create: the form's fields and the fixed project and region, as the API takes them.
        tab.page.click("#deployment-new")
        tab.page.fill("#deployment-slug", SLUG)
        tab.page.fill("#deployment-name", "Card demo")
        tab.page.wait_for_selector("#deployment-model option[value=yolo26n]", state="attached")
        tab.page.select_option("#deployment-model", "yolo26n")
        tab.page.select_option("#deployment-cpu", "1")
        tab.page.select_option("#deployment-memory", "2")
        with tab.page.expect_response(_call("POST", f"/api/deployments/{OWNER}")) as created:
            tab.page.click("#deployment-create")
        assert created.value.status == 201, created.value.text()
        assert json.loads(created.value.request.post_data) == {
            "project": "default",
            "deployment": SLUG,
            "name": "Card demo",
            "model": "yolo26n",
            "region": "us-central1",
            "cpu": 1,
            "memoryGi": 2,
        }
        tab.page.locator("#deployment-form").wait_for(state="hidden")

        # Watched until ready: the card polls its status while the deployment is on its way.
        card = tab.page.locator(CARD)
        card.wait_for(timeout=30_000)
        assert card.locator(".dep-name").text_content() == "Card demo"
        card_status(tab, "ready", READY_S)
        listings = [
            r for r in tab.requests if r.method == "GET" and _path(r) == f"/api/deployments/{OWNER}"
        ]
        assert len(listings) >= 2, "the card's status was never polled"
        assert "yolo26n" in card.locator("[data-part=model]").text_content()
        assert card.locator("[data-part=resources]").text_content() == (
            "1 CPU · 2 GiB · 1\u20134 instances"
        )
        assert card.locator("[data-part=region]").text_content() == "us-central1"
        # Metrics: a sparkline when the route answers, else said, and the card works on.
        tab.page.wait_for_selector(
            f"{CARD} [data-testid=deployment-metrics]:not([data-state=loading])"
        )
        metrics = card.locator("[data-testid=deployment-metrics]")
        if metrics.get_attribute("data-state") == "ready":
            assert card.locator("[data-testid=deployment-sparkline]").count() == 1
        else:
            assert metrics.get_attribute("data-state") == "unavailable"
            assert "Metrics unavailable" in metrics.text_content()

        # Its Predict tab: the deployment's own route, the page's parameters, boxes drawn.
        predict_tab = card.locator("[data-testid=deployment-predict-tab]")
        predict_tab.click()
        assert predict_tab.get_attribute("aria-selected") == "true"
        with tab.page.expect_response(
            lambda r: predict_page.is_predict(r.request), timeout=60_000
        ) as answered:
            card.locator("[data-testid=deployment-predict-file]").set_input_files(
                str(example_image("bus.jpg"))
            )
        response = answered.value
        assert _path(response.request) == f"/endpoints/{SLUG}/predict"
        assert response.status == 200, response.text()
        tab.page.wait_for_selector(f"{CARD}[data-predict=done]")
        results = response.json()["images"][0]["results"]
        assert len(results) >= 4  # bus.jpg: a bus and several people
        assert card.locator("[data-testid=deployment-overlay] g.det").count() == len(results)
        assert card.locator("[data-testid=deployment-overlay]").get_attribute("viewBox") == (
            "0 0 810 1080"
        )
        assert (
            f"{len(results)} detections"
            in card.locator("[data-testid=deployment-predict-result]").text_content()
        )
        assert tab.sent_forms()[-1] == {"conf": "0.25", "iou": "0.70", "imgsz": "640"}
        assert [_path(r) for r in tab.predicts] == [f"/endpoints/{SLUG}/predict"]
        tab.page.mouse.move(0, 0)
        SCREENSHOT.parent.mkdir(exist_ok=True)
        tab.page.locator("#deployments").screenshot(path=str(SCREENSHOT))

        # Stop: the card says stopped, and a stopped deployment has no Predict tab.
        with tab.page.expect_response(
            _call("PATCH", f"/api/deployments/{OWNER}/{SLUG}")
        ) as stopped:
            card.locator("[data-testid=deployment-stop]").click()
        assert stopped.value.status == 200, stopped.value.text()
        assert json.loads(stopped.value.request.post_data) == {"action": "stop"}
        card_status(tab, "stopped", 60)
        assert predict_tab.is_hidden()
        assert card.locator("[data-testid=deployment-start]").is_visible()

        # Delete: the first click only asks; the second one deletes and the card goes.
        card.locator("[data-testid=deployment-delete]").click()
        confirm = card.locator("[data-testid=deployment-confirm-delete]")
        assert confirm.is_visible()
        assert not [r for r in tab.requests if r.method == "DELETE"]
        with tab.page.expect_response(
            lambda r: r.request.method == "DELETE", timeout=60_000
        ) as deleted:
            confirm.click()
        assert deleted.value.status == 200, deleted.value.text()
        card.wait_for(state="detached", timeout=60_000)
        gone = requests.get(api, headers=server.headers(deployer), timeout=30)
        assert gone.status_code == 404, gone.text
    finally:
        # A failure midway leaves nothing running for the tests after this one.
        requests.delete(api, headers=server.headers(deployer), timeout=60)


def test_a_key_without_deploy_scope_is_shown_the_apis_refusal(server, open_page) -> None:
    tab = open_page(server.key)
    tab.open("/")
    tab.wait_models()
    open_deployments(tab)
    tab.page.click("#deployment-new")
    tab.page.fill("#deployment-slug", "not-allowed")
    tab.page.fill("#deployment-name", "Not allowed")
    tab.page.wait_for_selector("#deployment-model option[value=yolo26n]", state="attached")
    with tab.page.expect_response(
        lambda r: r.request.method == "POST" and _path(r.request).startswith("/api/deployments/")
    ) as refused:
        tab.page.click("#deployment-create")
    assert refused.value.status == 403
    error = tab.page.locator("[data-testid=deployment-form-error]")
    error.wait_for()
    assert error.text_content() == refused.value.json()["error"]
    assert "scope 'deploy'" in error.text_content()


def test_cards_draw_metrics_and_say_when_there_are_none(server, open_page) -> None:
    """serve_config.yaml's endpoints are every key's cards: read-only, with metrics. The
    metrics route is faked here, to show both answers whatever the server's Prometheus does."""
    now = time.time()

    def iso(seconds: float) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(seconds))

    points = [{"timestamp": iso(now - 3600 + 60 * i), "value": i % 7} for i in range(61)]
    body = {
        "deploymentId": "yolo26n",
        "region": "self-hosted",
        "timeRange": {"start": iso(now - 3600), "end": iso(now)},
        "summary": {"totalRequests": 183, "errorRate": 0.0, "p95LatencyMs": 42.0},
        "timeSeries": {"requests": points, "errors": [], "latencyP95": points},
    }

    def fake_metrics(route) -> None:
        slug = urlparse(route.request.url).path.split("/")[-2]
        if slug == "yolo26n":
            route.fulfill(status=200, json=body)
        else:
            route.fulfill(status=501, json={"error": "Not implemented"})

    tab = open_page(server.key)
    tab.page.route(lambda url: urlparse(url).path.endswith("/metrics"), fake_metrics)
    tab.open("/")
    tab.wait_models()
    open_deployments(tab)
    drawn = tab.page.locator("[data-testid=deployment-card][data-slug=yolo26n]")
    other = tab.page.locator("[data-testid=deployment-card][data-slug='yolo26n-seg']")
    tab.page.wait_for_selector(
        "[data-slug=yolo26n] [data-testid=deployment-metrics][data-state=ready]"
    )
    spark = drawn.locator("[data-testid=deployment-sparkline]")
    assert spark.locator("polygon.spark-requests").count() == 1
    assert spark.locator("polyline.spark-latency").count() == 1
    assert "183 requests" in drawn.locator("[data-testid=deployment-metrics]").text_content()
    tab.page.wait_for_selector(
        "[data-slug='yolo26n-seg'] [data-testid=deployment-metrics][data-state=unavailable]"
    )
    assert "Metrics unavailable" in other.locator("[data-testid=deployment-metrics]").text_content()
    assert other.locator("[data-testid=deployment-sparkline]").count() == 0
    SCREENSHOT.parent.mkdir(exist_ok=True)
    tab.page.locator("#deployments").screenshot(path=str(METRICS_SCREENSHOT))
    # Read-only: no lifecycle buttons on an endpoint of serve_config.yaml; its Predict tab works.
    assert drawn.locator("[data-testid=deployment-stop]").is_hidden()
    assert drawn.locator("[data-testid=deployment-delete]").is_hidden()
    assert "serve_config.yaml" in drawn.text_content()
    drawn.locator("[data-testid=deployment-predict-tab]").click()
    with tab.page.expect_response(lambda r: predict_page.is_predict(r.request)) as answered:
        drawn.locator("[data-testid=deployment-predict-file]").set_input_files(
            str(example_image("zidane.jpg"))
        )
    assert _path(answered.value.request) == "/endpoints/yolo26n/predict"
    assert answered.value.status == 200
    tab.page.wait_for_selector("[data-slug=yolo26n][data-predict=done]")
    assert drawn.locator("[data-testid=deployment-overlay] g.det").count() == len(
        answered.value.json()["images"][0]["results"]
    )
