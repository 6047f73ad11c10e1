"""A deployment's logs and metrics on the live cluster: predictions sent to an API-created
endpoint show up in its logs (read from the replicas' files through Ray's dashboard) and in its
metrics (from the session's real Prometheus scraping Ray), through the official SDK, every
answer held to the SDK's TypedDicts."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from ultralytics_platform import Platform
from ultralytics_platform import types as sdk

from shared.registry import PROJECT_ROOT
from tests.live_deployments import OWNER, new_key, wait_for
from tests.promql import dashboard_exprs
from tests.sdk_types import assert_sdk_type

SLUG = "observed"
# Ray's agents export every 10 s and Prometheus scrapes every 5 s: a minute and a half is room.
SCRAPED_S = 120


@pytest.fixture(scope="module")
def deployment(server) -> Iterator[tuple[Platform, str]]:
    key = new_key(server, "observer", owner=OWNER, scope="deploy")
    client = Platform(api_key=key, base_url=server.base_url, timeout=120)
    client.deployments.create(
        OWNER, project="p", model="yolo26n", deployment=SLUG, name="x", region="europe-west4"
    )
    try:
        wait_for(client, SLUG, "ready")
        yield client, key
    finally:
        client.deployments.delete(OWNER, SLUG)
        client.close()


def send(server, key: str, image: Path, n: int) -> None:
    for _ in range(n):
        r = server.predict("", image, key=key, prefix=f"/endpoints/{SLUG}", imgsz=320)
        assert r.status_code == 200, r.text


def test_predictions_show_up_in_the_logs_a_page_at_a_time(server, deployment, bus) -> None:
    client, key = deployment
    send(server, key, bus, 5)
    deadline = time.monotonic() + 60
    while True:
        body = client.deployments.logs(OWNER, SLUG, limit=1000)
        assert_sdk_type(body, sdk.DeploymentsLogsResponse)
        predicts = [
            e["httpRequest"]
            for e in body["entries"]
            if "httpRequest" in e and e["httpRequest"]["url"].endswith("/predict")
        ]
        if len(predicts) >= 5:
            break
        assert time.monotonic() < deadline, body["entries"][:5]
        time.sleep(1)
    assert all(p["method"] == "POST" and p["status"] == 200 for p in predicts)
    assert all(p["latencyMs"] > 0 for p in predicts)

    everything = list(body["entries"])
    paged, token = [], None
    while True:
        page = client.deployments.logs(
            OWNER, SLUG, limit=7, **({"page_token": token} if token else {})
        )
        assert_sdk_type(page, sdk.DeploymentsLogsResponse)
        paged += page["entries"]
        token = page.get("nextPageToken")
        if token is None:
            break
    # Entries written since are newer: they come before the first page's, never inside one.
    assert paged[-len(everything) :] == everything or paged[: len(everything)] == everything
    infos = client.deployments.logs(OWNER, SLUG, severity="INFO")["entries"]
    assert infos and {e["severity"] for e in infos} == {"INFO"}


def _total(client: Platform, **query: str) -> float:
    body = client.deployments.metrics(OWNER, SLUG, **query)
    return float(body["summary"]["totalRequests"])


def test_predictions_show_up_in_the_metrics_from_prometheus(server, deployment, bus) -> None:
    client, key = deployment
    # A counter's first sample only starts its series (rate and increase count from there):
    # one prediction, then wait until Prometheus holds the series, then the ones counted.
    send(server, key, bus, 1)
    series = f'ray_yolo_requests_total{{application="{SLUG}",route="/predict"}}'
    deadline = time.monotonic() + SCRAPED_S
    while not requests.get(
        f"{server.prometheus_url}/api/v1/query", params={"query": series}, timeout=10
    ).json()["data"]["result"]:
        assert time.monotonic() < deadline, "Prometheus never scraped the endpoint's counter"
        time.sleep(2)
    send(server, key, bus, 6)
    deadline = time.monotonic() + SCRAPED_S
    while _total(client, range="1h") < 6:
        assert time.monotonic() < deadline, client.deployments.metrics(OWNER, SLUG, range="1h")
        time.sleep(3)
    # Once, in a CI run, the per-step latency was still empty while the count was in (cause not
    # established; a sample dated a millisecond early was one suspect, fixed since). Keep
    # predicting until a step shows a latency, within the same bound as the count.
    deadline = time.monotonic() + SCRAPED_S
    while not (full := client.deployments.metrics(OWNER, SLUG, range="1h"))["timeSeries"][
        "latencyP95"
    ]:
        assert time.monotonic() < deadline, full
        send(server, key, bus, 2)
        time.sleep(3)

    assert_sdk_type(full, sdk.DeploymentsMetricsResponseVariant1)
    assert full["deploymentId"] == SLUG and full["region"] == "europe-west4"
    series_ = full["timeSeries"]
    # Per step, increase() extrapolates within each window: the sum is about the total.
    assert sum(p["value"] for p in series_["requests"]) >= 5
    assert sum(p["value"] for p in series_["errors"]) == 0
    assert full["summary"]["p95LatencyMs"] > 0 and series_["latencyP95"], full
    assert series_["instanceCount"] and series_["instanceCount"][-1]["value"] >= 1
    assert series_["cpuUtilization"] and series_["memoryUtilization"]

    overview = client.deployments.metrics(OWNER, SLUG, range="1h", view="overview")
    assert_sdk_type(overview, sdk.DeploymentsMetricsResponseVariant2)
    spark = client.deployments.metrics(OWNER, SLUG, sparkline="true")
    assert_sdk_type(spark, sdk.DeploymentsMetricsResponseVariant3)
    assert len(spark["requests24h"]) == 24 and spark["totalRequests"] >= 6


def test_the_grafana_dashboards_queries_run_on_the_local_prometheus(
    server, deployment, bus
) -> None:
    """Every panel's PromQL as Grafana sends it (its variables filled in), against the session's
    Prometheus: each one parses and runs, and the requests panel sees this endpoint."""
    _, key = deployment
    dashboard = json.loads((PROJECT_ROOT / "k8s" / "grafana-dashboard.json").read_text())
    exprs = dashboard_exprs(dashboard)
    panel = next(e for e in exprs if e.startswith("sum by (application) (rate("))
    deadline = time.monotonic() + SCRAPED_S
    while not _run(server, panel.replace("$application", SLUG).replace("$__rate_interval", "1m")):
        assert time.monotonic() < deadline, "the requests panel never showed the endpoint"
        send(server, key, bus, 2)
        time.sleep(3)
    filled = {"$application": SLUG, "$__rate_interval": "1m", "$__range": "1h"}
    for expr in exprs:
        promql = expr
        for variable, value in filled.items():
            promql = promql.replace(variable, value)
        _run(server, promql)


def _run(server, promql: str) -> list:
    body = requests.get(
        f"{server.prometheus_url}/api/v1/query", params={"query": promql}, timeout=10
    ).json()
    assert body["status"] == "success", (promql, body)
    return body["data"]["result"]
