"""Rate limits shared by every API process (Redis), and limits on failed authentication per client address.

The Redis tests run against the real Redis at ``LEDGER_TEST_REDIS_URL`` (default ``redis://127.0.0.1:6379/0``),
each under a key prefix of its own (removed afterwards). Without a reachable Redis they are skipped with a loud
reason; with ``LEDGER_REQUIRE_REDIS=1`` (CI) they fail instead.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from litestar import Request

from ledger.errors import InvalidInput, Overloaded, Unauthenticated
from ledger.services.limits import RateLimited, RateLimiter, require_shared_limits
from ledger.services.tokens import Caller
from ledger.settings import Settings
from tests.support import Member, World

REDIS_URL = os.environ.get("LEDGER_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
REQUIRE_REDIS = os.environ.get("LEDGER_REQUIRE_REDIS") == "1"


async def _redis_problem() -> str | None:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(REDIS_URL, socket_connect_timeout=2, socket_timeout=2)
    try:
        await client.ping()
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        await client.aclose()
    return None


@pytest.fixture
async def redis_prefix() -> AsyncIterator[str]:
    """A key prefix of this test's own in the real Redis; its keys are deleted afterwards."""
    problem = await _redis_problem()
    if problem is not None:
        message = (
            f"Redis at {REDIS_URL} is not reachable ({problem}): the shared rate-limit tests are SKIPPED"
        )
        if REQUIRE_REDIS:
            pytest.fail(f"LEDGER_REQUIRE_REDIS=1 but {message}")
        pytest.skip("!!! " + message + " (set LEDGER_REQUIRE_REDIS=1 to make this a failure)")
    import redis.asyncio as aioredis

    prefix = f"ledger-test-{uuid.uuid4().hex[:12]}"
    yield prefix
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


def _shared(prefix: str, **kwargs: Any) -> RateLimiter:
    options: dict[str, Any] = {"rate": 1.0, "burst": 5} | kwargs
    return RateLimiter(
        options.pop("rate"), options.pop("burst"), storage_url=REDIS_URL, key_prefix=prefix, **options
    )


async def _outcomes(limiters: list[RateLimiter], token: str, count: int) -> list[bool]:
    """``count`` requests with ``token``, alternating between the limiters (the "processes")."""
    allowed: list[bool] = []
    for i in range(count):
        try:
            await limiters[i % len(limiters)].hit(token)
            allowed.append(True)
        except RateLimited:
            allowed.append(False)
    return allowed


# --- several processes, one limit ------------------------------------------------------------------------------


async def test_two_processes_sharing_redis_allow_the_limit_once_not_twice(redis_prefix: str) -> None:
    first, second = _shared(redis_prefix, rate=0.1, burst=3), _shared(redis_prefix, rate=0.1, burst=3)
    try:
        # burst 3 in any second, and 0.1/s on average over a minute (6 a minute), counted once for both
        started = time.monotonic()
        outcomes = await _outcomes([first, second], "tok-a", 8)
        assert time.monotonic() - started < 1.0, "too slow a machine for a one-second window"
        assert outcomes == [True, True, True, False, False, False, False, False]
        await asyncio.sleep(1.05)  # the one-second window has passed; the minute has not
        assert await _outcomes([second, first], "tok-a", 4) == [True, True, True, False]
        await asyncio.sleep(1.05)
        with pytest.raises(RateLimited) as refused:  # 6 a minute, used up
            await first.hit("tok-a")
        assert 55 <= (refused.value.retry_after or 0) <= 60
        assert "LEDGER_RATE_LIMIT" in refused.value.detail
        # another token has its own count
        assert await _outcomes([first, second], "tok-b", 4) == [True, True, True, False]
    finally:
        await first.close()
        await second.close()


async def test_in_process_limits_would_double_with_two_processes() -> None:
    """What the shared store is for: two in-process limiters each allow the whole burst."""
    first, second = RateLimiter(0.1, 3), RateLimiter(0.1, 3)
    assert (await _outcomes([first, second], "tok-a", 8)).count(True) == 6


async def test_failed_authentication_is_limited_per_address_across_processes(redis_prefix: str) -> None:
    first = _shared(redis_prefix, auth_fail_limit=20)
    second = _shared(redis_prefix, auth_fail_limit=20)
    try:
        for i in range(19):
            await (first if i % 2 else second).check_failed_auth("203.0.113.7")
            await (first if i % 2 else second).record_failed_auth("203.0.113.7")
        await first.check_failed_auth("203.0.113.7")  # 19 so far: still let in
        await second.record_failed_auth("203.0.113.7")
        for limiter in (first, second):
            with pytest.raises(RateLimited) as refused:
                await limiter.check_failed_auth("203.0.113.7")
            assert 55 <= (refused.value.retry_after or 0) <= 60
            assert "LEDGER_AUTH_FAIL_LIMIT" in refused.value.detail and "203.0.113.7" in refused.value.detail
        await first.check_failed_auth("198.51.100.1")  # another address is not affected
    finally:
        await first.close()
        await second.close()


async def test_an_unreachable_shared_store_fails_closed_quickly() -> None:
    limiter = RateLimiter(1.0, 5, storage_url="redis://127.0.0.1:1/0")
    started = time.monotonic()
    with pytest.raises(Overloaded, match="LEDGER_RATE_LIMIT_URL"):
        await limiter.hit("tok-a")
    with pytest.raises(Overloaded):
        await limiter.check_failed_auth("203.0.113.7")
    assert time.monotonic() - started < 5


