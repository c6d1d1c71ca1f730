"""API tokens: ``tok_<id>_<secret>``. Only SHA-256 of the secret is stored; comparison is constant-time."""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
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


class Tokens:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

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
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(
                    sa.select(tokens_t, participants_t.c.roles)
                    .join(participants_t, participants_t.c.id == tokens_t.c.participant_id)
                    .where(tokens_t.c.id == token_id)
                )
            ).first()
        # compare even when the id is unknown, so that timing does not tell which ids exist
        stored = row.secret_hash if row is not None else b"\0" * 32
        if not hmac.compare_digest(bytes(stored), _hash(secret)) or row is None:
            raise Unauthenticated("the bearer token is not valid")
        if row.revoked_at is not None:
            raise Unauthenticated(f"the bearer token {token_id} was revoked at {row.revoked_at.isoformat()}")
        if row.expires_at is not None and row.expires_at <= utcnow():
            raise Unauthenticated(f"the bearer token {token_id} expired at {row.expires_at.isoformat()}")
        return Caller(
            participant=row.participant_id, roles=frozenset(json.loads(row.roles)), token_id=token_id
        )

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
        return _view(row)
