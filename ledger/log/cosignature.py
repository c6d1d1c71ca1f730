"""C2SP tlog-cosignature (Ed25519, ``cosignature/v1``) and witness policies: who must have cosigned a checkpoint.

A cosignature is a signed-note signature line on a checkpoint (c2sp.org/tlog-cosignature, "Format")::

    — <witness name> base64(key ID || timestamp || Ed25519 signature)

- key ID: ``SHA-256(<name> || "\\n" || 0x04 || public key)[:4]`` (signature type 0x04, not the 0x01 of a log key)
- timestamp: 8 bytes, big-endian POSIX seconds, at most 2**63 - 1, never zero from a witness
- the signature is over ``"cosignature/v1\\n" || "time <timestamp>\\n" || <checkpoint body>`` ("Ed25519 signed
  message"), so a cosignature says "as of this time, the largest consistent tree I have seen of this log has
  this root".

Witness keys are written like log keys but with type 0x04: ``<name>+<hex key ID>+<base64(0x04 || key)>`` and
``PRIVATE+KEY+<name>+<hex key ID>+<base64(0x04 || seed)>``.

Pure functions only: no I/O.
"""

from __future__ import annotations

import base64
import hashlib
import re
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from ledger.log.checkpoint import (
    KEY_ID_SIZE,
    MAX_SIGNATURES,
    SIGNATURE_LINE_PREFIX,
    Checkpoint,
    CheckpointError,
    key_id,
)

__all__ = [
    "COSIGNATURE_HEADER",
    "COSIGNATURE_TYPE",
    "Cosignature",
    "Witness",
    "WitnessPolicy",
    "add_signature_lines",
    "cosign",
    "cosigned_message",
    "cosigner_key_id",
    "log_signed_only",
    "note_text_and_lines",
    "parse_witness_signer_key",
    "parse_witness_vkey",
    "verify_cosignatures",
    "witness_signer_key",
    "witness_vkey",
]

COSIGNATURE_TYPE = 0x04
"""c2sp.org/tlog-cosignature: the key ID algorithm byte of Ed25519 cosignatures (``cosignature/v1``)."""

COSIGNATURE_HEADER = b"cosignature/v1\n"
"""c2sp.org/tlog-cosignature "Ed25519 signed message": the header line, for domain separation."""

MAX_TIMESTAMP = 2**63 - 1
"""c2sp.org/tlog-cosignature: a timestamp "MUST NOT exceed 2^63 - 1"."""

_TIMESTAMP_SIZE = 8
_SIGNATURE_SIZE = 64
_KEY_SIZE = 32
_SIGNER_PREFIX = "PRIVATE+KEY+"
_KEY_ID_PATTERN = re.compile(r"[0-9a-f]{8}")


@dataclass(frozen=True)
class Witness:
    """A witness a verifier knows: its name and Ed25519 cosigning key."""

    name: str
    public_key: bytes

    @property
    def key_id(self) -> bytes:
        return cosigner_key_id(self.name, self.public_key)

    @property
    def vkey(self) -> str:
        return witness_vkey(self.name, self.public_key)

    @classmethod
    def parse(cls, vkey: str) -> Witness:
        return cls(*parse_witness_vkey(vkey))


@dataclass(frozen=True)
class Cosignature:
    """A verified cosignature: who cosigned, when (POSIX seconds), and its signature line as it appears."""

    witness: str
    timestamp: int
    line: str


def cosigner_key_id(name: str, public_key: bytes) -> bytes:
    """``SHA-256(name || 0x0A || 0x04 || public key)[:4]`` (c2sp.org/tlog-cosignature, "Format")."""
    _check_name(name)
    if len(public_key) != _KEY_SIZE:
        raise CheckpointError(f"an Ed25519 public key is {_KEY_SIZE} bytes, not {len(public_key)}")
    digest = hashlib.sha256(name.encode("utf-8") + b"\n" + bytes([COSIGNATURE_TYPE]) + public_key).digest()
    return digest[:KEY_ID_SIZE]


