"""Metric names out of PromQL, as the dashboard test needs them."""

from __future__ import annotations

import pytest

from tests.promql import dashboard_exprs, metric_names


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ("up", {"up"}),
        (
            'sum by (application) (rate(ray_yolo_requests_total{status=~"5..", le="1"}[5m]))',
            {"ray_yolo_requests_total"},
        ),
        (
            "histogram_quantile(0.95, sum by (le) "
            '(rate(ray_yolo_inference_seconds_bucket{application=~"$application"}'
            "[$__rate_interval])))",
            {"ray_yolo_inference_seconds_bucket"},
        ),
        (
            "sum(rate(a_sum[1m])) / sum(rate(a_count[1m])) > bool 0.5 unless on (job) b",
            {"a_sum", "a_count", "b"},
        ),
        ("count without (instance) (x offset 5m) * on (job) group_left (le) y", {"x", "y"}),
        ('label_replace(m, "dst", "$1", "src", "(.*)")', {"m"}),
        ("1e3 * ${factor} + 2", set()),
        ("max_over_time(q[5m:1m])", {"q"}),
    ],
)
def test_metric_names(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def test_dashboard_exprs_walks_rows_and_query_variables() -> None:
    dashboard = {
        "panels": [
            {"type": "timeseries", "targets": [{"expr": "a"}, {"expr": ""}]},
            {"type": "row", "panels": [{"targets": [{"expr": "b"}]}]},
        ],
        "templating": {
            "list": [
                {"type": "query", "query": {"query": "label_values(c{x='1'}, application)"}},
                {"type": "query", "query": "label_values(job)"},
                {"type": "datasource", "query": "prometheus"},
            ]
        },
    }
    exprs = dashboard_exprs(dashboard)
    assert {n for e in exprs for n in metric_names(e)} == {"a", "b", "c"}
