"""`nps chaos`: what it refuses before touching any server, and how it reports a verdict. The
run itself is `tests/e2e/test_chaos_command.py`."""

from __future__ import annotations

from typing import Any

import pytest
from typer.testing import CliRunner

from services.cli import app
from services.harness.chaos import FAULTS
from services.harness.chaos_run import SHOWN_PER_KIND, passed, summary
from services.harness.portals import PortalsVerdict
from services.harness.scratch import scratch_name
from services.harness.verdict import Verdict


def test_an_unknown_fault_is_refused_with_the_valid_ones_named() -> None:
    result = CliRunner().invoke(app, ["chaos", "--fault", "kill:everything", "--answers", "1"])
    assert result.exit_code == 2
    assert "unknown fault kill:everything" in result.output
    for fault in FAULTS:
        assert fault in result.output


def test_at_least_one_fault_is_required() -> None:
    result = CliRunner().invoke(app, ["chaos", "--answers", "10"])
    assert result.exit_code == 2
    assert "--fault" in result.output


@pytest.mark.parametrize("fault", ["broker-restart", "db-restart"])
def test_a_server_restart_needs_yes_and_says_who_else_it_hits(fault: str) -> None:
    result = CliRunner().invoke(app, ["chaos", "--fault", "kill:router", "--fault", fault])
    assert result.exit_code == 2
    assert f"warning: {fault} restarts the local" in result.output
    assert "every client of that server" in result.output
    assert f"pass --yes to run {fault}" in result.output


def test_a_clean_verdict_passes_and_says_so() -> None:
    verdict = Verdict(items=65, answers=84, requests=40, messages=36)
    assert passed(verdict)
    assert summary(verdict) == [
        "verdict: items 65 · deals 0 · answers 84 · requests 40 · messages 36 · lost 0 ·"
        " duplicated 0 · resent 0 · overwritten 0 · dlq 0",
        "PASS: nothing lost, duplicated or overwritten; no dead letters",
    ]


def test_a_documented_resend_passes_but_is_listed_and_counted_apart() -> None:
    verdict = Verdict(
        requests=40, messages=37, resent=1, register={"sent": 36, "skipped": 3, "failed": 1}
    )
    verdict.note("resent", "send 0 of request r-1: a message again after kill:dispatch")
    assert passed(verdict)
    lines = summary(verdict)
    assert "resent 1" in lines[0]
    assert lines[1] == "dispatch's register: sent 36, skipped 3, failed 1"
    assert lines[2:4] == ["resent:", "  send 0 of request r-1: a message again after kill:dispatch"]
    assert lines[4] == "PASS: nothing lost, duplicated or overwritten; no dead letters"
    assert lines[5].startswith("note: 1 e-mail(s) went twice because the SMTP server had")


def test_a_failed_verdict_lists_what_went_wrong_capped_per_kind() -> None:
    verdict = Verdict(items=30, answers=30, lost=SHOWN_PER_KIND + 3, duplicated=1)
    for item in range(SHOWN_PER_KIND + 3):
        verdict.note("lost", f"item {item} never scored")
    verdict.note("duplicated", "2 entities for action a-1")
    lines = summary(verdict)
    assert not passed(verdict)
    assert lines[1] == "lost:"
    assert lines[2 : 2 + SHOWN_PER_KIND] == [f"  item {i} never scored" for i in range(10)]
    assert lines[2 + SHOWN_PER_KIND] == "  … 3 more in verdict.json"
    assert lines[-3:-1] == ["duplicated:", "  2 entities for action a-1"]
    assert lines[-1].startswith("FAIL")


def test_dead_letters_alone_fail_the_run() -> None:
    verdict = Verdict(items=5, answers=5, dlq=1)
    verdict.note("dlq", "crm_sync.actions m-1: 400 from the portal")
    assert verdict.ok
    assert not passed(verdict)
    assert summary(verdict)[1:3] == ["dlq:", "  crm_sync.actions m-1: 400 from the portal"]


def test_scratch_names_are_fresh_and_safe_to_quote() -> None:
    first, second = scratch_name("chaos"), scratch_name("chaos")
    assert first != second
    assert first.startswith("nps_chaos_")
    assert len(first) == len("nps_chaos_") + 8
    with pytest.raises(ValueError, match="lower-case letters"):
        scratch_name('x"; DROP')


