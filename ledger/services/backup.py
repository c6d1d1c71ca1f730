"""``ledger export FILE`` and ``ledger import FILE``: a whole ledger moved into an empty database, verified.

The file is JSON Lines (gzip-compressed when its name ends in ``.gz``): a header naming the format, the log's
origin and verifier key and the number of entries; then every entry in log order (its log index, the envelope
exactly as signed, the moment it was accepted); then every signed checkpoint. API tokens are not in it (they are
credentials, not ledger state), nor is any private key.

Importing trusts nothing in the file. Into an empty, migrated database and inside one transaction, it replays
every envelope through the same acceptance rules as the live submit path (signatures, keys valid at the time,
who may do what, hash chains, mass balance), at the moment each was accepted; each must get the log index and
event id the file says. It then folds every entry into the Merkle tree, and each checkpoint must carry the
signature of the pinned log key over the root the replayed log has at that size. Anything wrong aborts the
transaction: a restore that does not verify changes nothing.
"""

from __future__ import annotations

import base64
import gzip
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

import msgspec
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ledger.domain.accept import accept, add_references, prepare
from ledger.domain.dsse import Envelope, Signature
from ledger.domain.keys import b64encode
from ledger.domain.state import WorkingSet
from ledger.errors import Conflict, InvalidInput, LedgerError
from ledger.log import merkle
from ledger.log.checkpoint import parse_verifier_key
from ledger.log.offline import VerificationError, leaf_for_event, open_signed_checkpoint
from ledger.store import repo
from ledger.store.db import write_transaction
from ledger.store.models import CheckpointRow, LogTreeRow, MerkleNodeRow, ParticipantRow

FORMAT = "mineral-ledger-export"
VERSION = 1
CHUNK = 2_000
"""Entries replayed per working set (each chunk's rows are written before the next one is loaded)."""

checkpoints_t: sa.Table = CheckpointRow.__table__  # type: ignore[assignment]
tree_t: sa.Table = LogTreeRow.__table__  # type: ignore[assignment]
nodes_t: sa.Table = MerkleNodeRow.__table__  # type: ignore[assignment]


class Header(msgspec.Struct, forbid_unknown_fields=True):
    format: str
    version: int
    log_origin: str
    log_vkey: str
    entries: int
    checkpoints: int


class Entry(msgspec.Struct, forbid_unknown_fields=True):
    log_index: int
    event_id: str
    envelope: Envelope
    accepted_at: datetime


class SignedCheckpoint(msgspec.Struct, forbid_unknown_fields=True):
    size: int
    root_hash: str
    note: str
    created_at: datetime


class ImportFailed(LedgerError):
    status = 422
    code = "import-failed"
    title = "The export does not verify"


@dataclass(frozen=True)
class Report:
    entries: int
    checkpoints: int
    tree_size: int


def _open(path: Path, mode: str) -> IO[bytes]:
    if path.suffix == ".gz":
        return gzip.open(path, mode + "b")  # type: ignore[return-value]
    return path.open(mode + "b")


_encoder = msgspec.json.Encoder()


