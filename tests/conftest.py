"""Test fixtures: every storage and API test runs on SQLite and on PostgreSQL.

The schema comes from ``alembic upgrade head``: it is migrated once into a template (a file for SQLite, a
template database for PostgreSQL), and each test gets a fresh copy. With ``LEDGER_REQUIRE_PG=1`` an unreachable
PostgreSQL fails the run; otherwise its tests are skipped with a loud notice.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from ledger.settings import Settings
from ledger.store.db import create_engine, upgrade

PG_URL = os.environ.get("LEDGER_TEST_PG_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test")
REQUIRE_PG = os.environ.get("LEDGER_REQUIRE_PG") == "1"
BACKENDS = ["sqlite", "postgresql"]
GENESIS = "2025-01-01T00:00:00Z"
"""The test ledgers' genesis: the scenarios are dated 2025-2026, and nothing may predate the registrar's key."""
TEST_MAX_BACKDATE = 20 * 365 * 86400
"""The scenarios replay fixed dates, so the tests allow them to be old (tests/test_time_rules.py checks the
rule itself with the default)."""

_pg_problem: list[str] = []


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _pg_problem:
        terminalreporter.write_sep("!", "PostgreSQL tests were SKIPPED", red=True, bold=True)
        terminalreporter.write_line(f"PostgreSQL at {PG_URL} is not reachable: {_pg_problem[0]}")
        terminalreporter.write_line("Start it, or set LEDGER_REQUIRE_PG=1 to make this a failure (CI does).")


def _admin_url(database: str = "postgres") -> str:
    return make_url(PG_URL).set(database=database).render_as_string(hide_password=False)


async def _admin_execute(statement: str) -> None:
    engine = create_async_engine(
        _admin_url(make_url(PG_URL).database or "postgres"), isolation_level="AUTOCOMMIT"
    )
    try:
        async with engine.connect() as conn:
            await conn.execute(sa.text(statement))
    finally:
        await engine.dispose()


class Templates:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.sqlite_template: Path | None = None
        self.pg_template: str | None = None
        self.pg_error: str | None = None

    async def sqlite(self) -> Path:
        if self.sqlite_template is None:
            path = self.root / "template.db"
            engine = create_engine(f"sqlite+aiosqlite:///{path}")
            await upgrade(engine)
            await engine.dispose()
            self.sqlite_template = path
        return self.sqlite_template

    async def postgresql(self) -> str:
        if self.pg_template is None and self.pg_error is None:
            name = f"ledger_tpl_{os.getpid()}_{uuid.uuid4().hex[:6]}"
            try:
                await asyncio.wait_for(_admin_execute(f'CREATE DATABASE "{name}"'), 10)
            except Exception as exc:
                self.pg_error = f"{type(exc).__name__}: {exc}"
            else:
                engine = create_engine(
                    make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
                )
                await upgrade(engine)
                await engine.dispose()
                self.pg_template = name
        if self.pg_template is None:
            message = f"PostgreSQL unreachable ({self.pg_error})"
            if REQUIRE_PG:
                pytest.fail(f"LEDGER_REQUIRE_PG=1 but {message}")
            if not _pg_problem:
                _pg_problem.append(self.pg_error or "unknown")
            pytest.skip(message)
        return self.pg_template

    async def drop(self) -> None:
        if self.pg_template is not None:
            await _admin_execute(f'DROP DATABASE IF EXISTS "{self.pg_template}" WITH (FORCE)')


@pytest.fixture(scope="session")
async def templates(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Templates]:
    holder = Templates(tmp_path_factory.mktemp("templates"))
    yield holder
    await holder.drop()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def database_url(backend: str, templates: Templates, tmp_path: Path) -> AsyncIterator[str]:
    """A fresh, migrated database for one test."""
    if backend == "sqlite":
        path = tmp_path / "ledger.db"
        shutil.copy(await templates.sqlite(), path)
        yield f"sqlite+aiosqlite:///{path}"
        return
    template = await templates.postgresql()
    name = f"ledger_t_{uuid.uuid4().hex[:12]}"
    await _admin_execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    try:
        yield make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        await _admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url, pool_size=5)
    yield engine
    await engine.dispose()


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings(
        database_url=database_url, data_dir=tmp_path / "data", max_backdate_seconds=TEST_MAX_BACKDATE
    )


@pytest.fixture
def blank_sqlite_url(tmp_path: Path) -> Iterator[str]:
    """A database with no schema at all."""
    yield f"sqlite+aiosqlite:///{tmp_path / 'blank.db'}"


@pytest.fixture
async def services(settings: Settings, engine: AsyncEngine) -> AsyncIterator[Any]:
    from ledger.services.container import Services

    yield Services(settings, engine=engine)


@pytest.fixture
async def world(services: Any) -> AsyncIterator[Any]:
    import httpx

    from api.app import create_app
    from ledger.domain.keys import SigningKey
    from ledger.services.bootstrap import initialise
    from tests.support import Member, World

    result = await initialise(services, timestamp=GENESIS)
    app = create_app(services=services)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        registrar = Member(
            result.registrar, SigningKey.load(result.registrar_key_path), result.token, ["registrar"]
        )
        yield World(client=client, services=services, registrar=registrar)


@pytest.fixture
async def chain(world: Any) -> Any:
    from tests.support import Chain

    miner = await world.admit("northstar", ["miner"], "CA")
    refiner = await world.admit("gulf-refining", ["processor"], "US")
    maker = await world.admit("monterrey-cam", ["processor", "manufacturer"], "MX")
    await world.facility("mine-qc", miner, "mine", "CA")
    await world.facility("refinery-tx", refiner, "refinery", "US", loss_tolerance="0.01")
    await world.facility("plant-mx", maker, "plant", "MX")
    return Chain(world, miner, refiner, maker)


@pytest.fixture
def env(database_url: str, tmp_path: Path) -> dict[str, str]:
    """Environment for running the ``ledger`` command against this test's database."""
    return {
        **os.environ,
        "LEDGER_DATABASE_URL": database_url,
        "LEDGER_DATA_DIR": str(tmp_path / "var"),
        "LEDGER_MAX_BACKDATE": f"{TEST_MAX_BACKDATE}s",
    }


@pytest.fixture
def server(env: dict[str, str], tmp_path: Path) -> Iterator[str]:
    """``ledger init`` then ``ledger serve`` as a real process on a free loopback port; yields its URL."""
    from tests.support import ledger, serving

    ledger(env, "init")
    with serving(env, tmp_path / "server.log") as url:
        yield url
