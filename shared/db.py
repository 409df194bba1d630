"""PostgreSQL access: the asyncpg pool and the migration runner.

Migrations are the ordered plain-SQL files in `migrations/` (`NNNN_name.sql`), each applied once in
its own transaction and recorded in `schema_migrations`. A session-level advisory lock makes four
services starting at once apply them exactly once.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from shared.logging import get_logger

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
_LOCK_KEY = 0x6E70_7331  # "nps1": the advisory lock that serialises migration runs
_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")

log = get_logger(__name__)

Conn = asyncpg.Connection | PoolConnectionProxy
"""A connection of our own or one borrowed from a pool: what every store function takes."""


@dataclass(frozen=True)
class Migration:
    version: str
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def discover_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """Every `NNNN_name.sql` file in order; a misnamed file or a repeated number is an error."""
    migrations: list[Migration] = []
    for path in sorted(directory.glob("*.sql")):
        match = _NAME.match(path.name)
        if match is None:
            raise ValueError(f"{path.name}: migration files are named NNNN_lower_snake.sql")
        migrations.append(Migration(match.group(1), path.stem, path.read_text(encoding="utf-8")))
    versions = [m.version for m in migrations]
    repeated = sorted({v for v in versions if versions.count(v) > 1})
    if repeated:
        raise ValueError(f"migration numbers used twice: {', '.join(repeated)}")
    return migrations


def _with_database(dsn: str, database: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path=f"/{database}"))


async def ensure_database(dsn: str) -> bool:
    """Create the database named in `dsn` if it is missing; True when it was created."""
    name = urlsplit(dsn).path.lstrip("/")
    if not name:
        raise ValueError("DATABASE_URL names no database (expected postgresql://.../<name>)")
    conn = await asyncpg.connect(_with_database(dsn, "postgres"))
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if exists:
            return False
        quoted = '"' + name.replace('"', '""') + '"'
        try:
            await conn.execute(f"CREATE DATABASE {quoted}")
        except asyncpg.DuplicateDatabaseError:
            return False
        return True
    finally:
        await conn.close()


async def migrate(dsn: str, directory: Path = MIGRATIONS_DIR) -> list[str]:
    """Create the database if needed and apply pending migrations; returns the names applied."""
    if await ensure_database(dsn):
        log.info("database_created")
    migrations = discover_migrations(directory)
    conn = await asyncpg.connect(dsn)
    applied_now: list[str] = []
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_KEY)
        try:
            await conn.execute(
                """CREATE TABLE IF NOT EXISTS schema_migrations (
                       version text PRIMARY KEY,
                       name text NOT NULL,
                       checksum text NOT NULL,
                       applied_at timestamptz NOT NULL DEFAULT now())"""
            )
            rows = await conn.fetch("SELECT version, name, checksum FROM schema_migrations")
            done = {row["version"]: row for row in rows}
            for migration in migrations:
                row = done.get(migration.version)
                if row is not None:
                    if row["checksum"] != migration.checksum:
                        log.warning("migration_changed_after_apply", migration=migration.name)
                    continue
                async with conn.transaction():
                    await conn.execute(migration.sql)
                    await conn.execute(
                        "INSERT INTO schema_migrations (version, name, checksum)"
                        " VALUES ($1, $2, $3)",
                        migration.version,
                        migration.name,
                        migration.checksum,
                    )
                applied_now.append(migration.name)
                log.info("migration_applied", migration=migration.name)
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_KEY)
    finally:
        await conn.close()
    return applied_now


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Return a connection to the pool as it is: asyncpg has already rolled back an open
    transaction and dropped its listeners. The default reset costs one more round trip per
    acquire (advisory unlock, CLOSE ALL, UNLISTEN, RESET ALL) for state this code never leaves
    behind: whoever takes a session advisory lock or sets a session variable undoes it before
    releasing (see `ContactLocks`, `Sweeper.sweep_once`)."""


async def create_pool(dsn: str, min_size: int = 1, max_size: int = 10) -> asyncpg.Pool:
    """The connection pool a service uses for its whole life (opened in its lifespan)."""
    pool = await asyncpg.create_pool(
        dsn, min_size=min_size, max_size=max_size, command_timeout=30, reset=_keep_session
    )
    assert pool is not None
    return pool
