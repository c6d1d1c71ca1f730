"""Storage on both databases: migrations, the append-only log, readiness, and refusal to serve unmigrated."""

from __future__ import annotations

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError

from api.app import create_app
from ledger.errors import NotMigrated
from ledger.services.container import Services
from ledger.settings import Settings
from ledger.store.db import create_engine, current_revision, ensure_migrated, head_revision
from tests.support import World


async def test_schema_is_at_head(engine: sa.ext.asyncio.AsyncEngine) -> None:
    assert await current_revision(engine) == head_revision()
    await ensure_migrated(engine)


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE events SET kind = 'extract'",
        "UPDATE events SET payload = payload WHERE log_index = 0",
        "DELETE FROM events",
        "DELETE FROM events WHERE log_index = 0",
    ],
)
async def test_events_are_append_only(world: World, statement: str) -> None:
    engine = world.services.engine
    with pytest.raises(DBAPIError, match="append-only"):
        async with engine.begin() as conn:
            await conn.execute(sa.text(statement))
    assert await world.count_events() == 1


async def test_truncate_is_refused_on_postgresql(world: World, backend: str) -> None:
    if backend != "postgresql":
        pytest.skip("SQLite has no TRUNCATE")
    with pytest.raises(DBAPIError, match="append-only"):
        async with world.services.engine.begin() as conn:
            await conn.execute(sa.text("TRUNCATE events CASCADE"))


async def test_unmigrated_database_is_not_ready_and_says_how_to_fix(blank_sqlite_url: str) -> None:
    engine = create_engine(blank_sqlite_url)
    try:
        with pytest.raises(NotMigrated, match="ledger db upgrade"):
            await ensure_migrated(engine)
        services = Services(Settings(database_url=blank_sqlite_url), engine=engine)
        app = create_app(services=services)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            assert (await client.get("/healthz")).status_code == 200
            ready = await client.get("/readyz")
            assert ready.status_code == 503
            assert "ledger db upgrade" in ready.json()["detail"]
    finally:
        await engine.dispose()


async def test_unreachable_database_is_not_ready() -> None:
    engine = create_engine("postgresql+asyncpg://nobody@127.0.0.1:1/none")
    try:
        with pytest.raises(NotMigrated, match="cannot reach the database"):
            await ensure_migrated(engine)
    finally:
        await engine.dispose()
