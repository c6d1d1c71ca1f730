"""The registry through the API: admitting participants, facilities, keys, tokens; and the bad inputs."""

from __future__ import annotations

import base64
import json

import msgspec
import pytest

from ledger.client import envelope_for
from ledger.domain import events as ev
from ledger.domain.dsse import PAYLOAD_TYPE, Envelope, Signature, pae, sign_envelope
from ledger.domain.keys import SigningKey
from tests.support import T0, Member, World

JSON = {"Content-Type": "application/json"}


def admitted(pid: str, key: SigningKey, *, roles: list[str] | None = None, country: str = "CA") -> ev.Event:
    return ev.ParticipantAdmitted(
        actor="registrar",
        timestamp=T0,
        participant=ev.ParticipantInfo(
            id=pid,
            name="Acme Mining",
            roles=roles or ["miner"],
            country=country,
            ownership=ev.Ownership(
                incorporated_in=country,
                headquartered_in=country,
                government_stakes=[
                    ev.GovernmentStake(country="CN", equity="0.1", votes="0.3", board_seats="0")
                ],
            ),
        ),
        keys=[ev.NewKey(public_key=key.public_key_b64)],
    )


async def test_registrar_admits_participant_with_facility_key_and_token(world: World) -> None:
    key = SigningKey.generate()
    response = await world.submit(admitted("acme-mining", key), world.registrar)
    event_id = response.json()["event_id"]
    assert response.json()["status"] == "accepted"
    assert response.json()["log_index"] == 1  # the genesis event admitting the registrar is index 0
    acme = Member("acme-mining", key, "")
    await world.facility("acme-mine-qc", acme, "mine", "CA")

    got = await world.client.get("/v1/participants/acme-mining", headers=world.registrar.headers)
    assert got.status_code == 200
    body = got.json()
    assert body["roles"] == ["miner"]
    assert body["ownership"]["government_stakes"] == [
        {"country": "CN", "equity": "0.1", "votes": "0.3", "board_seats": "0"}
    ]
    assert [k["key_id"] for k in body["keys"]] == [key.key_id]
    assert [f["id"] for f in body["facilities"]] == ["acme-mine-qc"]
    assert body["admitted_event"] == event_id

    event = (await world.client.get(f"/v1/events/{event_id}", headers=world.registrar.headers)).json()
    assert event["kind"] == "participant_admitted" and event["actor"] == "registrar"
    assert event["payload"]["participant"]["id"] == "acme-mining"
    # the stored envelope is exactly the one signed: payload bytes and signature verify again
    payload = base64.b64decode(event["envelope"]["payload"])
    signature = base64.b64decode(event["envelope"]["signatures"][0]["sig"])
    world.registrar.key._nacl.verify_key.verify(pae(PAYLOAD_TYPE, payload), signature)

    issued = await world.client.post(
        "/v1/tokens", json={"participant": "acme-mining", "label": "ops"}, headers=world.registrar.headers
    )
    assert issued.status_code == 201
    token = issued.json()["token"]
    listing = await world.client.get("/v1/tokens", headers=world.registrar.headers)
    assert token not in listing.text  # secrets are never listed
    assert issued.json()["id"] in [t["id"] for t in listing.json()["items"]]
    listed = await world.client.get("/v1/participants", headers={"Authorization": f"Bearer {token}"})
    assert [p["id"] for p in listed.json()["items"]] == ["acme-mining", "registrar"]


async def test_same_envelope_twice_is_stored_once(world: World) -> None:
    envelope = envelope_for(admitted("acme-mining", SigningKey.generate()), world.registrar.key)
    first = await world.post(envelope, world.registrar)
    second = await world.post(envelope, world.registrar)
    assert first.status_code == 201 and second.status_code == 200
    assert second.json()["status"] == "duplicate"
    assert first.json()["event_id"] == second.json()["event_id"]
    assert first.json()["log_index"] == second.json()["log_index"]
    assert await world.count_events() == 2


async def test_participant_signs_and_submits_its_own_envelope(world: World) -> None:
    miner = await world.admit("acme-mining", ["miner"], "CA")
    await world.facility("acme-mine-qc", miner, "mine", "CA")
    extract = ev.Extract(
        actor=miner.id,
        timestamp=T0,
        facility="acme-mine-qc",
        batch=ev.NewBatch(id="spod-001", mineral="lithium", form="concentrate", mass_g=1_000_000),
    )
    response = await world.submit(extract, miner)
    assert response.json()["status"] == "accepted"


