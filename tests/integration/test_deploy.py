"""deploy/docker-compose.yml, the Dockerfile and .env.example agree with the code.

There is no Docker engine here: docker-compose validates the file against the Compose schema
without one (`config`), and the structure ops rely on is checked on its output.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from services.survey.settings import SurveySettings
from shared.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "deploy" / "docker-compose.yml"
PIPELINE = ("ingest", "scoring", "router", "crm_sync")


def _config(*profiles: str) -> dict[str, Any]:
    args = ["docker-compose", "-p", "b24-nps", "-f", str(COMPOSE)]
    for profile in profiles:
        args += ["--profile", profile]
    result = subprocess.run([*args, "config"], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    loaded: dict[str, Any] = yaml.safe_load(result.stdout)
    return loaded


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return _config("sandbox")


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
    assert expected <= documented, expected - documented
