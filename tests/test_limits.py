"""Abuse limits on both databases: each limit exceeded by one is a clear 4xx naming it, and changes nothing;
rate limiting, token expiry, look-alike ids, security headers and CORS."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from api.app import create_app
from ledger.client import envelope_for
from ledger.domain import events as ev
from ledger.domain.dsse import MAX_PAYLOAD_B64, Envelope, sign_envelope
from ledger.services.limits import RateLimiter
from tests.support import T0, TS, Chain, World

JSON = {"Content-Type": "application/json"}


def _canonical(document: Any) -> bytes:
    return json.dumps(document, separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode()


async def _post_payload(chain: Chain, payload: bytes) -> httpx.Response:
    return await chain.world.post(sign_envelope(payload, chain.miner.key), chain.miner)


async def _refused(chain: Chain, response: httpx.Response, status: int, needle: str) -> None:
    assert response.status_code == status, response.text
    assert needle in response.json()["detail"], response.json()["detail"]


async def test_json_depth_limit(chain: Chain) -> None:
    before = await chain.world.count_events()

    def extract_with_nesting(levels: int) -> bytes:
        document = ev.encode_event(chain.extract("deep-1"))
        nested: Any = 1
        for _ in range(levels):
            nested = [nested]
        document["x"] = nested  # with the top-level object: levels + 1 nested containers
        return _canonical(document)

    await _refused(
        chain, await _post_payload(chain, extract_with_nesting(32)), 400, "nested deeper than 32 levels"
    )
    # at the limit the nesting itself is fine; the unknown field is what is refused
    await _refused(chain, await _post_payload(chain, extract_with_nesting(31)), 400, "unknown field `x`")
    assert await chain.world.count_events() == before


async def test_string_and_list_length_limits(chain: Chain) -> None:
    world = chain.world
    before = await world.count_events()
    for length, ok in ((500, True), (501, False)):
        event = ev.FacilityRegistered(
            actor="registrar",
            timestamp=T0,
            facility=ev.FacilityInfo(
                id=f"f-{length}", participant=chain.miner.id, kind="mine", country="CA", name="n" * length
            ),
        )
        response = await world.submit(event, world.registrar, expect=None)
        if ok:
            assert response.status_code == 201
        else:
            await _refused(chain, response, 400, "length <= 500 - at `$.facility.name`")
    await chain.send(chain.extract("r-1", 10), chain.miner)
    for legs, ok in ((50, True), (51, False)):
        transfer = ev.Transfer(
            actor=chain.miner.id,
            timestamp=TS,
            batch="r-1",
            parent=await chain.head("r-1"),
            to=chain.refiner.id,
            route=[ev.RouteLeg(country="CA", customs_control=False)] * legs,
        )
        response = await chain.send(transfer, chain.miner, expect=None)
        if ok:
            assert response.status_code == 201
        else:
            await _refused(chain, response, 400, "length <= 50 - at `$.route`")
    assert await world.count_events() == before + 3


async def test_payload_and_signature_limits(chain: Chain) -> None:
    good = envelope_for(chain.extract("p-1"), chain.miner.key)
    oversized = Envelope(
        payloadType=good.payloadType, payload="A" * (MAX_PAYLOAD_B64 + 1), signatures=good.signatures
    )
    await _refused(
        chain,
        await chain.world.post(oversized, chain.miner),
        400,
        f"payload: Expected `str` of length <= {MAX_PAYLOAD_B64}",
    )
    body = json.loads(good.to_json())
    body["signatures"] = body["signatures"] * 5
    response = await chain.world.client.post(
        "/v1/events", content=json.dumps(body), headers={**chain.miner.headers, **JSON}
    )
    await _refused(chain, response, 400, "signatures: Expected `array` of length <= 4")


async def test_body_and_batch_limits_name_their_setting(chain: Chain) -> None:
    limit = chain.world.services.settings.max_body_bytes
    response = await chain.world.client.post(
        "/v1/events", content=b" " * (limit + 1), headers={**chain.miner.headers, **JSON}
    )
    await _refused(chain, response, 413, f"{limit:,} bytes (LEDGER_MAX_BODY_BYTES)")
    count = chain.world.services.settings.max_batch_envelopes
    envelope = envelope_for(chain.extract("b-1"), chain.miner.key)
    await _refused(
        chain, await chain.world.batch([envelope] * (count + 1), chain.miner), 400, "(LEDGER_MAX_BATCH)"
    )


async def test_clock_skew_window(chain: Chain) -> None:
    skew = chain.world.services.settings.clock_skew_seconds
    now = datetime.now(UTC).replace(microsecond=0)
    late = (now + timedelta(seconds=skew + 60)).isoformat()
    early_enough = (now + timedelta(seconds=skew - 60)).isoformat()
    future = ev.Extract(
        actor=chain.miner.id,
        timestamp=late,
        facility=chain.mine,
        batch=ev.NewBatch(id="t-1", mineral="nickel", form="ore", mass_g=1),
    )
    await _refused(chain, await chain.send(future, chain.miner, expect=None), 422, "in the future")
    near = ev.Extract(
        actor=chain.miner.id,
        timestamp=early_enough,
        facility=chain.mine,
        batch=ev.NewBatch(id="t-1", mineral="nickel", form="ore", mass_g=1),
    )
    await chain.send(near, chain.miner)


@pytest.mark.parametrize("batch_id", ["Spod-1", "spod 1", "spоd-1", "ｓｐｏｄ-1", "spod-1\u200b", "-spod"])
async def test_look_alike_and_non_normal_ids_are_refused(chain: Chain, batch_id: str) -> None:
    document = ev.encode_event(chain.extract("spod-1"))
    document["batch"]["id"] = batch_id
    response = await _post_payload(chain, _canonical(document))
    await _refused(chain, response, 400, "`$.batch.id`")


async def test_rate_limit_per_token_with_retry_after(world: World) -> None:
    clock = [0.0]
    world.services.rate_limiter = RateLimiter(rate=1.0, burst=3, clock=lambda: clock[0])
    miner = await world.admit("northstar", ["miner"], "CA")
    for _ in range(3):
        assert (await world.client.get("/v1/participants", headers=miner.headers)).status_code == 200
    limited = await world.client.get("/v1/participants", headers=miner.headers)
    assert limited.status_code == 429 and limited.headers["retry-after"] == "1"
    assert "LEDGER_RATE_LIMIT" in limited.json()["detail"]
    # another token is not affected; the same token recovers after the wait
    assert (await world.client.get("/v1/participants", headers=world.registrar.headers)).status_code == 200
    clock[0] += 1.0
    assert (await world.client.get("/v1/participants", headers=miner.headers)).status_code == 200


async def test_expired_token(world: World) -> None:
    miner = await world.admit("northstar", ["miner"], "CA")
    issued = await world.services.tokens.issue(miner.id, "short", datetime.now(UTC) + timedelta(hours=1))
    headers = {"Authorization": f"Bearer {issued.token}"}
    assert (await world.client.get("/v1/participants", headers=headers)).status_code == 200
    async with world.services.engine.begin() as conn:
        await conn.execute(
            sa.text("UPDATE api_tokens SET expires_at = :t WHERE id = :i"),
            {"t": datetime.now(UTC) - timedelta(seconds=1), "i": issued.id},
        )
    # the row was changed behind the service (standing for an hour passing); the token cache holds it as read
    world.services.tokens.forget(issued.id)
    expired = await world.client.get("/v1/participants", headers=headers)
    assert expired.status_code == 401 and "expired" in expired.json()["detail"]
    past = await world.client.post(
        "/v1/tokens",
        json={"participant": miner.id, "expires_at": "2020-01-01T00:00:00Z"},
        headers=world.registrar.headers,
    )
    assert past.status_code == 400 and "not in the future" in past.json()["detail"]


async def test_security_headers_on_every_response_and_cors_off_by_default(world: World) -> None:
    for response in (
        await world.client.get("/healthz"),
        await world.client.get("/v1/participants"),  # 401
        await world.client.get("/v1/batches/x", headers=world.registrar.headers),  # 404
        await world.client.get("/schema/openapi.json"),
    ):
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["x-frame-options"] == "DENY"
        assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
        assert response.headers["referrer-policy"] == "no-referrer"
    preflight = await world.client.options(
        "/v1/participants", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"}
    )
    assert "access-control-allow-origin" not in preflight.headers


async def test_cors_when_configured(world: World) -> None:
    from dataclasses import replace

    settings = replace(world.services.settings, cors_origins=("https://customs.example",))
    world.services.settings = settings
    app = create_app(settings=settings, services=world.services)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        allowed = await client.get("/healthz", headers={"Origin": "https://customs.example"})
        assert allowed.headers["access-control-allow-origin"] == "https://customs.example"
        other = await client.get("/healthz", headers={"Origin": "https://evil.example"})
        assert other.headers.get("access-control-allow-origin") != "https://evil.example"


def test_payload_base64_must_be_strict() -> None:
    from ledger.domain.dsse import Envelope as E
    from ledger.errors import InvalidInput

    with pytest.raises(InvalidInput, match="base64"):
        E(payloadType="x", payload="not base64!", signatures=[]).payload_bytes()
    assert base64.b64decode("e30=") == b"{}"
