"""The service layer assembled for one process: one engine, one submitter, the readers."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncEngine

from ledger.domain.keys import SigningKey
from ledger.rules.profiles import Profiles
from ledger.services.access import Access
from ledger.services.custody import Custody
from ledger.services.eligibility import Eligibility
from ledger.services.limits import RateLimiter
from ledger.services.log import LogSigner, TransparencyLog
from ledger.services.origin import Origin
from ledger.services.registry import Registry
from ledger.services.submit import Submitter
from ledger.services.tokens import Tokens
from ledger.settings import Settings
from ledger.store.db import create_engine


class Services:
    def __init__(self, settings: Settings, engine: AsyncEngine | None = None) -> None:
        self.settings = settings
        self.engine = engine or create_engine(settings.database_url, settings.pool_size)
        self.submitter = Submitter(
            self.engine,
            clock_skew=timedelta(seconds=settings.clock_skew_seconds),
            max_backdate=timedelta(seconds=settings.max_backdate_seconds),
        )
        self.tokens = Tokens(self.engine)
        self.rate_limiter = RateLimiter.from_settings(settings)
        self.access = Access(self.engine)
        self.registry = Registry(self.engine, self.access)
        self.custody = Custody(self.engine, self.access)
        self.log = TransparencyLog(self.engine, None)
        self.submitter.on_commit = self.log.notify
        self.set_signer(load_signer(settings))
        self.profiles = Profiles()
        self.eligibility = Eligibility(
            self.engine, self.custody, self.profiles, self.log, self.submitter, self.access
        )
        self.submitter.credits = self.eligibility.credits  # a claim is checked against the site's balance
        self.origin = Origin(self.engine, self.eligibility, self.log, self.submitter, self.access)

    def set_signer(self, signer: LogSigner | None) -> None:
        """Use ``signer`` (the log key) for checkpoints and as the only key for determinations."""
        self.log.signer = signer
        self.submitter.log_key = signer.key.public_key if signer else None

    async def close(self) -> None:
        await self.rate_limiter.close()
        await self.engine.dispose()


def load_signer(settings: Settings) -> LogSigner | None:
    """The log key that ``ledger init`` created, if this process can read it (readers and tests may not)."""
    if not settings.log_key_path.exists():
        return None
    return LogSigner(settings.log_origin, SigningKey.load(settings.log_key_path))
