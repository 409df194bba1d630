"""What the monitoring tests share: promtool, the metric names a PromQL query reads, and the
metric names the services export."""

from __future__ import annotations

import json
import shutil
import subprocess

import promql_parser
import pytest
import yaml
from prometheus_client import REGISTRY
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import CollectorRegistry

from tests.support.paths import ROOT

PROMETHEUS = ROOT / "deploy" / "prometheus"
GRAFANA = ROOT / "deploy" / "grafana"
SCRAPED = frozenset({"up", "scrape_duration_seconds", "scrape_samples_scraped"})
"""Series Prometheus adds to every target itself."""
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "gauge": ("",),
    "info": ("_info",),
}


def promtool(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run promtool; fail (never skip) when it is not installed."""
    path = shutil.which("promtool")
    if path is None:
        pytest.fail(
            "promtool is not installed: run `make tools` (it installs Debian's prometheus"
            " package, which ships promtool)"
        )
    return subprocess.run([path, *args], capture_output=True, text=True, timeout=120, check=False)


def _selectors(expr: promql_parser.Expr) -> set[str]:
    if isinstance(expr, promql_parser.VectorSelector):
        return {expr.name} if expr.name else set()
    if isinstance(expr, promql_parser.MatrixSelector):
        return _selectors(expr.vector_selector)
    if isinstance(expr, promql_parser.BinaryExpr):
        return _selectors(expr.lhs) | _selectors(expr.rhs)
    if isinstance(expr, promql_parser.AggregateExpr | promql_parser.UnaryExpr):
        return _selectors(expr.expr)
    if isinstance(expr, promql_parser.ParenExpr | promql_parser.SubqueryExpr):
        return _selectors(expr.expr)
    if isinstance(expr, promql_parser.Call):
        return set().union(
            *(_selectors(arg) for arg in expr.args if isinstance(arg, promql_parser.Expr))
        )
    return set()


def metric_names(query: str) -> set[str]:
    """The metric names a PromQL query selects (Grafana's `$__rate_interval` read as 5m)."""
    names = _selectors(promql_parser.parse(query.replace("$__rate_interval", "5m")))
    assert names, f"no metric in {query!r}"
    return names


def exported_names(registry: CollectorRegistry = REGISTRY) -> set[str]:
    """Every series name the registry's metrics can expose, once the services are imported."""
    import services.crm_sync.main
    import services.dispatch.main
    import services.ingest.main
    import services.router.main
    import services.scoring.main  # noqa: F401 - importing registers each service's metrics

    return set().union(*(series_names(family) for family in registry.collect()))


def series_names(family: Metric) -> set[str]:
    """The series names a metric family can expose (a counter `x`: `x_total`, `x_created`)."""
    return {family.name + suffix for suffix in _SUFFIXES.get(family.type, ("",))}


def dashboard_queries() -> list[str]:
    dashboard = json.loads((GRAFANA / "dashboards" / "b24-nps.json").read_text())
    return [
        target["expr"]
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
        if "expr" in target
    ]


def alert_rules() -> list[dict[str, object]]:
    loaded = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())
    return [rule for group in loaded["groups"] for rule in group["rules"]]
