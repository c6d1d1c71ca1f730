"""Engines for SQLite and PostgreSQL, migrations, and the schema-version check."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from ledger.errors import NotMigrated

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent.parent / "migrations"

WRITE = {"ledger_write": True}
"""Execution options for a write transaction: on SQLite it begins with ``BEGIN IMMEDIATE``."""


def create_engine(url: str, pool_size: int = 10) -> AsyncEngine:
    """An async engine with the settings each database needs for a durable, serialisable log."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, connect_args={"timeout": 30})
        _configure_sqlite(engine)
        return engine
    # no pre-ping: it costs a round trip per checkout; a dead connection fails the request, and the pool drops it
    return create_async_engine(url, pool_size=pool_size, max_overflow=pool_size, pool_recycle=3600)


def _configure_sqlite(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control from the driver so that we can BEGIN IMMEDIATE for writes.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")  # durable at commit: an accepted event survives power loss
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        # A writer takes the database's write lock at BEGIN, so that what it reads stays current until it commits.
        conn.exec_driver_sql(
            "BEGIN IMMEDIATE" if conn.get_execution_options().get("ledger_write") else "BEGIN"
        )


@asynccontextmanager
async def write_transaction(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A transaction that writes. On SQLite it takes the write lock at BEGIN (BEGIN IMMEDIATE), so it waits for
    other writers (busy timeout) instead of failing when it upgrades from reading to writing."""
    async with engine.connect() as conn:
        conn = await conn.execution_options(**WRITE)
        async with conn.begin():
            yield conn


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    assert head is not None
    return head


async def upgrade(engine: AsyncEngine) -> None:
    """Run ``alembic upgrade head`` on ``engine`` (the cookbook's "sharing a connection" recipe)."""

    def _upgrade(sync_conn: sa.Connection) -> None:
        config = alembic_config(str(engine.url))
        config.attributes["connection"] = sync_conn
        command.upgrade(config, "head")

    async with engine.begin() as conn:
        await conn.run_sync(_upgrade)


async def current_revision(engine: AsyncEngine) -> str | None:
    async with engine.connect() as conn:
        return await conn.run_sync(lambda c: MigrationContext.configure(c).get_current_revision())


async def ensure_migrated(engine: AsyncEngine) -> None:
    """Raise :class:`NotMigrated` naming the fix unless the schema is at this code's head revision."""
    try:
        current = await current_revision(engine)
    except Exception as exc:  # unreachable server, bad credentials: say so rather than crash later
        raise NotMigrated(f"cannot reach the database at {engine.url.render_as_string()}: {exc}") from exc
    head = head_revision()
    if current != head:
        where = (
            "has no ledger schema" if current is None else f"is at revision {current}, the code needs {head}"
        )
        raise NotMigrated(
            f"the database {where}; run `ledger db upgrade` (with the same LEDGER_DATABASE_URL)"
        )
