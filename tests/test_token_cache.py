"""The token cache: a lookup is kept for LEDGER_TOKEN_CACHE_SECONDS; the secret and the expiry are still checked on
every request; a revocation is seen at once by the revoking process and within the cache time by the others."""

from __future__ import annotations

import asyncio

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
