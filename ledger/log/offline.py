"""Offline verification of checkpoints and proofs, as served by ``/v1/log``: no database, no network.

These are the same ``merkle`` and ``checkpoint`` functions the server builds proofs with, seen from the other
side. Every failure raises :class:`VerificationError` with a sentence naming what failed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Mapping
from typing import Any

from ledger.log import merkle
from ledger.log.checkpoint import Checkpoint, CheckpointError, open_checkpoint, parse_verifier_key


class VerificationError(Exception):
    """Something does not verify; the message says what."""


def _b64(value: Any, what: str) -> bytes:
    if not isinstance(value, str):
        raise VerificationError(f"{what} must be a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise VerificationError(f"{what} is not valid base64") from None


def _int(document: Mapping[str, Any], field: str) -> int:
    value = document.get(field)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise VerificationError(f"the proof's {field} must be a non-negative integer")
    return value


def open_signed_checkpoint(note: str, vkey: str) -> Checkpoint:
    """Verify the checkpoint's signature by the log key ``vkey`` (C2SP vkey string) and parse it."""
    try:
        name, public_key = parse_verifier_key(vkey.strip())
        return open_checkpoint(note, name, public_key)
    except CheckpointError as exc:
        raise VerificationError(f"checkpoint does not verify: {exc}") from None


def leaf_for_event(event_id: str) -> bytes:
    """The log's leaf hash of an event: SHA-256(0x00 || the 32-byte payload digest its id names)."""
    if not event_id.startswith("sha256:") or len(event_id) != 71:
        raise VerificationError(f"{event_id!r} is not an event id (sha256: + 64 hex digits)")
    try:
        return merkle.leaf_hash(bytes.fromhex(event_id[7:]))
    except ValueError:
        raise VerificationError(f"{event_id!r} is not an event id (sha256: + 64 hex digits)") from None


def verify_inclusion(checkpoint: Checkpoint, proof: Mapping[str, Any], payload: bytes | None = None) -> None:
    """Check that the event the proof names is in the tree the checkpoint commits to.

    The leaf hash is recomputed from the event id (and the event id from ``payload`` when given), never taken
    from the proof document.
    """
    event_id = proof.get("event_id")
    if not isinstance(event_id, str):
        raise VerificationError("the proof names no event_id")
    if payload is not None:
        computed = "sha256:" + hashlib.sha256(payload).hexdigest()
        if computed != event_id:
            raise VerificationError(
                f"the envelope's payload hashes to {computed}, but the proof is for {event_id}"
            )
    index, size = _int(proof, "log_index"), _int(proof, "tree_size")
    if size != checkpoint.size:
        raise VerificationError(
            f"the proof is for a tree of size {size} but the checkpoint is of size {checkpoint.size}; "
            "ask the log for a proof at the checkpoint's size"
        )
    hashes = proof.get("hashes")
    if not isinstance(hashes, list):
        raise VerificationError("the proof has no list of hashes")
    path = [_b64(h, f"hashes[{i}]") for i, h in enumerate(hashes)]
    try:
        merkle.verify_inclusion(leaf_for_event(event_id), index, size, path, checkpoint.root_hash)
    except merkle.ProofError as exc:
        raise VerificationError(f"inclusion proof for {event_id} fails: {exc}") from None


def verify_consistency(old: Checkpoint, new: Checkpoint, proof: Mapping[str, Any]) -> None:
    """Check that the tree of ``new`` extends the tree of ``old`` without changing any of its entries."""
    if old.origin != new.origin:
        raise VerificationError(f"the checkpoints are of different logs: {old.origin!r} and {new.origin!r}")
    first, second = _int(proof, "first"), _int(proof, "second")
    if (first, second) != (old.size, new.size):
        raise VerificationError(
            f"the proof is between sizes {first} and {second}, the checkpoints are of sizes {old.size} and {new.size}"
        )
    hashes = proof.get("hashes")
    if not isinstance(hashes, list):
        raise VerificationError("the proof has no list of hashes")
    path = [_b64(h, f"hashes[{i}]") for i, h in enumerate(hashes)]
    try:
        merkle.verify_consistency(first, second, path, old.root_hash, new.root_hash)
    except merkle.ProofError as exc:
        raise VerificationError(f"consistency proof from size {first} to {second} fails: {exc}") from None
