"""A deployment's metrics as the official SDK reads them, from a Prometheus server scraping Ray.

What the series are, in PromQL over Ray's export of this project's metrics (deployments/
metrics.py) and Serve's own: requests and errors (5xx) of the endpoint's `/predict`, p50/p95
latency of its ingress, CPU and memory of its model replicas against what they reserve, and
healthy replicas. `query_range`/`query` speak Prometheus' HTTP API (stdlib only; callers run
them in a thread); the rest is plain functions of the answers.
"""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, get_args

MetricsRange = Literal["1h", "6h", "24h", "7d", "30d"]
RANGES: tuple[str, ...] = get_args(MetricsRange)
# Range -> (seconds, step): about 60 to 170 points a chart.
WINDOWS: dict[str, tuple[int, int]] = {
    "1h": (3600, 60),
    "6h": (6 * 3600, 300),
    "24h": (24 * 3600, 900),
    "7d": (7 * 86400, 3600),
    "30d": (30 * 86400, 6 * 3600),
}
TIMEOUT_S = 5.0


class PrometheusUnavailable(Exception):
    """No answer from Prometheus, or one that is not a success."""


@dataclass(frozen=True)
class Target:
    """Whose series: a dedicated endpoint's Serve application and its replicas' size."""

    app: str
    cpus: float  # per model replica
    memory_gib: float  # reserved per model replica; 0: none reserved


def _labels(target: Target, **more: str) -> str:
    pairs = {"application": target.app, **more}
    return ",".join(f'{k}="{_quote(v)}"' for k, v in pairs.items())


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def queries(target: Target, window: str) -> dict[str, str]:
    """The PromQL of every series, each a value per `window` (a step, or the whole range)."""
    predict = _labels(target, route="/predict")
    requests = f"ray_yolo_requests_total{{{predict}}}"
    seconds = f"ray_yolo_request_seconds_bucket{{{predict}}}"
    model = f"ray::ServeReplica:{_quote(target.app)}:Model"
    cpu = f'sum(ray_component_cpu_percentage{{Component="{model}"}})'
    rss = f'sum(ray_component_rss_mb{{Component="{model}"}})'
    replicas = f"sum(ray_serve_deployment_replica_healthy{{{_labels(target, deployment='Model')}}})"
    out = {
        "requests": f"sum(increase({requests}[{window}])) or vector(0)",
        "errors": (
            f'sum(increase(ray_yolo_requests_total{{{predict},status=~"5.."}}[{window}])) '
            "or vector(0)"
        ),
        "latencyP50": _quantile(0.5, seconds, window),
        "latencyP95": _quantile(0.95, seconds, window),
        "latencyP99": _quantile(0.99, seconds, window),
        "latencyAvg": (
            f"1000 * sum(increase(ray_yolo_request_seconds_sum{{{predict}}}[{window}])) / "
            f"sum(increase(ray_yolo_request_seconds_count{{{predict}}}[{window}]))"
        ),
        "instanceCount": f"{replicas} or vector(0)",
        # Of what the replicas reserve: 100 is every reserved core busy.
        "cpuUtilization": f"{cpu} / ({max(target.cpus, 1e-9)} * {replicas})",
    }
    if target.memory_gib > 0:
        out["memoryUtilization"] = f"100 * {rss} / ({target.memory_gib * 1024} * {replicas})"
    return out


def _quantile(q: float, buckets: str, window: str) -> str:
    return f"1000 * histogram_quantile({q}, sum by (le) (rate({buckets}[{window}])))"


def _get(base_url: str, path: str, params: dict[str, str]) -> Any:
    url = f"{base_url.rstrip('/')}{path}?{urllib.parse.urlencode(params)}"
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
            body = json.load(response)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise PrometheusUnavailable(f"{type(exc).__name__}: {exc}") from exc
    if body.get("status") != "success":
        raise PrometheusUnavailable(str(body.get("error") or body)[:200])
    return body["data"]["result"]


