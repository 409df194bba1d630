"""Application mode's periodic jobs (reading the installed portals, releasing each portal's held
answers, re-binding the portals) go on through a database restart: whatever asyncpg raises
meanwhile is logged and tried again next round, never ending the service (a background job
that ends stops it)."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import asyncpg
import pytest
from asyncpg.exceptions import _base as asyncpg_base
from pydantic import SecretStr

from services.app import rebind
from services.app.installer import Installer
from services.app.rebind import RebindRound
from services.ingest import release
from services.ingest.release import InstalledReleases
from shared.app_portals import AppPortals
from shared.bitrix24.tokens import AppCredentials, OAuthServer, TokenBook
from shared.outbox import Outbox
from shared.portal_config import load_portal_config
from shared.portals import PortalConfigs
from tests.support.paths import EXAMPLE_CONFIG

FAILURES = [
    asyncpg_base.InternalClientError("cannot switch to state 12; another operation is in progress"),
    asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed"),
    asyncpg.exceptions.CannotConnectNowError("the database system is starting up"),
    ConnectionRefusedError("refused"),
]
NO_POOL = cast(asyncpg.Pool, None)  # never used: the reads are replaced


@pytest.mark.parametrize("failure", FAILURES)
async def test_a_failed_read_of_the_installed_portals_is_read_again(
    monkeypatch: pytest.MonkeyPatch, failure: Exception
) -> None:
    oauth = OAuthServer(AppCredentials("http://oauth.invalid", "app", SecretStr("s")))
    portals = AppPortals(NO_POOL, TokenBook(NO_POOL, oauth), load_portal_config(EXAMPLE_CONFIG))
    stop = asyncio.Event()
    reads: list[int] = []

    async def reload() -> None:
        reads.append(len(reads))
        if len(reads) == 1:
            raise failure
        stop.set()

    monkeypatch.setattr(portals, "reload", reload)
    await asyncio.wait_for(portals.run(0.01, stop), timeout=5)
    assert reads == [0, 1]
    await oauth.aclose()


@pytest.mark.parametrize("failure", FAILURES)
async def test_a_failed_release_of_held_answers_is_tried_again(
    monkeypatch: pytest.MonkeyPatch, failure: Exception
) -> None:
    config = load_portal_config(EXAMPLE_CONFIG)
    calls: list[str] = []

    async def release_held(*_args: Any, portal: str | None = None) -> int:
        calls.append(str(portal))
        if len(calls) == 1:
            raise failure
        return 1

    monkeypatch.setattr(release, "release_held", release_held)
    releases = InstalledReleases(NO_POOL, Outbox(), PortalConfigs({"p": config}), lambda: ("p",))
    assert await releases.release() == 0  # logged, not raised
    assert await releases.release() == 1
    assert calls == ["p", "p"]


@pytest.mark.parametrize("failure", FAILURES)
async def test_a_failed_rebind_round_is_logged_and_the_next_one_comes(
    monkeypatch: pytest.MonkeyPatch, failure: Exception
) -> None:
    stop = asyncio.Event()
    rounds: list[int] = []

    async def rebind_all(_installer: object) -> RebindRound:
        rounds.append(len(rounds))
        if len(rounds) == 1:
            raise failure
        stop.set()
        return RebindRound()

    monkeypatch.setattr(rebind, "rebind_all", rebind_all)
    await asyncio.wait_for(rebind.run_rebind(cast(Installer, None), 0.01, stop), timeout=5)
    assert rounds == [0, 1]
