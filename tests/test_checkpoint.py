"""C2SP tlog-checkpoint / signed-note: published vectors, round trips, tampering and strict parsing."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.signing import SigningKey

from ledger.log.checkpoint import (
    MAX_TREE_SIZE,
    SIGNATURE_LINE_PREFIX,
    Checkpoint,
    CheckpointError,
    key_id,
    open_checkpoint,
    open_note,
    parse_signer_key,
    parse_verifier_key,
    sign_checkpoint,
    sign_note,
    signer_key,
    verifier_key,
)

VECTORS: dict[str, Any] = json.loads(
    (Path(__file__).parent / "assets" / "checkpoint_vectors.json").read_text()
)
GO = VECTORS["go_note"]

LOG_NAME = "ledger.example/log"
LOG_SEED = hashlib.sha256(b"test log key seed").digest()
LOG_PUBLIC_KEY = SigningKey(LOG_SEED).verify_key.encode()
OTHER_SEED = hashlib.sha256(b"another key seed").digest()
OTHER_PUBLIC_KEY = SigningKey(OTHER_SEED).verify_key.encode()
ROOT = hashlib.sha256(b"some root").digest()
CHECKPOINT = Checkpoint(LOG_NAME, 1234, ROOT)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


# ---------------------------------------------------------------------------------------------------------
# Published vectors (see tests/assets/checkpoint_vectors.json for where each comes from).
# ---------------------------------------------------------------------------------------------------------


def test_key_id_is_the_signed_note_formula() -> None:
    # c2sp.org/signed-note: key ID = SHA-256(key name || 0x0A || 0x01 || 32-byte Ed25519 public key)[:4],
    # written out here with hashlib alone.
    by_hand = hashlib.sha256(b"ledger.example/log" + b"\x0a" + b"\x01" + LOG_PUBLIC_KEY).digest()[:4]
    assert key_id(LOG_NAME, LOG_PUBLIC_KEY) == by_hand
    material = b64(bytes([0x01]) + LOG_PUBLIC_KEY)
    assert verifier_key(LOG_NAME, LOG_PUBLIC_KEY) == f"{LOG_NAME}+{by_hand.hex()}+{material}"


def test_go_verifier_key() -> None:
    name, public_key = parse_verifier_key(GO["verifier_key"])
    assert name == "PeterNeumann"
    assert len(public_key) == 32
    assert hashlib.sha256(b"PeterNeumann\n\x01" + public_key).digest()[:4].hex() == "c74f20a3"
    assert key_id(name, public_key).hex() == "c74f20a3"
    assert verifier_key(name, public_key) == GO["verifier_key"]


def test_go_signer_key() -> None:
    name, seed = parse_signer_key(GO["signer_key"])
    assert name == "PeterNeumann"
    assert SigningKey(seed).verify_key.encode() == parse_verifier_key(GO["verifier_key"])[1]
    assert signer_key(name, seed) == GO["signer_key"]


def test_go_sign_reproduces_the_published_note() -> None:
    # Ed25519 is deterministic (RFC 8032), so the same key and text give the same bytes as the Go code.
    name, seed = parse_signer_key(GO["signer_key"])
    assert sign_note(GO["text"], name, seed) == GO["signed"]


def test_go_open_ignores_signatures_by_unknown_keys() -> None:
    name, public_key = parse_verifier_key(GO["verifier_key"])
    assert open_note(GO["signed"], name, public_key) == GO["text"].encode()
    both = GO["signed"] + GO["other_signature_line"]
    assert open_note(both, name, public_key) == GO["text"].encode()
    other_name, other_key = parse_verifier_key(GO["other_verifier_key"])
    assert open_note(both, other_name, other_key) == GO["text"].encode()
    with pytest.raises(CheckpointError, match=r"no signature by key EnochRoot\+af0cfe78"):
        open_note(GO["signed"], other_name, other_key)


def test_go_open_rejects_an_invalid_signature() -> None:
    name, public_key = parse_verifier_key(GO["verifier_key"])
    text, signature_line = GO["text"], GO["signed"][len(GO["text"]) + 1 :]
    mangled = text + "\n" + signature_line[:60] + "ABCD" + signature_line[60:]
    with pytest.raises(CheckpointError, match=r"signature line 1 by key PeterNeumann\+c74f20a3"):
        open_note(mangled, name, public_key)


def test_go_malformed_notes() -> None:
    name, public_key = parse_verifier_key(GO["verifier_key"])
    text, signature_line = GO["text"], GO["signed"][len(GO["text"]) + 1 :]
    bad_notes: list[str | bytes] = [
        text,
        text + "\n",
        text + "\n" + signature_line[:-1],
        "\x01" + text + "\n" + signature_line,
        b"\xff" + (text + "\n" + signature_line).encode(),
        text
        + "\n"
        + "\u2014 Bad Name x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=",
        text + "\n" + signature_line + "Unexpected line.\n",
        text + "\n" + signature_line * 101,
    ]
    for note in bad_notes:
        with pytest.raises(CheckpointError):
            open_note(note, name, public_key)


@pytest.mark.parametrize("key", [GO["verifier_key"], GO["signer_key"]], ids=["verifier", "signer"])
def test_go_key_manglings_are_rejected(key: str) -> None:
    # As golang.org/x/mod/sumdb/note's TestNewVerifier and TestNewSigner: every proper substring and every
    # single-character change must be refused.
    parse = parse_verifier_key if key == GO["verifier_key"] else parse_signer_key
    parse(key)
    for start in range(len(key) + 1):
        for end in range(start + 1, len(key) + 1):
            if (start, end) != (0, len(key)):
                with pytest.raises(CheckpointError):
                    parse(key[start:end])
    for i in range(len(key)):
        with pytest.raises(CheckpointError):
            parse(key[:i] + chr(ord(key[i]) + 1) + key[i + 1 :])


def test_sumdb_verifier_key_rejects_wrong_length_and_algorithm() -> None:
    # golang.org/x/mod/sumdb/note TestNewVerifier: a wrong-length key and an unknown algorithm, each with an
    # adjusted key ID.
    with pytest.raises(CheckpointError, match="verifier key's key is not"):
        parse_verifier_key("PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY==")
    with pytest.raises(CheckpointError, match="not 0x01 followed by 32 bytes"):
        parse_verifier_key("PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW")


@pytest.mark.parametrize("vector", VECTORS["sumdb"]["checkpoints"], ids=lambda v: str(v["size"]))
def test_real_sum_golang_org_checkpoints_open(vector: dict[str, Any]) -> None:
    name, public_key = parse_verifier_key(VECTORS["sumdb"]["verifier_key"])
    assert name == "sum.golang.org"
    checkpoint = open_checkpoint(vector["note"], name, public_key)
    # The Go checksum database's origin has spaces: c2sp.org/tlog-checkpoint only recommends against them.
    assert checkpoint == Checkpoint(
        vector["origin"], vector["size"], base64.b64decode(vector["root_hash_b64"])
    )
    assert checkpoint.body().decode() + "\n" == vector["note"][: vector["note"].rindex("\n\n") + 2]
    tampered = vector["note"].replace(str(vector["size"]), str(vector["size"] + 1), 1)
    with pytest.raises(CheckpointError, match="does not verify"):
        open_checkpoint(tampered, name, public_key)


def test_c2sp_spec_example_parses_but_needs_its_key() -> None:
    vector = VECTORS["c2sp_spec_example"]
    body = vector["note"][: vector["note"].rindex("\n\n") + 1]
    assert Checkpoint.parse(body) == Checkpoint(
        vector["origin"], vector["size"], base64.b64decode(vector["root_hash_b64"])
    )
    # No verifier key is published for the example, so with any key we hold it has no known signature.
    with pytest.raises(CheckpointError, match=r"no signature by key example\.com/behind-the-sofa\+"):
        open_checkpoint(vector["note"], vector["origin"], LOG_PUBLIC_KEY)


# ---------------------------------------------------------------------------------------------------------
# Round trips and tampering.
# ---------------------------------------------------------------------------------------------------------


def test_round_trip() -> None:
    note = sign_checkpoint(CHECKPOINT, LOG_NAME, LOG_SEED)
    assert note.startswith(f"{LOG_NAME}\n1234\n{b64(ROOT)}\n\n{SIGNATURE_LINE_PREFIX}{LOG_NAME} ")
    assert note.endswith("\n")
    assert open_checkpoint(note, LOG_NAME, LOG_PUBLIC_KEY) == CHECKPOINT
    assert open_checkpoint(note.encode(), LOG_NAME, LOG_PUBLIC_KEY) == CHECKPOINT
    signature = base64.b64decode(note.rsplit(" ", 1)[1])
    assert signature[:4] == key_id(LOG_NAME, LOG_PUBLIC_KEY)
    assert len(signature) == 4 + 64


def test_round_trip_with_extensions_and_empty_tree() -> None:
    checkpoint = Checkpoint(LOG_NAME, 0, hashlib.sha256(b"").digest(), ("ext one", "ext two"))
    assert checkpoint.body() == f"{LOG_NAME}\n0\n{b64(checkpoint.root_hash)}\next one\next two\n".encode()
    assert (
        open_checkpoint(sign_checkpoint(checkpoint, LOG_NAME, LOG_SEED), LOG_NAME, LOG_PUBLIC_KEY)
        == checkpoint
    )


def test_every_body_byte_is_protected() -> None:
    note = sign_checkpoint(CHECKPOINT, LOG_NAME, LOG_SEED).encode()
    body_length = len(CHECKPOINT.body())
    for position in range(body_length):
        for bit in (0x01, 0x20):
            tampered = bytearray(note)
            tampered[position] ^= bit
            with pytest.raises(CheckpointError):
                open_checkpoint(bytes(tampered), LOG_NAME, LOG_PUBLIC_KEY)


def test_every_signature_character_is_protected() -> None:
    note = sign_checkpoint(CHECKPOINT, LOG_NAME, LOG_SEED)
    start = note.rindex(" ") + 1
    for position in range(start, len(note) - 1):
        replacement = "B" if note[position] != "B" else "C"
        tampered = note[:position] + replacement + note[position + 1 :]
        with pytest.raises(CheckpointError):
            open_checkpoint(tampered, LOG_NAME, LOG_PUBLIC_KEY)


def test_another_key_or_name_does_not_open() -> None:
    note = sign_checkpoint(CHECKPOINT, LOG_NAME, LOG_SEED)
    with pytest.raises(CheckpointError, match="no signature by key"):
        open_checkpoint(note, LOG_NAME, OTHER_PUBLIC_KEY)
    with pytest.raises(CheckpointError, match=r"no signature by key other\.example/log\+"):
        open_checkpoint(note, "other.example/log", LOG_PUBLIC_KEY)
    forged = sign_checkpoint(CHECKPOINT, LOG_NAME, OTHER_SEED)
    with pytest.raises(CheckpointError, match="no signature by key"):
        open_checkpoint(forged, LOG_NAME, LOG_PUBLIC_KEY)


def test_extra_signature_lines_from_unknown_keys_are_ignored() -> None:
    note = sign_checkpoint(CHECKPOINT, LOG_NAME, LOG_SEED)
    witness_line = sign_checkpoint(CHECKPOINT, "witness.example/w1", OTHER_SEED).split("\n\n")[1]
    same_name_other_key = sign_checkpoint(CHECKPOINT, LOG_NAME, OTHER_SEED).split("\n\n")[1]
    body, log_line = note.split("\n\n")
    for lines in (
        log_line + witness_line,
        witness_line + log_line,
        same_name_other_key + log_line,
        log_line + SIGNATURE_LINE_PREFIX + "unknown.example/key " + b64(b"\x00" * 4 + b"\x01" * 10) + "\n",
    ):
        assert open_checkpoint(body + "\n\n" + lines, LOG_NAME, LOG_PUBLIC_KEY) == CHECKPOINT


def test_a_second_bad_signature_by_the_known_key_rejects_the_note() -> None:
    note = sign_checkpoint(CHECKPOINT, LOG_NAME, LOG_SEED)
    kid = key_id(LOG_NAME, LOG_PUBLIC_KEY)
    bad_line = f"{SIGNATURE_LINE_PREFIX}{LOG_NAME} {b64(kid + bytes(64))}\n"
    with pytest.raises(CheckpointError, match=r"signature line 2 by key .* does not verify"):
        open_checkpoint(note + bad_line, LOG_NAME, LOG_PUBLIC_KEY)


# ---------------------------------------------------------------------------------------------------------
# Strict parsing.
# ---------------------------------------------------------------------------------------------------------

GOOD_ROOT_LINE = b64(ROOT)
_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
# 32 bytes leave 2 unused bits in the last base64 digit: setting one gives the same bytes, non-canonically.
NON_CANONICAL_ROOT_LINE = GOOD_ROOT_LINE[:-2] + _ALPHABET[_ALPHABET.index(GOOD_ROOT_LINE[-2]) ^ 1] + "="


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (f"{LOG_NAME}\n1234\n{GOOD_ROOT_LINE}", "does not end with a newline"),
        (f"{LOG_NAME}\n1234\n", "at least 3 lines"),
        (f"{LOG_NAME}\n01234\n{GOOD_ROOT_LINE}\n", "not a decimal number without leading zeroes"),
        (f"{LOG_NAME}\n-1\n{GOOD_ROOT_LINE}\n", "not a decimal number"),
        (f"{LOG_NAME}\n+1\n{GOOD_ROOT_LINE}\n", "not a decimal number"),
        (f"{LOG_NAME}\n 1\n{GOOD_ROOT_LINE}\n", "not a decimal number"),
        (f"{LOG_NAME}\n1e3\n{GOOD_ROOT_LINE}\n", "not a decimal number"),
        (f"{LOG_NAME}\n\u0661\n{GOOD_ROOT_LINE}\n", "not a decimal number"),
        (f"{LOG_NAME}\n{MAX_TREE_SIZE + 1}\n{GOOD_ROOT_LINE}\n", "larger than 2\\*\\*63 - 1"),
        (f"{LOG_NAME}\n1234\n{b64(ROOT[:31])}\n", "decodes to 31 bytes, not 32"),
        (f"{LOG_NAME}\n1234\n{GOOD_ROOT_LINE[:-1]}\n", "not valid base64"),
        (f"{LOG_NAME}\n1234\n{NON_CANONICAL_ROOT_LINE}\n", "not canonical"),
        (f"{LOG_NAME}\n1234\n{GOOD_ROOT_LINE}\n\nextension\n", "extension line 1 must be a non-empty"),
        (f"\n1234\n{GOOD_ROOT_LINE}\n", "origin must be a non-empty"),
        (f"{LOG_NAME}\r\n1234\n{GOOD_ROOT_LINE}\n", "control character"),
    ],
)
def test_strict_body_parsing(body: str, message: str) -> None:
    assert base64.b64decode(NON_CANONICAL_ROOT_LINE) == ROOT != base64.b64decode(GOOD_ROOT_LINE[:-1] + "A")
    with pytest.raises(CheckpointError, match=message):
        Checkpoint.parse(body)


def test_signed_but_malformed_body_is_rejected() -> None:
    # A valid signature does not make a malformed checkpoint acceptable.
    note = sign_note(f"{LOG_NAME}\n01\n{GOOD_ROOT_LINE}\n", LOG_NAME, LOG_SEED)
    assert open_note(note, LOG_NAME, LOG_PUBLIC_KEY)
    with pytest.raises(CheckpointError, match="leading zeroes"):
        open_checkpoint(note, LOG_NAME, LOG_PUBLIC_KEY)


def test_checkpoint_fields_are_validated() -> None:
    with pytest.raises(CheckpointError, match="root hash must be 32 bytes, not 31"):
        Checkpoint(LOG_NAME, 1, ROOT[:31])
    with pytest.raises(CheckpointError, match="tree size must be an integer"):
        Checkpoint(LOG_NAME, -1, ROOT)
    with pytest.raises(CheckpointError, match="tree size must be an integer"):
        Checkpoint(LOG_NAME, True, ROOT)
    with pytest.raises(CheckpointError, match="origin contains a newline"):
        Checkpoint("a\nb", 1, ROOT)
    with pytest.raises(CheckpointError, match="extension line 1"):
        Checkpoint(LOG_NAME, 1, ROOT, ("",))


@pytest.mark.parametrize("name", ["", "has space", "has+plus", "nbsp\u00a0name", "tab\tname"])
def test_key_names_follow_signed_note_rules(name: str) -> None:
    with pytest.raises(CheckpointError, match="key name"):
        sign_checkpoint(CHECKPOINT, name, LOG_SEED)
    with pytest.raises(CheckpointError, match="key name"):
        verifier_key(name, LOG_PUBLIC_KEY)


def test_key_sizes_are_checked() -> None:
    with pytest.raises(CheckpointError, match="seed is 32 bytes"):
        sign_checkpoint(CHECKPOINT, LOG_NAME, LOG_SEED[:31])
    with pytest.raises(CheckpointError, match="public key is 32 bytes"):
        open_checkpoint(sign_checkpoint(CHECKPOINT, LOG_NAME, LOG_SEED), LOG_NAME, LOG_PUBLIC_KEY[:31])


def test_our_keys_round_trip() -> None:
    assert parse_verifier_key(verifier_key(LOG_NAME, LOG_PUBLIC_KEY)) == (LOG_NAME, LOG_PUBLIC_KEY)
    assert parse_signer_key(signer_key(LOG_NAME, LOG_SEED)) == (LOG_NAME, LOG_SEED)


origins = st.text(
    alphabet=st.characters(min_codepoint=0x20, exclude_categories=["Cs"]), min_size=1, max_size=40
)
key_names = st.text(
    alphabet=st.characters(
        min_codepoint=0x21, exclude_categories=("Cs", "Zs", "Zl", "Zp"), exclude_characters="+"
    ),
    min_size=1,
    max_size=40,
).filter(lambda name: not any(char.isspace() for char in name))


@settings(max_examples=100, deadline=None)
@given(
    origin=origins,
    size=st.integers(min_value=0, max_value=MAX_TREE_SIZE),
    root=st.binary(min_size=32, max_size=32),
    extensions=st.lists(origins, max_size=3).map(tuple),
    name=key_names,
    seed=st.binary(min_size=32, max_size=32),
)
def test_any_checkpoint_round_trips(
    origin: str, size: int, root: bytes, extensions: tuple[str, ...], name: str, seed: bytes
) -> None:
    checkpoint = Checkpoint(origin, size, root, extensions)
    assert Checkpoint.parse(checkpoint.body()) == checkpoint
    note = sign_checkpoint(checkpoint, name, seed)
    public_key = SigningKey(seed).verify_key.encode()
    assert open_checkpoint(note, name, public_key) == checkpoint
    assert parse_verifier_key(verifier_key(name, public_key)) == (name, public_key)