def _raw_envelope(payload: bytes, key: SigningKey) -> bytes:
    return sign_envelope(payload, key).to_json()


async def _assert_rejected(world: World, response: object, status: int, needle: str) -> None:
    import httpx

    assert isinstance(response, httpx.Response)
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["status"] == status
    assert needle in problem["detail"], problem["detail"]


async def test_bad_inputs_are_rejected_and_change_nothing(world: World) -> None:
    headers = {**world.registrar.headers, **JSON}
    good = envelope_for(admitted("acme-mining", SigningKey.generate()), world.registrar.key)
    before = await world.count_events()

    # malformed JSON
    r = await world.client.post("/v1/events", content=b'{"payloadType": ', headers=headers)
    await _assert_rejected(world, r, 400, "JSON")
    # a wrong type in the envelope
    bad_type = json.loads(good.to_json())
    bad_type["signatures"] = "nope"
    r = await world.client.post("/v1/events", content=json.dumps(bad_type), headers=headers)
    await _assert_rejected(world, r, 400, "signatures")
    # an unknown field in the envelope
    unknown = json.loads(good.to_json())
    unknown["extra"] = 1
    r = await world.client.post("/v1/events", content=json.dumps(unknown), headers=headers)
    await _assert_rejected(world, r, 400, "extra")
    # an unknown field inside the payload
    document = ev.encode_event(admitted("x1", SigningKey.generate()))
    document["participant"]["nickname"] = "x"
    from ledger.domain.canonical import canonical_bytes

    r = await world.client.post(
        "/v1/events", content=_raw_envelope(canonical_bytes(document), world.registrar.key), headers=headers
    )
    await _assert_rejected(world, r, 400, "nickname")
    # a float in the payload
    document = ev.encode_event(admitted("x2", SigningKey.generate()))
    document["participant"]["ownership"]["government_stakes"][0]["equity"] = 0.1
    payload = json.dumps(document, separators=(",", ":"), sort_keys=True).encode()
    r = await world.client.post(
        "/v1/events", content=_raw_envelope(payload, world.registrar.key), headers=headers
    )
    await _assert_rejected(world, r, 400, "floating-point")
    # a payload that is not canonical (whitespace)
    payload = json.dumps(ev.encode_event(admitted("x3", SigningKey.generate())), sort_keys=True).encode()
    r = await world.client.post(
        "/v1/events", content=_raw_envelope(payload, world.registrar.key), headers=headers
    )
    await _assert_rejected(world, r, 400, "canonical")
    # a tampered payload: signed, then one byte changed
    tampered = json.loads(good.to_json())
    raw = base64.b64decode(tampered["payload"]).replace(b"Acme Mining", b"Acme Minin6")
    tampered["payload"] = base64.b64encode(raw).decode()
    r = await world.client.post("/v1/events", content=json.dumps(tampered), headers=headers)
    await _assert_rejected(world, r, 422, "does not verify")
    # an unknown country code
    r = await world.post(
        envelope_for(admitted("x4", SigningKey.generate(), country="XK"), world.registrar.key),
        world.registrar,
    )
    await _assert_rejected(world, r, 400, "ISO 3166-1")
    # an unknown role
    r = await world.post(
        envelope_for(admitted("x5", SigningKey.generate(), roles=["king"]), world.registrar.key),
        world.registrar,
    )
    await _assert_rejected(world, r, 400, "roles")
    # a signature by a key that is unknown
    stranger = SigningKey.generate()
    r = await world.post(envelope_for(admitted("x6", SigningKey.generate()), stranger), world.registrar)
    await _assert_rejected(world, r, 422, "not registered")
    assert await world.count_events() == before


async def test_duplicate_participant_and_facility_ids_conflict(world: World) -> None:
    acme = await world.admit("acme-mining", ["miner"], "CA")
    r = await world.post(
        envelope_for(admitted("acme-mining", SigningKey.generate()), world.registrar.key), world.registrar
    )
    await _assert_rejected(world, r, 409, "already exists")
    await world.facility("mine-1", acme, "mine", "CA")
    again = ev.FacilityRegistered(
        actor="registrar",
        timestamp="2026-03-03T10:00:00Z",
        facility=ev.FacilityInfo(id="mine-1", participant=acme.id, kind="mine", country="CA", name="other"),
    )
    r = await world.submit(again, world.registrar, expect=None)
    await _assert_rejected(world, r, 409, "already exists")


