"""The checks ``ledger audit`` makes of each events row without the ledger's state, run in worker processes.

For every row: the SHA-256 of the payload against the recorded event id, the RFC 9162 leaf hash (section 2.1.1)
of the digest the event id names, and the Ed25519 signature by the first key the envelope names that the keys
table holds. These are most of the audit's arithmetic, and none of it depends on the replay, so the audit runs
them on pieces of the log in worker processes (each with its own interpreter lock) while its main process
replays the pieces before. Inputs and results are plain data, cheap to send between processes. (The payload is
decoded by the replay itself: sending the decoded event back costs more than decoding it again.)

A signature found good here only spares the replay from checking it again: the replay still decides whether the
key was valid for its event, and checks the signature itself when it settles on another key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import msgspec
import nacl.exceptions
import nacl.signing

from ledger.domain.dsse import Signature, pae
from ledger.domain.keys import key_id
from ledger.log.merkle import LEAF_PREFIX

SIGNATURE_BYTES = 64
"""The length of an Ed25519 signature (RFC 8032, section 5.1.6)."""

RowIn = tuple[str, str, bytes, str]
"""An events row as the checks read it: event id, payload type, payload, signatures (JSON)."""


@dataclass(frozen=True)
class Checked:
    """What the checks found in a piece of the log, row by row in log order."""

    leaves: bytes
    """The leaf hashes of the rows' payloads, 32 bytes each."""
    mismatched: dict[int, str]
    """Position in the piece -> the event id its payload hashes to, for the rows whose recorded id differs."""
    verified: list[tuple[str, str] | None]
    """Every row's key id and signature (as stored) that verifies (None: none verified)."""

    def leaf(self, position: int) -> bytes:
        return self.leaves[32 * position : 32 * position + 32]


_signatures = msgspec.json.Decoder(list[Signature])


class RowChecker:
    """Checks pieces of the log against the public keys of the keys table."""

    def __init__(self, public_keys: dict[str, bytes]) -> None:
        # A key id is the SHA-256 of its key, so a key filed under another id verifies nothing here (the replay
        # then checks that event's signature itself, against the key the log registered). The key id kept is one
        # string object per key, so that a piece's results pickle it once.
        self._keys: dict[str, tuple[str, nacl.signing.VerifyKey]] = {}
        for kid, public_key in public_keys.items():
            if key_id(public_key) == kid:
                try:
                    self._keys[kid] = (kid, nacl.signing.VerifyKey(public_key))
                except (TypeError, ValueError):
                    continue

    def check(self, rows: Sequence[RowIn]) -> Checked:
        leaves: list[bytes] = []
        mismatched: dict[int, str] = {}
        verified: list[tuple[str, str] | None] = []
        sha256 = hashlib.sha256
        for position, (recorded_id, payload_type, payload, signatures_json) in enumerate(rows):
            digest = sha256(payload).digest()
            leaves.append(sha256(LEAF_PREFIX + digest).digest())
            if "sha256:" + digest.hex() != recorded_id:
                mismatched[position] = "sha256:" + digest.hex()
            verified.append(self._verify(payload_type, payload, signatures_json))
        return Checked(b"".join(leaves), mismatched, verified)

    def _verify(self, payload_type: str, payload: bytes, signatures_json: str) -> tuple[str, str] | None:
        """The key id and signature of the first signature by a key the table holds, if that signature
        verifies."""
        try:
            signatures = _signatures.decode(signatures_json)
        except msgspec.DecodeError:
            return None  # the replay names the broken column
        for signature in signatures:
            known = self._keys.get(signature.keyid)
            if known is None:
                continue
            kid, verify_key = known
            try:
                raw = base64.b64decode(signature.sig, validate=True)
                if len(raw) != SIGNATURE_BYTES:
                    return None
                verify_key.verify(pae(payload_type, payload), raw)
            except (binascii.Error, nacl.exceptions.BadSignatureError):
                return None
            return kid, signature.sig
        return None


_worker_checker: RowChecker | None = None


def start_worker(public_keys: dict[str, bytes]) -> None:
    """Initialise a worker process: keep a :class:`RowChecker` for the keys."""
    global _worker_checker
    _worker_checker = RowChecker(public_keys)


def check_in_worker(rows: Sequence[RowIn]) -> Checked:
    """:meth:`RowChecker.check` in a worker process that :func:`start_worker` initialised."""
    assert _worker_checker is not None, "start_worker has not run in this process"
    return _worker_checker.check(rows)
