"""DSSE envelopes (https://github.com/secure-systems-lab/dsse, protocol v1.0) signed with Ed25519."""

from __future__ import annotations

import hashlib
from typing import Annotated

import msgspec

from ledger.domain.keys import SigningKey, b64decode, b64encode, verify_signature
from ledger.errors import InvalidInput

PAYLOAD_TYPE = "application/vnd.mineral-ledger.event+json; version=1"
"""The only payload type the ledger accepts: a canonical JSON event (see ``ledger.domain.events``)."""

MAX_SIGNATURES = 4
"""Most signatures on one envelope."""


MAX_PAYLOAD_B64 = 512 * 1024
"""Longest base64 payload accepted (384 KiB of JSON: far more than any event needs)."""


class Signature(msgspec.Struct, forbid_unknown_fields=True):
    keyid: Annotated[str, msgspec.Meta(max_length=64)]
    sig: Annotated[str, msgspec.Meta(max_length=128)]


class Envelope(msgspec.Struct, forbid_unknown_fields=True):
    """A DSSE envelope as it travels in JSON (DSSE's own field names): ``payload`` and ``sig`` are base64."""

    payloadType: Annotated[str, msgspec.Meta(max_length=200)]
    payload: Annotated[str, msgspec.Meta(max_length=MAX_PAYLOAD_B64)]
    signatures: Annotated[list[Signature], msgspec.Meta(max_length=MAX_SIGNATURES)]

    def payload_bytes(self) -> bytes:
        return b64decode(self.payload, "payload")

    def to_json(self) -> bytes:
        return msgspec.json.encode(self)


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding: ``DSSEv1 SP LEN(type) SP type SP LEN(body) SP body``."""
    type_bytes = payload_type.encode("utf-8")
    return b"DSSEv1 %d %s %d %s" % (len(type_bytes), type_bytes, len(payload), payload)


def event_id(payload: bytes) -> str:
    """Event id: ``sha256:`` + lowercase hex SHA-256 of the payload bytes."""
    return "sha256:" + hashlib.sha256(payload).hexdigest()


def sign_envelope(payload: bytes, key: SigningKey, payload_type: str = PAYLOAD_TYPE) -> Envelope:
    signature = key.sign(pae(payload_type, payload))
    return Envelope(
        payloadType=payload_type,
        payload=b64encode(payload),
        signatures=[Signature(keyid=key.key_id, sig=b64encode(signature))],
    )


def verify_envelope_signature(envelope: Envelope, payload: bytes, public_key: bytes, keyid: str) -> None:
    """Check the signature that names ``keyid`` against ``public_key``; raise if absent or invalid."""
    for signature in envelope.signatures:
        if signature.keyid == keyid:
            verify_signature(
                public_key, pae(envelope.payloadType, payload), b64decode(signature.sig, "signatures[].sig")
            )
            return
    raise InvalidInput(f"envelope carries no signature by key {keyid}")
