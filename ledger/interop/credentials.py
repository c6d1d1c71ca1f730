"""Verdicts as W3C Verifiable Credentials 2.0, secured with JOSE (VC-JOSE-COSE: ``application/vc+jwt``, EdDSA),
the ledger identified by ``did:web``, and W3C Bitstring Status List v1.0 for credentials whose verdict a later
revocation changed: pure functions.

A credential's JWT payload is the credential itself (VC-JOSE-COSE section 3.1.1: no ``vc`` claim); the protected
header names the algorithm (``EdDSA``, RFC 8037), the media type (``typ: vc+jwt``, ``cty: vc``) and the key as a
DID URL (``kid``) that resolves, through the ledger's DID document, to the Ed25519 public key as a JWK.
"""

from __future__ import annotations

import base64
import gzip
import json
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote

from ledger.domain.keys import SigningKey
from ledger.interop.epcis import batch_uri, participant_uri

VC_CONTEXT = "https://www.w3.org/ns/credentials/v2"
DID_CONTEXT = "https://www.w3.org/ns/did/v1"
JWK_CONTEXT = "https://w3id.org/security/jwk/v1"
LEDGER_TERMS = "https://mineral-ledger.example/ns/credentials#"
"""The vocabulary of the claims the ledger makes (verdict, share, threshold...)."""
CREDENTIAL_CONTEXT: list[Any] = [VC_CONTEXT, {"ledger": LEDGER_TERMS}]
KEY_FRAGMENT = "log-key"
"""The verification method's fragment: the ledger signs credentials with its log key."""
MEDIA_TYPE = "application/vc+jwt"
STATUS_LIST_BITS = 131_072
"""Bitstring Status List v1.0 section 2.1: at least 16 KB (131,072 entries), so that a list does not reveal which
few credentials it is about."""


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def did_web(host: str) -> str:
    """The ``did:web`` DID of a host (did:web section 3.1: a port's colon is percent-encoded)."""
    return "did:web:" + quote(host.lower(), safe=".-")


def public_jwk(public_key: bytes) -> dict[str, str]:
    """An Ed25519 public key as a JWK (RFC 8037 section 2)."""
    return {"kty": "OKP", "crv": "Ed25519", "x": b64url(public_key)}


def did_document(did: str, public_key: bytes) -> dict[str, Any]:
    """The ledger's DID document (served at ``/.well-known/did.json``): one Ed25519 key, for assertions."""
    method = f"{did}#{KEY_FRAGMENT}"
    return {
        "@context": [DID_CONTEXT, JWK_CONTEXT],
        "id": did,
        "verificationMethod": [
            {"id": method, "type": "JsonWebKey", "controller": did, "publicKeyJwk": public_jwk(public_key)}
        ],
        "assertionMethod": [method],
        "authentication": [method],
    }


def sign_jwt(payload: Mapping[str, Any], key: SigningKey, kid: str, typ: str = "vc+jwt") -> str:
    """A compact JWS (RFC 7515) of ``payload`` signed with Ed25519 (``EdDSA``, RFC 8037)."""
    header = {"alg": "EdDSA", "kid": kid, "typ": typ, "cty": typ.removesuffix("+jwt")}
    encoded = (
        b64url(json.dumps(header, separators=(",", ":")).encode())
        + "."
        + b64url(json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode())
    )
    return encoded + "." + b64url(key.sign(encoded.encode("ascii")))


def determination_credential(
    *,
    did: str,
    base_url: str,
    event_id: str,
    log_index: int,
    timestamp: str,
    determination: Mapping[str, Any],
) -> dict[str, Any]:
    """A recorded determination as a credential: the ledger asserts the batch's verdict (eligibility under a rule
    profile, or origin under a trade agreement) at the date, names the signed determination event and where its
    inclusion proof is, and points at the status list entry (its log index) that says whether a later
    revocation changed the verdict."""
    origin = isinstance(determination.get("agreement"), Mapping)
    subject: dict[str, Any] = {
        "id": batch_uri(str(determination["batch"])),
        "type": "ledger:BatchOrigin" if origin else "ledger:BatchEligibility",
        "ledger:batch": determination["batch"],
        "ledger:verdict": determination["verdict"],
        "ledger:at": determination["at"],
        **(_origin_claims(determination) if origin else _eligibility_claims(determination)),
        "ledger:determinationEvent": event_id,
        "ledger:logIndex": log_index,
        "ledger:inclusionProof": f"{base_url}/v1/log/proofs/inclusion?event_id={event_id}",
    }
    kind = "ledger:OriginDeterminationCredential" if origin else "ledger:EligibilityDeterminationCredential"
    status = status_list_url(base_url)
    return {
        "@context": CREDENTIAL_CONTEXT,
        "id": f"{base_url}/v1/credentials/determinations/{event_id}",
        "type": ["VerifiableCredential", kind],
        "issuer": did,
        "validFrom": timestamp,
        "credentialSubject": {k: v for k, v in subject.items() if v is not None},
        "credentialStatus": {
            "id": f"{status}#{log_index}",
            "type": "BitstringStatusListEntry",
            "statusPurpose": "revocation",
            "statusListIndex": str(log_index),
            "statusListCredential": status,
        },
    }


