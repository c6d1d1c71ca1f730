"""The log refuses to shrink: the last checkpoint it signed is kept outside the database, and a new one is signed
only if its tree provably extends that one.

An insider with the database can delete or renumber events, rebuild the Merkle tree and let the server sign the
result; ``ledger audit`` then passes, because the database agrees with itself. The file here is the server's own
memory of what it already told the world. Before each signature the integrator checks, from the nodes in the
database, an RFC 9162 consistency proof from the remembered checkpoint to the new tree; a smaller tree, another
root at the same size or a failed proof is refused loudly (a critical log line, ``/readyz`` answers 503 and the
metric ``ledger_log_guard_refusing`` is 1) and nothing is signed until an operator looks.

The file is replaced atomically (write, fsync, rename) inside the integrator's transaction, before it commits, so
it is never behind a checkpoint the database holds.
"""

from __future__ import annotations

import base64
import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path

from ledger.errors import LogRefusesToSign
from ledger.log import merkle
from ledger.log.checkpoint import Checkpoint, CheckpointError
from ledger.log.cosignature import note_text_and_lines

log = logging.getLogger("ledger.log")

NodeFetcher = Callable[[list[merkle.NodeId]], Awaitable[Mapping[merkle.NodeId, bytes]]]


class LogRollback(LogRefusesToSign):
    """The log was asked to sign a checkpoint that does not extend the last one it signed (503: nothing is signed
    until an operator looks)."""


class Superseded(Exception):
    """The checkpoint does not extend the last one signed because another integrator signed a larger tree after this
    one was read: nothing is refused, the round is simply late (the next one reads the larger tree)."""


class LogGuard:
    """The last signed checkpoint, kept in ``path`` (``None``: no guard, for tools that sign nothing)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.refusal: str | None = None
        """Why the last signing was refused (None while all is well)."""
        self._last: Checkpoint | None = None
        """The last signed checkpoint, once read or recorded by this process (the file is read once)."""

    def last(self) -> Checkpoint | None:
        if self._last is not None:
            return self._last
        if self.path is None or not self.path.exists():
            return None
        try:
            text, _ = note_text_and_lines(self.path.read_text(encoding="utf-8"))
            self._last = Checkpoint.parse(text)
            return self._last
        except (OSError, UnicodeDecodeError, CheckpointError) as exc:
            raise LogRollback(
                f"the record of the last signed checkpoint, {self.path}, cannot be read ({exc}); the log will not "
                "sign until it is restored from a backup of this host"
            ) from None

    async def check(
        self,
        checkpoint: Checkpoint,
        fetch: NodeFetcher,
        overtaken: Callable[[int], Awaitable[bool]] | None = None,
    ) -> None:
        """Refuse (:class:`LogRollback`) unless ``checkpoint`` extends the last signed one; the consistency proof is
        built from the database's nodes with ``fetch`` and checked against the remembered root.

        ``overtaken``, for a checkpoint built outside the integrator's lock (SQLite's integrator reads its tree
        before it takes the write lock), is asked, when ``checkpoint`` is smaller than the last one signed, whether
        the database's tree now holds at least that many entries (the size is passed): if so, another integrator
        signed a larger tree after this one was read, and the refusal is :class:`Superseded`, not reported. Nothing
        is signed either way, and the next round checks the tree as it then is."""
        try:
            await self._check(checkpoint, fetch)
        except LogRollback as exc:
            last = self._last
            smaller = last is not None and checkpoint.size < last.size
            if smaller and overtaken is not None and last is not None and await overtaken(last.size):
                raise Superseded(str(exc)) from None
            if self.refusal != str(exc):
                log.critical("REFUSING TO SIGN a checkpoint: %s", exc)
            self.refusal = str(exc)
            raise
        self.refusal = None

    async def _check(self, checkpoint: Checkpoint, fetch: NodeFetcher) -> None:
        last = self.last()
        if last is None:
            return
        where = f"(the last signed checkpoint is kept in {self.path})"
        if last.origin != checkpoint.origin:
            raise LogRollback(
                f"this host last signed checkpoints of the log {last.origin!r}, not {checkpoint.origin!r} {where}"
            )
        root = base64.b64encode(last.root_hash).decode()
        if checkpoint.size < last.size:
            raise LogRollback(
                f"the database's tree has {checkpoint.size} entries, fewer than the {last.size} (root {root}) this "
                f"log already signed: the log was rolled back or entries were deleted {where}"
            )
        if checkpoint.size == last.size:
            if checkpoint.root_hash != last.root_hash:
                raise LogRollback(
                    f"the database's tree of {checkpoint.size} entries has another root than the one this log "
                    f"signed ({root}): entries were rewritten {where}"
                )
            return
        wanted = merkle.consistency_proof_nodes(last.size, checkpoint.size)
        try:
            nodes = await fetch(wanted)
            proof = merkle.consistency_proof(last.size, checkpoint.size, nodes)
            merkle.verify_consistency(last.size, checkpoint.size, proof, last.root_hash, checkpoint.root_hash)
        except (merkle.ProofError, merkle.MissingNodeError) as exc:
            raise LogRollback(
                f"the database's tree of {checkpoint.size} entries does not extend the tree of {last.size} entries "
                f"(root {root}) this log signed: {exc} {where}"
            ) from None

    def record(self, note: str) -> None:
        """Remember ``note`` as the last signed checkpoint (atomically, durably)."""
        if self.path is None:
            return
        text, _ = note_text_and_lines(note)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_name(self.path.name + ".tmp")
        with open(temporary, "w", encoding="utf-8") as stream:
            stream.write(note)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, self.path)
        directory = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
        self._last = Checkpoint.parse(text)
