"""``ledger export`` / ``ledger import``: a whole ledger (the demo supply chain: registry, custody, attestations,
profiles, determinations) moved into an empty database of the other kind, replayed and verified on the way in;
``ledger audit`` passes on the copy, and every tampered export is refused with nothing written."""

from __future__ import annotations

import gzip
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from tests.conftest import PG_URL, _admin_execute
from tests.support import count_rows, ledger


@pytest.fixture
def exported(env: dict[str, str], tmp_path: Path) -> Path:
    ledger(env, "init")
    ledger(env, "demo", "--local")
    ledger(env, "log", "integrate")
    path = tmp_path / "ledger.jsonl.gz"
    done = ledger(env, "export", str(path))
    assert "exported" in done.stdout
    return path


@pytest.fixture
def target(env: dict[str, str], tmp_path: Path) -> Iterator[dict[str, str]]:
    """An empty, migrated database of the other kind than the source, with the source's data directory (its log
    key), as an operator restoring a backup has."""
    import asyncio

    if env["LEDGER_DATABASE_URL"].startswith("sqlite"):
        name = f"ledger_restore_{uuid.uuid4().hex[:10]}"
        asyncio.run(_admin_execute(f'CREATE DATABASE "{name}"'))
        url = make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    else:
        name = ""
        url = f"sqlite+aiosqlite:///{tmp_path / 'restored.db'}"
    restored = {**env, "LEDGER_DATABASE_URL": url}
    ledger(restored, "db", "upgrade")
    try:
        yield restored
    finally:
        if name:
            asyncio.run(_admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _count(env: dict[str, str], table: str) -> int:
    return count_rows(env["LEDGER_DATABASE_URL"], table)


def _rewrite(source: Path, destination: Path, change: object) -> None:
    lines = gzip.decompress(source.read_bytes()).decode().splitlines()
    documents = [json.loads(line) for line in lines]
    change(documents)  # type: ignore[operator]
    destination.write_text("\n".join(json.dumps(d) for d in documents) + "\n")


def test_a_whole_ledger_moves_into_an_empty_database_and_verifies(
    env: dict[str, str], exported: Path, target: dict[str, str]
) -> None:
    entries = _count(env, "events")
    assert entries >= 40  # the demo is a real history
    done = ledger(target, "import", str(exported))
    assert f"imported and verified {entries:,} entries" in done.stdout
    for table in ("events", "batches", "batch_events", "batch_edges", "participants", "keys", "checkpoints"):
        assert _count(target, table) == _count(env, table), table
    audited = ledger(target, "audit")
    assert "audit passed" in audited.stdout and f"{entries:,} events" in audited.stdout
    assert (Path(target["LEDGER_DATA_DIR"]) / "registrar.token").read_text().startswith("tok_")
    again = ledger(target, "import", str(exported), check=False)
    assert again.returncode != 0 and "already holds a ledger" in again.stderr


def _flip_payload(documents: list[dict[str, object]]) -> None:
    entry = documents[10]["entry"]
    assert isinstance(entry, dict)
    payload = bytearray(__import__("base64").b64decode(entry["envelope"]["payload"]))
    payload[-3] ^= 0x01
    entry["envelope"]["payload"] = __import__("base64").b64encode(bytes(payload)).decode()


def _drop_entry(documents: list[dict[str, object]]) -> None:
    del documents[20]


def _swap_root(documents: list[dict[str, object]]) -> None:
    checkpoint = documents[-1]["checkpoint"]
    assert isinstance(checkpoint, dict)
    checkpoint["root_hash"] = "A" * 43 + "="


def _truncate(documents: list[dict[str, object]]) -> None:
    entries = [i for i, d in enumerate(documents) if "entry" in d]
    del documents[entries[-1]]


def test_a_tampered_export_is_refused_and_nothing_is_written(
    env: dict[str, str], exported: Path, target: dict[str, str], tmp_path: Path
) -> None:
    for change, needle in (
        (_flip_payload, "entry 9"),
        (_drop_entry, "comes where log index"),
        (_swap_root, "signed note and its recorded size or root differ"),
        (_truncate, "announces"),
    ):
        tampered = tmp_path / "tampered.jsonl"
        _rewrite(exported, tampered, change)
        done = ledger(target, "import", str(tampered), check=False)
        assert done.returncode == 2 and "nothing was written" in done.stderr and needle in done.stderr, (
            done.stderr
        )
        for table in ("events", "participants", "batches", "merkle_nodes", "checkpoints"):
            assert _count(target, table) == 0, (change, table)
    # checked against the pinned key, not the export's own
    from ledger.domain.keys import SigningKey
    from ledger.log.checkpoint import verifier_key

    other = tmp_path / "other.vkey"
    other.write_text(verifier_key("mineral-ledger.example/log", SigningKey.generate().public_key))
    done = ledger(target, "import", str(exported), "--log-key", str(other), check=False)
    assert done.returncode == 2 and "pin the key of the ledger you mean to restore" in done.stderr
    assert _count(target, "events") == 0
