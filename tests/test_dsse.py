"""DSSE pre-authentication encoding, Ed25519 signatures and key ids, checked against published vectors and an
independent Ed25519 implementation (OpenSSL through ``cryptography``)."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.domain.dsse import (
    PAYLOAD_TYPE,
    Envelope,
    Signature,
    event_id,
    pae,
    sign_envelope,
    verify_envelope_signature,
)
from ledger.domain.keys import SigningKey, key_id, verify_signature
from ledger.errors import BadSignature, InvalidInput

# RFC 8032 section 7.1, TEST 1 (empty message) and TEST 2 (one byte 0x72)
RFC8032 = [
    (
        "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
        "",
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
    ),
    (
        "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
        "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
        "72",
        "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
    ),
]


@pytest.mark.parametrize(("seed", "public", "message", "signature"), RFC8032)
def test_ed25519_matches_rfc8032(seed: str, public: str, message: str, signature: str) -> None:
    key = SigningKey(bytes.fromhex(seed))
    assert key.public_key.hex() == public
    assert key.sign(bytes.fromhex(message)).hex() == signature
    verify_signature(bytes.fromhex(public), bytes.fromhex(message), bytes.fromhex(signature))


def test_key_id_is_sha256_of_raw_public_key() -> None:
    public = bytes.fromhex(RFC8032[0][1])
    assert key_id(public) == hashlib.sha256(public).hexdigest()
    with pytest.raises(InvalidInput):
        key_id(public[:31])


def test_pae_matches_the_dsse_specification_example() -> None:
    # protocol.md of secure-systems-lab/dsse: PAE("http://example.com/HelloWorld", "hello world")
    assert pae("http://example.com/HelloWorld", b"hello world") == (
        b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    )


def test_envelope_golden_vector() -> None:
    """A fixed envelope in tests/assets; its signature is checked with OpenSSL, not with our own code."""
    golden = json.loads((Path(__file__).parent / "assets" / "envelope_golden.json").read_text())
    envelope = Envelope(
        payloadType=golden["envelope"]["payloadType"],
        payload=golden["envelope"]["payload"],
        signatures=[Signature(**s) for s in golden["envelope"]["signatures"]],
    )
    payload = base64.b64decode(envelope.payload)
    assert payload == golden["payload_text"].encode()
    public = bytes.fromhex(golden["public_key_hex"])
    assert envelope.signatures[0].keyid == hashlib.sha256(public).hexdigest()
    # independent check: OpenSSL verifies the signature over the PAE we spell out by hand
    spelled = b"DSSEv1 %d %s %d %s" % (len(PAYLOAD_TYPE), PAYLOAD_TYPE.encode(), len(payload), payload)
    Ed25519PublicKey.from_public_bytes(public).verify(base64.b64decode(envelope.signatures[0].sig), spelled)
    # and our signer produces the very same envelope from the same seed (Ed25519 is deterministic)
    ours = sign_envelope(payload, SigningKey(bytes.fromhex(golden["seed_hex"])))
    assert ours.to_json() == json.dumps(golden["envelope"], separators=(",", ":")).encode()
    assert event_id(payload) == "sha256:" + hashlib.sha256(payload).hexdigest() == golden["event_id"]


def test_signatures_agree_with_openssl() -> None:
    for _ in range(20):
        key = SigningKey.generate()
        message = pae(PAYLOAD_TYPE, b'{"a":1}')
        openssl = Ed25519PrivateKey.from_private_bytes(key.seed)
        assert openssl.sign(message) == key.sign(message)


def test_tampered_payload_or_wrong_key_fails() -> None:
    key = SigningKey.generate()
    envelope = sign_envelope(b'{"a":1}', key)
    with pytest.raises(BadSignature):
        verify_envelope_signature(envelope, b'{"a":2}', key.public_key, key.key_id)
    other = SigningKey.generate()
    with pytest.raises(BadSignature):
        verify_envelope_signature(envelope, b'{"a":1}', other.public_key, key.key_id)
    with pytest.raises(InvalidInput, match="no signature by key"):
        verify_envelope_signature(envelope, b'{"a":1}', other.public_key, other.key_id)


@given(
    st.text(alphabet="ABCDEFYQWJjZ+/=\n -_é", max_size=16)
    | st.binary(max_size=12).map(lambda b: base64.b64encode(b).decode())
)
@settings(max_examples=500, deadline=None)
def test_strict_base64_agrees_with_the_standard_librarys_validating_decoder(text: str) -> None:
    """``keys.b64decode`` decodes in binascii's strict mode; it must accept and refuse exactly what
    ``base64.b64decode(validate=True)`` does."""
    from ledger.domain.keys import b64decode
    from ledger.errors import InvalidInput

    try:
        expected: bytes | None = base64.b64decode(text.encode("ascii"), validate=True)
    except (ValueError, UnicodeEncodeError):
        expected = None
    try:
        found: bytes | None = b64decode(text, "field")
    except InvalidInput:
        found = None
    assert found == expected
