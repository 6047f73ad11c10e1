"""A deployment's logs and metrics routes in-process: Serve's JSON log lines (as its formatter
writes them) paged as the SDK's entries, and Prometheus' answers shaped as the SDK's three
metrics variants; every body held to the SDK's TypedDicts. The live cluster reads the real
replica logs and a real Prometheus (tests/test_deployment_observability.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from ultralytics_platform import types as sdk

from shared import deployment_metrics, keys
from shared.log_entries import LogEntry, decode_token, parse_line
from tests.control_app import App
from tests.sdk_types import assert_sdk_type

ONE = "/api/deployments/acme/yolo26n"
T0 = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z in ns


def serve_line(i: int, message: str, level: str = "INFO", **extra: Any) -> str:
    """A line as Ray's JSONFormatter writes it for a Serve replica."""
    record = {
        "asctime": "2026-01-01 00:00:00,000",
        "levelname": level,
        "message": message,
        "filename": "replica.py",
        "lineno": 1499,
        "process": 4242,
        "deployment": "Ingress",
        "replica": "abc123",
        "component_name": "replica",
        "request_id": f"req-{i}",
        "application": "yolo26n",
        "timestamp_ns": T0 + i * 1_000_000,
        **extra,
    }
    return json.dumps(record)


def lines() -> list[LogEntry]:
    raw = [
        serve_line(0, "replica started"),
        serve_line(1, "POST /predict 200 41.5ms", route="/predict", serve_access_log=True),
        serve_line(2, "GET /health 200 1.2ms", route="/health"),
        serve_line(3, "request failed", "ERROR", exc_text="Traceback...\nValueError: boom"),
        "not json at all",
        serve_line(4, "CALL predict OK 30.0ms"),
        serve_line(5, "slow batch", "WARNING"),
    ]
    return [e for i, text in enumerate(raw) if (e := parse_line(text, "n/replica.log", i))]


@pytest.fixture(autouse=True)
def checked_responses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("YOLO_VALIDATE_RESPONSES", "1")


@pytest.fixture
def key(tmp_path: Path) -> str:
    return keys.create_key(tmp_path / "keys.json", "main", owner="acme")


@pytest.fixture
def app(tmp_path: Path, key: str, monkeypatch: pytest.MonkeyPatch) -> App:
    from deployments import replica_logs

    monkeypatch.setattr(replica_logs, "read", lambda name: lines() if name == "yolo26n" else [])
    return App(tmp_path / "keys.json")


def get(app: App, key: str, path: str, **params: str):
    return app.client.get(path, headers={"Authorization": f"Bearer {key}"}, params=params)


# -- logs ------------------------------------------------------------------------------------------
def test_log_lines_become_the_sdks_entries_newest_first(app: App, key: str) -> None:
    r = get(app, key, f"{ONE}/logs")
    assert r.status_code == 200, r.text
    body = r.json()
    assert_sdk_type(body, sdk.DeploymentsLogsResponse)
    messages = [e["message"] for e in body["entries"]]
    assert messages == [
        "slow batch",
        "CALL predict OK 30.0ms",
        "request failed: ValueError: boom",  # the traceback's last line, not the traceback
        "GET /health 200 1.2ms",
        "POST /predict 200 41.5ms",
        "replica started",
    ]
    access = body["entries"][4]
    assert access["httpRequest"] == {
        "method": "POST",
        "url": "/predict",
        "status": 200,
        "latencyMs": 41.5,
    }
    assert "httpRequest" not in body["entries"][1]  # a handle call, not an HTTP request
    assert body["entries"][0]["severity"] == "WARNING"
    assert body["entries"][-1]["timestamp"] == "2026-01-01T00:00:00.000000Z"
    assert "nextPageToken" not in body


