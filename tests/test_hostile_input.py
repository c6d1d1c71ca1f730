"""Hostile input never reaches a 500, on both databases: bodies that are not UTF-8, nested 1,000 deep or with a key
twice (refused at the edge, before authentication); signed payloads nested too deep or with a key twice; NUL and
other control characters in any string; timestamps and dates outside 1970..9998; router-level 404 and 405 with
security headers; slow clients (408, and a real server that closes trickling and idle connections).

Every refusal is checked for its status, its problem ``code``, and that nothing was stored."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from dataclasses import replace
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from api.app import create_app
from ledger.domain import canonical
from ledger.domain import events as ev
from ledger.domain.dsse import sign_envelope
from ledger.errors import InvalidInput, NonCanonicalPayload
from tests.support import T0, TS, Chain, World

JSON = {"Content-Type": "application/json"}
SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "content-security-policy": "default-src 'none'; frame-ancestors 'none'",
    "cache-control": "no-store",
}


def _canonical(document: Any) -> bytes:
    return json.dumps(document, separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode()


async def _count_tokens(world: World) -> int:
    async with world.services.engine.connect() as conn:
        return int((await conn.execute(sa.text("SELECT count(*) FROM api_tokens"))).scalar_one())


def _problem(response: httpx.Response, status: int, code: str, *needles: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["code"] == code, body
    for needle in needles:
        assert needle in body["detail"], body["detail"]
    for name, value in SECURITY_HEADERS.items():
        assert response.headers[name] == value, name
    return body


# --- 1. request bodies: decoded strictly, before authentication ---------------------------------------------


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b'{"payloadType":"\xff\xfe","payload":"","signatures":[]}', "not valid UTF-8: byte 16 (0xff)"),
        (b'{"payloadType":"caf\xc3"}', "not valid UTF-8"),
        (b"[" * 1000, "nested deeper than 32 levels"),
        (b'{"a":' * 1000 + b"1" + b"}" * 1000, "nested deeper than 32 levels"),
        (b'{"payloadType":"x","payloadType":"y","payload":"","signatures":[]}', "key 'payloadType' twice"),
        (b'{"envelopes":[{"signatures":[],"signatures":[]}]}', "key 'signatures' twice"),
        # well-formed bodies of the submission routes' own types, compact as clients write them, that the quick
        # path (canonical.is_compact_form) reads without complaint: a key twice, a control character escaped
        (
            b'{"payloadType":"x","payloadType":"y","payload":"","signatures":[{"keyid":"k","sig":"s"}]}',
            "twice",
        ),
        (
            b'{"envelopes":[],"envelopes":[{"payloadType":"y","payload":"","signatures":[]}]}',
            "key 'envelopes' twice",
        ),
        (b'{"payloadType":"a\\u0000b","payload":"","signatures":[]}', "control character U+0000"),
        (
            b'{"envelopes":[{"payloadType":"\\u001f","payload":"","signatures":[]}]}',
            "control character U+001F",
        ),
    ],
    ids=[
        "utf8",
        "utf8-truncated",
        "deep-array",
        "deep-object",
        "duplicate",
        "nested-duplicate",
        "typed-duplicate",
        "typed-batch-duplicate",
        "typed-control",
        "typed-batch-control",
    ],
)
async def test_bad_bodies_are_400_before_authentication(world: World, body: bytes, needle: str) -> None:
    before = await world.count_events()
    for path in ("/v1/events", "/v1/events/batch", "/no-such-path"):
        # no token at all: refused for the body, so nothing about the caller was looked at
        _problem(await world.client.post(path, content=body, headers=JSON), 400, "invalid-input", needle)
        response = await world.client.post(path, content=body, headers={**JSON, **world.registrar.headers})
        _problem(response, 400, "invalid-input", needle)
    assert await world.count_events() == before


async def test_depth_limit_of_request_bodies_is_the_payload_limit(world: World) -> None:
    nested = b"[" * 31 + b"]" * 31
    # 32 levels are read (and the handler refuses the shape); 33 are not
    ok = await world.client.post(
        "/v1/tokens", content=b'{"participant":' + nested + b"}", headers={**JSON, **world.registrar.headers}
    )
    assert ok.status_code == 400 and "nested deeper" not in ok.json()["detail"]
    deep = await world.client.post(
        "/v1/tokens",
        content=b'{"participant":[' + nested + b"]}",
        headers={**JSON, **world.registrar.headers},
    )
    _problem(deep, 400, "invalid-input", "nested deeper than 32 levels")


async def test_duplicate_key_in_token_request_is_refused(chain: Chain) -> None:
    world = chain.world
    tokens = await _count_tokens(world)
    response = await world.client.post(
        "/v1/tokens",
        content=b'{"participant":"nobody","participant":"northstar"}',
        headers={**JSON, **world.registrar.headers},
    )
    _problem(response, 400, "invalid-input", "'participant' twice", "send each key once")
    assert await _count_tokens(world) == tokens


# --- 2. signed payloads: the depth limit and unique keys -----------------------------------------------------


async def test_payload_nested_1000_deep_is_400(chain: Chain) -> None:
    world = chain.world
    before = await world.count_events()
    document = ev.encode_event(chain.extract("deep-1"))
    document["x"] = 0
    payload = _canonical(document).replace(b'"x":0', b'"x":' + b"[" * 1000 + b"0" + b"]" * 1000)
    response = await world.post(sign_envelope(payload, chain.miner.key), chain.miner)
    _problem(response, 400, "invalid-input", "payload is nested deeper than 32 levels")
    profile = ev.encode_event(
        ev.ProfilePublished(actor="registrar", timestamp=T0, profile={"id": "deep", "x": 0})
    )
    payload = _canonical(profile).replace(b'"x":0', b'"x":' + b'{"a":' * 1000 + b"0" + b"}" * 1000)
    response = await world.post(sign_envelope(payload, world.registrar.key), world.registrar)
    _problem(response, 400, "invalid-input", "nested deeper than 32 levels")
    assert await world.count_events() == before


async def test_payload_with_a_key_twice_is_refused_naming_it(chain: Chain) -> None:
    world = chain.world
    before = await world.count_events()
    payload = _canonical(ev.encode_event(chain.extract("dup-1")))
    assert payload.startswith(b'{"actor":"northstar",')
    twice = b'{"actor":"northstar",' + payload[1:]
    response = await world.post(sign_envelope(twice, chain.miner.key), chain.miner)
    body = _problem(response, 400, "non-canonical-payload", "key 'actor' twice")
    assert body["duplicate_key"] == "actor"
    nested = payload.replace(b'"id":"dup-1"', b'"id":"dup-1","id":"dup-2"')
    response = await world.post(sign_envelope(nested, chain.miner.key), chain.miner)
    _problem(response, 400, "non-canonical-payload", "key 'id' twice")
    assert await world.count_events() == before


async def test_payload_that_is_not_utf8_is_400(chain: Chain) -> None:
    before = await chain.world.count_events()
    payload = _canonical(ev.encode_event(chain.extract("bad-utf8"))).replace(b"bad-utf8", b"bad-\xff")
    response = await chain.world.post(sign_envelope(payload, chain.miner.key), chain.miner)
    _problem(response, 400, "invalid-input", "payload is not valid UTF-8")
    assert await chain.world.count_events() == before


# --- 3. NUL and other control characters in strings ----------------------------------------------------------


def _participant(name: str) -> ev.Event:
    return ev.ParticipantAdmitted(
        actor="registrar",
        timestamp=T0,
        participant=ev.ParticipantInfo(
            id="nul-co",
            name=name,
            roles=["miner"],
            country="CA",
            ownership=ev.Ownership(incorporated_in="CA", headquartered_in="CA"),
        ),
    )


def _facility(name: str) -> ev.Event:
    return ev.FacilityRegistered(
        actor="registrar",
        timestamp=T0,
        facility=ev.FacilityInfo(id="f-nul", participant="northstar", kind="mine", country="CA", name=name),
    )


def _owner(name: str) -> ev.Event:
    return ev.OwnerRegistered(
        actor="registrar",
        timestamp=T0,
        owner=ev.OwnerInfo(id="owner-nul", name=name, kind="fund", country="CA"),
    )


def _revocation(reason: str) -> ev.Event:
    return ev.KeyRevoked(
        actor="registrar", timestamp=T0, participant="northstar", key_id="ab" * 32, reason=reason
    )


def _rates(source: str) -> ev.Event:
    return ev.ExchangeRatesPublished(
        actor="registrar",
        timestamp=T0,
        date="2026-01-02",
        rates=[ev.ExchangeRate(from_="EUR", to="USD", rate="1.08")],
        source=source,
    )


def _profile(name: str) -> ev.Event:
    return ev.ProfilePublished(
        actor="registrar", timestamp=T0, profile={"id": "p-nul", "notes": {"lines": ["ok", name]}}
    )


REGISTRY_TEXT = [
    (_participant, "participant.name"),
    (_facility, "facility.name"),
    (_owner, "owner.name"),
    (_revocation, "reason"),
    (_rates, "source"),
    (_profile, "profile.notes.lines[1]"),
]


@pytest.mark.parametrize("character", ["\x00", "\x07", "\x1b"], ids=["nul", "bel", "esc"])
@pytest.mark.parametrize(("make", "field"), REGISTRY_TEXT, ids=[field for _, field in REGISTRY_TEXT])
async def test_control_characters_in_registry_text_are_refused(
    chain: Chain, make: Any, field: str, character: str
) -> None:
    world = chain.world
    before = await world.count_events()
    response = await world.submit(make(f"Acme{character}Mining"), world.registrar, expect=None)
    _problem(response, 400, "invalid-input", f"payload field {field} contains the control character")
    assert f"U+{ord(character):04X}" in response.json()["detail"]
    assert await world.count_events() == before


async def test_control_characters_in_custody_and_attestation_text_are_refused(chain: Chain) -> None:
    world = chain.world
    auditor = await world.admit("verity", ["auditor"], "CA")
    before = await world.count_events()
    attestation = ev.Attest(
        actor=auditor.id,
        timestamp=TS,
        attestation=ev.AttestationInfo(
            id="att-nul",
            subject=ev.AttestationSubject(facility=chain.mine),
            standard="other:local scheme",
            level="gold\x00",
            valid_from="2026-01-01",
            valid_to="2026-12-31",
            report_sha256="ee" * 32,
        ),
    )
    response = await chain.send(attestation, auditor, expect=None)
    _problem(response, 400, "invalid-input", "attestation.level contains the control character U+0000")
    recycle = ev.Recycle(
        actor=chain.maker.id,
        timestamp=TS,
        facility=chain.plant,
        feedstock=[ev.Feedstock(description="scrap\x00", category="post_consumer", mass_g=10)],
        outputs=[ev.Output(id="r-nul", mineral="lithium", form="black_mass", mass_g=5)],
    )
    response = await chain.send(recycle, chain.maker, expect=None)
    _problem(response, 400, "invalid-input", "feedstock[0].description contains the control character U+0000")
    reaffirm = ev.Reaffirm(
        actor=chain.miner.id, timestamp=TS, events=["sha256:" + "0" * 64], statement="\x00"
    )
    response = await chain.send(reaffirm, chain.miner, expect=None)
    _problem(response, 400, "invalid-input", "statement contains the control character U+0000")
    assert await world.count_events() == before


async def test_tab_line_feed_and_carriage_return_stay_allowed_in_text(chain: Chain) -> None:
    world = chain.world
    before = await world.count_events()
    await world.submit(_owner("Fund\tII\r\nsecond line"), world.registrar)
    assert await world.count_events() == before + 1
    listed = await world.client.get("/v1/owners/owner-nul", headers=world.registrar.headers)
    assert listed.status_code == 200 and listed.json()["name"] == "Fund\tII\r\nsecond line"


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (
            {"participant": "northstar", "label": "ci\x00"},
            "request body field label contains the control character U+0000",
        ),
        (
            {"participant": "northstar", "label": "ci\x1f"},
            "request body field label contains the control character U+001F",
        ),
        (
            {"participant": "north\x00star"},
            "request body field participant contains the control character U+0000",
        ),
        (
            {"participant": "northstar", "label": "\ud800"},
            "request body field label contains a lone surrogate",
        ),
    ],
    ids=["label-nul", "label-us", "participant-nul", "label-surrogate"],
)
async def test_control_characters_in_api_bodies_are_refused(
    chain: Chain, body: dict[str, str], needle: str
) -> None:
    world = chain.world
    tokens = await _count_tokens(world)
    content = json.dumps(body).encode()  # ensure_ascii: \u0000, \ud800 escapes
    response = await world.client.post(
        "/v1/tokens", content=content, headers={**JSON, **world.registrar.headers}
    )
    _problem(response, 400, "invalid-input", needle)
    assert await _count_tokens(world) == tokens
    # a label may still hold a tab
    fine = await world.client.post(
        "/v1/tokens",
        json={"participant": "northstar", "label": "ci\trunner"},
        headers=world.registrar.headers,
    )
    assert fine.status_code == 201 and fine.json()["label"] == "ci\trunner"


async def test_control_characters_in_query_and_token_are_refused(chain: Chain) -> None:
    world = chain.world
    response = await world.client.get(
        "/v1/batches/b-1/eligibility", params={"at": "2026-01-01\x00"}, headers=world.registrar.headers
    )
    _problem(response, 400, "invalid-input", "query parameter 'at' contains the control character U+0000")
    for token in ("tok_\x00_secret", "tok_é_secret", "tok_" + "a" * 300):
        response = await world.client.get(
            "/v1/participants", headers={"Authorization": f"Bearer {token}".encode("latin-1")}
        )
        _problem(response, 401, "unauthenticated", "the bearer token is malformed")


# --- 4. timestamps and dates in range --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "expires_at", ["9999-12-31T23:59:59-23:59", "9999-01-01T00:00:00Z", "0001-01-01T00:00:00+23:59"]
)
async def test_token_expiry_out_of_range_is_400(chain: Chain, expires_at: str) -> None:
    world = chain.world
    tokens = await _count_tokens(world)
    response = await world.client.post(
        "/v1/tokens",
        json={"participant": "northstar", "expires_at": expires_at},
        headers=world.registrar.headers,
    )
    _problem(response, 400, "invalid-input", f"expires_at {expires_at!r} is out of range", "1970 to 9998")
    assert await _count_tokens(world) == tokens


async def test_token_expiry_at_the_edge_of_the_range_is_accepted(chain: Chain) -> None:
    response = await chain.world.client.post(
        "/v1/tokens",
        json={"participant": "northstar", "expires_at": "9998-12-31T23:59:59+00:00"},
        headers=chain.world.registrar.headers,
    )
    assert response.status_code == 201, response.text


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("effective_at", "0001-01-01T00:00:00+23:59"),
        ("effective_at", "9999-12-31T23:59:59-23:59"),
        ("timestamp", "0001-01-01T00:00:00Z"),
        ("timestamp", "1969-12-31T23:59:59Z"),
    ],
)
async def test_key_revocation_times_out_of_range_are_400(chain: Chain, field: str, value: str) -> None:
    world = chain.world
    before = await world.count_events()
    times = {"timestamp": T0, "effective_at": "2026-04-01T00:00:00Z", field: value}
    revoke = ev.KeyRevoked(
        actor="registrar",
        participant=chain.miner.id,
        key_id=chain.miner.key.key_id,
        reason="compromised",
        **times,
    )
    response = await world.submit(revoke, world.registrar, expect=None)
    _problem(response, 400, "invalid-input", f"{field} {value!r} is out of range", "1970 to 9998")
    assert await world.count_events() == before


@pytest.mark.parametrize("day", ["0001-01-01", "1969-12-31", "9999-12-31"])
async def test_dates_out_of_range_are_400(chain: Chain, day: str) -> None:
    world = chain.world
    before = await world.count_events()
    changed = ev.OwnershipChanged(
        actor="registrar",
        timestamp=T0,
        participant=chain.miner.id,
        effective_date=day,
        ownership=ev.Ownership(incorporated_in="CA", headquartered_in="CA"),
    )
    response = await world.submit(changed, world.registrar, expect=None)
    _problem(response, 400, "invalid-input", f"effective_date {day!r} is out of range")
    response = await world.client.get(
        "/v1/exchange-rates", params={"date": day}, headers=world.registrar.headers
    )
    _problem(response, 400, "invalid-input", f"date {day!r} is out of range")
    assert await world.count_events() == before


def test_timestamp_range_is_checked_in_utc() -> None:
    assert ev.parse_timestamp("1970-01-01T00:00:00Z").year == 1970
    assert ev.parse_timestamp("9998-12-31T23:59:59Z").year == 9998
    assert ev.parse_timestamp("1970-01-01T00:30:00-01:00").utcoffset() is not None
    for text in (
        "1970-01-01T00:30:00+01:00",  # 1969 in UTC
        "9998-12-31T23:59:59-01:00",  # 9999 in UTC
        "9999-12-31T23:59:59-23:59",  # beyond what datetime holds in UTC
        "0001-01-01T00:00:00+23:59",
        "0001-01-01T00:00:00Z",
    ):
        with pytest.raises(
            InvalidInput, match="out of range: a timestamp must fall in the years 1970 to 9998"
        ):
            ev.parse_timestamp(text, "at")
    assert ev.parse_date("9998-12-31", "day").year == 9998
    with pytest.raises(InvalidInput, match="out of range"):
        ev.parse_date("9999-01-01", "day")


# --- 5. security headers and clean content types on router-level responses --------------------------------------


async def test_router_level_404_and_405_carry_security_headers_and_a_problem(world: World) -> None:
    _problem(await world.client.get("/no-such-path"), 404, "not-found", "/no-such-path")
    _problem(await world.client.delete("/v1/participants"), 405, "method-not-allowed", "DELETE")
    _problem(
        await world.client.delete("/v1/participants", headers=world.registrar.headers),
        405,
        "method-not-allowed",
    )


async def test_content_type_names_charset_at_most_once(world: World) -> None:
    key = await world.client.get("/v1/log/key")
    assert key.headers["content-type"] == "text/plain; charset=utf-8"
    assert (await world.client.get("/healthz")).headers["content-type"] == "application/json"
    problem = await world.client.get("/v1/participants")
    assert problem.headers["content-type"] == "application/problem+json"


# --- 6. slow clients ----------------------------------------------------------------------------------------


def _scope(path: str = "/v1/events", headers: list[tuple[bytes, bytes]] | None = None) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"testserver"), (b"content-type", b"application/json"), *(headers or [])],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
        "state": {},
    }


async def _drive(app: Any, scope: dict[str, Any], messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Call the ASGI app with these request messages, then a client that stalls (sends nothing more)."""
    sent: list[dict[str, Any]] = []
    queue = list(messages)

    async def receive() -> dict[str, Any]:
        if queue:
            return queue.pop(0)
        await asyncio.Event().wait()  # a stalled client
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await asyncio.wait_for(app(scope, receive, send), 10)
    return sent


