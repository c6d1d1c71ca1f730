"""The token cache: a lookup is kept for LEDGER_TOKEN_CACHE_SECONDS; the secret and the expiry are still checked on
every request; a revocation is seen at once by the revoking process and within the cache time by the others."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from ledger.errors import Unauthenticated
from ledger.services.tokens import Tokens
from tests.support import World


async def test_another_process_sees_a_revocation_within_the_cache_time(world: World) -> None:
    engine = world.services.engine
    issued = await world.services.tokens.issue("registrar", "cached")
    revoking, other = Tokens(engine, cache_seconds=0.5), Tokens(engine, cache_seconds=0.5)
    assert (await other.authenticate(issued.token)).participant == "registrar"
    await revoking.revoke(issued.id)
    with pytest.raises(Unauthenticated, match="revoked"):
        await revoking.authenticate(issued.token)  # the revoking process: at once
    assert (await other.authenticate(issued.token)).participant == "registrar"  # still cached
    await asyncio.sleep(0.6)
    with pytest.raises(Unauthenticated, match="revoked"):
        await other.authenticate(issued.token)


async def test_a_cached_token_still_needs_its_secret(world: World) -> None:
    issued = await world.services.tokens.issue("registrar", "cached")
    tokens = Tokens(world.services.engine, cache_seconds=60)
    await tokens.authenticate(issued.token)
    token_id = issued.token.split("_")[1]
    with pytest.raises(Unauthenticated, match="not valid"):
        await tokens.authenticate(f"tok_{token_id}_wrong-secret")


async def test_no_cache_reads_every_time(world: World) -> None:
    issued = await world.services.tokens.issue("registrar", "uncached")
    reader = Tokens(world.services.engine, cache_seconds=0)
    await reader.authenticate(issued.token)
    await Tokens(world.services.engine).revoke(issued.id)
    with pytest.raises(Unauthenticated, match="revoked"):
        await reader.authenticate(issued.token)


async def test_concurrent_requests_with_an_unread_token_share_one_read(world: World) -> None:
    """A burst of requests whose token is not cached (first use, or its entry just expired) reads the token's row
    once, not once per request (each read would take a database connection)."""
    from sqlalchemy import event

    issued = await world.services.tokens.issue("registrar", "burst")
    tokens = Tokens(world.services.engine, cache_seconds=60)
    reads = 0

    def count(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        nonlocal reads
        reads += "FROM api_tokens" in statement

    sync_engine = world.services.engine.sync_engine
    event.listen(sync_engine, "before_cursor_execute", count)
    try:
        callers = await asyncio.gather(*(tokens.authenticate(issued.token) for _ in range(30)))
    finally:
        event.remove(sync_engine, "before_cursor_execute", count)
    assert {c.participant for c in callers} == {"registrar"}
    assert reads == 1


async def test_a_read_that_started_before_a_revocation_is_not_kept(world: World) -> None:
    """The revoking process forgets the token; a read of its row already under way may have seen it unrevoked,
    so that answer is not cached: the next request reads again and sees the revocation."""
    issued = await world.services.tokens.issue("registrar", "racing")
    tokens = Tokens(world.services.engine, cache_seconds=60)
    token_id = issued.token.split("_")[1]
    reading = asyncio.ensure_future(tokens.authenticate(issued.token))
    await asyncio.sleep(0)  # the read is under way
    await tokens.revoke(issued.id)  # forgets the token in this process
    with contextlib.suppress(Unauthenticated):  # it read the row before or after the revocation
        await reading
    assert token_id not in tokens._known
    with pytest.raises(Unauthenticated, match="revoked"):
        await tokens.authenticate(issued.token)