def test_pages_go_back_in_time_without_overlap(app: App, key: str) -> None:
    seen: list[str] = []
    token = None
    while True:
        params = {"limit": "2", **({"pageToken": token} if token else {})}
        body = get(app, key, f"{ONE}/logs", **params).json()
        assert_sdk_type(body, sdk.DeploymentsLogsResponse)
        seen += [e["message"] for e in body["entries"]]
        token = body.get("nextPageToken")
        if token is None:
            break
        decode_token(token)
    assert len(seen) == 6 and len(set(seen)) == 6


def test_severities_filter(app: App, key: str) -> None:
    body = get(app, key, f"{ONE}/logs", severity="ERROR,warning").json()
    assert [e["severity"] for e in body["entries"]] == ["WARNING", "ERROR"]


@pytest.mark.parametrize(
    ("params", "name"),
    [
        ({"severity": "LOUD"}, "severity"),
        ({"severity": ","}, "severity"),
        ({"limit": "0"}, "limit"),
        ({"limit": "1001"}, "limit"),
        ({"pageToken": "!!!"}, "pageToken"),
        ({"pageToken": "W10"}, "pageToken"),  # valid base64 of [] : not a cursor
    ],
)
def test_a_bad_logs_query_is_a_400(app: App, key: str, params, name) -> None:
    r = get(app, key, f"{ONE}/logs", **params)
    assert r.status_code == 400 and r.json()["error"].startswith(f"Invalid '{name}'"), r.text