async def test_signature_by_someone_elses_key_or_revoked_key(world: World) -> None:
    acme = await world.admit("acme-mining", ["miner"], "CA")
    other = await world.admit("beta-mining", ["miner"], "AU")
    await world.facility("mine-1", acme, "mine", "CA")
    extract = ev.Extract(
        actor=acme.id,
        timestamp=T0,
        facility="mine-1",
        batch=ev.NewBatch(id="b1", mineral="lithium", form="ore", mass_g=5),
    )
    # signed by beta's key but claiming to be acme, sent with acme's token
    r = await world.post(envelope_for(extract, other.key), acme)
    await _assert_rejected(world, r, 422, "belongs to 'beta-mining'")
    # signed by acme, sent with beta's token
    r = await world.post(envelope_for(extract, acme.key), other)
    await _assert_rejected(world, r, 403, "API token belongs to 'beta-mining'")
    # acme's key revoked: its envelopes are refused from then on
    revoke = ev.KeyRevoked(
        actor="registrar", timestamp=T0, participant=acme.id, key_id=acme.key.key_id, reason="rotated"
    )
    await world.submit(revoke, world.registrar)
    r = await world.post(envelope_for(extract, acme.key), acme)
    await _assert_rejected(world, r, 422, "revoked")
    assert (await world.client.get("/v1/participants/acme-mining", headers=acme.headers)).json()["keys"][0][
        "revoked_reason"
    ] == "rotated"


async def test_tokens_missing_revoked_and_without_role(world: World) -> None:
    acme = await world.admit("acme-mining", ["miner"], "CA")
    r = await world.client.get("/v1/participants")
    await _assert_rejected(world, r, 401, "Bearer")
    r = await world.client.get("/v1/participants", headers={"Authorization": "Bearer tok_0000_nope"})
    await _assert_rejected(world, r, 401, "not valid")
    # a non-registrar may not issue tokens or submit registry events
    r = await world.client.post("/v1/tokens", json={"participant": acme.id}, headers=acme.headers)
    await _assert_rejected(world, r, 403, "registrar")
    r = await world.post(envelope_for(_admitted_by(acme), acme.key), acme)
    await _assert_rejected(world, r, 403, "only the registrar")
    # revoke acme's token: 401 from then on
    token_id = acme.token.split("_")[1]
    r = await world.client.post(f"/v1/tokens/{token_id}/revoke", headers=world.registrar.headers)
    assert r.status_code == 200 and r.json()["revoked_at"] is not None
    r = await world.client.get("/v1/participants", headers=acme.headers)
    await _assert_rejected(world, r, 401, "revoked")


def _admitted_by(member: Member) -> ev.Event:
    event = admitted("x7", SigningKey.generate())
    assert isinstance(event, ev.ParticipantAdmitted)
    return ev.ParticipantAdmitted(actor=member.id, timestamp=event.timestamp, participant=event.participant)


async def test_body_over_the_size_limit_is_413(world: World) -> None:
    limit = world.services.settings.max_body_bytes
    r = await world.client.post(
        "/v1/events", content=b"x" * (limit + 1), headers={**world.registrar.headers, **JSON}
    )
    await _assert_rejected(world, r, 413, "size limit")


async def test_health_readiness_and_schema_need_no_token(world: World) -> None:
    assert (await world.client.get("/healthz")).json() == {"status": "ok"}
    assert (await world.client.get("/readyz")).status_code == 200
    schema = await world.client.get("/schema/openapi.json")
    assert schema.status_code == 200
    assert "/v1/events" in schema.json()["paths"]


@pytest.mark.parametrize("signatures", [[], [Signature(keyid="ab" * 32, sig="AAAA")] * 5])
async def test_envelope_signature_count(world: World, signatures: list[Signature]) -> None:
    good = envelope_for(admitted("x8", SigningKey.generate()), world.registrar.key)
    envelope = Envelope(payloadType=good.payloadType, payload=good.payload, signatures=signatures)
    r = await world.post(envelope, world.registrar)
    await _assert_rejected(world, r, 400, "signatures")
    assert msgspec.json.decode(r.content)["code"] == "invalid-input"