def witness_vkey(name: str, public_key: bytes) -> str:
    """The witness's verifier key: ``<name>+<hex key ID>+<base64(0x04 || public key)>``."""
    material = base64.b64encode(bytes([COSIGNATURE_TYPE]) + public_key).decode("ascii")
    return f"{name}+{cosigner_key_id(name, public_key).hex()}+{material}"


def parse_witness_vkey(vkey: str) -> tuple[str, bytes]:
    """Parse ``<name>+<hex key ID>+<base64(0x04 || key)>``; the key ID must match the name and key."""
    parts = vkey.strip().split("+", 2)
    if len(parts) != 3:
        raise CheckpointError(
            f"a witness key has the form <name>+<hex key ID>+<base64 key>, not {vkey[:80]!r}"
        )
    name, id_hex, material = parts
    public_key = _key_material(material, "witness key")
    return name, _checked_id(name, id_hex, public_key, "witness key")


def witness_signer_key(name: str, seed: bytes) -> str:
    """The witness's private key string ``PRIVATE+KEY+<name>+<hex key ID>+<base64(0x04 || seed)>``."""
    public_key = _signing_key(seed).verify_key.encode()
    material = base64.b64encode(bytes([COSIGNATURE_TYPE]) + seed).decode("ascii")
    return f"{_SIGNER_PREFIX}{name}+{cosigner_key_id(name, public_key).hex()}+{material}"


def parse_witness_signer_key(text: str) -> tuple[str, bytes]:
    """Parse a witness private key string into (name, 32-byte seed), checking its key ID."""
    text = text.strip()
    if not text.startswith(_SIGNER_PREFIX):
        raise CheckpointError("a witness private key starts with PRIVATE+KEY+")
    parts = text[len(_SIGNER_PREFIX) :].split("+", 2)
    if len(parts) != 3:
        raise CheckpointError(
            "a witness private key has the form PRIVATE+KEY+<name>+<hex key ID>+<base64 seed>"
        )
    name, id_hex, material = parts
    seed = _key_material(material, "witness private key")
    _checked_id(name, id_hex, _signing_key(seed).verify_key.encode(), "witness private key")
    return name, seed


def cosigned_message(checkpoint_body: bytes, timestamp: int) -> bytes:
    """The bytes an Ed25519 cosignature signs: header line, ``time <timestamp>`` line, then the checkpoint body
    (extension lines included, signatures not)."""
    _check_timestamp(timestamp)
    return COSIGNATURE_HEADER + f"time {timestamp}\n".encode("ascii") + checkpoint_body


def cosign(checkpoint: Checkpoint, name: str, seed: bytes, timestamp: int) -> str:
    """The cosignature line (with its newline) of witness ``name`` on ``checkpoint`` at ``timestamp``."""
    if timestamp == 0:
        raise CheckpointError("a witness's cosignature must carry a timestamp (c2sp.org/tlog-witness)")
    key = _signing_key(seed)
    signature = key.sign(cosigned_message(checkpoint.body(), timestamp)).signature
    blob = cosigner_key_id(name, key.verify_key.encode()) + struct.pack(">Q", timestamp) + signature
    return f"{SIGNATURE_LINE_PREFIX}{name} {base64.b64encode(blob).decode('ascii')}\n"


def note_text_and_lines(note: str) -> tuple[str, list[str]]:
    """Split a signed note into its text (ending in a newline) and its signature lines (without newlines).

    c2sp.org/signed-note: the text is separated from the signatures by the last blank line."""
    split = note.rfind("\n\n")
    if split < 0 or not note.endswith("\n"):
        raise CheckpointError(
            "the note has no blank line before its signatures, or does not end with a newline"
        )
    lines = note[split + 2 : -1].split("\n")
    if not lines or lines == [""]:
        raise CheckpointError("the note has no signature lines")
    if len(lines) > MAX_SIGNATURES:
        raise CheckpointError(
            f"the note has {len(lines)} signature lines, more than the {MAX_SIGNATURES} allowed"
        )
    for number, line in enumerate(lines, 1):
        if not line.startswith(SIGNATURE_LINE_PREFIX):
            raise CheckpointError(f"signature line {number} does not start with an em dash and a space")
    return note[: split + 1], lines


