"""Verdicts as W3C Verifiable Credentials: a recorded determination as application/vc+jwt, verified with an
independent JOSE implementation (joserfc, which the ledger does not use to sign) against the key the ledger's
did:web document publishes; a one-byte change fails; the Bitstring Status List marks the credential once a later
revocation changes its verdict."""

from __future__ import annotations

import base64
import gzip
import json
from typing import Any

import pytest
from joserfc import jws
from joserfc.errors import BadSignatureError, JoseError
from joserfc.jwk import OKPKey

from ledger.domain import events as ev
from ledger.interop import credentials as vc
from tests.support import TS, Chain
from tests.test_eligibility_api import _qualifying_chain


def verify(token: str, did_document: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Header and payload of a compact JWS, verified with the JWK the DID document publishes (joserfc)."""
    (method,) = did_document["verificationMethod"]
    key = OKPKey.import_key(method["publicKeyJwk"])
    verified = jws.deserialize_compact(token, key, algorithms=["EdDSA"])
    assert verified.protected["kid"] == method["id"]
    return dict(verified.protected), json.loads(verified.payload)


def bits(encoded: str) -> bytes:
    assert encoded.startswith("u")
    return gzip.decompress(base64.urlsafe_b64decode(encoded[1:] + "=" * (-len(encoded[1:]) % 4)))


def flip(token: str, position: int) -> str:
    """The token with one character changed (so one byte of what was signed, or of the signature)."""
    changed = "A" if token[position] != "A" else "B"
    return token[:position] + changed + token[position + 1 :]


async def test_determination_credential_verifies_and_is_marked_after_a_revocation(chain: Chain) -> None:
    world = chain.world
    auditor = await _qualifying_chain(chain)
    recorded = await world.client.post(
        "/v1/batches/lioh-1/determinations", json={"at": "2026-10-01"}, headers=chain.refiner.headers
    )
    assert recorded.status_code == 201, recorded.text
    event_id, log_index = recorded.json()["event_id"], recorded.json()["log_index"]

    did_document = (await world.client.get("/.well-known/did.json")).json()  # public: no token
    did = "did:web:testserver"
    assert did_document["id"] == did and did_document["assertionMethod"] == [f"{did}#log-key"]
    jwk = did_document["verificationMethod"][0]["publicKeyJwk"]
    assert (jwk["kty"], jwk["crv"]) == ("OKP", "Ed25519")
    log_key = world.services.log.signer.key.public_key
    assert base64.urlsafe_b64decode(jwk["x"] + "=") == log_key  # the log key, as a JWK

    response = await world.client.get(
        f"/v1/credentials/determinations/{event_id}", headers=chain.refiner.headers
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/vc+jwt")
    token = response.text
    header, credential = verify(token, did_document)
    assert header == {"alg": "EdDSA", "kid": f"{did}#log-key", "typ": "vc+jwt", "cty": "vc"}
    assert credential["@context"][0] == "https://www.w3.org/ns/credentials/v2"
    assert credential["type"] == ["VerifiableCredential", "ledger:EligibilityDeterminationCredential"]
    assert credential["issuer"] == did
    subject = credential["credentialSubject"]
    assert subject["id"] == "https://mineral-ledger.example/id/batch/lioh-1"
    assert (subject["ledger:verdict"], subject["ledger:qualifyingShare"]) == ("eligible", "1")
    assert subject["ledger:profile"]["id"] == "ptz-2026" and subject["ledger:at"] == "2026-10-01"
    assert (subject["ledger:determinationEvent"], subject["ledger:logIndex"]) == (event_id, log_index)
    status = credential["credentialStatus"]
    assert status["type"] == "BitstringStatusListEntry" and status["statusPurpose"] == "revocation"
    assert status["statusListIndex"] == str(log_index)
    assert status["statusListCredential"] == "http://testserver/v1/credentials/status/revocation"

    # one byte changed anywhere (the header, the claims, the signature) and it no longer verifies
    payload_start = token.index(".") + 1
    for position in (payload_start + 40, len(token) - 5):
        with pytest.raises(BadSignatureError):
            verify(flip(token, position), did_document)
    with pytest.raises(JoseError):  # a header that no longer decodes is refused before any signature check
        verify(flip(token, 3), did_document)
    # the claims with one byte changed ("eligible" to "eligiblE"), re-encoded, under the same signature
    head, body, signature = token.split(".")
    claims = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)).replace(b'"eligible"', b'"eligiblE"')
    forged = ".".join((head, base64.urlsafe_b64encode(claims).decode().rstrip("="), signature))
    with pytest.raises(BadSignatureError):
        verify(forged, did_document)

    async def status_bits() -> bytes:
        answer = await world.client.get("/v1/credentials/status/revocation")  # public
        assert answer.status_code == 200 and answer.headers["content-type"].startswith("application/vc+jwt")
        _, listed = verify(answer.text, did_document)
        assert listed["type"] == ["VerifiableCredential", "BitstringStatusListCredential"]
        assert listed["credentialSubject"]["statusPurpose"] == "revocation"
        return bits(listed["credentialSubject"]["encodedList"])

    before = await status_bits()
    assert len(before) == 131_072 // 8 and not any(before)

    # the auditor revokes the refinery's RMAP attestation with effect before the refining: the verdict changes
    revoke = ev.RevokeAttestation(
        actor=auditor.id,
        timestamp=TS,
        attestation="rmap-tx",
        effective_date="2026-09-01",
        reason="audit finding",
    )
    await chain.send(revoke, auditor)
    later = await world.client.post(
        "/v1/batches/lioh-1/determinations", json={"at": "2026-10-01"}, headers=chain.refiner.headers
    )
    assert later.status_code == 201 and later.json()["log_index"] > log_index
    after = await status_bits()
    # Bitstring Status List: bit i is the (i mod 8)-th most significant bit of byte i // 8
    assert after[log_index // 8] == 0x80 >> (log_index % 8)
    assert (
        sum(bin(b).count("1") for b in after) == 1
    )  # the later determination was made knowing the revocation
    again = await world.client.get(
        f"/v1/credentials/determinations/{later.json()['event_id']}", headers=chain.refiner.headers
    )
    assert verify(again.text, did_document)[1]["credentialSubject"]["ledger:verdict"] == "not_eligible"


async def test_credentials_are_scoped_and_only_for_determinations(chain: Chain) -> None:
    world = chain.world
    await _qualifying_chain(chain)
    recorded = await world.client.post(
        "/v1/batches/lioh-1/determinations", json={"at": "2026-10-01"}, headers=chain.refiner.headers
    )
    event_id = recorded.json()["event_id"]
    rival = await world.admit("rival-lithium", ["manufacturer"], "MX")
    hidden = await world.client.get(f"/v1/credentials/determinations/{event_id}", headers=rival.headers)
    assert hidden.status_code == 404 and hidden.headers["content-type"].startswith("application/problem+json")
    history = (await world.client.get("/v1/batches/lioh-1/history", headers=world.registrar.headers)).json()
    transform = history["events"][0]["event_id"]
    assert history["events"][0]["kind"] == "transform"
    wrong = await world.client.get(
        f"/v1/credentials/determinations/{transform}", headers=world.registrar.headers
    )
    assert wrong.status_code == 404 and "not a recorded determination" in wrong.text
    missing = await world.client.get(
        "/v1/credentials/determinations/sha256:" + "0" * 64, headers=world.registrar.headers
    )
    assert missing.status_code == 404
    assert (await world.client.get(f"/v1/credentials/determinations/{event_id}")).status_code == 401


def test_bitstring_encoding_by_hand() -> None:
    """Index 0 is the first byte's most significant bit; index 9 is the second byte's second bit."""
    encoded = vc.encode_bitstring([0, 9], size=16)
    assert vc.decode_bitstring(encoded) == bytes([0b1000_0000, 0b0100_0000])
    assert len(vc.decode_bitstring(vc.encode_bitstring([]))) == 16_384
    assert vc.did_web("ledger.example:8443") == "did:web:ledger.example%3A8443"


async def test_origin_determinations_and_certificates_of_origin_as_credentials(world: Any) -> None:
    from ledger.client import envelope_for
    from tests import test_agreement_origin as cases
    from tests.test_agreement_origin_api import _issue, certificate, publish
    from tests.test_origin_api import KEYS, replay

    await replay(world, cases.cells("450"), [])
    await publish(world, [])
    maker = {"Authorization": f"Bearer {(await world.services.tokens.issue('us-maker', 'test')).token}"}
    recorded = await world.client.post(
        "/v1/batches/cells/origin/determinations", json={"method": "nc", "at": "2030-12-31"}, headers=maker
    )
    assert recorded.status_code == 201, recorded.text
    supporting = recorded.json()["event_id"]
    good = {"batch": "cells", "description": "Lithium-ion cells, 3.6 V, 50 Ah", "hs6": "850760",
            "origin_criterion": "B", "determination": supporting}  # fmt: skip
    envelope = envelope_for(_issue(certificate(goods=[good])), KEYS["us-maker"])
    issued = await world.client.post(
        "/v1/events", content=envelope.to_json(), headers={**maker, "Content-Type": "application/json"}
    )
    assert issued.status_code == 201, issued.text
    did_document = (await world.client.get("/.well-known/did.json")).json()

    origin = await world.client.get(f"/v1/credentials/determinations/{supporting}", headers=maker)
    _, credential = verify(origin.text, did_document)
    assert credential["type"] == ["VerifiableCredential", "ledger:OriginDeterminationCredential"]
    subject = credential["credentialSubject"]
    assert (subject["ledger:verdict"], subject["ledger:criterion"], subject["ledger:rvcMethod"]) == (
        "originating", "B", "net_cost"
    )  # fmt: skip
    assert subject["ledger:agreement"]["id"] == "usmca" and "ledger:qualifyingShare" not in subject

    response = await world.client.get("/v1/credentials/certificates/cert-2026-0001", headers=maker)
    assert response.status_code == 200, response.text
    _, credential = verify(response.text, did_document)
    assert credential["type"] == ["VerifiableCredential", "ledger:CertificateOfOriginCredential"]
    assert (credential["validFrom"], credential["validUntil"]) == (
        "2026-01-01T00:00:00Z",
        "2026-12-31T23:59:59Z",
    )
    subject = credential["credentialSubject"]
    assert subject["ledger:certifier"] == "https://mineral-ledger.example/id/participant/us-maker"
    assert subject["ledger:certificate"]["goods"] == [good]
    assert subject["ledger:supportingDeterminations"] == [supporting]
    assert subject["ledger:certificateEvent"] == issued.json()["event_id"]
    missing = await world.client.get("/v1/credentials/certificates/cert-9", headers=maker)
    assert missing.status_code == 404
