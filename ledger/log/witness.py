"""C2SP tlog-witness: the ``add-checkpoint`` request and the witness's decision, as pure functions.

The request body (c2sp.org/tlog-witness, "add-checkpoint")::

    old <size of the checkpoint the client believes the witness last cosigned>
    <consistency proof hash, base64>     (zero to 63 lines)
    <empty line>
    <the new checkpoint, a signed note>

The witness answers 200 with its cosignature line(s), or refuses with the status the specification gives each
case, in this order: 400 malformed request, 404 unknown origin, 403 no valid signature by a trusted log key, 400
old size above the checkpoint's, 409 old size not the one it last cosigned (body: its size, ``text/x.tlog.size``),
422 a size-zero checkpoint whose root is not the empty tree's, a proof given from size zero, a proof that does
not verify, or the same size with another root (a fork).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ledger.log import merkle
from ledger.log.checkpoint import Checkpoint, CheckpointError, open_checkpoint

__all__ = [
    "MAX_PROOF_LINES",
    "SIZE_CONTENT_TYPE",
    "AddCheckpoint",
    "Recorded",
    "WitnessRefusal",
    "format_add_checkpoint",
    "judge",
    "origin_hash",
    "parse_add_checkpoint",
]

MAX_PROOF_LINES = 63
"""c2sp.org/tlog-witness: "The client MUST NOT send more than 63 consistency proof lines"."""

SIZE_CONTENT_TYPE = "text/x.tlog.size"
"""The content type of a 409 answer, whose body is the witness's latest cosigned size."""

_SIZE = re.compile(r"0|[1-9][0-9]{0,18}")


class WitnessRefusal(Exception):
    """The witness does not cosign: ``status`` is the HTTP status the protocol prescribes, the message says why."""

    def __init__(self, status: int, message: str, *, size: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.size = size
        """For 409: the size of the latest checkpoint the witness cosigned for this origin."""


@dataclass(frozen=True)
class AddCheckpoint:
    old_size: int
    proof: tuple[bytes, ...]
    note: str

    @property
    def origin(self) -> str:
        return self.note.split("\n", 1)[0]


@dataclass(frozen=True)
class Recorded:
    """What a witness keeps per log: the latest checkpoint it cosigned."""

    size: int
    root_hash: bytes


def origin_hash(origin: str) -> str:
    """The lowercase hex SHA-256 of a log's origin, which names it on a witness's monitoring prefix."""
    return hashlib.sha256(origin.encode("utf-8")).hexdigest()


def format_add_checkpoint(old_size: int, proof: Sequence[bytes], note: str) -> bytes:
    """The body of an ``add-checkpoint`` request."""
    if len(proof) > MAX_PROOF_LINES:
        raise ValueError(f"a consistency proof of {len(proof)} hashes is longer than the protocol allows")
    lines = [f"old {old_size}", *(base64.b64encode(h).decode("ascii") for h in proof), ""]
    return ("\n".join(lines) + "\n" + note).encode("utf-8")


def parse_add_checkpoint(body: bytes) -> AddCheckpoint:
    """Parse an ``add-checkpoint`` body strictly; :class:`WitnessRefusal` (400) names what is malformed."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise WitnessRefusal(400, "the request body is not UTF-8") from None
    head, blank, note = text.partition("\n\n")
    if not blank:
        raise WitnessRefusal(
            400, "the request has no empty line between the old size and proof, and the checkpoint"
        )
    lines = head.split("\n")
    first = lines[0]
    if not first.startswith("old ") or not _SIZE.fullmatch(first[4:]):
        raise WitnessRefusal(
            400, f"the first line must be 'old <size>' (decimal, no leading zeroes), not {first[:40]!r}"
        )
    old_size = int(first[4:])
    if len(lines) - 1 > MAX_PROOF_LINES:
        raise WitnessRefusal(
            400, f"the request carries {len(lines) - 1} proof lines, more than {MAX_PROOF_LINES}"
        )
    proof = []
    for number, line in enumerate(lines[1:], 2):
        try:
            digest = base64.b64decode(line, validate=True)
        except (binascii.Error, ValueError):
            raise WitnessRefusal(400, f"line {number} is not a base64 hash") from None
        if len(digest) != merkle.HASH_SIZE:
            raise WitnessRefusal(400, f"line {number} decodes to {len(digest)} bytes, not a 32-byte hash")
        proof.append(digest)
    if not note:
        raise WitnessRefusal(400, "the request carries no checkpoint")
    return AddCheckpoint(old_size, tuple(proof), note)


def judge(
    request: AddCheckpoint, log_keys: Mapping[str, Sequence[tuple[str, bytes]]], recorded: Recorded | None
) -> Checkpoint:
    """Decide whether to cosign: the verified checkpoint, or :class:`WitnessRefusal` with the protocol's status.

    ``log_keys`` maps each known origin to the (key name, Ed25519 public key) pairs trusted for it; ``recorded``
    is the latest checkpoint this witness cosigned for the request's origin (None if it never did)."""
    keys = log_keys.get(request.origin)
    if keys is None:
        raise WitnessRefusal(404, f"this witness does not know the log {request.origin[:200]!r}")
    checkpoint = _open_with_any(request.note, keys)
    if request.old_size > checkpoint.size:
        raise WitnessRefusal(
            400, f"the old size {request.old_size} is larger than the checkpoint's size {checkpoint.size}"
        )
    mine = recorded.size if recorded is not None else 0
    if request.old_size != mine:
        raise WitnessRefusal(
            409, f"this witness last cosigned size {mine} of this log, not {request.old_size}", size=mine
        )
    if checkpoint.size == 0 and checkpoint.root_hash != merkle.EMPTY_ROOT:
        raise WitnessRefusal(422, "a checkpoint of size 0 must carry the root of the empty tree")
    if request.old_size == 0:
        if request.proof:
            raise WitnessRefusal(422, "a consistency proof from size 0 must be empty")
        return checkpoint
    assert recorded is not None
    if request.old_size == checkpoint.size:
        if checkpoint.root_hash != recorded.root_hash:
            raise WitnessRefusal(
                422,
                f"this witness cosigned another tree of size {checkpoint.size} of this log (root "
                f"{base64.b64encode(recorded.root_hash).decode()}): the log shows a fork",
            )
        return checkpoint
    try:
        merkle.verify_consistency(
            request.old_size, checkpoint.size, list(request.proof), recorded.root_hash, checkpoint.root_hash
        )
    except merkle.ProofError as exc:
        raise WitnessRefusal(
            422,
            f"the tree of size {checkpoint.size} is not proven an extension of the one of size {request.old_size} "
            f"this witness cosigned: {exc}",
        ) from None
    return checkpoint


def _open_with_any(note: str, keys: Sequence[tuple[str, bytes]]) -> Checkpoint:
    problems = []
    for name, public_key in keys:
        try:
            return open_checkpoint(note, name, public_key)
        except CheckpointError as exc:
            problems.append(str(exc))
    raise WitnessRefusal(
        403, "the checkpoint carries no valid signature by a trusted log key: " + "; ".join(problems)
    )
