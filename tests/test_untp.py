"""UNTP credentials: a batch's events as a Digital Traceability Event, attestations as Digital Conformity
Credentials (parsed with the `untp-models` package), and importing a DCC an auditor issued, its proof checked
first (credentials signed here with joserfc, independently of the ledger's own JOSE code)."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from joserfc import jws
from joserfc.jwk import OKPKey
from untp_models.conformity_credential import DigitalConformityCredential

from ledger.client import LedgerClient
from ledger.domain import events as ev
from ledger.domain.keys import SigningKey
from ledger.interop.untp import attestation_from_dcc
from tests.support import TS, Chain, ledger
from tests.test_credentials import verify
from tests.test_eligibility_api import REPORT, _qualifying_chain
from tests.test_epcis import build, events_of

ID = "https://mineral-ledger.example/id/"


async def test_traceability_credential_carries_the_batchs_epcis_events(chain: Chain) -> None:
    await build(chain)
    world = chain.world
    did_document = (await world.client.get("/.well-known/did.json")).json()
    response = await world.client.get(
        "/v1/credentials/batches/lioh-1a/traceability", headers=chain.maker.headers
    )
    assert response.status_code == 200 and response.headers["content-type"].startswith("application/vc+jwt")
    _, credential = verify(response.text, did_document)
    assert credential["type"] == ["DigitalTraceabilityEvent", "VerifiableCredential"]
    assert credential["@context"][:2] == [
        "https://www.w3.org/ns/credentials/v2",
        "https://test.uncefact.org/vocabulary/untp/dte/0.5.0/",
    ]
    listed = events_of(
        (await world.client.get("/epcis/batches/lioh-1a/events", headers=chain.maker.headers)).json()
    )
    assert [e["id"] for e in credential["credentialSubject"]] == [e["eventID"] for e in listed]
    assert [e["type"] for e in credential["credentialSubject"]] == [
        ["TransformationEvent", "Event"],  # the split that made it
        ["ObjectEvent", "Event"],
        ["ObjectEvent", "Event"],
        ["TransformationEvent", "Event"],  # the merge that consumed it
    ]
    rival = await world.admit("rival-lithium", ["miner"], "AU")
    hidden = await world.client.get("/v1/credentials/batches/lioh-1a/traceability", headers=rival.headers)
    assert hidden.status_code == 404


async def test_conformity_credential_parses_with_untp_models_and_maps_back(chain: Chain) -> None:
    auditor = await _qualifying_chain(chain)
    world = chain.world
    did_document = (await world.client.get("/.well-known/did.json")).json()
    response = await world.client.get("/v1/credentials/attestations/irma-qc", headers=chain.maker.headers)
    assert response.status_code == 200, response.text
    _, credential = verify(response.text, did_document)
    # untp-models 0.1.1 types @context as a single string; a VC 2.0 @context is a list, so it gets the DCC's
    parsed = DigitalConformityCredential.model_validate({**credential, "@context": credential["@context"][1]})
    subject = parsed.credentialSubject
    assert subject.scope.name == "IRMA Standard for Responsible Mining"
    assert subject.issuedToParty.name == "Northstar"  # the operator of the mine attested
    (assessment,) = subject.assessment
    assert assessment.conformance is True and str(assessment.assessmentDate) == "2026-01-01"
    assert [str(f.id) for f in assessment.assessedFacility or []] == [f"{ID}facility/mine-qc"]
    assert parsed.validFrom == "2026-01-01T00:00:00Z" and parsed.validUntil == "2026-12-31T23:59:59Z"
    assert attestation_from_dcc(credential) == {
        "id": "irma-qc",
        "subject": {"facility": "mine-qc"},
        "standard": "irma",
        "level": "irma_75",
        "valid_from": "2026-01-01",
        "valid_to": "2026-12-31",
        "report_sha256": REPORT,
    }
    revoke = ev.RevokeAttestation(
        actor=auditor.id, timestamp=TS, attestation="irma-qc", effective_date="2026-06-01", reason="finding"
    )
    await chain.send(revoke, auditor)
    again = await world.client.get("/v1/credentials/attestations/irma-qc", headers=chain.maker.headers)
    assert verify(again.text, did_document)[1]["credentialSubject"]["assessment"][0]["conformance"] is False
    missing = await world.client.get("/v1/credentials/attestations/nope", headers=chain.maker.headers)
    assert missing.status_code == 404


def _dcc(facility: str, report: str) -> dict[str, Any]:
    """A DCC as an auditor's own system would write it (no ledger extension fields)."""
    return {
        "@context": ["https://www.w3.org/ns/credentials/v2", "https://test.uncefact.org/vocabulary/untp/dcc/0.5.0/"],
        "type": ["DigitalConformityCredential", "VerifiableCredential"],
        "id": "https://audits.example/credentials/rmap-2026-0042",
        "issuer": {"type": "CredentialIssuer", "id": "did:web:audits.example", "name": "Verity Assurance",
                   "otherIdentifier": {"type": "Identifier", "id": "did:web:audits.example", "name": "Verity"}},
        "validFrom": "2026-02-01T00:00:00Z",
        "validUntil": "2027-01-31T23:59:59Z",
        "credentialSubject": {
            "type": "ConformityAttestation",
            "name": "RMAP conformant smelter",
            "assessmentLevel": "Verified",
            "attestationType": "Certification",
            "issuedToParty": {"type": "Party", "id": f"{ID}participant/acme-mining", "name": "Acme"},
            "scope": {"type": "ConformityAssessmentScheme", "name": "RMI Responsible Minerals Assurance Process"},
            "assessment": [{"type": "ConformityAssessment", "assessmentDate": "2026-01-20", "conformance": True,
                            "conformityTopic": "Governance.Ethics",
                            "assessedFacility": [{"type": "Facility", "id": f"{ID}facility/{facility}",
                                                  "name": "Quebec mine", "IDverifiedByCAB": True}]}],
            "auditableEvidence": {"type": "SecureLink", "linkUrl": "https://audits.example/reports/42.pdf",
                                  "linkName": "audit report", "linkType": "application/pdf", "hashDigest": report,
                                  "hashMethod": "SHA-256", "encryptionMethod": "None"},
        },
    }  # fmt: skip