def log_signed_only(note: str, log_keys: Iterable[tuple[str, bytes]]) -> str:
    """The note with only the signature lines of the given log keys (matched by name and key ID): what a witness
    may republish, having verified those lines and nothing else."""
    ids = {(name, key_id(name, public_key)) for name, public_key in log_keys}
    text, lines = note_text_and_lines(note)
    kept = []
    for line in lines:
        name, _, encoded = line[len(SIGNATURE_LINE_PREFIX) :].partition(" ")
        try:
            blob = base64.b64decode(encoded, validate=True)
        except ValueError:
            continue
        if (name, blob[:KEY_ID_SIZE]) in ids:
            kept.append(line)
    return text + "\n" + "".join(line + "\n" for line in kept)


def add_signature_lines(note: str, lines: Iterable[str]) -> str:
    """The note with more signature lines appended (each once; lines already present are not repeated)."""
    _, present = note_text_and_lines(note)
    extra = [line.rstrip("\n") for line in lines]
    fresh = [line for line in dict.fromkeys(extra) if line not in present]
    return note + "".join(line + "\n" for line in fresh)


def verify_cosignatures(note: str, witnesses: Iterable[Witness]) -> dict[str, Cosignature]:
    """The verified cosignatures in ``note`` by the given witnesses, by witness name.

    Lines whose name and key ID match no given witness are ignored (c2sp.org/signed-note); a line that matches
    one but does not verify makes the note malformed, and raises. The log's own signature is not checked here:
    open the checkpoint with the log key first."""
    text, lines = note_text_and_lines(note)
    body = text.encode("utf-8")
    known = {(w.name, w.key_id): w for w in witnesses}
    found: dict[str, Cosignature] = {}
    for number, line in enumerate(lines, 1):
        name, _, encoded = line[len(SIGNATURE_LINE_PREFIX) :].partition(" ")
        try:
            blob = base64.b64decode(encoded, validate=True)
        except ValueError:
            continue  # not a signature this verifier can read; only known keys' lines must be well formed
        witness = known.get((name, blob[:KEY_ID_SIZE]))
        if witness is None:
            continue
        if base64.b64encode(blob).decode("ascii") != encoded:
            raise CheckpointError(f"the cosignature by {name} on line {number} is not canonical base64")
        if len(blob) != KEY_ID_SIZE + _TIMESTAMP_SIZE + _SIGNATURE_SIZE:
            raise CheckpointError(
                f"the cosignature by {name} on line {number} is {len(blob)} bytes, not the "
                f"{KEY_ID_SIZE + _TIMESTAMP_SIZE + _SIGNATURE_SIZE} of a cosignature/v1 (key ID, time, signature)"
            )
        (timestamp,) = struct.unpack(">Q", blob[KEY_ID_SIZE : KEY_ID_SIZE + _TIMESTAMP_SIZE])
        if timestamp > MAX_TIMESTAMP:
            raise CheckpointError(
                f"the cosignature by {name} on line {number} has a timestamp beyond 2**63 - 1"
            )
        try:
            VerifyKey(witness.public_key).verify(
                cosigned_message(body, timestamp), blob[KEY_ID_SIZE + _TIMESTAMP_SIZE :]
            )
        except BadSignatureError:
            raise CheckpointError(
                f"the cosignature by witness {name}+{witness.key_id.hex()} on line {number} does not verify over "
                "this checkpoint"
            ) from None
        found[name] = Cosignature(name, timestamp, line)
    return found


