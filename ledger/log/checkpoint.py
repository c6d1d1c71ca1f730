"""C2SP tlog-checkpoint signed tree heads, in the C2SP signed-note format, with Ed25519 signatures.

A checkpoint body is three or more lines (c2sp.org/tlog-checkpoint)::

    <origin>
    <tree size in decimal>
    <base64 root hash>
    [extension lines]

and a signed note (c2sp.org/signed-note) is that text, a blank line, then one line per signature::

    — <key name> <base64(4-byte key ID || 64-byte Ed25519 signature)>

The Ed25519 key ID is ``SHA-256(key name || 0x0A || 0x01 || public key)[:4]``, as in golang.org/x/mod/sumdb/
note. Keys are written the way that package writes them: ``<name>+<hex key ID>+<base64(0x01 || public key)>``
for verifiers and ``PRIVATE+KEY+<name>+<hex key ID>+<base64(0x01 || seed)>`` for signers.

Pure functions only: no I/O.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass

from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

__all__ = [
    "ED25519_SIGNATURE_TYPE",
    "KEY_ID_SIZE",
    "MAX_SIGNATURES",
    "MAX_TREE_SIZE",
    "SIGNATURE_LINE_PREFIX",
    "Checkpoint",
    "CheckpointError",
    "key_id",
    "open_checkpoint",
    "open_note",
    "parse_signer_key",
    "parse_verifier_key",
    "sign_checkpoint",
    "sign_note",
    "signer_key",
    "verifier_key",
]

# c2sp.org/signed-note "Signatures": signature lines start with an em dash (U+2014) and a space.
SIGNATURE_LINE_PREFIX = "\u2014 "
# c2sp.org/signed-note "Signature types": 0x01 is Ed25519 over the note text.
ED25519_SIGNATURE_TYPE = 0x01
# c2sp.org/signed-note "Format": the signature starts with a 4-byte big-endian key ID.
KEY_ID_SIZE = 4
# c2sp.org/signed-note asks verifiers to cap the number of signatures at no less than 16; 100 is the cap
# golang.org/x/mod/sumdb/note applies.
MAX_SIGNATURES = 100
# Tree sizes are stored as signed 64-bit integers (as in golang.org/x/mod/sumdb/tlog and SQL BIGINT).
MAX_TREE_SIZE = 2**63 - 1

_HASH_SIZE = 32
_ED25519_KEY_SIZE = 32
_ED25519_SIGNATURE_SIZE = 64
_SIGNER_KEY_PREFIX = "PRIVATE+KEY+"
# c2sp.org/tlog-checkpoint: "ASCII decimal ... with no leading zeroes (unless the tree is empty)".
_TREE_SIZE_PATTERN = re.compile(r"0|[1-9][0-9]*")
_KEY_ID_PATTERN = re.compile(r"[0-9a-f]{8}")


class CheckpointError(Exception):
    """A checkpoint, note or key is malformed, or a signature is missing or does not verify."""


@dataclass(frozen=True)
class Checkpoint:
    """A log's tree head: its origin, the number of leaves and the RFC 9162 root hash at that size.

    ``extensions`` are the optional extension lines of c2sp.org/tlog-checkpoint, kept verbatim.
    """

    origin: str
    size: int
    root_hash: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # c2sp.org/tlog-checkpoint only *recommends* that the origin be a URL without spaces or '+', and
        # tells clients not to assume it, so only what would break the line structure is refused here.
        _check_line(self.origin, "the checkpoint origin")
        if (
            isinstance(self.size, bool)
            or not isinstance(self.size, int)
            or not 0 <= self.size <= MAX_TREE_SIZE
        ):
            raise CheckpointError(f"the tree size must be an integer from 0 to 2**63 - 1, not {self.size!r}")
        if not isinstance(self.root_hash, bytes) or len(self.root_hash) != _HASH_SIZE:
            length = (
                len(self.root_hash) if isinstance(self.root_hash, bytes) else type(self.root_hash).__name__
            )
            raise CheckpointError(f"the root hash must be {_HASH_SIZE} bytes, not {length}")
        if not isinstance(self.extensions, tuple):
            raise CheckpointError("the extension lines must be a tuple of strings")
        for position, line in enumerate(self.extensions):
            _check_line(line, f"extension line {position + 1}")

    def body(self) -> bytes:
        """Return the note text that gets signed: every line newline-terminated, UTF-8 encoded."""
        lines = [
            self.origin,
            str(self.size),
            base64.b64encode(self.root_hash).decode("ascii"),
            *self.extensions,
        ]
        return "".join(line + "\n" for line in lines).encode("utf-8")

    @classmethod
    def parse(cls, body: str | bytes) -> Checkpoint:
        """Parse a checkpoint body (the note text, without signatures) strictly.

        Raises :class:`CheckpointError` for a missing final newline, an empty line, a tree size that is not
        canonical decimal, or a root hash that is not canonical base64 of 32 bytes.
        """
        text = _decode_text(body)
        if not text.endswith("\n"):
            raise CheckpointError("the checkpoint body does not end with a newline")
        lines = text[:-1].split("\n")
        if len(lines) < 3:
            raise CheckpointError(
                f"a checkpoint has at least 3 lines (origin, tree size, root hash), this one has {len(lines)}"
            )
        origin, size_text, root_text, *extensions = lines
        if not _TREE_SIZE_PATTERN.fullmatch(size_text):
            raise CheckpointError(
                f"the tree size line {size_text!r} is not a decimal number without leading zeroes"
            )
        size = int(size_text)
        if size > MAX_TREE_SIZE:
            raise CheckpointError(f"the tree size {size} is larger than 2**63 - 1")
        root_hash = _strict_b64decode(root_text, "the root hash line")
        if len(root_hash) != _HASH_SIZE:
            raise CheckpointError(f"the root hash decodes to {len(root_hash)} bytes, not {_HASH_SIZE}")
        return cls(origin, size, root_hash, tuple(extensions))


def key_id(name: str, public_key: bytes) -> bytes:
    """Return the 4-byte Ed25519 key ID ``SHA-256(name || 0x0A || 0x01 || public_key)[:4]``.

    c2sp.org/signed-note, "Ed25519 signatures".
    """
    _check_key_name(name)
    _check_public_key(public_key)
    digest = hashlib.sha256(name.encode("utf-8") + b"\n" + bytes([ED25519_SIGNATURE_TYPE]) + public_key)
    return digest.digest()[:KEY_ID_SIZE]


def verifier_key(name: str, public_key: bytes) -> str:
    """Return the verifier key string ``<name>+<hex key ID>+<base64(0x01 || public key)>``."""
    material = base64.b64encode(bytes([ED25519_SIGNATURE_TYPE]) + public_key).decode("ascii")
    return f"{name}+{key_id(name, public_key).hex()}+{material}"


def parse_verifier_key(vkey: str) -> tuple[str, bytes]:
    """Parse a verifier key string into ``(name, 32-byte Ed25519 public key)``.

    Raises :class:`CheckpointError` if it is malformed, not Ed25519, or its key ID does not match its name
    and key.
    """
    # The name cannot contain '+', but the base64 key can, so split at most twice.
    parts = vkey.split("+", 2)
    if len(parts) != 3:
        raise CheckpointError("a verifier key has the form <name>+<hex key ID>+<base64 key>")
    name, id_hex, material = parts
    return name, _parse_key_material(name, id_hex, material, "verifier key")


def signer_key(name: str, seed: bytes) -> str:
    """Return the signer key string ``PRIVATE+KEY+<name>+<hex key ID>+<base64(0x01 || seed)>``."""
    public_key = _signing_key(seed).verify_key.encode()
    material = base64.b64encode(bytes([ED25519_SIGNATURE_TYPE]) + seed).decode("ascii")
    return f"{_SIGNER_KEY_PREFIX}{name}+{key_id(name, public_key).hex()}+{material}"


def parse_signer_key(skey: str) -> tuple[str, bytes]:
    """Parse a signer key string into ``(name, 32-byte Ed25519 seed)``.

    The key ID is checked against the public key derived from the seed. Raises :class:`CheckpointError`.
    """
    if not skey.startswith(_SIGNER_KEY_PREFIX):
        raise CheckpointError("a signer key starts with PRIVATE+KEY+")
    parts = skey[len(_SIGNER_KEY_PREFIX) :].split("+", 2)
    if len(parts) != 3:
        raise CheckpointError("a signer key has the form PRIVATE+KEY+<name>+<hex key ID>+<base64 seed>")
    name, id_hex, material = parts
    seed = _decode_key_material(material, "signer key")
    _check_key_name(name)
    derived_id = key_id(name, _signing_key(seed).verify_key.encode())
    if not _KEY_ID_PATTERN.fullmatch(id_hex) or bytes.fromhex(id_hex) != derived_id:
        raise CheckpointError(
            f"the signer key's ID {id_hex!r} does not match its name and key ({derived_id.hex()})"
        )
    return name, seed


def sign_note(text: str | bytes, key_name: str, seed: bytes) -> str:
    """Sign a note text with an Ed25519 seed; return the signed note (text, blank line, signature line).

    The text must be non-empty, valid UTF-8 without control characters other than newline, and end with a
    newline (c2sp.org/signed-note "Format").
    """
    raw = _encode_text(text)
    decoded = _decode_text(raw)
    if not decoded.endswith("\n"):
        raise CheckpointError("a note text must end with a newline")
    signing_key = _signing_key(seed)
    kid = key_id(key_name, signing_key.verify_key.encode())
    signature = signing_key.sign(raw).signature
    encoded = base64.b64encode(kid + signature).decode("ascii")
    return f"{decoded}\n{SIGNATURE_LINE_PREFIX}{key_name} {encoded}\n"


def open_note(note: str | bytes, key_name: str, public_key: bytes) -> bytes:
    """Verify a signed note against one Ed25519 key and return its text (including the final newline).

    Follows c2sp.org/signed-note: signature lines from other keys (another name or another key ID) are
    ignored; every signature line from this key must verify; at least one must be present. Raises
    :class:`CheckpointError` naming what failed.
    """
    raw = _encode_text(note)
    decoded = _decode_text(raw)
    # "the text is separated from the signatures by the last empty line in the note"
    split = decoded.rfind("\n\n")
    if split < 0:
        raise CheckpointError("the note has no blank line separating its text from its signatures")
    text, signature_block = decoded[: split + 1], decoded[split + 2 :]
    if not signature_block:
        raise CheckpointError("the note has no signature lines")
    if not signature_block.endswith("\n"):
        raise CheckpointError("the note's last signature line does not end with a newline")
    lines = signature_block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise CheckpointError(
            f"the note has {len(lines)} signature lines, more than the {MAX_SIGNATURES} allowed"
        )

    wanted_id = key_id(key_name, public_key)
    verifier = VerifyKey(public_key)
    text_bytes = text.encode("utf-8")
    verified = 0
    for number, line in enumerate(lines, start=1):
        name, encoded, blob = _parse_signature_line(line, number)
        if name != key_name or blob[:KEY_ID_SIZE] != wanted_id:
            continue  # Not our key: c2sp.org/signed-note says verifiers MUST ignore it.
        # Our own key's signature must also be canonically encoded, so that no two notes carry it.
        if base64.b64encode(blob).decode("ascii") != encoded:
            raise CheckpointError(
                f"signature line {number} by key {key_name}+{wanted_id.hex()} is not canonical padded base64"
            )
        signature = blob[KEY_ID_SIZE:]
        if len(signature) != _ED25519_SIGNATURE_SIZE:
            raise CheckpointError(
                f"signature line {number} by key {key_name}+{wanted_id.hex()} holds {len(signature)} bytes "
                f"of signature, not the {_ED25519_SIGNATURE_SIZE} of an Ed25519 signature"
            )
        try:
            verifier.verify(text_bytes, signature)
        except BadSignatureError:
            raise CheckpointError(
                f"signature line {number} by key {key_name}+{wanted_id.hex()} does not verify "
                "over the note text"
            ) from None
        verified += 1
    if not verified:
        raise CheckpointError(f"the note has no signature by key {key_name}+{wanted_id.hex()}")
    return text_bytes


def sign_checkpoint(checkpoint: Checkpoint, key_name: str, seed: bytes) -> str:
    """Return the checkpoint as a signed note, signed with the Ed25519 ``seed`` under ``key_name``.

    c2sp.org/tlog-checkpoint says the key name SHOULD match the origin; that is left to the caller.
    """
    return sign_note(checkpoint.body(), key_name, seed)


def open_checkpoint(note: str | bytes, key_name: str, public_key: bytes) -> Checkpoint:
    """Verify a signed checkpoint against one Ed25519 key and parse it strictly.

    Signatures from other keys are ignored (c2sp.org/signed-note). Raises :class:`CheckpointError` if the
    note is malformed, carries no signature by this key, a signature by this key does not verify, or the
    body is not a valid checkpoint.
    """
    return Checkpoint.parse(open_note(note, key_name, public_key))


# ---------------------------------------------------------------------------------------------------------
# Helpers.
# ---------------------------------------------------------------------------------------------------------


def _parse_signature_line(line: str, number: int) -> tuple[str, str, bytes]:
    """Split ``— <name> <base64>`` into (name, base64 text, decoded key ID || signature).

    c2sp.org/signed-note "Format". Lines by other keys are only checked this far, so that a cosignature in an
    unknown format does not stop the note from opening.
    """
    if not line.startswith(SIGNATURE_LINE_PREFIX):
        raise CheckpointError(f"signature line {number} does not start with an em dash and a space")
    name, space, encoded = line[len(SIGNATURE_LINE_PREFIX) :].partition(" ")
    if not space:
        raise CheckpointError(f"signature line {number} has no space between key name and signature")
    try:
        _check_key_name(name)
    except CheckpointError as err:
        raise CheckpointError(f"signature line {number}: {err}") from None
    blob = _b64decode(encoded, f"the signature on line {number}")
    if len(blob) <= KEY_ID_SIZE:
        raise CheckpointError(f"the signature on line {number} is too short to hold a key ID and a signature")
    return name, encoded, blob


def _parse_key_material(name: str, id_hex: str, material: str, what: str) -> bytes:
    _check_key_name(name)
    public_key = _decode_key_material(material, what)
    if not _KEY_ID_PATTERN.fullmatch(id_hex):
        raise CheckpointError(f"the {what}'s ID {id_hex!r} is not 8 lowercase hex digits")
    derived_id = key_id(name, public_key)
    if bytes.fromhex(id_hex) != derived_id:
        raise CheckpointError(
            f"the {what}'s ID {id_hex} does not match its name and key ({derived_id.hex()})"
        )
    return public_key


def _decode_key_material(material: str, what: str) -> bytes:
    raw = _strict_b64decode(material, f"the {what}'s key")
    if len(raw) != 1 + _ED25519_KEY_SIZE or raw[0] != ED25519_SIGNATURE_TYPE:
        raise CheckpointError(
            f"the {what}'s key is not 0x01 followed by {_ED25519_KEY_SIZE} bytes of Ed25519 key material"
        )
    return raw[1:]


def _signing_key(seed: bytes) -> SigningKey:
    if not isinstance(seed, bytes) or len(seed) != _ED25519_KEY_SIZE:
        raise CheckpointError(f"an Ed25519 seed is {_ED25519_KEY_SIZE} bytes")
    return SigningKey(seed)


def _check_public_key(public_key: bytes) -> None:
    if not isinstance(public_key, bytes) or len(public_key) != _ED25519_KEY_SIZE:
        raise CheckpointError(f"an Ed25519 public key is {_ED25519_KEY_SIZE} bytes")


def _check_key_name(name: str) -> None:
    # c2sp.org/signed-note: "Key names MUST be non-empty and MUST NOT contain any Unicode spaces or plus".
    if not name:
        raise CheckpointError("a key name must not be empty")
    if any(char.isspace() or char == "+" or ord(char) < 0x20 for char in name):
        raise CheckpointError(f"the key name {name!r} contains a space, a control character or a '+'")


def _check_line(line: str, what: str) -> None:
    if not isinstance(line, str) or not line:
        raise CheckpointError(f"{what} must be a non-empty string")
    if any(ord(char) < 0x20 for char in line):
        raise CheckpointError(f"{what} contains a newline or another control character")


def _encode_text(text: str | bytes) -> bytes:
    if isinstance(text, str):
        try:
            return text.encode("utf-8")
        except UnicodeEncodeError:
            raise CheckpointError("the note is not valid UTF-8 (it contains a lone surrogate)") from None
    return bytes(text)


def _decode_text(raw: str | bytes) -> str:
    """Decode UTF-8 and refuse control characters other than newline (c2sp.org/signed-note "Format")."""
    if isinstance(raw, str):
        raw = _encode_text(raw)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise CheckpointError("the note is not valid UTF-8") from None
    for char in text:
        if ord(char) < 0x20 and char != "\n":
            raise CheckpointError(f"the note contains the control character {char!r}")
    return text


def _b64decode(text: str, what: str) -> bytes:
    """Decode padded standard base64 (RFC 4648 section 4), refusing any character outside its alphabet."""
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise CheckpointError(f"{what} is not valid base64") from None


def _strict_b64decode(text: str, what: str) -> bytes:
    """Decode standard base64 and accept only its canonical, padded form."""
    raw = _b64decode(text, what)
    if base64.b64encode(raw).decode("ascii") != text:
        raise CheckpointError(f"{what} is not canonical padded base64")
    return raw