def _sign(credential: dict[str, Any], key: SigningKey) -> str:
    """Signed with joserfc (not the ledger's code), as the auditor's issuing system would."""
    jwk = OKPKey.import_key(
        {"kty": "OKP", "crv": "Ed25519", "x": base64.urlsafe_b64encode(key.public_key).decode().rstrip("="),
         "d": base64.urlsafe_b64encode(key.seed).decode().rstrip("=")}
    )  # fmt: skip
    header = {"alg": "EdDSA", "typ": "vc+jwt", "cty": "vc", "kid": "did:web:audits.example#key-1"}
    return str(jws.serialize_compact(header, json.dumps(credential).encode(), jwk, algorithms=["EdDSA"]))


def test_an_auditors_dcc_is_imported_once_its_proof_verifies(
    server: str, env: dict[str, str], tmp_path: Path
) -> None:
    keys = {}
    for name, role in (("acme-mining", "miner"), ("verity", "auditor")):
        keys[name] = tmp_path / f"{name}.key"
        public = json.loads(ledger(env, "keygen", "--json", "--out", str(keys[name])).stdout)["public_key"]
        ledger(env, "participant", "add", "--url", server, "--id", name, "--name", name.title(), "--role", role,
               "--country", "CA", "--public-key", public)  # fmt: skip
    ledger(env, "facility", "add", "--url", server, "--id", "acme-qc", "--participant", "acme-mining",
           "--kind", "mine", "--country", "CA", "--name", "Quebec mine")  # fmt: skip
    token = json.loads(
        ledger(env, "token", "issue", "--json", "--url", server, "--participant", "verity").stdout
    )["token"]
    auditor_key = SigningKey.load(keys["verity"])
    signed = _sign(_dcc("acme-qc", "ab" * 32), auditor_key)
    args = [
        "untp",
        "import-dcc",
        "--url",
        server,
        "--as",
        "verity",
        "--key-file",
        str(keys["verity"]),
        "--token",
        token,
    ]

    # tampered (one byte of the claims), or signed by someone else: refused, nothing recorded
    head, body, signature = signed.split(".")
    claims = base64.urlsafe_b64decode(body + "==").replace(b"RMAP conformant", b"RMAP conformanT")
    tampered = ".".join((head, base64.urlsafe_b64encode(claims).decode().rstrip("="), signature))
    forged = _sign(_dcc("acme-qc", "ab" * 32), SigningKey.load(keys["acme-mining"]))
    for text in (tampered, forged):
        path = tmp_path / "bad.jwt"
        path.write_text(text)
        refused = ledger(env, *args, str(path), check=False)
        assert (
            refused.returncode == 1
            and "proof does not verify with any of the signer's 1 valid key(s)" in refused.stderr
        )

    good = tmp_path / "dcc.jwt"
    good.write_text(signed)
    done = ledger(env, *args, str(good))
    result = json.loads(done.stdout)
    assert result["status"] == "accepted"
    assert result["attestation"] == {
        "id": "rmap-2026-0042",
        "subject": {"facility": "acme-qc"},
        "standard": "rmap",
        "level": "conformant",
        "valid_from": "2026-02-01",
        "valid_to": "2027-01-31",
        "report_sha256": "ab" * 32,
    }
    with LedgerClient(server, token=token) as client:
        listing = client.http.get(
            "/v1/facilities/acme-qc/attestations", headers={"Authorization": f"Bearer {token}"}
        ).json()
    assert [(a["id"], a["auditor"], a["level"]) for a in listing["items"]] == [
        ("rmap-2026-0042", "verity", "conformant")
    ]
