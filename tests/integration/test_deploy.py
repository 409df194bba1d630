"""deploy/docker-compose.yml, the Dockerfile and .env.example agree with the code.

There is no Docker engine here: docker-compose validates the file against the Compose schema
without one (`config`), and the structure ops rely on is checked on its output.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from services.app.settings import AppSettings
from services.dispatch.settings import DispatchSettings
from services.survey.settings import SurveySettings
from shared.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "deploy" / "docker-compose.yml"
PIPELINE = ("ingest", "scoring", "router", "crm_sync")


SECRETS = {
    "RABBITMQ_URL": "amqp://nps:rabbit-secret@rabbitmq:5672/",
    "DATABASE_URL": "postgresql://nps:pg-secret@postgres:5432/nps",
    "RABBITMQ_PASSWORD": "rabbit-secret",
    "POSTGRES_PASSWORD": "pg-secret",
    "REPORTS_TOKEN": "reports-secret",
    "GRAFANA_ADMIN_PASSWORD": "grafana-secret",
    "SURVEY_KEYS": "survey-key-2,survey-key-1",
}
"""What .env must hold for compose to start (the values here are the test's own)."""
PROFILES = ("sandbox", "monitoring", "tls")
APP_SERVICES = (*PIPELINE, "migrate", "reports", "sandbox")


def _run_config(env: dict[str, str], *profiles: str) -> subprocess.CompletedProcess[str]:
    args = ["docker-compose", "-p", "b24-nps", "-f", str(COMPOSE)]
    for profile in profiles:
        args += ["--profile", profile]
    # Only PATH and the given variables: nothing from the caller's environment fills a secret in.
    clean = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env}
    return subprocess.run(
        [*args, "config"], capture_output=True, text=True, check=False, env=clean, cwd=ROOT
    )


def _config(*profiles: str) -> dict[str, Any]:
    result = _run_config(SECRETS, *profiles)
    assert result.returncode == 0, result.stderr
    loaded: dict[str, Any] = yaml.safe_load(result.stdout)
    return loaded


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return _config(*PROFILES)


def test_the_sandbox_portal_is_an_opt_in_profile(compose: dict[str, Any]) -> None:
    assert compose["services"]["sandbox"]["profiles"] == ["sandbox"]
    for name in PIPELINE:
        assert "profiles" not in compose["services"][name]


def test_every_service_runs_from_one_image_with_healthchecks(compose: dict[str, Any]) -> None:
    services = compose["services"]
    images = {services[name]["image"] for name in (*PIPELINE, "migrate", "sandbox")}
    assert images == {"b24-nps:latest"}
    for name in (*PIPELINE, "rabbitmq", "postgres", "sandbox"):
        assert "test" in services[name]["healthcheck"], name
        assert services[name]["restart"] == "unless-stopped", name
    assert services["migrate"]["command"] == ["migrate"]


def test_services_wait_for_healthy_dependencies_and_the_migration(compose: dict[str, Any]) -> None:
    for name in PIPELINE:
        depends = compose["services"][name]["depends_on"]
        assert depends["rabbitmq"]["condition"] == "service_healthy"
        assert depends["postgres"]["condition"] == "service_healthy"
        assert depends["migrate"]["condition"] == "service_completed_successfully"
        assert compose["services"][name]["command"] == ["run", name]


def test_postgres_keeps_its_data_in_a_volume(compose: dict[str, Any]) -> None:
    volumes = compose["services"]["postgres"]["volumes"]
    targets = [v["target"] if isinstance(v, dict) else v.split(":")[1] for v in volumes]
    assert "/var/lib/postgresql/data" in targets
    assert "postgres-data" in compose["volumes"]


def test_image_runs_as_a_non_root_user_with_a_cached_dependency_layer() -> None:
    lines = [line.strip() for line in (ROOT / "Dockerfile").read_text().splitlines()]
    user_lines = [line for line in lines if line.startswith("USER ")]
    assert user_lines
    assert user_lines[-1] != "USER root"
    first_source_copy = next(i for i, line in enumerate(lines) if line.startswith("COPY shared"))
    install = next(i for i, line in enumerate(lines) if "pip install ." in line)
    assert install < first_source_copy


def test_env_example_documents_every_setting() -> None:
    documented = {
        line.lstrip("# ").split("=", 1)[0]
        for line in (ROOT / ".env.example").read_text().splitlines()
        if "=" in line and line.lstrip("# ").split("=", 1)[0].isupper()
    }
    expected = {name.upper() for name in Settings.model_fields}
    expected |= {f"SURVEY_{name.upper()}" for name in SurveySettings.model_fields}
    expected |= {f"DISPATCH_{name.upper()}" for name in DispatchSettings.model_fields}
    expected |= {f"APP_{name.upper()}" for name in AppSettings.model_fields}
    assert expected <= documented, expected - documented


@pytest.mark.parametrize("secret", sorted(SECRETS))
def test_compose_refuses_to_start_without_each_secret(secret: str) -> None:
    result = _run_config({k: v for k, v in SECRETS.items() if k != secret})
    assert result.returncode != 0, f"compose started without {secret}"
    assert f"set {secret} in .env" in result.stderr