async def export(engine: AsyncEngine, path: Path, log_origin: str, log_vkey: str) -> Report:
    """Write every entry and checkpoint of the ledger at ``engine`` to ``path``, in one consistent snapshot."""
    async with engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            await conn.execute(sa.text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"))
        size = int(
            await conn.scalar(sa.select(repo.log_state_t.c.size).where(repo.log_state_t.c.id == 1)) or 0
        )
        checkpoints = (
            await conn.execute(sa.select(checkpoints_t).where(checkpoints_t.c.size <= size).order_by("size"))
        ).all()
        with _open(path, "w") as out:
            header = Header(FORMAT, VERSION, log_origin, log_vkey.strip(), size, len(checkpoints))
            out.write(_encoder.encode({"header": header}) + b"\n")
            for start in range(0, size, CHUNK):
                rows = await conn.execute(
                    sa.select(repo.events_t)
                    .where(
                        repo.events_t.c.log_index >= start,
                        repo.events_t.c.log_index < min(size, start + CHUNK),
                    )
                    .order_by(repo.events_t.c.log_index)
                )
                for row in rows:
                    envelope = Envelope(
                        payloadType=row.payload_type,
                        payload=b64encode(bytes(row.payload)),
                        signatures=msgspec.json.decode(row.signatures, type=list[Signature]),
                    )
                    entry = Entry(row.log_index, row.event_id, envelope, row.accepted_at)
                    out.write(_encoder.encode({"entry": entry}) + b"\n")
            for cp in checkpoints:
                signed = SignedCheckpoint(cp.size, b64encode(bytes(cp.root_hash)), cp.note, cp.created_at)
                out.write(_encoder.encode({"checkpoint": signed}) + b"\n")
    return Report(size, len(checkpoints), size)


class _Line(msgspec.Struct, forbid_unknown_fields=True):
    header: Header | None = None
    entry: Entry | None = None
    checkpoint: SignedCheckpoint | None = None


_line_decoder = msgspec.json.Decoder(_Line)


def _lines(stream: IO[bytes], wanted: tuple[bytes, ...] = ()) -> Iterator[tuple[int, _Line]]:
    """The file's lines, decoded; with ``wanted``, only the lines starting with one of those prefixes."""
    for number, raw in enumerate(stream, 1):
        if not raw.strip() or (wanted and not raw.startswith(wanted)):
            continue
        try:
            yield number, _line_decoder.decode(raw)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            raise ImportFailed(
                f"line {number} of the export is not an entry, a checkpoint or the header: {exc}"
            ) from None


async def import_ledger(
    engine: AsyncEngine,
    path: Path,
    log_vkey: str,
    *,
    clock_skew: timedelta = timedelta(minutes=5),
    progress: Callable[[int, int], None] | None = None,
) -> Report:
    """Replay the export at ``path`` into the empty ledger at ``engine``, checking it against ``log_vkey`` (the
    log's verifier key, pinned by the operator, not taken from the file); change nothing unless all of it
    verifies. ``progress(done, total)`` hears how many entries are replayed.

    Two passes over the file: the header and the signed checkpoints first (each signature is checked before any
    entry is replayed), then the entries, whose tree root is taken at every checkpoint's size on the way."""
    origin, public_key = parse_verifier_key(log_vkey.strip())
    header, checkpoints = _header_and_checkpoints(path, origin, log_vkey)
    wanted_roots = sorted({cp.size for cp in checkpoints})
    roots: dict[int, bytes] = {}
    async with write_transaction(engine) as conn:
        await _require_empty(conn)
        await repo.lock_sequencer(conn)
        ws = _working_set(0, False, public_key)
        frontier = merkle.Frontier.empty()
        pending: list[Entry] = []
        with _open(path, "r") as stream:
            for _, line in _lines(stream, (b'{"entry"',)):
                assert line.entry is not None
                pending.append(line.entry)
                if len(pending) >= CHUNK:
                    ws, frontier = await _replay(conn, ws, pending, frontier, clock_skew, wanted_roots, roots)
                    pending = []
                    if progress is not None:
                        progress(frontier.size, header.entries)
        if pending:
            ws, frontier = await _replay(conn, ws, pending, frontier, clock_skew, wanted_roots, roots)
        if progress is not None:
            progress(frontier.size, header.entries)
        if frontier.size != header.entries:
            raise ImportFailed(
                f"the header announces {header.entries} entries; the file holds {frontier.size} (a truncated "
                "export?)"
            )
        for checkpoint in checkpoints:
            _check_root(checkpoint, roots.get(checkpoint.size))
            await conn.execute(
                checkpoints_t.insert().values(
                    size=checkpoint.size,
                    root_hash=base64.b64decode(checkpoint.root_hash),
                    note=checkpoint.note,
                    created_at=checkpoint.created_at,
                )
            )
        await conn.execute(
            tree_t.update().where(tree_t.c.id == 1).values(size=frontier.size, frontier=frontier.to_bytes())
        )
    return Report(frontier.size, len(checkpoints), frontier.size)


def _working_set(next_index: int, registrar_exists: bool, log_key: bytes | None) -> WorkingSet:
    ws = WorkingSet(next_index=next_index, registrar_exists=registrar_exists, log_key=log_key)
    ws.check_balance = False  # credits are the eligibility engine's view when a claim was accepted
    return ws


def _header_and_checkpoints(path: Path, origin: str, log_vkey: str) -> tuple[Header, list[SignedCheckpoint]]:
    header: Header | None = None
    checkpoints: list[SignedCheckpoint] = []
    with _open(path, "r") as stream:
        for number, line in _lines(stream, (b'{"header"', b'{"checkpoint"')):
            if line.header is not None:
                if number != 1:
                    raise ImportFailed(f"line {number}: a header; the header is the first line only")
                header = _check_header(line.header, origin, log_vkey)
            elif line.checkpoint is not None:
                if header is None:
                    raise ImportFailed("the first line is not the export's header")
                _check_signature(line.checkpoint, log_vkey)
                checkpoints.append(line.checkpoint)
    if header is None:
        raise ImportFailed("the first line is not the export's header")
    if len(checkpoints) != header.checkpoints:
        raise ImportFailed(
            f"the header announces {header.checkpoints} checkpoints; the file holds {len(checkpoints)}"
        )
    sizes = [cp.size for cp in checkpoints]
    if sizes != sorted(set(sizes)):
        raise ImportFailed("the checkpoints are not in increasing order of size, or one size appears twice")
    return header, checkpoints


async def _require_empty(conn: AsyncConnection) -> None:
    size = int(await conn.scalar(sa.select(repo.log_state_t.c.size).where(repo.log_state_t.c.id == 1)) or 0)
    anyone = await conn.scalar(sa.select(sa.func.count()).select_from(ParticipantRow.__table__))
    if size or anyone:
        raise Conflict(
            f"the target database already holds a ledger ({size} log entries); import into an empty, migrated "
            "database (`ledger db upgrade` on a new one), never over an existing ledger"
        )


def _check_header(header: Header, origin: str, log_vkey: str) -> Header:
    if header.format != FORMAT or header.version != VERSION:
        raise ImportFailed(
            f"not a ledger export of version {VERSION} (format {header.format!r} {header.version})"
        )
    if header.log_vkey.strip() != log_vkey.strip() or header.log_origin != origin:
        raise ImportFailed(
            f"the export is of the log {header.log_origin!r} with key {header.log_vkey!r}, not the pinned "
            f"{log_vkey.strip()!r}; pin the key of the ledger you mean to restore with --log-key"
        )
    return header


async def _replay(
    conn: AsyncConnection,
    ws: WorkingSet,
    entries: list[Entry],
    frontier: merkle.Frontier,
    clock_skew: timedelta,
    wanted_roots: list[int],
    roots: dict[int, bytes],
) -> tuple[WorkingSet, merkle.Frontier]:
    """Accept ``entries`` exactly as the log recorded them, write them with their tree nodes, and note the tree's
    root at every wanted size they reach."""
    prepared = []
    refs: dict[str, set[str]] = {}
    for entry in entries:
        try:
            item = prepare(entry.envelope)
        except LedgerError as error:
            raise ImportFailed(f"entry {entry.log_index}: {error.detail}") from None
        if item.event_id != entry.event_id:
            raise ImportFailed(
                f"entry {entry.log_index}: the payload hashes to {item.event_id}, not the {entry.event_id} "
                "recorded"
            )
        prepared.append((entry, item))
        add_references(refs, item)
    await repo.load(ws, conn, refs, {item.event_id for _, item in prepared})
    for entry, item in prepared:
        if entry.log_index != ws.next_index:
            raise ImportFailed(f"entry {entry.log_index} comes where log index {ws.next_index} belongs")
        if item.event_id in ws.known_event_ids:
            raise ImportFailed(f"entry {entry.log_index}: event {item.event_id} is already in the log")
        try:
            accept(ws, item, submitter=None, now=entry.accepted_at, clock_skew=clock_skew)
        except LedgerError as error:
            raise ImportFailed(
                f"entry {entry.log_index} ({item.kind}) is refused on replay: {error.detail}"
            ) from None
    await repo.flush(ws, conn)
    leaves = [leaf_for_event(item.event_id) for _, item in prepared]
    start, nodes = frontier.size, []
    position = 0
    for size in wanted_roots:
        if start < size <= start + len(leaves):
            frontier, made = merkle.append(frontier, leaves[position : size - start])
            nodes += made
            position = size - start
            roots[size] = frontier.root()
    frontier, made = merkle.append(frontier, leaves[position:])
    nodes += made
    await conn.execute(nodes_t.insert(), [{"level": lv, "idx": ix, "hash": h} for lv, ix, h in nodes])
    return _working_set(ws.next_index, ws.registrar_exists, ws.log_key), frontier


def _check_signature(checkpoint: SignedCheckpoint, log_vkey: str) -> None:
    try:
        opened = open_signed_checkpoint(checkpoint.note, log_vkey)
    except VerificationError as error:
        raise ImportFailed(f"checkpoint of size {checkpoint.size}: {error}") from None
    if opened.size != checkpoint.size or b64encode(opened.root_hash) != checkpoint.root_hash:
        raise ImportFailed(
            f"checkpoint of size {checkpoint.size}: its signed note and its recorded size or root differ"
        )


def _check_root(checkpoint: SignedCheckpoint, root: bytes | None) -> None:
    if root is None:
        raise ImportFailed(f"checkpoint of size {checkpoint.size} is beyond the log's entries")
    if b64encode(root) != checkpoint.root_hash:
        raise ImportFailed(
            f"checkpoint of size {checkpoint.size} signs root {checkpoint.root_hash}, but the replayed log has "
            f"root {b64encode(root)} at that size: entries were changed after it was signed"
        )


def read_header(path: Path) -> dict[str, Any]:
    """The export's header, for a person to read before importing."""
    with _open(path, "r") as stream:
        first = stream.readline()
    try:
        line = _line_decoder.decode(first)
    except (msgspec.ValidationError, msgspec.DecodeError):
        raise InvalidInput(f"{path} does not start with a ledger export header") from None
    if line.header is None:
        raise InvalidInput(f"{path} does not start with a ledger export header")
    return msgspec.to_builtins(line.header)  # type: ignore[no-any-return]


async def registrar_of(engine: AsyncEngine) -> str | None:
    """The participant holding the registrar role, if any (after an import, to issue it a fresh token)."""
    async with engine.connect() as conn:
        rows = await conn.execute(sa.select(repo.participants_t.c.id, repo.participants_t.c.roles))
        return next((pid for pid, roles in rows if "registrar" in json.loads(roles)), None)


# --- mirroring a live ledger --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MirrorRound:
    before: int
    after: int


class MirrorRefused(ImportFailed):
    code = "mirror-refused"
    title = "The source's log does not verify"


async def mirror_round(
    engine: AsyncEngine, url: str, token: str, log_vkey: str, note: str | None = None
) -> MirrorRound:
    """Bring the mirror at ``engine`` up to the source's latest checkpoint, or change nothing.

    The source's checkpoint must carry the pinned key's signature; if the mirror already holds a checkpoint, the
    source must prove the new one consistent with it (RFC 9162), so a source that rewrote or forked what the
    mirror copied is caught. The new entries are then replayed through the acceptance rules, and the tree they make
    must have the signed root. Each round commits at a verified checkpoint, so an interrupted mirror resumes."""
    import httpx

    from ledger.log.offline import verify_consistency

    _, public_key = parse_verifier_key(log_vkey.strip())
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=url.rstrip("/"), headers=headers, timeout=60) as client:
        if note is None:  # else the caller fetched (and checked) the checkpoint to bring the mirror up to
            response = await client.get("/v1/log/checkpoint")
            if response.status_code != 200:
                raise MirrorRefused(
                    f"the source answered {response.status_code} to /v1/log/checkpoint: {response.text[:300]}"
                )
            note = response.text
        try:
            latest = open_signed_checkpoint(note, log_vkey)
        except VerificationError as error:
            raise MirrorRefused(f"the source's checkpoint: {error}") from None
        checkpoint = SignedCheckpoint(latest.size, b64encode(latest.root_hash), note, datetime.now(UTC))
        async with write_transaction(engine) as conn:
            before = await repo.lock_sequencer(conn)
            mine = (
                await conn.execute(sa.select(checkpoints_t).order_by(checkpoints_t.c.size.desc()).limit(1))
            ).first()
            if mine is not None:
                if latest.size < mine.size:
                    raise MirrorRefused(
                        f"the source's latest checkpoint has {latest.size} entries, fewer than the {mine.size} this "
                        "mirror already verified: the source rolled its log back"
                    )
                held = open_signed_checkpoint(mine.note, log_vkey)
                if latest.size == mine.size:
                    if latest.root_hash != held.root_hash:
                        raise MirrorRefused(
                            f"the source shows another tree of size {latest.size}: a split view"
                        )
                    return MirrorRound(before, before)
                proof = await _get(
                    client, "/v1/log/proofs/consistency", params={"first": mine.size, "second": latest.size}
                )
                try:
                    verify_consistency(held, latest, proof)
                except VerificationError as error:
                    raise MirrorRefused(
                        f"the source's tree of {latest.size} entries is not an extension of the {mine.size} this "
                        f"mirror holds: {error}"
                    ) from None
            tree = (await conn.execute(sa.select(tree_t).where(tree_t.c.id == 1))).one()
            frontier = merkle.Frontier.from_bytes(bytes(tree.frontier))
            if frontier.size != before:
                raise MirrorRefused(
                    f"this mirror's tree covers {frontier.size} of its {before} entries; audit it"
                )
            ws = _working_set(before, await repo.registrar_exists(conn), public_key)
            roots: dict[int, bytes] = {}
            start = before
            while start < latest.size:
                page = await _get(client, "/v1/log/entries", params={"start": start, "end": latest.size})
                entries = [_entry_of(item) for item in page["entries"]]
                if not entries:
                    raise MirrorRefused(f"the source returned no entries from {start} on")
                ws, frontier = await _replay(
                    conn, ws, entries, frontier, timedelta(minutes=5), [latest.size], roots
                )
                start = frontier.size
            _check_root(
                checkpoint, roots.get(latest.size, frontier.root() if frontier.size == latest.size else None)
            )
            if mine is None or mine.size != latest.size:
                await conn.execute(
                    checkpoints_t.insert().values(
                        size=latest.size, root_hash=latest.root_hash, note=note, created_at=datetime.now(UTC)
                    )
                )
            await conn.execute(
                tree_t.update()
                .where(tree_t.c.id == 1)
                .values(size=frontier.size, frontier=frontier.to_bytes())
            )
    return MirrorRound(before, latest.size)


async def _get(client: Any, path: str, params: dict[str, int] | None = None) -> dict[str, Any]:
    response = await client.get(path, params=params)
    if response.status_code != 200:
        raise MirrorRefused(f"the source answered {response.status_code} to {path}: {response.text[:300]}")
    document: dict[str, Any] = response.json()
    return document


def _entry_of(item: dict[str, Any]) -> Entry:
    envelope = item.get("envelope")
    if envelope is None:
        raise MirrorRefused(
            f"the source withheld the envelope of entry {item.get('log_index')}: mirror with a token of the "
            "registrar, an auditor or customs, who see every envelope"
        )
    try:
        return msgspec.convert(
            {
                "log_index": item["log_index"],
                "event_id": item["event_id"],
                "envelope": envelope,
                "accepted_at": item["accepted_at"],
            },
            Entry,
        )
    except (KeyError, msgspec.ValidationError) as error:
        raise MirrorRefused(f"the source sent a malformed entry: {error}") from None
