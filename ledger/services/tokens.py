"""API tokens: ``tok_<id>_<secret>``. Only SHA-256 of the secret is stored; comparison is constant-time."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass
from datetime import datetime
from typing import cast

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from ledger.errors import InvalidInput, NotFound, Unauthenticated
from ledger.services.submit import utcnow
from ledger.services.views import IssuedTokenView, TokenList, TokenView
from ledger.store.db import write_transaction
from ledger.store.models import ParticipantRow, TokenRow

tokens_t = cast(sa.Table, TokenRow.__table__)
participants_t = cast(sa.Table, ParticipantRow.__table__)

TOKEN_PREFIX = "tok_"


@dataclass(frozen=True)
class Caller:
    """Who is calling: the participant behind the token, and its roles."""

    participant: str
    roles: frozenset[str]
    token_id: str

    @property
    def is_registrar(self) -> bool:
        return "registrar" in self.roles


def _hash(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def _view(row: sa.Row[tuple[object, ...]]) -> TokenView:
    m = row._mapping
    return TokenView(
        id=m["id"],
        participant=m["participant_id"],
        label=m["label"],
        created_at=m["created_at"],
        expires_at=m["expires_at"],
        revoked_at=m["revoked_at"],
    )


@dataclass(frozen=True)
class _Known:
    """What authentication needs of a token row, as read at ``read_at`` (monotonic seconds)."""

    secret_hash: bytes
    participant: str
    roles: frozenset[str]
    revoked_at: datetime | None
    expires_at: datetime | None
    read_at: float


TOKEN_CACHE_ENTRIES = 10_000
"""Most tokens a process keeps; beyond, it forgets them all and reads again."""


class Tokens:
    """Issues, lists, revokes and checks API tokens.

    Lookups are kept for ``cache_seconds`` (LEDGER_TOKEN_CACHE_SECONDS): authentication is on every request, and
    its query was a fifth of a busy server's CPU. Only tokens that exist are kept (so unknown ids cannot fill
    the cache), the secret is compared and expiry checked on every request, and :meth:`revoke` forgets the token
    at once in this process; other processes notice within ``cache_seconds``.
    """

    def __init__(self, engine: AsyncEngine, *, cache_seconds: float = 0.0) -> None:
        self._engine = engine
        self._cache_seconds = cache_seconds
        self._known: dict[str, _Known] = {}
        self._reading: dict[str, asyncio.Future[_Known | None]] = {}
        """Reads in flight, by token id (see :meth:`_lookup`)."""
        self._generation = 0
        """Counts :meth:`forget` calls: a read that started before one is not kept."""

    async def issue(
        self, participant: str, label: str, expires_at: datetime | None = None
    ) -> IssuedTokenView:
        now = utcnow()
        if expires_at is not None and expires_at <= now:
            raise InvalidInput(f"expires_at {expires_at.isoformat()} is not in the future")
        token_id = secrets.token_hex(8)
        secret = secrets.token_urlsafe(32)
        async with write_transaction(self._engine) as conn:
            exists = await conn.scalar(
                sa.select(participants_t.c.id).where(participants_t.c.id == participant)
            )
            if exists is None:
                raise NotFound(f"participant {participant!r} does not exist")
            await conn.execute(
                tokens_t.insert().values(
                    id=token_id,
                    participant_id=participant,
                    secret_hash=_hash(secret),
                    label=label,
                    created_at=now,
                    expires_at=expires_at,
                )
            )
        return IssuedTokenView(
            id=token_id,
            participant=participant,
            label=label,
            created_at=now,
            expires_at=expires_at,
            token=f"{TOKEN_PREFIX}{token_id}_{secret}",
        )

    async def authenticate(self, token: str) -> Caller:
        """The caller behind a bearer token, or :class:`Unauthenticated` saying what is wrong with it."""
        if not token.startswith(TOKEN_PREFIX) or token.count("_") < 2:
            raise Unauthenticated("the bearer token is malformed; tokens look like tok_<id>_<secret>")
        token_id, _, secret = token[len(TOKEN_PREFIX) :].partition("_")
        known = await self._lookup(token_id)
        # compare even when the id is unknown, so that timing does not tell which ids exist
        stored = known.secret_hash if known is not None else b"\0" * 32
        if not hmac.compare_digest(stored, _hash(secret)) or known is None:
            raise Unauthenticated("the bearer token is not valid")
        if known.revoked_at is not None:
            raise Unauthenticated(
                f"the bearer token {token_id} was revoked at {known.revoked_at.isoformat()}"
            )
        if known.expires_at is not None and known.expires_at <= utcnow():
            raise Unauthenticated(f"the bearer token {token_id} expired at {known.expires_at.isoformat()}")
        return Caller(participant=known.participant, roles=known.roles, token_id=token_id)

    async def _lookup(self, token_id: str) -> _Known | None:
        """The token's row, from the cache while it is fresh. Concurrent requests with the same token share one
        read when it is not (a burst of requests would otherwise all miss at once, each taking a database
        connection)."""
        known = self._known.get(token_id)
        if known is not None and time.monotonic() - known.read_at < self._cache_seconds:
            return known
        reading = self._reading.get(token_id)
        if reading is None:
            reading = asyncio.ensure_future(self._read(token_id, self._generation))
            self._reading[token_id] = reading
            reading.add_done_callback(lambda done: self._read_done(token_id, done))
        return await asyncio.shield(reading)

    def _read_done(self, token_id: str, done: asyncio.Future[_Known | None]) -> None:
        if self._reading.get(token_id) is done:
            del self._reading[token_id]
        if not done.cancelled():
            done.exception()  # retrieved, even when every request that waited for it went away

    async def _read(self, token_id: str, generation: int) -> _Known | None:
        now = time.monotonic()
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(
                    sa.select(tokens_t, participants_t.c.roles)
                    .join(participants_t, participants_t.c.id == tokens_t.c.participant_id)
                    .where(tokens_t.c.id == token_id)
                )
            ).first()
        if row is None:
            self._known.pop(token_id, None)
            return None
        known = _Known(
            secret_hash=bytes(row.secret_hash),
            participant=row.participant_id,
            roles=frozenset(json.loads(row.roles)),
            revoked_at=row.revoked_at,
            expires_at=row.expires_at,
            read_at=now,
        )
        # not kept if the token was forgotten meanwhile (revoked, say): the row may predate that
        if self._cache_seconds > 0 and generation == self._generation:
            if len(self._known) >= TOKEN_CACHE_ENTRIES:
                self._known.clear()
            self._known[token_id] = known
        return known

    def forget(self, token_id: str | None = None) -> None:
        """Drop one token (or every token) from this process's cache, e.g. after a revocation or a role change."""
        self._generation += 1
        if token_id is None:
            self._reading.clear()
            self._known.clear()
        else:
            self._reading.pop(token_id, None)
            self._known.pop(token_id, None)

    async def list(self, participant: str | None = None) -> TokenList:
        query = sa.select(tokens_t).order_by(tokens_t.c.created_at, tokens_t.c.id)
        if participant is not None:
            query = query.where(tokens_t.c.participant_id == participant)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return TokenList(items=[_view(row) for row in rows])

    async def revoke(self, token_id: str) -> TokenView:
        async with write_transaction(self._engine) as conn:
            row = (await conn.execute(sa.select(tokens_t).where(tokens_t.c.id == token_id))).first()
            if row is None:
                raise NotFound(f"token {token_id!r} does not exist")
            if row.revoked_at is None:
                await conn.execute(
                    tokens_t.update().where(tokens_t.c.id == token_id).values(revoked_at=utcnow())
                )
            row = (await conn.execute(sa.select(tokens_t).where(tokens_t.c.id == token_id))).one()
        self.forget(token_id)
        return _view(row)
