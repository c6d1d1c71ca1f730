"""The ``ledger`` command, run as a real process: init, serve refusal, keygen, and registrar commands."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ledger.client import LedgerClient
from ledger.domain.keys import SigningKey

LEDGER = [sys.executable, "-m", "ledger.cli"]


def ledger(env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([*LEDGER, *args], env=env, capture_output=True, text=True, timeout=120)
    if check:
        assert result.returncode == 0, result.stderr + result.stdout
    return result


@pytest.fixture
def env(database_url: str, tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "LEDGER_DATABASE_URL": database_url,
        "LEDGER_DATA_DIR": str(tmp_path / "var"),
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def server(env: dict[str, str]) -> Iterator[str]:
    ledger(env, "init")
    port = free_port()
    process = subprocess.Popen(
        [*LEDGER, "serve", "--port", str(port)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        else:
            raise AssertionError("server did not become ready")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_init_creates_registrar_credentials_once(env: dict[str, str], tmp_path: Path) -> None:
    first = ledger(env, "init")
    data = tmp_path / "var"
    token = (data / "registrar.token").read_text().strip()
    assert token in first.stdout  # printed once...
    for name in ("registrar.token", "registrar.key", "log.key"):
        assert stat.S_IMODE((data / name).stat().st_mode) == 0o600  # ...and kept readable by the owner only
    again = ledger(env, "init", check=False)
    assert again.returncode != 0 and "already has a registrar" in again.stderr
    assert "already initialised" in ledger(env, "init", "--if-needed").stdout


def test_serve_refuses_an_unmigrated_database(tmp_path: Path) -> None:
    env = {**os.environ, "LEDGER_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}"}
    result = ledger(env, "serve", "--port", str(free_port()), check=False)
    assert result.returncode != 0
    assert "ledger db upgrade" in result.stderr


def test_registrar_commands_and_client_against_a_running_server(
    server: str, env: dict[str, str], tmp_path: Path
) -> None:
    keyfile = tmp_path / "acme.key"
    generated = json.loads(ledger(env, "keygen", "--out", str(keyfile)).stdout)
    add = ledger(
        env, "participant", "add", "--url", server, "--id", "acme-mining", "--name", "Acme Mining",
        "--role", "miner", "--country", "CA", "--public-key", generated["public_key"],
    )  # fmt: skip
    assert json.loads(add.stdout)["status"] == "accepted"
    ledger(
        env, "facility", "add", "--url", server, "--id", "acme-qc", "--participant", "acme-mining",
        "--kind", "mine", "--country", "CA", "--name", "Quebec mine",
    )  # fmt: skip
    bad = ledger(
        env, "facility", "add", "--url", server, "--id", "acme-qc2", "--participant", "acme-mining",
        "--kind", "castle", "--country", "CA", "--name", "x",
    check=False)  # fmt: skip
    assert bad.returncode != 0 and "facility.kind 'castle'" in bad.stderr
    issued = json.loads(ledger(env, "token", "issue", "--url", server, "--participant", "acme-mining").stdout)
    listed = json.loads(ledger(env, "token", "list", "--url", server, "--participant", "acme-mining").stdout)
    assert [t["id"] for t in listed["items"]] == [issued["id"]]

    with LedgerClient(
        server, token=issued["token"], actor="acme-mining", key=SigningKey.load(keyfile)
    ) as acme:
        me = acme.participant("acme-mining")
        assert me.keys[0].key_id == generated["key_id"]
        assert [f.id for f in me.facilities] == ["acme-qc"]
    ledger(env, "token", "revoke", "--url", server, issued["id"])
    assert (
        httpx.get(
            f"{server}/v1/participants", headers={"Authorization": f"Bearer {issued['token']}"}
        ).status_code
        == 401
    )


def test_demo_plays_against_a_running_server_and_can_be_replayed(server: str, env: dict[str, str]) -> None:
    first = ledger(env, "demo", "--url", server)
    assert "done: cathode batch cam-mx-0001;" in first.stdout
    assert "flowchart LR" in first.stdout
    lineage = httpx.get(
        f"{server}/v1/batches/cam-mx-0001/lineage",
        headers={
            "Authorization": f"Bearer {(Path(env['LEDGER_DATA_DIR']) / 'registrar.token').read_text().strip()}"
        },
    ).json()
    assert {b["id"] for b in lineage["batches"]} == {
        "cam-mx-0001",
        "lioh-tx-0001-a",
        "lioh-tx-0001",
        "spod-qc-0001",
        "spod-wa-0001",
    }
    second = ledger(env, "demo", "--url", server)  # ids taken: a random suffix keeps the replay apart
    assert "done: cathode batch cam-mx-0001-" in second.stdout


def test_make_run_loads_the_demo_once_and_can_be_turned_off(env: dict[str, str]) -> None:
    ledger(env, "init")
    off = ledger({**env, "LEDGER_DEMO": "0"}, "demo", "--local", "--if-empty")
    assert "LEDGER_DEMO=0" in off.stdout
    loaded = ledger(env, "demo", "--local", "--if-empty")
    assert "done: cathode batch cam-mx-0001;" in loaded.stdout
    again = ledger(env, "demo", "--local", "--if-empty")
    assert "already holds batches" in again.stdout
