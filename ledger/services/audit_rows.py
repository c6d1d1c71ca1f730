"""The checks ``ledger audit`` makes of each events row without the ledger's state, run in worker processes.

For every row: the SHA-256 of the payload against the recorded event id, the RFC 9162 leaf hash (section 2.1.1)
of the digest the event id names, the Ed25519 signature by the first key the envelope names that the keys table
holds, and the payload decoded with :func:`ledger.domain.events.decode_payload` (canonical form, schema,
vocabularies). These are most of the audit's work, and none of it depends on the replay, so the audit runs them
on pieces of the log in worker processes (each with its own interpreter lock) while its main process replays the
pieces before. Inputs and results are plain data, cheap to send between processes: a decoded event comes back
pickled, which rebuilds the very same struct in a fraction of the time decoding it again would take.

A signature found good here only spares the replay from checking it again: the replay still decides whether the
key was valid for its event, and checks the signature itself when it settles on another key. A payload that
does not decode comes back as None, and the replay decodes it itself, for the error.
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

from ledger.domain import events as ev
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

    leaves: list[bytes]
    """The leaf hash of every row's payload."""
    mismatched: dict[int, str]
    """Position in the piece -> the event id its payload hashes to, for the rows whose recorded id differs."""
    verified: frozenset[tuple[str, str]]
    """(event id, key id) of the signatures that verify."""
    events: list[ev.Event | None]
    """Every row's payload as :func:`ledger.domain.events.decode_payload` decodes it (None if it refuses it)."""


_signatures = msgspec.json.Decoder(list[Signature])


class RowChecker:
    """Checks pieces of the log against the public keys of the keys table."""

    def __init__(self, public_keys: dict[str, bytes]) -> None:
        # A key id is the SHA-256 of its key, so a key filed under another id verifies nothing here (the replay
        # then checks that event's signature itself, against the key the log registered).
        self._keys: dict[str, nacl.signing.VerifyKey] = {}
        for kid, public_key in public_keys.items():
            if key_id(public_key) == kid:
                try:
                    self._keys[kid] = nacl.signing.VerifyKey(public_key)
                except (TypeError, ValueError):
                    continue

    def check(self, rows: Sequence[RowIn]) -> Checked:
        leaves: list[bytes] = []
        mismatched: dict[int, str] = {}
        verified: set[tuple[str, str]] = set()
        events: list[ev.Event | None] = []
        sha256, b64decode, keys, decode_payload = (
            hashlib.sha256,
            base64.b64decode,
            self._keys,
            ev.decode_payload,
        )
        for position, (recorded_id, payload_type, payload, signatures_json) in enumerate(rows):
            digest = sha256(payload).digest()
            leaves.append(sha256(LEAF_PREFIX + digest).digest())
            computed_id = "sha256:" + digest.hex()
            if computed_id != recorded_id:
                mismatched[position] = computed_id
            try:
                events.append(decode_payload(payload))
            except Exception:  # whatever it is, the replay decodes the payload again and meets it there
                events.append(None)
            try:
                signatures = _signatures.decode(signatures_json)
            except msgspec.DecodeError:
                continue  # the replay names the broken column
            for signature in signatures:
                verify_key = keys.get(signature.keyid)
                if verify_key is None:
                    continue
                try:
                    raw = b64decode(signature.sig, validate=True)
                    if len(raw) == SIGNATURE_BYTES:
                        verify_key.verify(pae(payload_type, payload), raw)
                        verified.add((computed_id, signature.keyid))
                except (binascii.Error, nacl.exceptions.BadSignatureError):
                    pass
                break
        return Checked(leaves, mismatched, frozenset(verified), events)


_worker_checker: RowChecker | None = None


def start_worker(public_keys: dict[str, bytes]) -> None:
    """Initialise a worker process: keep a :class:`RowChecker` for the keys."""
    global _worker_checker
    _worker_checker = RowChecker(public_keys)


def check_in_worker(rows: Sequence[RowIn]) -> Checked:
    """:meth:`RowChecker.check` in a worker process that :func:`start_worker` initialised."""
    assert _worker_checker is not None, "start_worker has not run in this process"
    return _worker_checker.check(rows)
