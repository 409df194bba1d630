"""deploy/grafana: the dashboard loads, every panel's PromQL names metrics the services export,
and every panel on the reports API asks for a report the API serves (no Grafana server here)."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from services.reports.app import create_app
from services.scoring.report import ReportQuery
from tests.support.monitoring import GRAFANA, SCRAPED, exported_names, metric_names

DASHBOARD: dict[str, Any] = json.loads((GRAFANA / "dashboards" / "b24-nps.json").read_text())
PANELS = [panel for panel in DASHBOARD["panels"] if panel["type"] != "row"]
PROVISIONED = {
    source["uid"]: source
    for source in yaml.safe_load(
        (GRAFANA / "provisioning" / "datasources" / "datasources.yml").read_text()
    )["datasources"]
}
REPORT_PARAMS = {"from": "date_from", "to": "date_to"}


def _targets(kind: str) -> list[tuple[str, dict[str, Any]]]:
    return [
        (panel["title"], target)
        for panel in PANELS
        for target in panel["targets"]
        if PROVISIONED[target["datasource"]["uid"]]["type"] == kind
    ]


def test_the_dashboard_has_unique_panels_on_provisioned_data_sources() -> None:
    assert DASHBOARD["uid"] == "b24-nps"
    ids = [panel["id"] for panel in DASHBOARD["panels"]]
    assert len(ids) == len(set(ids))
    for panel in PANELS:
        assert panel["targets"], panel["title"]
        for target in (panel, *panel["targets"]):
            source = target["datasource"]
            assert source["uid"] in PROVISIONED, f"{panel['title']}: unknown data source"
            assert source["type"] == PROVISIONED[source["uid"]]["type"], panel["title"]


@pytest.mark.parametrize(
    ("title", "target"), _targets("prometheus"), ids=lambda v: v if isinstance(v, str) else ""
)
def test_every_query_names_metrics_the_services_export(title: str, target: dict[str, Any]) -> None:
    unknown = metric_names(target["expr"]) - exported_names() - SCRAPED
    assert not unknown, f"{title}: {sorted(unknown)} not exported by any service"


@pytest.mark.parametrize(
    ("title", "target"),
    _targets("yesoreyeram-infinity-datasource"),
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_every_nps_panel_asks_the_reports_api_for_a_valid_report(
    title: str, target: dict[str, Any]
) -> None:
    paths = create_app("postgresql://unused", "token").openapi()["paths"]
    assert target["url"] in paths, title
    accepted = {param["name"] for param in paths[target["url"]]["get"]["parameters"]}
    params = {p["key"]: p["value"] for p in target["url_options"]["params"]}
    assert set(params) <= accepted, f"{title}: {sorted(set(params) - accepted)} not accepted"
    ReportQuery.model_validate({REPORT_PARAMS.get(k, k): v for k, v in params.items()})


def test_the_nps_figures_and_the_pipeline_are_both_on_the_dashboard() -> None:
    assert _targets("prometheus")
    assert _targets("yesoreyeram-infinity-datasource")
