"""The witness we ship: ``ledger witness serve``, a C2SP tlog-witness for any log that speaks the protocol.

Its state is one SQLite file in its own directory, apart from any ledger: per log origin, the latest checkpoint it
cosigned (size, root, the note with its own cosignature), and the refused requests that carried a valid log
signature, which are evidence of a log's misbehaviour (c2sp.org/tlog-witness: "the witness MAY log the request").
Checking the old size and recording the new checkpoint happen in one ``BEGIN IMMEDIATE`` transaction, so two
concurrent requests cannot roll the witness back (the race the specification describes).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import anyio.to_thread
from litestar import Litestar, Request, Response, get, post
from litestar.params import PathParameter
from nacl.signing import SigningKey

from ledger.log.checkpoint import CheckpointError, parse_verifier_key
from ledger.log.cosignature import (
    add_signature_lines,
    cosign,
    log_signed_only,
    parse_witness_signer_key,
    witness_vkey,
)
from ledger.log.witness import (
    SIZE_CONTENT_TYPE,
    Recorded,
    WitnessRefusal,
    judge,
    origin_hash,
    parse_add_checkpoint,
)

log = logging.getLogger("ledger.witness")

STATE_FILE = "witness.db"

MAX_EVIDENCE_ROWS = 10_000
"""Refused, validly signed requests kept as evidence at most (each up to 64 KiB)."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS logs (
    origin TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    root_hash BLOB NOT NULL,
    note TEXT NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS evidence (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    origin TEXT NOT NULL,
    status INTEGER NOT NULL,
    reason TEXT NOT NULL,
    request BLOB NOT NULL,
    received_at REAL NOT NULL
);
"""


@dataclass(frozen=True)
class Answer:
    """An HTTP answer of the witness: status, body and content type."""

    status: int
    body: str
    content_type: str = "text/plain; charset=utf-8"


class WitnessService:
    """A witness: its cosigning key, the log keys it trusts (by origin), and its state directory."""

    def __init__(self, key_text: str, log_vkeys: Sequence[str], state_dir: Path) -> None:
        self.name, self._seed = parse_witness_signer_key(key_text)
        self.vkey = witness_vkey(self.name, SigningKey(self._seed).verify_key.encode())
        self.log_keys: dict[str, list[tuple[str, bytes]]] = {}
        for vkey in log_vkeys:
            name, public_key = parse_verifier_key(vkey.strip())
            # c2sp.org/tlog-checkpoint: a log's key name is its origin
            self.log_keys.setdefault(name, []).append((name, public_key))
        if not self.log_keys:
            raise CheckpointError("a witness needs at least one log to witness: give its key with --log")
        state_dir.mkdir(parents=True, exist_ok=True)
        self._path = state_dir / STATE_FILE
        self._lock = threading.Lock()
        with self._db() as db:
            db.executescript(_SCHEMA)

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self._path, isolation_level=None, timeout=30)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            yield db
        finally:
            db.close()

    def add_checkpoint(self, body: bytes, now: float | None = None) -> Answer:
        """Handle ``POST add-checkpoint``: cosign and record, or refuse as the protocol says."""
        try:
            request = parse_add_checkpoint(body)
        except WitnessRefusal as refusal:
            return Answer(refusal.status, f"{refusal}\n")
        timestamp = int(now if now is not None else time.time())
        with self._lock, self._db() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                row = db.execute(
                    "SELECT size, root_hash FROM logs WHERE origin = ?", (request.origin,)
                ).fetchone()
                recorded = Recorded(int(row[0]), bytes(row[1])) if row else None
                try:
                    checkpoint = judge(request, self.log_keys, recorded)
                except WitnessRefusal as refusal:
                    # a validly signed checkpoint that does not extend what this witness saw is evidence of the
                    # log's misbehaviour; a 409 is not (a restarted or racing client); the table is bounded
                    if refusal.status == 422 and self._evidence_rows(db) < MAX_EVIDENCE_ROWS:
                        db.execute(
                            "INSERT INTO evidence (origin, status, reason, request, received_at) "
                            "VALUES (?, ?, ?, ?, ?)",
                            (request.origin, refusal.status, str(refusal), body, time.time()),
                        )
                    db.execute("COMMIT")
                    if refusal.status == 422:
                        log.warning("refused checkpoint of %s: %s", request.origin, refusal)
                    if refusal.status == 409:
                        return Answer(409, f"{refusal.size}\n", SIZE_CONTENT_TYPE)
                    return Answer(refusal.status, f"{refusal}\n")
                line = cosign(checkpoint, self.name, self._seed, timestamp)
                # what monitors are served: the body, the log's own (verified) signature lines and this witness's
                # cosignature; never other lines the client sent, which nobody here checked
                note = add_signature_lines(
                    log_signed_only(request.note, self.log_keys[request.origin]), [line]
                )
                db.execute(
                    "INSERT INTO logs (origin, size, root_hash, note, updated_at) VALUES (?, ?, ?, ?, ?) "
                    "ON CONFLICT (origin) DO UPDATE SET size = excluded.size, root_hash = excluded.root_hash, "
                    "note = excluded.note, updated_at = excluded.updated_at",
                    (request.origin, checkpoint.size, checkpoint.root_hash, note, time.time()),
                )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return Answer(200, line)

    @staticmethod
    def _evidence_rows(db: sqlite3.Connection) -> int:
        return int(db.execute("SELECT count(*) FROM evidence").fetchone()[0])

    def latest(self, hashed_origin: str) -> Answer:
        """Handle ``GET <origin hash>/checkpoint``: the latest checkpoint cosigned for that log, with its own
        cosignature and the log's signature."""
        wanted = {origin_hash(origin): origin for origin in self.log_keys}
        origin = wanted.get(hashed_origin.lower())
        if origin is not None:
            with self._db() as db:
                row = db.execute("SELECT note FROM logs WHERE origin = ?", (origin,)).fetchone()
            if row is not None:
                return Answer(200, str(row[0]))
        return Answer(404, "this witness has cosigned no checkpoint of that log\n")

    def state(self) -> Mapping[str, tuple[int, bytes]]:
        """Per origin, the size and root this witness last cosigned."""
        with self._db() as db:
            return {
                o: (int(s), bytes(r)) for o, s, r in db.execute("SELECT origin, size, root_hash FROM logs")
            }

    def evidence(self) -> list[tuple[str, int, str]]:
        """The refused, validly signed requests: (origin, status, reason), oldest first."""
        with self._db() as db:
            return [
                (str(o), int(s), str(r))
                for o, s, r in db.execute("SELECT origin, status, reason FROM evidence ORDER BY id")
            ]


def create_witness_app(service: WitnessService) -> Litestar:
    """The witness's HTTP interface (c2sp.org/tlog-witness): ``POST /add-checkpoint`` and
    ``GET /<origin hash>/checkpoint``, submission and monitoring prefix both the root; plus ``GET /healthz``."""

    @post("/add-checkpoint", status_code=200)
    async def add_checkpoint(request: Request[Any, Any, Any]) -> Response[str]:
        body = await request.body()
        answer = await anyio.to_thread.run_sync(service.add_checkpoint, body)
        return Response(answer.body, status_code=answer.status, media_type=answer.content_type)

    @get("/{hashed:str}/checkpoint")
    async def latest(hashed: Annotated[str, PathParameter()]) -> Response[str]:
        answer = await anyio.to_thread.run_sync(service.latest, hashed)
        return Response(answer.body, status_code=answer.status, media_type=answer.content_type)

    @get("/healthz")
    async def healthz() -> dict[str, object]:
        return {"status": "ok", "witness": service.vkey, "logs": sorted(service.log_keys)}

    return Litestar(route_handlers=[add_checkpoint, latest, healthz], request_max_body_size=64 * 1024)
