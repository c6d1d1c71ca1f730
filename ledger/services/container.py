"""The service layer assembled for one process: one engine, one submitter, the readers."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from ledger.domain.keys import SigningKey
from ledger.errors import ReplicaBehind
from ledger.rules.profiles import Profiles
from ledger.services.access import Access
from ledger.services.credentials import Credentials
from ledger.services.custody import Custody
from ledger.services.eligibility import Eligibility
from ledger.services.epcis import Epcis
from ledger.services.limits import RateLimiter
from ledger.services.log import LogSigner, TransparencyLog
from ledger.services.log_guard import LogGuard
from ledger.services.origin import Origin
from ledger.services.registry import Registry
from ledger.services.submit import Submitter
from ledger.services.tokens import Tokens
from ledger.services.verifier import Verifier
from ledger.services.witnessing import Cosigner
from ledger.settings import Settings
from ledger.store.db import WRITE_PATH_SETTINGS, create_engine
from ledger.store.models import LogState

WRITE_POOL_SIZE = 2
"""Connections of the submitter's own pool: its one commit task writes a group on one while it reads and checks the
next groups on the other (see :meth:`ledger.services.submit.Submitter._ahead`)."""


class Services:
    def __init__(
        self, settings: Settings, engine: AsyncEngine | None = None, read_engine: AsyncEngine | None = None
    ) -> None:
        self.settings = settings
        self.engine = engine or create_engine(settings.database_url, settings.pool_size)
        if read_engine is None and settings.database_read_url:
            read_engine = create_engine(settings.database_read_url, settings.pool_size)
        self.read_engine = read_engine or self.engine
        """Where reads, proofs and eligibility go: a replica (LEDGER_DATABASE_READ_URL), or the primary."""
        self.write_engine: AsyncEngine | None = None
        """A small pool for the submitter's reads and writes outside a transaction (PostgreSQL), planned for key
        lookups at session level (:data:`ledger.store.db.WRITE_PATH_SETTINGS`)."""
        if self.engine.dialect.name == "postgresql" and not settings.read_only:
            self.write_engine = create_engine(
                self.engine.url.render_as_string(hide_password=False),
                WRITE_POOL_SIZE,
                server_settings=WRITE_PATH_SETTINGS,
            )
        self.submitter = Submitter(
            self.engine,
            clock_skew=timedelta(seconds=settings.clock_skew_seconds),
            max_backdate=timedelta(seconds=settings.max_backdate_seconds),
            ahead_engine=self.write_engine,
        )
        self.tokens = Tokens(self.engine, cache_seconds=settings.token_cache_seconds)
        self.rate_limiter = RateLimiter.from_settings(settings)
        reader = self.read_engine
        self.access = Access(reader)
        self.registry = Registry(reader, self.access)
        self.custody = Custody(reader, self.access)
        self.log = TransparencyLog(self.engine, None, reader=reader, guard=LogGuard(settings.log_guard_path))
        self.log.witness_quorum = settings.effective_witness_quorum
        self.cosigner = Cosigner(
            self.engine, self.log, settings.witness_endpoints, settings.witness_timeout_seconds
        )
        self.log.on_checkpoint = self.cosigner.notify
        self.submitter.on_commit = self.log.notify
        self.submitter.verifier = Verifier(max(0, settings.verify_processes))
        self.set_signer(load_signer(settings))
        self.profiles = Profiles()
        self.eligibility = Eligibility(
            reader, self.custody, self.profiles, self.log, self.submitter, self.access
        )
        claims = self.eligibility
        if reader is not self.engine:
            # a claim is checked against the site's balance as the primary has it, not a lagging replica
            on_primary = Access(self.engine)
            claims = Eligibility(
                self.engine,
                Custody(self.engine, on_primary),
                self.profiles,
                self.log,
                self.submitter,
                on_primary,
            )
        self.submitter.credits = claims.credits  # a claim is checked against the site's balance
        self.submitter.read_only = settings.read_only
        self.origin = Origin(reader, self.eligibility, self.log, self.submitter, self.access)
        self.epcis = Epcis(reader, self.access, self.custody)
        self.credentials = Credentials(
            reader, self.registry, self.eligibility, self.log, self.epcis, self.origin
        )

    async def wait_for_log_size(self, size: int) -> None:
        """Return once the database reads go to holds at least ``size`` log entries (read-your-writes on a
        replica); :class:`ReplicaBehind` after LEDGER_REPLICA_WAIT_SECONDS. The primary holds every entry it
        acknowledged, so there is nothing to wait for when it serves the reads."""
        if self.read_engine is self.engine:
            return
        deadline = time.monotonic() + self.settings.replica_wait_seconds
        query = sa.select(LogState.size).where(LogState.id == 1)
        while True:
            async with self.read_engine.connect() as conn:
                replicated = int(await conn.scalar(query) or 0)
            if replicated >= size:
                return
            if time.monotonic() >= deadline:
                raise ReplicaBehind(
                    f"the read replica holds {replicated} log entries, not yet the {size} asked for with "
                    f"X-Min-Log-Size (waited {self.settings.replica_wait_seconds:g} s, "
                    "LEDGER_REPLICA_WAIT_SECONDS); retry shortly"
                )
            await asyncio.sleep(0.02)

    def set_signer(self, signer: LogSigner | None) -> None:
        """Use ``signer`` (the log key) for checkpoints and as the only key for determinations."""
        self.log.signer = signer
        self.submitter.log_key = signer.key.public_key if signer else None

    async def close(self) -> None:
        await self.rate_limiter.close()
        await self.engine.dispose()
        if self.write_engine is not None:
            await self.write_engine.dispose()
        if self.read_engine is not self.engine:
            await self.read_engine.dispose()


def load_signer(settings: Settings) -> LogSigner | None:
    """The log key that ``ledger init`` created, if this process can read it (readers and tests may not)."""
    if not settings.log_key_path.exists():
        return None
    return LogSigner(settings.log_origin, SigningKey.load(settings.log_key_path))