@pytest.mark.parametrize("count", ["0", "1", "9"])
def test_portals_takes_two_to_eight(count: str) -> None:
    result = CliRunner().invoke(app, ["chaos", "--fault", "kill:router", "--portals", count])
    assert result.exit_code == 2
    text = " ".join(result.output.replace("│", " ").split())
    assert "Invalid value for '--portals': expected 2 to 8 portals" in text
    assert text.count(f"got {count}") == 1


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        pytest.param(
            ["--fault", "kill:app"],
            "Invalid value for --fault: kill:app: the application runs in application mode"
            " only; add --portals 2",
            id="kill-app-without-portals",
        ),
        pytest.param(
            ["--portals", "2", "--fault", "kill:router", "--fault", "kill:dispatch"],
            "Invalid value for --fault: kill:dispatch: a run on several portals starts no"
            " survey page or dispatch (answers only); not with --portals",
            id="kill-dispatch-with-portals",
        ),
        pytest.param(
            ["--portals", "2", "--fault", "kill:app", "--sales", "5", "--campaign", "3"],
            "Invalid value for --sales and --campaign: a run on several portals creates answers"
            " only (no dispatch); not with --portals",
            id="sales-with-portals",
        ),
        pytest.param(
            ["--portals", "2", "--fault", "kill:apps"],
            "unknown fault kill:apps; choose from",
            id="unknown-fault-with-portals",
        ),
    ],
)
def test_what_the_mode_cannot_do_is_refused_naming_the_option(
    args: list[str], expected: str
) -> None:
    result = CliRunner().invoke(app, ["chaos", *args])
    assert result.exit_code == 2
    assert expected in " ".join(result.output.replace("│", " ").split())


def _portal(name: str, **figures: Any) -> Verdict:
    return Verdict(portal=f"m-{name}", **figures)


def test_the_portals_verdict_sums_each_portals_figures_and_adds_crossed() -> None:
    verdict = PortalsVerdict(
        portals={
            "alpha": _portal(
                "alpha", items=35, deals=9, answers=51, leads=20, tasks=11, patches=66
            ),
            "beta": _portal("beta", items=35, deals=9, answers=50, leads=19, tasks=10, patches=60),
        }
    )
    assert passed(verdict)
    assert summary(verdict) == [
        "portal alpha (m-alpha): items 35 · deals 9 · answers 51 · leads 20 · tasks 11 ·"
        " patches 66 · lost 0 · duplicated 0 · overwritten 0",
        "portal beta (m-beta): items 35 · deals 9 · answers 50 · leads 19 · tasks 10 ·"
        " patches 60 · lost 0 · duplicated 0 · overwritten 0",
        "verdict: portals 2 · items 70 · deals 18 · answers 101 · leads 39 · tasks 21 ·"
        " patches 126 · lost 0 · duplicated 0 · overwritten 0 · crossed 0 · dlq 0",
        "PASS: in every portal nothing lost, duplicated or overwritten; nothing crossed to"
        " another portal; no dead letters",
    ]


@pytest.mark.parametrize(
    ("alpha", "crossed", "dlq"),
    [
        pytest.param({"lost": 1}, 0, 0, id="one-portal-lost"),
        pytest.param({"duplicated": 2}, 0, 0, id="one-portal-duplicated"),
        pytest.param({"overwritten": 1}, 0, 0, id="one-portal-overwritten"),
        pytest.param({}, 1, 0, id="crossed"),
        pytest.param({}, 0, 1, id="dead-letters"),
    ],
)
def test_any_portal_wrong_or_anything_crossed_fails_the_run(
    alpha: dict[str, int], crossed: int, dlq: int
) -> None:
    verdict = PortalsVerdict(
        portals={"alpha": _portal("alpha", **alpha), "beta": _portal("beta")},
        crossed=crossed,
        dlq=dlq,
    )
    assert not passed(verdict)
    assert verdict.ok is (dlq > 0)
    assert summary(verdict)[-1].startswith("FAIL")
    line = summary(verdict)[2]
    for figure in ("lost", "duplicated", "overwritten"):
        assert f"{figure} {alpha.get(figure, 0)} ·" in line
    assert line.endswith(f"crossed {crossed} · dlq {dlq}")


def test_the_crossings_are_listed_under_their_kind() -> None:
    verdict = PortalsVerdict(portals={"alpha": _portal("alpha"), "beta": _portal("beta")})
    verdict.crossed = 1
    verdict.note("crossed", "lead 1000100 in alpha for beta's action b-1")
    verdict.note("lost", "beta: item 2000001 never scored")
    lines = summary(verdict)
    assert lines[3:7] == [
        "lost:",
        "  beta: item 2000001 never scored",
        "crossed:",
        "  lead 1000100 in alpha for beta's action b-1",
    ]