def query_range(
    base_url: str, promql: str, start: float, end: float, step: int
) -> list[tuple[float, float]]:
    """(Unix seconds, value) of the query's first series at every step ([] when it has none),
    NaN and infinities (no traffic in a step) left out."""
    result = _get(
        base_url,
        "/api/v1/query_range",
        {"query": promql, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": str(step)},
    )
    if not result:
        return []
    return [(float(t), float(v)) for t, v in result[0]["values"] if math.isfinite(float(v))]


def query(base_url: str, promql: str, at: float) -> float | None:
    """The query's value at `at` (None: no series, or not a number)."""
    result = _get(base_url, "/api/v1/query", {"query": promql, "time": f"{at:.3f}"})
    if not result:
        return None
    value = float(result[0]["value"][1])
    return value if math.isfinite(value) else None


def iso(seconds: float) -> str:
    moment = datetime.fromtimestamp(seconds, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def points(samples: list[tuple[float, float]], digits: int = 3) -> list[dict[str, Any]]:
    return [{"timestamp": iso(t), "value": round(v, digits)} for t, v in samples]


def _series(
    base_url: str, promql: str, start: float, end: float, step: int, fill: bool
) -> list[tuple[float, float]]:
    """A series at every step from start to end; `fill`: steps without a sample count 0
    (counts), else they are left out (latencies, where no request means no value)."""
    samples = query_range(base_url, promql, start, end, step)
    if not fill:
        return samples
    # Prometheus answers at start + k * step; a step it has no sample for counted nothing.
    known = {round((t - start) / step): v for t, v in samples}
    count = int((end - start) // step) + 1
    return [(start + k * step, known.get(k, 0.0)) for k in range(count)]


FILLED = ("requests", "errors", "instanceCount")  # counts: a step without samples is a 0


def _after(
    name: str, samples: list[tuple[float, float]], start: float
) -> list[tuple[float, float]]:
    """Nothing before `start`: a count keeps its steps at 0, a measurement drops them.
    Prometheus answers times in milliseconds: a sample at `start` may read a little before it."""
    start -= 1.0
    if name in FILLED:
        return [(t, v if t >= start else 0.0) for t, v in samples]
    return [(t, v) for t, v in samples if t >= start]


def _window(seconds: float, now: float, since: float | None) -> str:
    """A summary's range: `seconds`, or only since `since` when that is later."""
    if since is not None and now - since < seconds:
        seconds = max(now - since, 1.0)
    return f"{int(seconds)}s"


def _summary(base_url: str, q: dict[str, str], at: float) -> dict[str, float]:
    total = query(base_url, q["requests"], at) or 0.0
    errors = query(base_url, q["errors"], at) or 0.0
    return {
        "totalRequests": round(total),
        "errorCount": round(errors),
        "errorRate": round(errors / total, 4) if total else 0.0,
        "avgLatencyMs": round(query(base_url, q["latencyAvg"], at) or 0.0, 3),
        "p50LatencyMs": round(query(base_url, q["latencyP50"], at) or 0.0, 3),
        "p95LatencyMs": round(query(base_url, q["latencyP95"], at) or 0.0, 3),
        "p99LatencyMs": round(query(base_url, q["latencyP99"], at) or 0.0, 3),
    }


def collect(
    base_url: str,
    target: Target,
    region: str,
    window: MetricsRange,
    *,
    overview: bool,
    sparkline: bool,
    now: float,
    since: float | None = None,
) -> dict[str, Any]:
    """The SDK's `DeploymentsMetricsResponse`: the sparkline (24 hourly request counts and a
    day's summary), the overview (requests, errors, p95) or everything, over `window`; nothing
    from before `since` (a deployment's creation: an earlier one of the same name is another)."""
    if sparkline:
        day = queries(target, "1h")
        end = now  # the last hour is the one that ends now, so the latest requests count
        hours = _series(base_url, day["requests"], end - 23 * 3600, end, 3600, fill=True)
        hours = [(t, v if since is None or t >= since else 0.0) for t, v in hours]
        summary = _summary(base_url, queries(target, _window(86400, now, since)), now)
        return {
            "requests24h": [round(v) for _, v in hours],
            "totalRequests": summary["totalRequests"],
            "errorRate": summary["errorRate"],
            "avgLatencyMs": summary["avgLatencyMs"],
        }
    seconds, step = WINDOWS[window]
    per_step = queries(target, f"{step}s")
    # Each point counts the step that ends at it; the last one ends now, so the latest
    # requests are in it.
    end = now
    start = end - seconds + step
    if since is not None and since > start:
        # Steps before it count nothing (filled with 0), and none reaches back before it.
        start_data = start + math.ceil((since - start) / step) * step
    else:
        start_data = start
    series = {
        "requests": _series(base_url, per_step["requests"], start, end, step, fill=True),
        "errors": _series(base_url, per_step["errors"], start, end, step, fill=True),
        "latencyP95": _series(base_url, per_step["latencyP95"], start, end, step, fill=False),
    }
    summary = _summary(base_url, queries(target, _window(seconds, now, since)), now)
    body: dict[str, Any] = {
        "deploymentId": target.app,
        "region": region,
        "timeRange": {"start": iso(start - step), "end": iso(now)},
    }
    if overview:
        keep = ("totalRequests", "errorRate", "p95LatencyMs")
        body["summary"] = {k: summary[k] for k in keep}
        body["timeSeries"] = {
            name: points(_after(name, values, start_data)) for name, values in series.items()
        }
        return body
    series["latencyP50"] = _series(base_url, per_step["latencyP50"], start, end, step, fill=False)
    series["instanceCount"] = _series(
        base_url, per_step["instanceCount"], start, end, step, fill=True
    )
    series["cpuUtilization"] = _series(
        base_url, per_step["cpuUtilization"], start, end, step, fill=False
    )
    memory = per_step.get("memoryUtilization")
    series["memoryUtilization"] = (
        _series(base_url, memory, start, end, step, fill=False) if memory else []
    )
    order = (
        "requests",
        "errors",
        "latencyP50",
        "latencyP95",
        "cpuUtilization",
        "memoryUtilization",
        "instanceCount",
    )
    body["summary"] = summary
    body["timeSeries"] = {name: points(_after(name, series[name], start_data)) for name in order}
    return body