# --- through the API -------------------------------------------------------------------------------------------


def _app_with_limits(world: World, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The app with ``api/auth.py``'s one-line change applied: authentication through the rate limiter."""
    import api.app
    import api.auth

    async def provide_caller(request: Request[Any, Any, Any]) -> Caller:
        header = request.headers.get("authorization")
        if not header:
            raise Unauthenticated("send an API token: Authorization: Bearer <token>")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated("the Authorization header must be 'Bearer <token>'")
        services = api.auth.services_of(request)
        # the one line (it replaces `authenticate` and `rate_limiter.check`):
        return await services.rate_limiter.authenticate(services.tokens, token.strip(), request.client)

    monkeypatch.setattr(api.auth, "provide_caller", provide_caller)
    monkeypatch.setattr(api.app, "provide_caller", provide_caller)
    return api.app.create_app(services=world.services)


def _client(app: Any, address: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, client=(address, 4000)), base_url="http://t"
    )


async def _guessing(world: World, monkeypatch: pytest.MonkeyPatch, limiter: RateLimiter) -> None:
    miner: Member = await world.admit("northstar", ["miner"], "CA")
    world.services.rate_limiter = limiter
    app = _app_with_limits(world, monkeypatch)
    try:
        async with _client(app, "203.0.113.7") as guesser, _client(app, "198.51.100.1") as other:
            statuses = []
            for i in range(25):
                response = await guesser.get(
                    "/v1/participants", headers={"Authorization": f"Bearer tok_{i:016x}_guess"}
                )
                statuses.append(response.status_code)
            assert statuses == [401] * 20 + [429] * 5
            limited = await guesser.get("/v1/participants", headers={"Authorization": "Bearer tok_x_y"})
            assert limited.json()["code"] == "rate-limited" and 1 <= int(limited.headers["retry-after"]) <= 60
            assert "LEDGER_AUTH_FAIL_LIMIT" in limited.json()["detail"]
            # while blocked, even a valid token from that address waits; another address is not affected
            assert (await guesser.get("/v1/participants", headers=miner.headers)).status_code == 429
            assert (await other.get("/v1/participants", headers=miner.headers)).status_code == 200
            bad = await other.get("/v1/participants", headers={"Authorization": "Bearer tok_a_b"})
            assert bad.status_code == 401
    finally:
        await limiter.close()


async def test_token_guessing_gets_429_per_address(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    await _guessing(world, monkeypatch, RateLimiter(100.0, 1000, auth_fail_limit=20))


async def test_token_guessing_gets_429_per_address_with_redis(
    world: World, monkeypatch: pytest.MonkeyPatch, redis_prefix: str
) -> None:
    await _guessing(world, monkeypatch, _shared(redis_prefix, rate=100.0, burst=1000, auth_fail_limit=20))


async def test_per_token_limit_through_authenticate(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [0.0]
    world.services.rate_limiter = RateLimiter(rate=1.0, burst=3, clock=lambda: clock[0])
    miner = await world.admit("northstar", ["miner"], "CA")
    async with _client(_app_with_limits(world, monkeypatch), "127.0.0.1") as client:
        for _ in range(3):
            assert (await client.get("/v1/participants", headers=miner.headers)).status_code == 200
        limited = await client.get("/v1/participants", headers=miner.headers)
        assert limited.status_code == 429 and limited.headers["retry-after"] == "1"
        clock[0] += 1.0
        assert (await client.get("/v1/participants", headers=miner.headers)).status_code == 200


# --- configuration -----------------------------------------------------------------------------------------------


def test_serving_several_workers_needs_shared_limits() -> None:
    in_process = Settings()
    with pytest.raises(InvalidInput, match="LEDGER_RATE_LIMIT_URL") as refused:
        require_shared_limits(in_process, 4)
    assert "--workers 4" in refused.value.detail and "LEDGER_AUTH_FAIL_LIMIT" in refused.value.detail
    require_shared_limits(in_process, 1)
    require_shared_limits(Settings(rate_limit_url="redis://127.0.0.1:6379/0"), 4)
    require_shared_limits(Settings(rate_limit=0, auth_fail_limit=0), 4)  # no limits, nothing to share
    with pytest.raises(InvalidInput, match="LEDGER_AUTH_FAIL_LIMIT"):
        require_shared_limits(Settings(rate_limit=0), 2)


def test_settings_and_storage_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEDGER_RATE_LIMIT_URL", " redis://127.0.0.1:6379/3 ")
    monkeypatch.setenv("LEDGER_AUTH_FAIL_LIMIT", "7")
    settings = Settings.from_env()
    assert (settings.rate_limit_url, settings.auth_fail_limit) == ("redis://127.0.0.1:6379/3", 7)
    limiter = RateLimiter.from_settings(settings)
    assert limiter.is_shared and limiter.auth_fail_limit == 7
    assert not RateLimiter.from_settings(Settings()).is_shared
    with pytest.raises(InvalidInput, match="LEDGER_RATE_LIMIT_URL must be a redis"):
        RateLimiter(1.0, 1, storage_url="memcached://127.0.0.1:11211")


async def test_limits_off() -> None:
    limiter = RateLimiter(0, 10, auth_fail_limit=0)
    assert await _outcomes([limiter], "tok-a", 50) == [True] * 50
    for _ in range(50):
        await limiter.record_failed_auth("203.0.113.7")
    await limiter.check_failed_auth("203.0.113.7")
