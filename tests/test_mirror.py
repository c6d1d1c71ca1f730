"""``ledger mirror``: a verified, read-only copy that follows a live ledger, resumes, serves the same read API, and
refuses (changing nothing) when its source presents a tampered entry."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import sqlalchemy as sa

from ledger.client import envelope_for, timestamp_now
from ledger.domain import events as ev
from ledger.domain.keys import SigningKey
from tests.support import count_rows, ledger, serving


def _register(url: str, token: str, key: SigningKey, owner_id: str) -> int:
    owner = ev.OwnerRegistered(
        actor="registrar",
        timestamp=timestamp_now(),
        owner=ev.OwnerInfo(id=owner_id, name=owner_id, kind="company", country="CA"),
    )
    response = httpx.post(
        f"{url}/v1/events",
        content=envelope_for(owner, key).to_json(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    assert response.status_code == 201, response.text
    return int(response.json()["log_index"])


def _wait_checkpoint(url: str, size: int) -> None:
    for _ in range(100):
        response = httpx.get(f"{url}/v1/log/checkpoint")  # the signed note: origin, size, root, signature
        if response.status_code == 200 and int(response.text.splitlines()[1]) >= size:
            return
        time.sleep(0.1)
    raise AssertionError(f"no checkpoint of {size} entries")


def test_a_mirror_follows_resumes_serves_reads_and_refuses_a_tampered_source(
    server: str, env: dict[str, str], tmp_path: Path
) -> None:
    data = tmp_path / "var"
    token = (data / "registrar.token").read_text().strip()
    key = SigningKey.load(data / "registrar.key")
    vkey = str(data / "log.vkey")
    mirror_env = {
        **env,
        "LEDGER_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'mirror.db'}",
        "LEDGER_DATA_DIR": str(tmp_path / "mirror-var"),
    }
    ledger(mirror_env, "db", "upgrade")
    last = _register(server, token, key, "owner-1")
    _wait_checkpoint(server, last + 1)
    first = ledger(mirror_env, "mirror", server, "--token", token, "--log-key", vkey, "--once")
    assert f"holds {last + 1:,} entries" in first.stdout
    # the source goes on; the mirror resumes from where it stopped, proving consistency with what it verified
    for i in range(2, 5):
        last = _register(server, token, key, f"owner-{i}")
    _wait_checkpoint(server, last + 1)
    second = ledger(mirror_env, "mirror", server, "--token", token, "--log-key", vkey, "--once")
    assert f"to {last + 1:,} (verified)" in second.stdout
    assert count_rows(mirror_env["LEDGER_DATABASE_URL"], "owners") == 4
    assert "audit passed" in ledger(mirror_env, "audit", "--log-key", vkey).stdout

    # the mirror serves the same read API, read-only, with a token of its own
    issued = ledger(mirror_env, "token", "issue-local", "--participant", "registrar").stdout
    mirror_token = next(w.strip('",') for w in issued.split() if w.strip('",').startswith("tok_"))
    with serving({**mirror_env, "LEDGER_READ_ONLY": "1"}, tmp_path / "mirror.log") as mirror_url:
        headers = {"Authorization": f"Bearer {mirror_token}"}
        assert httpx.get(f"{mirror_url}/v1/owners/owner-3", headers=headers).status_code == 200
        assert int(httpx.get(f"{mirror_url}/v1/log/checkpoint").text.splitlines()[1]) == last + 1
        refused = httpx.post(f"{mirror_url}/v1/events", content=b"{}", headers=headers)
        assert refused.status_code in {400, 403}
        owner = ev.OwnerRegistered(
            actor="registrar",
            timestamp=timestamp_now(),
            owner=ev.OwnerInfo(id="owner-m", name="m", kind="company", country="CA"),
        )
        write = httpx.post(
            f"{mirror_url}/v1/events",
            content=envelope_for(owner, key).to_json(),
            headers={**headers, "Content-Type": "application/json"},
        )
        assert write.status_code == 403 and "read-only mirror" in write.json()["detail"]

    # an insider alters an entry the mirror has not copied yet, at the source: the next round refuses it
    last = _register(server, token, key, "owner-5")
    _wait_checkpoint(server, last + 1)
    source_url = env["LEDGER_DATABASE_URL"]

    import asyncio

    from ledger.store.db import create_engine

    async def tamper() -> None:
        engine = create_engine(source_url)
        try:
            async with engine.begin() as conn:
                if conn.dialect.name == "postgresql":
                    await conn.execute(sa.text("ALTER TABLE events DISABLE TRIGGER USER"))
                else:
                    await conn.execute(sa.text("DROP TRIGGER IF EXISTS events_no_update"))
                payload = (
                    await conn.execute(
                        sa.text("SELECT payload FROM events WHERE log_index = :i"), {"i": last}
                    )
                ).scalar_one()
                forged = bytes(payload).replace(b"owner-5", b"owner-6")
                await conn.execute(
                    sa.text("UPDATE events SET payload = :p WHERE log_index = :i"), {"p": forged, "i": last}
                )
        finally:
            await engine.dispose()

    asyncio.run(tamper())
    before = count_rows(mirror_env["LEDGER_DATABASE_URL"], "events")
    third = ledger(mirror_env, "mirror", server, "--token", token, "--log-key", vkey, "--once", check=False)
    assert third.returncode == 2 and "MIRROR REFUSED" in third.stderr
    assert f"entry {last}" in third.stderr and "hashes to" in third.stderr
    assert count_rows(mirror_env["LEDGER_DATABASE_URL"], "events") == before
