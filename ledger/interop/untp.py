"""UN Transparency Protocol (UNTP) credentials, shaped by its data models (version 0.5.0): pure functions.

- A Digital Traceability Event (DTE) credential carries a batch's custody events, each the EPCIS 2.0 event
  the ledger exports (:mod:`ledger.interop.epcis`), as its ``credentialSubject`` list.
- A Digital Conformity Credential (DCC) states an auditor's attestation of a facility or participant: the
  scheme (IRMA, RMI RMAP, ISO 14001, OECD due-diligence guidance), the facility assessed, the auditor, the
  validity, whether it still stands, and a secure link to the auditor's signed attestation in the log.
- An auditor's own DCC, issued elsewhere as ``application/vc+jwt`` and signed with its ledger key, maps back
  onto an ``attest`` event (:func:`attestation_from_dcc`) once its proof verifies (:func:`verify_jwt`).
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

from ledger.domain import events as ev
from ledger.domain import vocab
from ledger.domain.keys import verify_signature
from ledger.errors import BadSignature, InvalidInput
from ledger.interop.credentials import VC_CONTEXT
from ledger.interop.epcis import facility_uri, id_from_uri, participant_uri

DTE_CONTEXT = "https://test.uncefact.org/vocabulary/untp/dte/0.5.0/"
DCC_CONTEXT = "https://test.uncefact.org/vocabulary/untp/dcc/0.5.0/"
LEDGER_TERMS = {"ledger": "https://mineral-ledger.example/ns/credentials#"}

SCHEMES: dict[str, tuple[str, str]] = {
    "irma": ("IRMA Standard for Responsible Mining", "Governance.Compliance"),
    "rmap": ("RMI Responsible Minerals Assurance Process", "Governance.Ethics"),
    "iso14001": ("ISO 14001 Environmental management systems", "Environment.Emissions"),
    "oecd_ddg": (
        "OECD Due Diligence Guidance for Responsible Supply Chains of Minerals",
        "Governance.Compliance",
    ),
}
"""The attestation standards the ledger knows: the scheme's name in a DCC and the UNTP conformity topic its
assessments fall under (IRMA and the OECD guidance audit compliance with a responsible-sourcing standard; RMAP
audits the ethics of a smelter's sourcing; ISO 14001 is an environmental management system)."""


def _b64url_decode(text: str, what: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, TypeError):
        raise InvalidInput(f"the credential's {what} is not base64url") from None


def traceability_credential(
    *, did: str, base_url: str, batch_id: str, events: list[Mapping[str, Any]], valid_from: str
) -> dict[str, Any]:
    """A DTE credential whose subject is the batch's EPCIS events, in log order."""
    return {
        "@context": [VC_CONTEXT, DTE_CONTEXT, LEDGER_TERMS],
        "id": f"{base_url}/v1/credentials/batches/{batch_id}/traceability",
        "type": ["DigitalTraceabilityEvent", "VerifiableCredential"],
        "issuer": {"type": ["CredentialIssuer"], "id": did, "name": "Mineral provenance ledger"},
        "validFrom": valid_from,
        "name": f"Custody events of batch {batch_id}",
        "credentialSubject": [
            {**event, "id": event["eventID"], "type": [event["type"], "Event"]} for event in events
        ],
    }


def conformity_credential(
    *,
    did: str,
    base_url: str,
    attestation: Mapping[str, Any],
    subject_name: str,
    owner: Mapping[str, str],
    auditor: Mapping[str, str],
    stands: bool,
) -> dict[str, Any]:
    """A DCC for one attestation. ``attestation``: its fields as the ``attest`` event states them, with the event
    id (``event_id``); ``owner``: the participant attested (or that operates the facility), ``{id, name}``;
    ``auditor``: ``{id, name}``; ``stands``: not revoked or suspended."""
    standard = str(attestation["standard"])
    scheme, topic = SCHEMES.get(standard, (standard.removeprefix("other:"), "Governance.Compliance"))
    subject = attestation["subject"]
    facility = subject.get("facility")
    event_hex = str(attestation["event_id"]).removeprefix("sha256:")
    assessment: dict[str, Any] = {
        "type": "ConformityAssessment",
        "assessmentDate": str(attestation["valid_from"]),
        "conformityTopic": topic,
        "conformance": stands,
        "auditor": {"type": "Party", "id": participant_uri(auditor["id"]), "name": auditor["name"]},
        "assessedOrganization": {"type": "Party", "id": participant_uri(owner["id"]), "name": owner["name"]},
    }
    if facility is not None:
        assessment["assessedFacility"] = [
            {
                "type": "Facility",
                "id": facility_uri(str(facility)),
                "name": subject_name,
                "IDverifiedByCAB": True,
            }
        ]
    return {
        "@context": [VC_CONTEXT, DCC_CONTEXT, LEDGER_TERMS],
        "id": f"{base_url}/v1/credentials/attestations/{attestation['id']}",
        "type": ["DigitalConformityCredential", "VerifiableCredential"],
        "issuer": {
            "type": "CredentialIssuer",
            "id": did,
            "name": "Mineral provenance ledger",
            "otherIdentifier": {"type": "Identifier", "id": did, "name": "did:web of the ledger"},
        },
        "validFrom": f"{attestation['valid_from']}T00:00:00Z",
        "validUntil": f"{attestation['valid_to']}T23:59:59Z",
        "credentialSubject": {
            "type": "ConformityAttestation",
            "id": f"{base_url}/v1/credentials/attestations/{attestation['id']}#attestation",
            "name": f"{scheme}: {attestation['level']} ({subject_name})",
            "assessorLevel": "3rdParty",
            "assessmentLevel": "Verified",
            "attestationType": "Certification",
            "issuedToParty": {"type": "Party", "id": participant_uri(owner["id"]), "name": owner["name"]},
            "scope": {"type": "ConformityAssessmentScheme", "name": scheme},
            "assessment": [assessment],
            "auditableEvidence": {
                "type": "SecureLink",
                "linkUrl": f"{base_url}/v1/events/{attestation['event_id']}",
                "linkName": "the auditor's signed attestation in the ledger's log",
                "linkType": "application/json",
                "hashDigest": event_hex,
                "hashMethod": "SHA-256",
                "encryptionMethod": "None",
            },
            "ledger:attestationId": attestation["id"],
            "ledger:standard": standard,
            "ledger:level": attestation["level"],
            "ledger:reportSha256": attestation["report_sha256"],
            "ledger:minerals": list(attestation.get("minerals", [])),
            "ledger:activities": list(attestation.get("activities", [])),
        },
    }


def verify_jwt(token: str, public_keys: Iterable[bytes]) -> dict[str, Any]:
    """The payload of a compact JWS signed with EdDSA by one of ``public_keys`` (RFC 7515, RFC 8037);
    :class:`BadSignature` if none verifies it, :class:`InvalidInput` if it is not such a JWS."""
    parts = token.strip().split(".")
    if len(parts) != 3:
        raise InvalidInput(
            "the credential is not a compact JWS (application/vc+jwt): header.payload.signature"
        )
    try:
        header = json.loads(_b64url_decode(parts[0], "header"))
    except json.JSONDecodeError:
        raise InvalidInput("the credential's JOSE header is not JSON") from None
    if not isinstance(header, dict) or header.get("alg") not in ("EdDSA", "Ed25519"):
        raise InvalidInput("the credential is not signed with EdDSA (Ed25519); the ledger's keys are Ed25519")
    signed = f"{parts[0]}.{parts[1]}".encode("ascii")
    signature = _b64url_decode(parts[2], "signature")
    keys = list(public_keys)
    for key in keys:
        try:
            verify_signature(key, signed, signature)
        except BadSignature:
            continue
        try:
            payload = json.loads(_b64url_decode(parts[1], "payload"))
        except json.JSONDecodeError:
            raise InvalidInput("the credential's payload is not JSON") from None
        if not isinstance(payload, dict):
            raise InvalidInput("the credential's payload is not a JSON object")
        return payload
    raise BadSignature(
        f"the credential's proof does not verify with any of the signer's {len(keys)} valid key(s)"
    )


def _level(standard: str, claims: Mapping[str, Any], conformance: Any) -> str:
    """The attestation level: ``ledger:level`` if the DCC states it, else what the standard fields say."""
    if claims.get("ledger:level"):
        return str(claims["ledger:level"])
    name = str(claims.get("name", ""))
    if standard == "irma":
        found = re.search(r"irma[ _-]?(50|75|100)", name, re.IGNORECASE)
        if found is None:
            raise InvalidInput(
                "an IRMA DCC must state the achievement level (IRMA 50, 75 or 100) in its name"
            )
        return f"irma_{found[1]}"
    if standard in ("rmap", "oecd_ddg"):
        return "conformant" if conformance is True else "not_conformant"
    if standard == "iso14001":
        if conformance is not True:
            raise InvalidInput("an ISO 14001 DCC that does not state conformance is not a certification")
        return "certified"
    return str(claims.get("assessmentLevel") or "unspecified")[:60]


def _standard(claims: Mapping[str, Any]) -> str:
    if claims.get("ledger:standard"):
        return str(claims["ledger:standard"])
    scope = claims.get("scope")
    name = str(scope.get("name", "")) if isinstance(scope, Mapping) else ""
    for standard, (scheme, _) in SCHEMES.items():
        first = scheme.split()[0].lower()
        if name.lower().startswith(first) or name.lower() == scheme.lower():
            return standard
    words = re.sub(r"[^a-z0-9._ -]", "", name.lower()).strip()[:60]
    if not words:
        raise InvalidInput("the DCC names no conformity scheme (credentialSubject.scope.name)")
    return f"other:{words}"


def attestation_from_dcc(credential: Mapping[str, Any]) -> dict[str, Any]:
    """An ``attest`` event's ``attestation`` from a DCC (InvalidInput naming what is missing)."""
    types = credential.get("type", [])
    if "DigitalConformityCredential" not in (types if isinstance(types, list) else [types]):
        raise InvalidInput("the credential is not a DigitalConformityCredential")
    claims = credential.get("credentialSubject")
    if isinstance(claims, list) and len(claims) == 1:
        claims = claims[0]
    if not isinstance(claims, Mapping):
        raise InvalidInput("the DCC's credentialSubject is not one conformity attestation")
    assessments = claims.get("assessment") or []
    first = assessments[0] if isinstance(assessments, list) and assessments else {}
    facilities = first.get("assessedFacility") or [] if isinstance(first, Mapping) else []
    subject: dict[str, str]
    if facilities:
        facility = id_from_uri(str(facilities[0].get("id", "")), "facility")
        if facility is None:
            raise InvalidInput("the assessed facility's id is not a ledger facility URI")
        subject = {"facility": facility}
    else:
        party = claims.get("issuedToParty")
        participant = (
            id_from_uri(str(party.get("id", "")), "participant") if isinstance(party, Mapping) else None
        )
        if participant is None:
            raise InvalidInput("the DCC assesses no ledger facility and is issued to no ledger participant")
        subject = {"participant": participant}
    identifier = (
        claims.get("ledger:attestationId") or str(credential.get("id", "")).rstrip("/").rsplit("/", 1)[-1]
    )
    identifier = str(identifier).lower()
    if not re.fullmatch(ev.ID_PATTERN, identifier):
        raise InvalidInput(
            f"the DCC's id gives no usable attestation id ({identifier!r}); add ledger:attestationId"
        )
    # the audit report's SHA-256: as the ledger's own DCCs state it, else the auditor's link to its report
    evidence = claims.get("auditableEvidence")
    digest = str(claims.get("ledger:reportSha256") or "").lower()
    if not digest and isinstance(evidence, Mapping):
        digest = str(evidence.get("hashDigest", "")).lower()
    if not re.fullmatch(r"[0-9a-f]{64}", digest):
        raise InvalidInput("the DCC's auditableEvidence has no SHA-256 hashDigest of the audit report")
    valid_from, valid_to = (
        str(credential.get("validFrom", ""))[:10],
        str(credential.get("validUntil", ""))[:10],
    )
    if not (re.fullmatch(ev.DATE_PATTERN, valid_from) and re.fullmatch(ev.DATE_PATTERN, valid_to)):
        raise InvalidInput("the DCC needs validFrom and validUntil (the attestation's validity)")
    standard = _standard(claims)
    attestation: dict[str, Any] = {
        "id": identifier,
        "subject": subject,
        "standard": standard,
        "level": _level(standard, claims, first.get("conformance") if isinstance(first, Mapping) else None),
        "valid_from": valid_from,
        "valid_to": valid_to,
        "report_sha256": digest,
    }
    minerals = [m for m in claims.get("ledger:minerals", []) if m in vocab.MINERALS]
    activities = [a for a in claims.get("ledger:activities", []) if a in vocab.ACTIVITIES]
    if minerals:
        attestation["minerals"] = minerals
    if activities:
        attestation["activities"] = activities
    return attestation
