"""C2SP tlog-cosignature, tlog-witness and tlog-tiles, checked against the specifications' own examples, against
arithmetic done here by hand, and against OpenSSL's Ed25519 (the ``cryptography`` package), which our code does not
use for signing."""

from __future__ import annotations

import base64
import hashlib
import struct

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from nacl.signing import SigningKey

from ledger.log import merkle
from ledger.log.checkpoint import Checkpoint, CheckpointError, sign_checkpoint
from ledger.log.cosignature import (
    Witness,
    WitnessPolicy,
    add_signature_lines,
    cosign,
    cosigned_message,
    note_text_and_lines,
    parse_witness_signer_key,
    parse_witness_vkey,
    verify_cosignatures,
    witness_signer_key,
    witness_vkey,
)
from ledger.log.tiles import TileError, TileRef, entry_bundle, parse_tile_path, tile_path, tiles_for_size
from ledger.log.witness import (
    AddCheckpoint,
    Recorded,
    WitnessRefusal,
    format_add_checkpoint,
    judge,
    origin_hash,
    parse_add_checkpoint,
)

# --- the specifications' examples ----------------------------------------------------------------------------

# c2sp.org/tlog-cosignature, "Format": a checkpoint carrying a log signature and one cosignature
SPEC_COSIGNED = (
    "example.com/behind-the-sofa\n"
    "20852163\n"
    "CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
    "\n"
    "\u2014 example.com/behind-the-sofa Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5/Zhcyv2q1gGzGku9nTo+"
    "zyWE+xeMcTOAYQ8=\n"
    "\u2014 witness.example.com/w1 jWbPPwAAAABkGFDLEZMHwSRaJNiIDoe9DYn/zXcrtPHeolMI5OWXEhZCB9dlrDJsX3b2oyin1nPZqhf5nNo0"
    "xUe+mbIUBkBIfZ+qnA==\n"
)

# c2sp.org/tlog-cosignature, "Ed25519 signed message": the message for that checkpoint at time 1679315147
SPEC_MESSAGE = b"cosignature/v1\ntime 1679315147\nexample.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"

# c2sp.org/signed-note, "Example": a vkey (type 0x01) and the note it verifies
SPEC_VKEY = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k"
SPEC_NOTE = (
    "This is an example message.\n\n\u2014 example.com/foo Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERY"
    "NZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n"
)


def test_spec_cosignature_line_holds_key_id_timestamp_and_signature() -> None:
    _, lines = note_text_and_lines(SPEC_COSIGNED)
    blob = base64.b64decode(lines[1].split(" ")[2])
    # 4-byte key ID + 8-byte big-endian timestamp + 64-byte Ed25519 signature = 76 bytes
    assert len(blob) == 4 + 8 + 64
    # 0x00000000_641850CB = 6*16**7 + 4*16**6 + 1*16**5 + 8*16**4 + 5*16**3 + 0 + 12*16 + 11 = 1679315147,
    # the time in the specification's signed-message example
    assert struct.unpack(">Q", blob[4:12])[0] == 0x641850CB == 1679315147


def test_cosigned_message_is_the_specifications_example() -> None:
    text, _ = note_text_and_lines(SPEC_COSIGNED)
    assert cosigned_message(text.encode(), 1679315147) == SPEC_MESSAGE


def test_a_log_key_is_not_a_cosigner_key() -> None:
    public_key = base64.b64decode("AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k")[1:]
    with pytest.raises(CheckpointError, match="0x04"):
        parse_witness_vkey(SPEC_VKEY)
    # the same public key under type 0x04 has another key ID, so the log's signature line is ignored, not misread
    by_hand = hashlib.sha256(b"example.com/foo\n\x04" + public_key).digest()[:4]
    assert by_hand.hex() != "530d903a"
    witness = Witness("example.com/foo", public_key)
    assert witness.key_id == by_hand
    assert verify_cosignatures(SPEC_NOTE, [witness]) == {}