@dataclass(frozen=True)
class WitnessPolicy:
    """Accept a checkpoint only when at least ``quorum`` of ``witnesses`` cosigned it (a "k of n" policy, as in
    c2sp.org/tlog-policy). An empty policy (no witnesses, quorum 0) accepts the log's signature alone."""

    witnesses: tuple[Witness, ...] = ()
    quorum: int = 0

    def __post_init__(self) -> None:
        names = [w.name for w in self.witnesses]
        if len(set(names)) != len(names):
            raise CheckpointError("each witness may be named only once in a policy")
        # cosignature/v1 does not commit to the witness's name: one key under two names would count twice
        keys = [w.public_key for w in self.witnesses]
        if len(set(keys)) != len(keys):
            raise CheckpointError(
                "two witnesses of the policy share a public key; each witness needs its own"
            )
        if not 0 <= self.quorum <= len(self.witnesses):
            raise CheckpointError(
                f"a quorum of {self.quorum} cannot be met by {len(self.witnesses)} known witnesses"
            )
        if self.witnesses and self.quorum == 0:
            raise CheckpointError("a policy that names witnesses needs a quorum of at least 1")

    @classmethod
    def of(cls, vkeys: Sequence[str], quorum: int | None) -> WitnessPolicy:
        """A policy from witness verifier keys; the quorum defaults to all of them."""
        witnesses = tuple(Witness.parse(vkey) for vkey in vkeys)
        if quorum is not None and not witnesses and quorum > 0:
            raise CheckpointError("a quorum needs witnesses: give each one's key with --witness")
        return cls(witnesses, len(witnesses) if quorum is None else quorum)

    def check(self, note: str) -> dict[str, Cosignature]:
        """The cosignatures that meet the quorum, or :class:`CheckpointError` naming who is missing."""
        if not self.witnesses:
            return {}
        found = verify_cosignatures(note, self.witnesses)
        if len(found) < self.quorum:
            missing = sorted(w.name for w in self.witnesses if w.name not in found)
            have = ", ".join(sorted(found)) or "none"
            raise CheckpointError(
                f"the checkpoint carries {len(found)} valid cosignature(s) from known witnesses ({have}), fewer "
                f"than the quorum of {self.quorum}; missing: {', '.join(missing)}"
            )
        return found


def _check_name(name: str) -> None:
    if not name or any(char.isspace() or char == "+" or ord(char) < 0x20 for char in name):
        raise CheckpointError(
            f"the key name {name!r} is empty or contains a space, a control character or '+'"
        )


def _check_timestamp(timestamp: int) -> None:
    if isinstance(timestamp, bool) or not isinstance(timestamp, int) or not 0 <= timestamp <= MAX_TIMESTAMP:
        raise CheckpointError(f"a cosignature timestamp is an integer from 0 to 2**63 - 1, not {timestamp!r}")


def _signing_key(seed: bytes) -> SigningKey:
    if len(seed) != _KEY_SIZE:
        raise CheckpointError(f"an Ed25519 seed is {_KEY_SIZE} bytes")
    return SigningKey(seed)


def _key_material(material: str, what: str) -> bytes:
    try:
        raw = base64.b64decode(material, validate=True)
    except ValueError:
        raise CheckpointError(f"the {what}'s key is not valid base64") from None
    if base64.b64encode(raw).decode("ascii") != material:
        raise CheckpointError(f"the {what}'s key is not canonical padded base64")
    if len(raw) != 1 + _KEY_SIZE or raw[0] != COSIGNATURE_TYPE:
        kind = f"type 0x{raw[0]:02x}" if raw else "empty"
        raise CheckpointError(
            f"the {what} is not 0x04 followed by a 32-byte Ed25519 key ({kind}, {len(raw)} bytes): a cosigner "
            "key has type 0x04 (c2sp.org/tlog-cosignature), a log key 0x01"
        )
    return raw[1:]


def _checked_id(name: str, id_hex: str, public_key: bytes, what: str) -> bytes:
    derived = cosigner_key_id(name, public_key)
    if not _KEY_ID_PATTERN.fullmatch(id_hex) or bytes.fromhex(id_hex) != derived:
        raise CheckpointError(f"the {what}'s ID {id_hex!r} does not match its name and key ({derived.hex()})")
    return public_key
