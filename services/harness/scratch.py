"""Scratch PostgreSQL databases and RabbitMQ vhosts on servers that others use.

`nps chaos`, the test suite and the benchmarks each run on a database and a vhost of their own,
created here and dropped on the way out whatever happened: a `make run` (or another test session)
on the same servers is never touched. A scratch vhost needs `rabbitmqctl`, i.e. a local RabbitMQ.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg

from shared.db import migrate
from shared.topology import declare

_LABEL = re.compile(r"[a-z0-9_]+")


class ScratchError(RuntimeError):
    """A scratch database or vhost cannot be made; the message says what is missing and why."""


def with_path(url: str, path: str) -> str:
    """`url` with another path: a database (`/name`) or a vhost (`/` + the quoted name)."""
    return urlunsplit(urlsplit(url)._replace(path=path))


def scratch_name(label: str) -> str:
    """`nps_<label>_<8 hex digits>`: a database and vhost name nobody else uses."""
    if not _LABEL.fullmatch(label):
        raise ValueError(f"scratch label {label!r}: lower-case letters, digits and _ only")
    return f"nps_{label}_{uuid.uuid4().hex[:8]}"


def _rabbitmqctl(*args: str) -> None:
    try:
        subprocess.run(  # noqa: S603 - fixed program, our own arguments
            ["rabbitmqctl", "-q", *args],  # noqa: S607 - found on PATH, as an operator runs it
            check=True,
            capture_output=True,
            timeout=120,
        )
    except subprocess.CalledProcessError as exc:
        output = (exc.stderr or exc.stdout or b"").decode(errors="replace").strip()
        raise ScratchError(f"rabbitmqctl {args[0]} failed: {output or exc}") from None


async def _drop_database(database_url: str, name: str) -> None:
    """Drop database `name` on the server of `database_url`, closing connections still open."""
    admin = await asyncpg.connect(with_path(database_url, "/postgres"))
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@asynccontextmanager
async def scratch_database(database_url: str, name: str) -> AsyncIterator[str]:
    """Database `name` created and migrated on the server of `database_url`: its DSN. Dropped on
    the way out."""
    dsn = with_path(database_url, f"/{name}")
    try:
        await migrate(dsn)
        yield dsn
    finally:
        await _drop_database(database_url, name)


@asynccontextmanager
async def scratch_vhost(
    rabbitmq_url: str, name: str, *, required: bool = True
) -> AsyncIterator[str]:
    """Vhost `name` added on the broker of `rabbitmq_url` (all permissions for the URL's user,
    the topology declared): its URL. Deleted on the way out.

    Without `rabbitmqctl` this raises ScratchError; with `required=False` it yields the URL as
    is instead (topology declared): a remote broker the caller accepts to share.
    """
    if shutil.which("rabbitmqctl") is None:
        if required:
            raise ScratchError(
                "rabbitmqctl not found: a scratch RabbitMQ vhost is added with rabbitmqctl (a "
                "local RabbitMQ), so that no other pipeline's vhost on that broker is touched"
            )
        await declare(rabbitmq_url)
        yield rabbitmq_url
        return
    user = urlsplit(rabbitmq_url).username or "guest"
    await asyncio.to_thread(_rabbitmqctl, "add_vhost", name)
    try:
        await asyncio.to_thread(_rabbitmqctl, "set_permissions", "-p", name, user, ".*", ".*", ".*")
        url = with_path(rabbitmq_url, "/" + quote(name, safe=""))
        await declare(url)
        yield url
    finally:
        await asyncio.to_thread(_rabbitmqctl, "delete_vhost", name)


@asynccontextmanager
async def scratch(
    label: str, database_url: str, rabbitmq_url: str, *, vhost_required: bool = True
) -> AsyncIterator[tuple[str, str]]:
    """A fresh migrated database and a fresh vhost with the topology declared, both named
    `nps_<label>_<hex8>`: (dsn, amqp_url). Both are dropped on the way out, whatever happened.
    `vhost_required=False`: see `scratch_vhost`."""
    name = scratch_name(label)
    async with (
        scratch_vhost(rabbitmq_url, name, required=vhost_required) as amqp_url,
        scratch_database(database_url, name) as dsn,
    ):
        yield dsn, amqp_url