def test_spec_witness_request_parses() -> None:
    body = (
        "old 20852014\n"
        "PlRNCrwHpqhGrupue0L7gxbjbMiKA9temvuZZDDpkaw=\n"
        "jrJZDmY8Y7SyJE0MWLpLozkIVMSMZcD5kvuKxPC3swk=\n"
        "5+pKlUdi2LeF/BcMHBn+Ku6yhPGNCswZZD1X/6QgPd8=\n"
        "/6WVhPs2CwSsb5rYBH5cjHV/wSmA79abXAwhXw3Kj/0=\n"
        "\n" + SPEC_COSIGNED
    ).encode()
    request = parse_add_checkpoint(body)
    assert request.old_size == 20852014
    assert len(request.proof) == 4
    assert request.origin == "example.com/behind-the-sofa"
    assert format_add_checkpoint(request.old_size, list(request.proof), request.note) == body


# --- our keys and cosignatures, checked with OpenSSL --------------------------------------------------------

SEED = bytes(range(32))
LOG_SEED = bytes(range(100, 132))
ORIGIN = "ledger.test/log"


def _checkpoint(size: int, leaves: int | None = None) -> tuple[Checkpoint, str]:
    hashes = [merkle.leaf_hash(i.to_bytes(4, "big")) for i in range(size if leaves is None else leaves)]
    checkpoint = Checkpoint(ORIGIN, size, merkle.root_hash(hashes[:size]))
    return checkpoint, sign_checkpoint(checkpoint, ORIGIN, LOG_SEED)


def test_key_strings_round_trip_and_key_id_is_worked_by_hand() -> None:
    public_key = SigningKey(SEED).verify_key.encode()
    vkey = witness_vkey("w.test/one", public_key)
    key_id = hashlib.sha256(b"w.test/one\n\x04" + public_key).digest()[:4]
    assert vkey == "w.test/one+" + key_id.hex() + "+" + base64.b64encode(b"\x04" + public_key).decode()
    assert parse_witness_vkey(vkey) == ("w.test/one", public_key)
    assert parse_witness_signer_key(witness_signer_key("w.test/one", SEED)) == ("w.test/one", SEED)
    forged = vkey.replace(key_id.hex(), "00000000")
    with pytest.raises(CheckpointError, match="does not match"):
        parse_witness_vkey(forged)


def test_cosignature_verifies_with_openssl_over_the_spec_message_layout() -> None:
    checkpoint, note = _checkpoint(13)
    line = cosign(checkpoint, "w.test/one", SEED, 1_700_000_000)
    blob = base64.b64decode(line.rstrip("\n").split(" ")[2])
    public_key = SigningKey(SEED).verify_key.encode()
    assert blob[:4] == hashlib.sha256(b"w.test/one\n\x04" + public_key).digest()[:4]
    assert blob[4:12] == (1_700_000_000).to_bytes(8, "big")
    message = b"cosignature/v1\ntime 1700000000\n" + checkpoint.body()
    Ed25519PublicKey.from_public_bytes(public_key).verify(blob[12:], message)  # raises if wrong

    cosigned = add_signature_lines(note, [line])
    found = verify_cosignatures(cosigned, [Witness("w.test/one", public_key)])
    assert found["w.test/one"].timestamp == 1_700_000_000
    # appending the same line again changes nothing
    assert add_signature_lines(cosigned, [line]) == cosigned


def test_a_cosignature_on_another_checkpoint_fails_loudly() -> None:
    checkpoint, _ = _checkpoint(13)
    _, other_note = _checkpoint(14)
    line = cosign(checkpoint, "w.test/one", SEED, 1_700_000_000)
    witness = Witness("w.test/one", SigningKey(SEED).verify_key.encode())
    with pytest.raises(CheckpointError, match="does not verify"):
        verify_cosignatures(add_signature_lines(other_note, [line]), [witness])