def test_logs_without_rays_dashboard_are_a_503(
    app: App, key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from deployments import replica_logs

    def down(name: str) -> list[LogEntry]:
        raise ConnectionError("dashboard down")

    monkeypatch.setattr(replica_logs, "read", down)
    r = get(app, key, f"{ONE}/logs")
    assert r.status_code == 503 and r.headers["Retry-After"] == "5", r.text


# -- metrics ---------------------------------------------------------------------------------------
class CannedPrometheus:
    """Prometheus' answers by query kind: what the real one gives for a busy endpoint."""

    def __init__(self) -> None:
        self.queries: list[str] = []

    def query_range(self, base_url: str, promql: str, start: float, end: float, step: int):
        self.queries.append(promql)
        if "histogram_quantile" in promql:
            return [(start, 40.0), (end, 55.5)]  # two steps with traffic
        if "replica_healthy" in promql:
            return [(end, 1.0)]
        return [(end - step, 3.0), (end, 5.0)]

    def query(self, base_url: str, promql: str, at: float):
        self.queries.append(promql)
        if '"5.."' in promql:
            return 1.0
        if "histogram_quantile" in promql or "1000 * sum" in promql:
            return 48.25
        return 20.0


@pytest.fixture
def prometheus(monkeypatch: pytest.MonkeyPatch) -> CannedPrometheus:
    canned = CannedPrometheus()
    monkeypatch.setattr(deployment_metrics, "query_range", canned.query_range)
    monkeypatch.setattr(deployment_metrics, "query", canned.query)
    return canned


def test_full_metrics_are_the_first_variant(app: App, key: str, prometheus) -> None:
    r = get(app, key, f"{ONE}/metrics", range="1h")
    assert r.status_code == 200, r.text
    body = r.json()
    assert_sdk_type(body, sdk.DeploymentsMetricsResponseVariant1)
    assert body["deploymentId"] == "yolo26n" and body["region"] == "self-hosted"
    assert body["summary"]["totalRequests"] == 20 and body["summary"]["errorRate"] == 0.05
    requests = body["timeSeries"]["requests"]
    assert len(requests) == 60 and sum(p["value"] for p in requests) == 8  # zeros filled in
    assert [p["value"] for p in body["timeSeries"]["latencyP95"]] == [40.0, 55.5]
    assert all('application="yolo26n"' in q for q in prometheus.queries if "Component" not in q)


def test_overview_and_sparkline_are_the_other_variants(app: App, key: str, prometheus) -> None:
    overview = get(app, key, f"{ONE}/metrics", view="overview", range="6h").json()
    assert_sdk_type(overview, sdk.DeploymentsMetricsResponseVariant2)
    assert set(overview["timeSeries"]) == {"requests", "errors", "latencyP95"}
    assert len(overview["timeSeries"]["requests"]) == 72
    spark = get(app, key, f"{ONE}/metrics", sparkline="true").json()
    assert_sdk_type(spark, sdk.DeploymentsMetricsResponseVariant3)
    assert len(spark["requests24h"]) == 24 and spark["requests24h"][-1] == 5


@pytest.mark.parametrize(
    "params", [{"range": "2h"}, {"view": "full"}, {"sparkline": "yes"}, {"range": ""}]
)
def test_a_bad_metrics_query_is_a_400(app: App, key: str, prometheus, params) -> None:
    r = get(app, key, f"{ONE}/metrics", **params)
    assert r.status_code == 400 and r.json()["error"].startswith("Invalid '"), r.text


def test_without_prometheus_metrics_are_a_503_and_the_rest_works(app: App, key: str) -> None:
    # Nothing listens on the default port in this test: a real refused connection.
    app.ingress.config = app.ingress.config.model_copy(
        update={"prometheus_url": "http://127.0.0.1:9"}
    )
    r = get(app, key, f"{ONE}/metrics")
    assert r.status_code == 503 and "Prometheus" in r.json()["error"], r.text
    assert get(app, key, ONE).status_code == 200


def test_a_reused_slug_shows_nothing_from_before_its_creation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, prometheus
) -> None:
    """A deployment deleted and created again (by anyone) finds the old replicas' log files and
    series under the same name: the new one shows only what is newer than itself."""
    from deployments import replica_logs

    key = keys.create_key(tmp_path / "keys.json", "d", owner="acme", scope="deploy")
    app = App(tmp_path / "keys.json")
    body = {
        "project": "p",
        "model": "yolo26n",
        "deployment": "again",
        "name": "x",
        "region": "us-east1",
    }
    assert (
        app.client.post(
            "/api/deployments/acme", headers={"Authorization": f"Bearer {key}"}, json=body
        ).status_code
        == 201
    )
    created_ns = int(app.control.store.get("again").created_at * 1e9)
    old = parse_line(serve_line(0, "the old owner's line"), "n/old.log", 0)
    new = parse_line(serve_line(1, "the new one's line"), "n/new.log", 0)
    old = LogEntry(created_ns - 10**9, *list(old.__dict__.values())[1:])  # type: ignore[union-attr]
    new = LogEntry(created_ns + 10**9, *list(new.__dict__.values())[1:])  # type: ignore[union-attr]
    monkeypatch.setattr(replica_logs, "read", lambda name: [old, new])
    entries = get(app, key, "/api/deployments/acme/again/logs").json()["entries"]
    assert [e["message"] for e in entries] == ["the new one's line"]
    metrics = get(app, key, "/api/deployments/acme/again/metrics", range="1h").json()
    # Prometheus answers the old series' samples too: every step before creation counts 0.
    assert sum(p["value"] for p in metrics["timeSeries"]["requests"]) == 5
    # The summary's range reaches back to the creation only (seconds here), not an hour.
    windows = {int(w) for q in prometheus.queries for w in re.findall(r"\[(\d+)s\]", q)}
    assert min(windows) < 60 and 3600 not in windows


def test_a_measurement_at_the_first_step_after_creation_is_kept() -> None:
    """Prometheus writes times to the millisecond: the step that starts the data (right after
    the deployment's creation) may come back a fraction before the exact time asked."""
    from shared.deployment_metrics import _after

    start = 1_767_225_600.123456
    samples = [(start - 60, 10.0), (round(start, 3) - 0.0005, 42.0), (start + 60, 43.0)]
    assert _after("latencyP95", samples, start) == samples[1:]
    assert [v for _, v in _after("requests", samples, start)] == [0.0, 42.0, 43.0]