def test_the_services_use_the_broker_and_database_urls_of_env(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in APP_SERVICES:
        environment = services[name]["environment"]
        assert environment["RABBITMQ_URL"] == SECRETS["RABBITMQ_URL"], name
        assert environment["DATABASE_URL"] == SECRETS["DATABASE_URL"], name
    assert services["rabbitmq"]["environment"]["RABBITMQ_DEFAULT_PASS"] == "rabbit-secret"
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD"] == "pg-secret"
    assert services["reports"]["environment"]["REPORTS_TOKEN"] == "reports-secret"


def test_env_example_documents_every_variable_compose_reads() -> None:
    documented = {
        line.lstrip("# ").split("=", 1)[0]
        for line in (ROOT / ".env.example").read_text().splitlines()
        if "=" in line
    }
    read = set(re.findall(r"\$\{([A-Z0-9_]+)", COMPOSE.read_text()))
    assert read - documented == set()


def test_every_container_has_limits_and_rotated_logs(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        limits = service["deploy"]["resources"]["limits"]
        assert limits["memory"], name
        assert limits["cpus"], name
        assert service["logging"]["driver"] == "json-file", name
        assert service["logging"]["options"]["max-size"], name
        assert service["logging"]["options"]["max-file"], name


def test_root_filesystems_are_read_only_where_the_image_allows(compose: dict[str, Any]) -> None:
    writable = {"rabbitmq"}  # its image writes its configuration at start-up
    for name, service in compose["services"].items():
        assert service.get("read_only", False) is (name not in writable), name
    for name in APP_SERVICES:
        assert "/tmp" in compose["services"][name]["tmpfs"], name


def test_ingest_health_is_on_a_port_of_its_own(compose: dict[str, Any]) -> None:
    ingest = compose["services"]["ingest"]
    environment = ingest["environment"]
    assert environment["INGEST_HEALTH_PORT"] != environment["INGEST_PORT"]
    assert f":{environment['INGEST_HEALTH_PORT']}/readyz" in " ".join(ingest["healthcheck"]["test"])
    assert _published_targets(ingest) == {environment["INGEST_PORT"]}


def test_prometheus_scrapes_the_ports_the_services_serve_metrics_on(
    compose: dict[str, Any],
) -> None:
    scrape = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    services = compose["services"]
    for job in scrape["scrape_configs"]:
        [sd] = job["dns_sd_configs"]
        [name] = sd["names"]
        environment = services[name]["environment"]
        port = environment["INGEST_HEALTH_PORT" if name == "ingest" else "HEALTH_PORT"]
        assert str(sd["port"]) == port, name


def _mounts(service: dict[str, Any]) -> dict[str, Path]:
    """Bind mounts, target → host path (docker-compose v1 prints `src:target:mode`, v2 dicts)."""
    mounts: dict[str, Path] = {}
    for volume in service["volumes"]:
        if isinstance(volume, dict):
            source, target = volume["source"], volume["target"]
        else:
            source, target = volume.split(":")[:2]
        if source.startswith("/"):
            mounts[target] = Path(source)
    return mounts


def _published_targets(service: dict[str, Any]) -> set[str]:
    return {
        str(port["target"]) if isinstance(port, dict) else port.split(":")[-1].split("/")[0]
        for port in service["ports"]
    }


def test_the_monitoring_profile_provisions_prometheus_and_grafana_from_deploy(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    for name in ("prometheus", "grafana"):
        assert services[name]["profiles"] == ["monitoring"]
    assert _mounts(services["prometheus"])["/etc/prometheus"] == ROOT / "deploy" / "prometheus"
    grafana = _mounts(services["grafana"])
    assert grafana["/etc/grafana/provisioning"] == ROOT / "deploy" / "grafana" / "provisioning"
    provider = yaml.safe_load(
        (ROOT / "deploy" / "grafana" / "provisioning" / "dashboards" / "dashboards.yml").read_text()
    )
    [dashboards] = provider["providers"]
    assert grafana[dashboards["options"]["path"]] == ROOT / "deploy" / "grafana" / "dashboards"
    environment = services["grafana"]["environment"]
    assert environment["GF_SECURITY_ADMIN_PASSWORD"] == "grafana-secret"
    assert "yesoreyeram-infinity-datasource" in environment["GF_INSTALL_PLUGINS"]


def test_the_tls_profile_puts_caddy_in_front_of_the_webhooks_only(compose: dict[str, Any]) -> None:
    caddy = compose["services"]["caddy"]
    assert caddy["profiles"] == ["tls"]
    caddyfile = _mounts(caddy)["/etc/caddy/Caddyfile"]
    assert caddyfile == ROOT / "deploy" / "caddy" / "Caddyfile"
    port = compose["services"]["ingest"]["environment"]["INGEST_PORT"]
    proxied = re.findall(r"handle (\S+) \{\s*reverse_proxy (\S+)", caddyfile.read_text())
    assert proxied == [("/webhooks/bitrix24*", f"ingest:{port}")]