def _response(sent: list[dict[str, Any]]) -> tuple[int, dict[str, str], dict[str, Any]]:
    start = sent[0]
    headers = {name.decode(): value.decode() for name, value in start["headers"]}
    body = b"".join(m.get("body", b"") for m in sent[1:])
    return start["status"], headers, json.loads(body)


async def test_a_body_that_does_not_arrive_in_time_is_408(world: World) -> None:
    before = await world.count_events()
    settings = replace(world.services.settings, body_timeout_seconds=0.2)
    app = create_app(settings=settings, services=world.services)
    started = time.monotonic()
    sent = await _drive(
        app,
        _scope(headers=[(b"content-length", b"100"), *world_auth(world)]),
        [{"type": "http.request", "body": b'{"payloadType":', "more_body": True}],
    )
    assert time.monotonic() - started < 5
    status, headers, body = _response(sent)
    assert status == 408 and body["code"] == "request-timeout", body
    assert "LEDGER_BODY_TIMEOUT" in body["detail"] and "0.2 seconds" in body["detail"]
    assert headers["connection"] == "close"
    assert headers["content-type"] == "application/problem+json"
    assert headers["x-content-type-options"] == "nosniff"
    assert await world.count_events() == before


async def test_a_streamed_body_over_the_limit_is_413_without_reading_the_rest(world: World) -> None:
    before = await world.count_events()
    limit = world.services.settings.max_body_bytes
    chunk = b" " * (1024 * 1024)
    chunks = [{"type": "http.request", "body": chunk, "more_body": True}] * (limit // len(chunk) + 2)
    app = create_app(services=world.services)
    sent = await _drive(app, _scope(headers=world_auth(world)), chunks)
    status, headers, body = _response(sent)
    assert status == 413 and body["code"] == "body-too-large", body
    assert f"{limit:,} bytes (LEDGER_MAX_BODY_BYTES)" in body["detail"]
    assert headers["connection"] == "close"
    assert await world.count_events() == before


async def test_a_client_that_disconnects_mid_body_gets_nothing(world: World) -> None:
    app = create_app(services=world.services)
    sent = await _drive(
        app,
        _scope(headers=world_auth(world)),
        [{"type": "http.request", "body": b"{", "more_body": True}, {"type": "http.disconnect"}],
    )
    assert sent == []


def world_auth(world: World) -> list[tuple[bytes, bytes]]:
    return [(b"authorization", f"Bearer {world.registrar.token}".encode())]


@pytest.fixture
def env(env: dict[str, str]) -> dict[str, str]:
    """The real server of these tests gives slow clients one second."""
    return {**env, "LEDGER_HEADER_TIMEOUT": "1", "LEDGER_BODY_TIMEOUT": "1", "LEDGER_KEEPALIVE_TIMEOUT": "1"}


def _connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    return sock


def _read_until_closed(sock: socket.socket) -> tuple[float, bytes]:
    started, data = time.monotonic(), b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    return time.monotonic() - started, data


def test_real_server_drops_slow_and_idle_clients(server: str) -> None:
    # headers trickling in, a byte at a time, are cut off at LEDGER_HEADER_TIMEOUT
    with _connect(server) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n")
        started = time.monotonic()
        with pytest.raises(OSError):
            for _ in range(40):
                time.sleep(0.25)
                sock.sendall(b"X-Slow: 1\r\n")
        assert time.monotonic() - started < 6
    # a connection that never sends anything
    with _connect(server) as sock:
        elapsed, data = _read_until_closed(sock)
        assert data == b"" and elapsed < 5
    # a body that stalls gets 408 at LEDGER_BODY_TIMEOUT, then the connection closes
    with _connect(server) as sock:
        sock.sendall(
            b"POST /v1/events HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
            b'Content-Length: 100\r\n\r\n{"payload'
        )
        elapsed, data = _read_until_closed(sock)
        assert data.startswith(b"HTTP/1.1 408 "), data[:200]
        assert b'"code":"request-timeout"' in data and b"x-content-type-options: nosniff" in data
        assert elapsed < 5
    # an idle keep-alive connection is closed after LEDGER_KEEPALIVE_TIMEOUT
    with _connect(server) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        elapsed, data = _read_until_closed(sock)
        assert data.startswith(b"HTTP/1.1 200 ") and elapsed < 5
    # and the server still serves; router-level errors carry the headers and one clean content type
    for response in (httpx.get(f"{server}/no-such-path"), httpx.delete(f"{server}/v1/participants")):
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["code"] in {"not-found", "method-not-allowed"}
    # a request line and headers beyond 16 KiB are refused (431 problem) and the connection closes
    with _connect(server) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n" + b"X-Big: " + b"a" * 20_000 + b"\r\n\r\n")
        elapsed, data = _read_until_closed(sock)
        assert data.startswith(b"HTTP/1.1 431 "), data[:200]
        assert b'"code":"headers-too-large"' in data and b"x-content-type-options: nosniff" in data
    # a large body sent in the same packet as its headers is not mistaken for large headers
    big = httpx.post(f"{server}/v1/events", content=b"{" + b" " * 100_000 + b"}", headers=JSON)
    assert big.status_code in {400, 401, 422}, big.text
    checkpoint = httpx.get(f"{server}/v1/log/key")
    assert checkpoint.headers["content-type"] == "text/plain; charset=utf-8"
    invalid = httpx.post(f"{server}/v1/events", content=b'{"a":"\xff"}', headers=JSON)
    assert invalid.status_code == 400 and "not valid UTF-8" in invalid.json()["detail"]


# --- the strict decoder itself ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "depth"),
    [
        (b"1", 0),
        (b"[]", 1),
        (b'{"a":[1,{"b":[]}]}', 4),
        (b'["[[[[", "\\"[[", "\\\\", [[]]]', 3),
        (b'"unterminated [[[', 0),
        (b"[" * 5000, 5000),
    ],
)
def test_json_depth_ignores_brackets_in_strings(text: bytes, depth: int) -> None:
    assert canonical.json_depth(text) == depth


