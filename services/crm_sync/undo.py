"""`nps undo <write>`: put a contact field back to what it held before one write of ours;
`nps undo --answer <id>`: the same for every field one answer wrote.

The field is read first; the before-value is restored only if the field still holds exactly the
value b24-nps wrote. Anything else (a person changed it since, a later write of ours replaced it,
the contact is gone, the write was made on another portal than the one undone on: the served
portal, or in application mode the one `--portal` names) is refused with the reason. The undo is
itself audited, and the ledger forgets our ownership unless the restored value was ours too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncpg

from services.crm_sync.policy import is_empty, same
from services.crm_sync.read import WriteView, answer_writes, get_write, later_write
from services.crm_sync.store import record_undo
from shared.bitrix24 import Bitrix24Client, NotFound
from shared.db import Conn


@dataclass(frozen=True)
class UndoResult:
    restored: bool
    message: str
    undo_id: int | None = None


def _shown(value: Any) -> str:
    return "(empty)" if is_empty(value) else repr(value)


def _clearing(value: Any) -> Any:
    """The value that empties the field (JSON body: a list field takes [], a scalar "")."""
    return [] if isinstance(value, list) else ""


async def _undoable(conn: Conn, write_id: int, portal: str) -> WriteView | str:
    """The write to undo, or why it cannot be undone (from our own records)."""
    write = await get_write(conn, write_id)
    if write is None:
        return f"there is no write #{write_id} (see `nps audit <contact>`)"
    if write.portal != portal:
        return (
            f"write #{write_id} was made on portal {write.portal}, not on {portal}, the portal"
            " this undo is on: nothing was restored"
        )
    if write.kind == "undo":
        return f"write #{write_id} is itself an undo (of #{write.undo_of})"
    if write.undone_by is not None:
        return f"write #{write_id} was already undone by #{write.undone_by}"
    later = await later_write(conn, write)
    if later is not None:
        return (
            f"b24-nps wrote {write.field} of contact {write.contact_id} again after #{write_id} "
            f"(write #{later.id}, {later.kind}); undo #{later.id} first"
        )
    return write


async def undo_write(
    pool: asyncpg.Pool, client: Bitrix24Client, write_id: int, portal: str
) -> UndoResult:
    """Undo write `write_id` if it was made on `portal` (the deployment's: `client` calls it)."""
    async with pool.acquire() as conn:
        write = await _undoable(conn, write_id, portal)
    if isinstance(write, str):
        return UndoResult(False, write)
    where = f"{write.field} of contact {write.contact_id}"
    try:
        reply = await client.call("crm.contact.get", {"ID": write.contact_id})
    except NotFound:
        return UndoResult(False, f"contact {write.contact_id} no longer exists on the portal")
    current = reply.result.get(write.field) if isinstance(reply.result, dict) else None
    if not same(current, write.after):
        return UndoResult(
            False,
            f"{where} now holds {_shown(current)}, not the value b24-nps wrote "
            f"({_shown(write.after)}): it was changed since, so nothing was restored",
        )
    value = _clearing(write.after) if is_empty(write.before) else write.before
    await client.call(
        "crm.contact.update",
        {
            "ID": write.contact_id,
            "FIELDS": {write.field: value},
            "PARAMS": {"REGISTER_SONET_EVENT": "N"},
        },
    )
    async with pool.acquire() as conn:
        undo_id = await record_undo(conn, write)
    return UndoResult(
        True,
        f"restored {where}: {_shown(write.after)} → {_shown(write.before)} (undo #{undo_id})",
        undo_id,
    )


async def undo_answer(
    pool: asyncpg.Pool, client: Bitrix24Client, answer_id: str, portal: str
) -> list[UndoResult]:
    """Undo every contact-field write of one answer on `portal` still in force, newest first,
    each with the checks of `undo_write` (a field changed since, or written again, is left as
    it is)."""
    async with pool.acquire() as conn:
        writes = await answer_writes(conn, answer_id, portal)
    if not writes:
        return [
            UndoResult(False, f"b24-nps wrote no contact field on portal {portal} for {answer_id}")
        ]
    standing = [w for w in writes if w.kind != "undo" and w.undone_by is None]
    if not standing:
        return [UndoResult(False, f"every write of answer {answer_id} was already undone")]
    return [await undo_write(pool, client, write.id, portal) for write in reversed(standing)]
