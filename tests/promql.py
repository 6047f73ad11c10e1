"""The metric names a PromQL expression reads, so a test can check a dashboard against reality.

`exported_names` is the other side: every series name Ray's export makes of the metric specs.

Not a PromQL parser: it removes what can hold identifiers that are not metrics (strings, label
matchers, range and subquery brackets, `by`/`without`/`on`/`ignoring`/`group_*` lists), then
takes every identifier that is not a function call, a keyword or a Grafana variable.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from deployments.metrics import ALL_METRICS, MetricSpec

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(
    r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", re.IGNORECASE
)
_VARIABLE = re.compile(r"\$\{[^}]*\}|\$\w+")
_IDENTIFIER = re.compile(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?")
_KEYWORDS = {
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
    "offset", "bool", "inf", "nan", "atan2",
}  # fmt: skip


def exported_names(specs: Iterable[MetricSpec] = ALL_METRICS) -> set[str]:
    return {name for spec in specs for name in spec.exported}


def metric_names(expr: str) -> set[str]:
    text = _STRING.sub('""', expr)
    text = _VARIABLE.sub("0", text)
    text = _MATCHERS.sub("", text)
    text = _RANGE.sub("", text)
    text = _GROUPING.sub("", text)
    names = set()
    for match in _IDENTIFIER.finditer(text):
        name, call = match.group(1), match.group(2)
        if call or name.lower() in _KEYWORDS:
            continue
        names.add(name)
    return names


def dashboard_exprs(dashboard: dict) -> list[str]:
    """Every query expression of a Grafana dashboard: panel targets (rows' nested panels too)
    and query-type template variables."""
    exprs: list[str] = []

    def panels(items: list[dict]) -> None:
        for panel in items:
            exprs.extend(t["expr"] for t in panel.get("targets", []) if t.get("expr"))
            panels(panel.get("panels", []))

    panels(dashboard.get("panels", []))
    for variable in dashboard.get("templating", {}).get("list", []):
        query = variable.get("query")
        if isinstance(query, dict):
            query = query.get("query")
        if variable.get("type") == "query" and isinstance(query, str):
            exprs.append(_label_values_expr(query))
    return exprs


def _label_values_expr(query: str) -> str:
    # `label_values(metric{...}, label)` names a metric; `label_values(label)` names none.
    match = re.fullmatch(r"\s*label_values\((.*),\s*\w+\s*\)\s*", query)
    if match:
        return match.group(1)
    return "" if query.strip().startswith("label_values(") else query