def test_parse_canonical_refuses_deep_and_duplicate_and_non_utf8_payloads() -> None:
    with pytest.raises(InvalidInput, match="nested deeper than 32 levels"):
        canonical.parse_canonical(b"[" * 100_000)
    with pytest.raises(NonCanonicalPayload, match="key 'a' twice"):
        canonical.parse_canonical(b'{"a":1,"a":1}')
    with pytest.raises(InvalidInput, match="not valid UTF-8"):
        canonical.parse_canonical(b'{"a":"\xc3"}')
    with pytest.raises(InvalidInput, match="nested deeper than 32 levels"):
        ev.decode_payload(b'{"kind":"profile_published","profile":' + b"[" * 100_000)


def test_loads_strict_refusals_name_the_problem() -> None:
    with pytest.raises(InvalidInput, match="not valid JSON: NaN"):
        canonical.loads_strict(b'{"a":NaN}', "request body")
    with pytest.raises(InvalidInput, match="at most 100"):
        canonical.loads_strict(b"[" + b"9" * 5000 + b"]", "request body")
    with pytest.raises(
        InvalidInput, match="a key in request body field a contains the control character U\\+0001"
    ):
        canonical.loads_strict(b'{"a":{"\\u0001":1}}', "request body")
    # an escaped backslash before "u0000" is text, not a NUL
    assert canonical.loads_strict(b'{"a":"\\\\u0000"}', "request body") == {"a": "\\u0000"}
    assert canonical.loads_strict(b'{"a":"\\ud83d\\ude00"}', "request body") == {"a": "\U0001f600"}
