"""deploy/prometheus/ is checked by Prometheus's own tool: the scrape configuration, the alert
rules, and their unit tests (alerts.test.yml: each alert fires in one case, stays quiet in
another). promtool comes from `make tools`; without it these tests fail."""

from __future__ import annotations

import re

import pytest
import yaml

from tests.support.monitoring import (
    PROMETHEUS,
    SCRAPED,
    alert_rules,
    exported_names,
    metric_names,
)
from tests.support.monitoring import promtool as run_promtool
from tests.support.paths import ROOT

ALERTS = [str(rule["alert"]) for rule in alert_rules()]


def test_promtool_accepts_the_scrape_configuration_and_its_rules() -> None:
    done = run_promtool("check", "config", str(PROMETHEUS / "prometheus.yml"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in done.stdout


def test_promtool_unit_tests_of_the_alerts_pass() -> None:
    done = run_promtool("test", "rules", str(PROMETHEUS / "alerts.test.yml"))
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_pipeline_service_is_scraped() -> None:
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    jobs = {job["job_name"] for job in config["scrape_configs"]}
    assert jobs == {"ingest", "scoring", "router", "crm_sync", "survey", "dispatch"}


@pytest.mark.parametrize("alert", ALERTS)
def test_each_alert_has_a_case_that_fires_and_one_that_stays_quiet(alert: str) -> None:
    tests = yaml.safe_load((PROMETHEUS / "alerts.test.yml").read_text())["tests"]
    outcomes = [
        bool(case["exp_alerts"])
        for test in tests
        for case in test["alert_rule_test"]
        if case["alertname"] == alert
    ]
    assert True in outcomes, f"{alert}: no case where it fires"
    assert False in outcomes, f"{alert}: no case where it stays quiet"


@pytest.mark.parametrize("rule", alert_rules(), ids=ALERTS)
def test_each_alert_reads_metrics_the_services_export(rule: dict[str, object]) -> None:
    unknown = metric_names(str(rule["expr"])) - exported_names() - SCRAPED
    assert not unknown, f"{rule['alert']} reads metrics nothing exports: {sorted(unknown)}"


@pytest.mark.parametrize("rule", alert_rules(), ids=ALERTS)
def test_each_alert_links_to_its_row_of_the_runbook(rule: dict[str, object]) -> None:
    annotations = rule["annotations"]
    assert isinstance(annotations, dict)
    page, _, anchor = str(annotations["runbook_url"]).partition("#")
    assert page == "README.md"
    readme = (ROOT / page).read_text()
    rows = [line for line in readme.splitlines() if f'<a id="{anchor}"></a>' in line]
    assert len(rows) == 1, f"{rule['alert']}: no runbook row with the anchor {anchor}"
    assert re.match(r"^\| ", rows[0]), "the anchor is in a row of the runbook table"