def _reference(named: Mapping[str, Any]) -> dict[str, Any]:
    return {k: named[k] for k in ("id", "version", "content_hash") if k in named}


def _eligibility_claims(determination: Mapping[str, Any]) -> dict[str, Any]:
    threshold = determination.get("threshold")
    return {
        "ledger:profile": _reference(determination["profile"]),
        "ledger:shareBasis": determination.get("share_basis"),
        "ledger:qualifyingShare": determination.get("qualifying_share"),
        "ledger:threshold": dict(threshold) if isinstance(threshold, Mapping) else None,
        "ledger:foreignEntityOfConcern": determination.get("foreign_entity_of_concern"),
    }


def _origin_claims(determination: Mapping[str, Any]) -> dict[str, Any]:
    """What an origin determination decides (no amounts: those are the producer's to show)."""
    return {
        "ledger:agreement": _reference(determination["agreement"]),
        "ledger:criterion": determination.get("criterion"),
        "ledger:hs6": determination.get("hs6"),
        "ledger:rvcMethod": determination.get("rvc_method"),
        "ledger:determiningDate": determination.get("determining_date"),
    }


def certificate_credential(
    *, did: str, base_url: str, certificate: Mapping[str, Any], event_id: str, log_index: int, certifier: str
) -> dict[str, Any]:
    """A certification of origin in the log as a credential: the ledger asserts that ``certifier`` signed these
    nine data elements (as signed) and which recorded origin determinations support each good. Valid over the
    blanket period if there is one, else from the signature's date."""
    elements = dict(certificate)
    period = elements.get("blanket_period") or {}
    signed_on = (elements.get("signature") or {}).get("date")
    goods = [g for g in elements.get("goods", []) if isinstance(g, Mapping)]
    credential: dict[str, Any] = {
        "@context": CREDENTIAL_CONTEXT,
        "id": f"{base_url}/v1/credentials/certificates/{elements['id']}",
        "type": ["VerifiableCredential", "ledger:CertificateOfOriginCredential"],
        "issuer": did,
        "validFrom": f"{period.get('from') or signed_on}T00:00:00Z",
        "credentialSubject": {
            "id": f"{base_url}/v1/certificates/{elements['id']}",
            "type": "ledger:CertificationOfOrigin",
            "ledger:certifier": participant_uri(certifier),
            "ledger:certificate": elements,
            "ledger:goods": [batch_uri(str(g["batch"])) for g in goods],
            "ledger:supportingDeterminations": [str(g["determination"]) for g in goods],
            "ledger:certificateEvent": event_id,
            "ledger:logIndex": log_index,
            "ledger:inclusionProof": f"{base_url}/v1/log/proofs/inclusion?event_id={event_id}",
        },
    }
    if period.get("to"):
        credential["validUntil"] = f"{period['to']}T23:59:59Z"
    return credential


def status_list_url(base_url: str) -> str:
    return f"{base_url}/v1/credentials/status/revocation"


def encode_bitstring(indices: Iterable[int], size: int = STATUS_LIST_BITS) -> str:
    """Bitstring Status List v1.0 section 3.1: bit ``i`` (the most significant bit of the first byte is bit
    0) set for each index, GZIP-compressed, base64url without padding, multibase prefix ``u``."""
    chosen = sorted(set(indices))
    length = max(size, ((chosen[-1] + 1 + 7) // 8) * 8 if chosen else 0)
    bits = bytearray(length // 8)
    for index in chosen:
        bits[index // 8] |= 0x80 >> (index % 8)
    return "u" + b64url(gzip.compress(bytes(bits), mtime=0))


def decode_bitstring(encoded: str) -> bytes:
    """The bits of an ``encodedList`` (the inverse of :func:`encode_bitstring`)."""
    if not encoded.startswith("u"):
        raise ValueError("an encodedList is multibase base64url: it starts with 'u'")
    text = encoded[1:]
    return gzip.decompress(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))


def status_list_credential(*, did: str, base_url: str, encoded: str, valid_from: str) -> dict[str, Any]:
    """The ``BitstringStatusListCredential`` whose bits mark revoked determination credentials."""
    url = status_list_url(base_url)
    return {
        "@context": CREDENTIAL_CONTEXT,
        "id": url,
        "type": ["VerifiableCredential", "BitstringStatusListCredential"],
        "issuer": did,
        "validFrom": valid_from,
        "credentialSubject": {
            "id": f"{url}#list",
            "type": "BitstringStatusList",
            "statusPurpose": "revocation",
            "encodedList": encoded,
        },
    }