def test_one_flipped_bit_in_the_timestamp_fails() -> None:
    checkpoint, note = _checkpoint(5)
    line = cosign(checkpoint, "w.test/one", SEED, 1_700_000_000)
    prefix, encoded = line.rstrip("\n").rsplit(" ", 1)
    blob = bytearray(base64.b64decode(encoded))
    blob[11] ^= 1
    tampered = f"{prefix} {base64.b64encode(bytes(blob)).decode()}\n"
    witness = Witness("w.test/one", SigningKey(SEED).verify_key.encode())
    with pytest.raises(CheckpointError, match="does not verify"):
        verify_cosignatures(add_signature_lines(note, [tampered]), [witness])


def test_quorum_policy_counts_only_known_valid_witnesses() -> None:
    checkpoint, note = _checkpoint(8)
    seeds = {f"w.test/{n}": bytes([n]) * 32 for n in (1, 2, 3)}
    witnesses = [Witness(name, SigningKey(seed).verify_key.encode()) for name, seed in seeds.items()]
    note = add_signature_lines(
        note,
        [
            cosign(checkpoint, "w.test/1", seeds["w.test/1"], 10),
            cosign(checkpoint, "w.test/2", seeds["w.test/2"], 11),
        ],
    )
    assert set(WitnessPolicy(tuple(witnesses), 2).check(note)) == {"w.test/1", "w.test/2"}
    with pytest.raises(CheckpointError, match=r"fewer than the quorum of 3; missing: w.test/3"):
        WitnessPolicy(tuple(witnesses), 3).check(note)
    # an unknown witness's valid cosignature does not count
    stranger = cosign(checkpoint, "w.test/9", bytes([9]) * 32, 12)
    with pytest.raises(CheckpointError, match="fewer than the quorum of 2"):
        WitnessPolicy((witnesses[2], witnesses[0]), 2).check(
            add_signature_lines(_checkpoint(8)[1], [stranger])
        )
    with pytest.raises(CheckpointError, match="cannot be met"):
        WitnessPolicy(tuple(witnesses), 4)
    assert WitnessPolicy.of([w.vkey for w in witnesses], None).quorum == 3


# --- the witness's decision ---------------------------------------------------------------------------------


def _keys() -> dict[str, list[tuple[str, bytes]]]:
    return {ORIGIN: [(ORIGIN, SigningKey(LOG_SEED).verify_key.encode())]}


def _proof(first: int, second: int) -> tuple[bytes, ...]:
    leaves = [merkle.leaf_hash(i.to_bytes(4, "big")) for i in range(second)]
    nodes: dict[merkle.NodeId, bytes] = {}
    _, completed = merkle.append(merkle.Frontier.empty(), leaves)
    for level, index, digest in completed:
        nodes[(level, index)] = digest
    return tuple(merkle.consistency_proof(first, second, nodes))


def test_witness_cosigns_from_zero_then_a_consistent_extension() -> None:
    first, note = _checkpoint(7)
    assert judge(AddCheckpoint(0, (), note), _keys(), None) == first
    second, note2 = _checkpoint(20)
    assert judge(AddCheckpoint(7, _proof(7, 20), note2), _keys(), Recorded(7, first.root_hash)) == second
    # the same checkpoint again, from its own size: cosigned again
    assert judge(AddCheckpoint(20, (), note2), _keys(), Recorded(20, second.root_hash)) == second


