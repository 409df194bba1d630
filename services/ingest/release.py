"""Held items go out once the configuration maps their category, without a restart.

Ingest re-reads the portal YAML on SIGHUP, and when the file's modification time or size changed
(checked every `CONFIG_RELOAD_S` seconds). A valid file is applied to the hydrator and the sweep;
then the held items of the categories it now maps are submitted again, each as a
`webhook.received` (`source: "sweep"`, `event: "HELD"`) with the fields it was held with, through
the outbox in the same transaction that marks it released. The submission's id and its
(portal, event, item, ts) key are derived from the held state, and the hydrator publishes each
state of an item once, so a second reload, a restart or two processes releasing at the same time
never score or route an answer twice. On start-up ingest releases what the file it started with
maps, which covers a YAML edited while ingest was down.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from services.ingest import store
from services.ingest.webhook import correlation_for
from shared.events import PortalRef, WebhookReceived, derived_id
from shared.logging import get_logger
from shared.outbox import Outbox
from shared.portal_config import ConfigError, PortalConfig, load_portal_config
from shared.portals import PortalConfigs

HELD_EVENT = "HELD"
"""`event` of the submission of a held item (its `source` is `sweep`: ingest submits it itself)."""

log = get_logger(__name__)

Stamp = tuple[int, int] | None
"""A file's modification time (ns) and size; None when it cannot be read."""


def file_stamp(path: Path) -> Stamp:
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_size


def reload_refusal(running: PortalConfig, new: PortalConfig) -> str | None:
    """Why `new` cannot replace `running` without a restart (the HTTP endpoints keep checking
    events against the smart process and the portal they started with); None when it can."""
    if new.survey.entity_type_id != running.survey.entity_type_id:
        return (
            f"survey.entity_type_id changed from {running.survey.entity_type_id} to "
            f"{new.survey.entity_type_id}: restart ingest to apply it"
        )
    if new.portal.member_id != running.portal.member_id:
        return "portal.member_id changed: restart ingest to apply it"
    return None


async def release_held(
    pool: asyncpg.Pool, outbox: Outbox, config: PortalConfig, portal: str | None = None
) -> int:
    """Submit the held items of the categories `config` maps (of portal key `portal` only,
    unless None: the one portal of webhook mode); how many were submitted."""
    entity_type_id = config.survey.entity_type_id
    categories = [segment.category_id for segment in config.survey.segments]
    submitted = 0
    async with outbox.transaction(pool) as conn:
        for row in await store.take_held(conn, entity_type_id, categories, portal):
            ref = PortalRef(member_id=row["member_id"], domain=row["domain"])
            fields = json.loads(row["fields"])
            updated_at = row["updated_at"]
            event = WebhookReceived(
                event_id=derived_id(
                    HELD_EVENT, row["portal"], entity_type_id, row["item_id"], updated_at
                ),
                correlation_id=correlation_for(ref, entity_type_id, row["item_id"]),
                portal=ref,
                source="sweep",
                event=HELD_EVENT,
                entity_type_id=entity_type_id,
                item_id=row["item_id"],
                ts=int(updated_at.timestamp()),
                fields=fields,
            )
            payload = {
                "id": row["item_id"],
                "categoryId": row["category_id"],
                "updatedTime": fields.get("updatedTime"),
            }
            if await store.record_received(outbox, conn, event, payload):
                submitted += 1
                log.info(
                    "held_item_submitted", item_id=row["item_id"], category_id=row["category_id"]
                )
    return submitted


@dataclass
class ConfigReloader:
    """Watches the portal YAML and applies a changed, valid file (see the module docstring)."""

    path: Path
    config: PortalConfig
    pool: asyncpg.Pool
    outbox: Outbox
    apply: Sequence[Callable[[PortalConfig], None]]

    def __post_init__(self) -> None:
        self._stamp = file_stamp(self.path)
        self._release_due = True

    async def run(self, interval_s: float, stop: asyncio.Event) -> None:
        """Release what the running file maps, then check every `interval_s` and on SIGHUP."""
        wake = asyncio.Event()
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signal.SIGHUP, wake.set)
        try:
            await self.release()
            while not stop.is_set():
                waits = [asyncio.ensure_future(e.wait()) for e in (stop, wake)]
                _done, pending = await asyncio.wait(
                    waits, timeout=interval_s, return_when=asyncio.FIRST_COMPLETED
                )
                for task in pending:
                    task.cancel()
                if stop.is_set():
                    return
                forced = wake.is_set()
                wake.clear()
                await self.check(force=forced)
                if self._release_due:
                    await self.release()
        finally:
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.remove_signal_handler(signal.SIGHUP)

    async def check(self, *, force: bool = False) -> bool:
        """Reload when the file changed (or `force`, on SIGHUP); True when a new file applies."""
        stamp = file_stamp(self.path)
        if not force and stamp == self._stamp:
            return False
        self._stamp = stamp
        try:
            config = load_portal_config(self.path)
        except (ConfigError, OSError) as exc:
            log.warning("config_reload_failed", error=str(exc), keeping="the running config")
            return False
        refusal = reload_refusal(self.config, config)
        if refusal is not None:
            log.warning("config_reload_refused", reason=refusal, keeping="the running config")
            return False
        for apply in self.apply:
            apply(config)
        self.config = config
        log.info(
            "config_reloaded",
            path=str(self.path),
            segments=[segment.category_id for segment in config.survey.segments],
        )
        await self.release()
        return True

    async def release(self) -> int:
        """`release_held` for the running config; a failure is logged and retried on the next
        check."""
        try:
            submitted = await release_held(self.pool, self.outbox, self.config)
        except Exception as exc:
            self._release_due = True
            log.warning("held_items_release_failed", error=f"{type(exc).__name__}: {exc}")
            return 0
        self._release_due = False
        if submitted:
            log.info("held_items_released", submitted=submitted)
        return submitted


class InstalledReleases:
    """Application mode: each installed portal's held items go out once its own configuration
    (stored, read again by `AppPortals`) maps their category: every round, for every portal
    served (one short query each), so an item a hydrator still holding the portal's former
    configuration held just after a change goes out too. A failed release is logged and tried
    again on the next round."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        outbox: Outbox,
        configs: PortalConfigs,
        served: Callable[[], Sequence[str]],
    ) -> None:
        self._pool = pool
        self._outbox = outbox
        self._configs = configs
        self._served = served

    async def run(self, interval_s: float, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.release()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval_s)

    async def release(self) -> int:
        """Release what each portal's configuration maps; how many items were submitted."""
        due = [(key, self._configs.get(key)) for key in self._served()]
        submitted = 0
        for key, config in due:
            try:
                count = await release_held(self._pool, self._outbox, config, portal=key)
            except Exception as exc:  # the database restarting (asyncpg's errors vary): next round
                log.warning("held_items_release_failed", portal=key, error=type(exc).__name__)
                continue
            if count:
                log.info("held_items_released", portal=key, submitted=count)
            submitted += count
        return submitted
