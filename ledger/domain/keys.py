"""Ed25519 keys (libsodium through PyNaCl), key ids and key files."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import nacl.bindings
import nacl.exceptions
import nacl.signing

from ledger.errors import BadSignature, InvalidInput

PUBLIC_KEY_SIZE = 32
SIGNATURE_SIZE = 64


def key_id(public_key: bytes) -> str:
    """Key id: lowercase hex SHA-256 of the raw 32-byte Ed25519 public key."""
    if len(public_key) != PUBLIC_KEY_SIZE:
        raise InvalidInput(
            f"an Ed25519 public key has {PUBLIC_KEY_SIZE} bytes, this one has {len(public_key)}"
        )
    return hashlib.sha256(public_key).hexdigest()


def b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def b64decode(text: str, what: str) -> bytes:
    """Strict standard base64 (RFC 4648 section 4, with padding); ``what`` names the field in errors."""
    try:  # strict mode: the alphabet, padding only at the end (as validate=True, without its regular expression)
        return binascii.a2b_base64(text.encode("ascii"), strict_mode=True)
    except (ValueError, UnicodeEncodeError):
        raise InvalidInput(f"{what} is not valid standard base64") from None


def decode_public_key(text: str) -> bytes:
    raw = b64decode(text, "public_key")
    if len(raw) != PUBLIC_KEY_SIZE:
        raise InvalidInput(f"public_key must be {PUBLIC_KEY_SIZE} bytes of Ed25519 key, got {len(raw)}")
    return raw


def verify_signature(public_key: bytes, message: bytes, signature: bytes) -> None:
    """Raise :class:`BadSignature` unless ``signature`` is a valid Ed25519 signature of ``message``."""
    if len(signature) != SIGNATURE_SIZE:
        raise BadSignature(f"an Ed25519 signature has {SIGNATURE_SIZE} bytes, this one has {len(signature)}")
    if not signature_verifies(public_key, message, signature):
        raise BadSignature(f"signature does not verify for key {key_id(public_key)}")


def signature_verifies(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """Whether ``signature`` is a valid Ed25519 signature of ``message`` by ``public_key``: libsodium's
    ``crypto_sign_open``, which PyNaCl's ``VerifyKey.verify`` calls, without the key object and the exception
    (a worker process checks thousands a second, and those cost a tenth of the check itself)."""
    if len(signature) != SIGNATURE_SIZE or len(public_key) != PUBLIC_KEY_SIZE:
        return False
    try:
        nacl.bindings.crypto_sign_open(signature + message, public_key)
    except nacl.exceptions.BadSignatureError:
        return False
    return True


@dataclass(frozen=True)
class SigningKey:
    """An Ed25519 private key (the 32-byte seed) with its public half."""

    seed: bytes

    @classmethod
    def generate(cls) -> SigningKey:
        return cls(bytes(nacl.signing.SigningKey.generate()))

    @property
    def _nacl(self) -> nacl.signing.SigningKey:
        return nacl.signing.SigningKey(self.seed)

    @property
    def public_key(self) -> bytes:
        return bytes(self._nacl.verify_key)

    @property
    def key_id(self) -> str:
        return key_id(self.public_key)

    @property
    def public_key_b64(self) -> str:
        return b64encode(self.public_key)

    def sign(self, message: bytes) -> bytes:
        return bytes(self._nacl.sign(message).signature)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the key as JSON, readable by the owner only (0600), refusing to overwrite."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        document = {
            "type": "ed25519",
            "key_id": self.key_id,
            "public_key": self.public_key_b64,
            "private_key": b64encode(self.seed),
        }
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(document, handle, indent=2)
            handle.write("\n")

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> SigningKey:
        """Read a key file written by :meth:`save` (``ledger keygen``); ``path`` is a string or a path."""
        path = Path(path)
        try:
            document = json.loads(path.read_text())
            seed = base64.b64decode(document["private_key"], validate=True)
        except FileNotFoundError:
            raise InvalidInput(f"key file {path} does not exist") from None
        except OSError as exc:
            raise InvalidInput(f"cannot read key file {path}: {exc.strerror}") from None
        except (ValueError, KeyError, TypeError):
            raise InvalidInput(
                f"key file {path} is not an Ed25519 key file written by `ledger keygen`"
            ) from None
        if len(seed) != 32:
            raise InvalidInput(f"key file {path} holds a private key of {len(seed)} bytes, expected 32")
        return cls(seed)