@pytest.mark.parametrize(
    ("request_of", "recorded", "status", "message"),
    [
        # unknown origin
        (
            lambda: AddCheckpoint(0, (), "other.test/log\n1\n" + "A" * 43 + "=\n\n\u2014 x AAAA\n"),
            None,
            404,
            "does not know",
        ),
        # signed by another key
        (
            lambda: AddCheckpoint(
                0, (), sign_checkpoint(Checkpoint(ORIGIN, 3, bytes(32)), ORIGIN, bytes(32))
            ),
            None,
            403,
            "no valid signature",
        ),
        # old size above the checkpoint's
        (lambda: AddCheckpoint(9, (), _checkpoint(7)[1]), Recorded(9, bytes(32)), 400, "larger than"),
        # a rollback: the witness holds 20, the log sends 7 as if from 5
        (
            lambda: AddCheckpoint(5, _proof(5, 7), _checkpoint(7)[1]),
            Recorded(20, bytes(32)),
            409,
            "last cosigned size 20",
        ),
        # a proof from zero
        (lambda: AddCheckpoint(0, _proof(3, 7), _checkpoint(7)[1]), None, 422, "must be empty"),
        # a fork: the same size with another root
        (lambda: AddCheckpoint(7, (), _checkpoint(7)[1]), Recorded(7, bytes(32)), 422, "fork"),
        # a rewritten history: the proof does not lead from what the witness saw
        (
            lambda: AddCheckpoint(5, _proof(5, 7), _checkpoint(7)[1]),
            Recorded(5, bytes(32)),
            422,
            "not proven",
        ),
    ],
)
def test_witness_refusals(request_of, recorded, status, message) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(WitnessRefusal, match=message) as caught:
        judge(request_of(), _keys(), recorded)
    assert caught.value.status == status
    if status == 409:
        assert caught.value.size == 20


def test_malformed_requests_are_400() -> None:
    for body, message in [
        (b"old 01\n\n", "no leading zeroes"),
        (b"new 1\n\nx", "old <size>"),
        (b"old 1\nnot base64!\n\nx", "not a base64 hash"),
        (b"old 1\nAAAA\n\nx", "not a 32-byte hash"),
        (b"old 1\n", "no empty line"),
        (b"\xff\xfe", "not UTF-8"),
        (("old 1\n" + ("A" * 43 + "=\n") * 64 + "\nx").encode(), "more than 63"),
    ]:
        with pytest.raises(WitnessRefusal, match=message) as caught:
            parse_add_checkpoint(body)
        assert caught.value.status == 400


def test_size_zero_needs_the_empty_root() -> None:
    checkpoint = Checkpoint(ORIGIN, 0, bytes(32))
    with pytest.raises(WitnessRefusal, match="empty tree") as caught:
        judge(AddCheckpoint(0, (), sign_checkpoint(checkpoint, ORIGIN, LOG_SEED)), _keys(), None)
    assert caught.value.status == 422


def test_origin_hash_is_lowercase_hex_sha256() -> None:
    assert origin_hash("example.com/log") == hashlib.sha256(b"example.com/log").hexdigest()


# --- tiles ---------------------------------------------------------------------------------------------------


def test_tile_paths_follow_the_specification() -> None:
    # c2sp.org/tlog-tiles: index 1234067 is x001/x234/067
    assert tile_path(0, 1234067) == "tile/0/x001/x234/067"
    assert tile_path(2, 5, 17) == "tile/2/005.p/17"
    assert tile_path(None, 0) == "tile/entries/000"
    assert parse_tile_path("tile/0/x001/x234/067") == TileRef(0, 1234067)
    assert parse_tile_path("tile/entries/x001/000.p/3") == TileRef(None, 1000, 3)
    for bad in [
        "tile/0/1234",
        "tile/0/x123",
        "tile/00/000",
        "tile/64/000",
        "tile/0/000.p/256",
        "tile/0/x000/001",
        "tile/0/000.p/0",
        "tile/1/001/002",
    ]:
        with pytest.raises(TileError):
            parse_tile_path(bad)


def test_tiles_of_70000_entries_are_the_specifications_example() -> None:
    tiles = tiles_for_size(70_000)
    level0 = [t for t in tiles if t.level == 0]
    # 70,000 = 273 * 256 + 112
    assert len([t for t in level0 if t.width == 256]) == 273
    assert [t.width for t in level0 if t.width != 256] == [112]
    # 70,000 // 256 = 273 hashes at level 1 = 1 * 256 + 17
    assert [t.width for t in tiles if t.level == 1] == [256, 17]
    # 70,000 // 65,536 = 1 hash at level 2
    assert [t.width for t in tiles if t.level == 2] == [1]


def test_entry_bundle_is_uint16_length_prefixed() -> None:
    assert entry_bundle([b"ab", b""]) == b"\x00\x02ab\x00\x00"
