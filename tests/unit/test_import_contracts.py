"""The import contracts of pyproject.toml (`lint-imports`, run by `make lint`): they hold for the
code, and each one fails when a copy of the code breaks it."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = str(Path(sys.executable).with_name("lint-imports"))
CONTRACTS: list[dict[str, Any]] = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"][
    "importlinter"
]["contracts"]


def _contract(contract_id: str) -> dict[str, Any]:
    return next(c for c in CONTRACTS if c["id"] == contract_id)


def _lint(root: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run(
        [LINT_IMPORTS, "--no-cache"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _write(root: Path, module: str, code: str) -> None:
    (root / (module.replace(".", "/") + ".py")).write_text(code)


def _append(root: Path, module: str, code: str) -> None:
    path = root / (module.replace(".", "/") + ".py")
    path.write_text(path.read_text() + "\n" + code)


def _pipeline_service_imports_another(root: Path) -> list[str]:
    _write(root, "services.scoring.breach", "from services.router import rules\n")
    return ["services.scoring.breach -> services.router.rules"]


def _pure_modules_reach_io(root: Path) -> list[str]:
    # Indirect on purpose: a module beside each pure one imports asyncpg, the pure one only it.
    sources: list[str] = _contract("pure-no-io")["source_modules"]
    for module in sources:
        package = module.rpartition(".")[0]
        _write(root, f"{package}.io_breach", "import asyncpg\n")
        _append(root, module, f"from {package} import io_breach\n")
    return [f"{module} is not allowed to import asyncpg" for module in sources]


def _shared_imports_a_service(root: Path) -> list[str]:
    _write(root, "shared.breach", "from services.scoring import nps\n")
    return ["shared.breach -> services.scoring.nps"]


def _sandbox_imports_the_product(root: Path) -> list[str]:
    _write(root, "services.sandbox.breach", "from shared import events\n")
    return ["services.sandbox.breach -> shared.events"]


def _reader_reaches_past_a_read_module(root: Path) -> list[str]:
    _write(root, "services.reports.breach", "from services.scoring import store\n")
    _write(root, "services.ops.breach", "from services.router import rules\n")
    _write(root, "services.harness.breach", "from services.crm_sync import policy\n")
    return [
        "services.reports.breach -> services.scoring.store",
        "services.ops.breach -> services.router.rules",
        "services.harness.breach -> services.crm_sync.policy",
    ]


def _a_test_module_is_imported(root: Path) -> list[str]:
    _write(root, "tests.integration.test_breach", "from tests.unit import test_scoring_nps\n")
    _write(root, "tests.support.breach", "from tests import conftest\n")
    return [
        "tests.integration.test_breach -> tests.unit.test_scoring_nps",
        "tests.support.breach -> tests.conftest",
    ]


def _ops_tool_imports_the_harness(root: Path) -> list[str]:
    _write(root, "services.ops.breach", "from services.harness import scratch\n")
    return ["services.ops.breach -> services.harness.scratch"]


def _harness_imports_the_dashboard(root: Path) -> list[str]:
    _write(root, "services.harness.breach", "from services.reports import views\n")
    return ["services.harness.breach -> services.reports.views"]


def _product_imports_the_harness(root: Path) -> list[str]:
    _write(root, "services.scoring.breach", "from services.harness import scratch\n")
    return ["services.scoring.breach -> services.harness.scratch"]


BREACHES: dict[str, Callable[[Path], list[str]]] = {
    "pipeline-independent": _pipeline_service_imports_another,
    "pure-no-io": _pure_modules_reach_io,
    "shared-below-services": _shared_imports_a_service,
    "sandbox-standalone": _sandbox_imports_the_product,
    "read-modules-only": _reader_reaches_past_a_read_module,
    "test-modules-private": _a_test_module_is_imported,
    "ops-tools-apart": _ops_tool_imports_the_harness,
    "harness-from-outside": _harness_imports_the_dashboard,
    "product-without-harness": _product_imports_the_harness,
}


def _status(output: str) -> dict[str, str]:
    return {
        c["id"]: m.group(1)
        for c in CONTRACTS
        if (m := re.search(re.escape(c["name"]) + r" (KEPT|BROKEN)", output))
    }


def test_every_contract_has_a_breach_below() -> None:
    assert sorted(BREACHES) == sorted(c["id"] for c in CONTRACTS)


def test_the_code_keeps_every_contract() -> None:
    result = _lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert _status(result.stdout) == {c["id"]: "KEPT" for c in CONTRACTS}


@pytest.mark.parametrize("contract_id", sorted(BREACHES))
def test_a_breach_breaks_its_contract_and_only_it(contract_id: str, tmp_path: Path) -> None:
    for package in ("services", "shared", "tests", "bench"):
        shutil.copytree(
            ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    expected = BREACHES[contract_id](tmp_path)

    result = _lint(tmp_path)

    assert result.returncode == 1, result.stdout + result.stderr
    assert _status(result.stdout) == {
        c["id"]: "BROKEN" if c["id"] == contract_id else "KEPT" for c in CONTRACTS
    }
    report = re.sub(r" \(l\.\d+\)", "", result.stdout)
    for line in expected:
        assert line in report, f"{line!r} not reported:\n{result.stdout}"
