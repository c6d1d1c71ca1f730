"""Crash safety (both databases): a real server killed with SIGKILL in the middle of batch and single ingest loses
nothing it acknowledged. After a restart every acknowledged event is there, the log indices have no gap, the
Merkle integration catches up to a checkpoint covering every event, and ``ledger audit`` is clean."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import httpx
import msgspec
import pytest

from ledger.client import envelope_for, timestamp_now
from ledger.domain import events as ev
from ledger.domain.keys import SigningKey
from tests.support import LEDGER, free_port, ledger


def _start(env: dict[str, str], port: int, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        process = subprocess.Popen(
            [*LEDGER, "serve", "--port", str(port)], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(0.1)
    process.kill()
    raise AssertionError("server did not become ready: " + log.read_text()[-2000:])


class Writer(threading.Thread):
    """Submits extracts until the server stops answering; remembers what the server acknowledged."""

    def __init__(self, url: str, token: str, key: SigningKey, prefix: str, batch: int) -> None:
        super().__init__(daemon=True)
        self.url, self.token, self.key, self.prefix, self.batch = url, token, key, prefix, batch
        self.acknowledged: set[str] = set()

    def envelope(self, n: int) -> dict[str, object]:
        event = ev.Extract(
            actor="crash-miner",
            timestamp=timestamp_now(),
            facility="crash-mine",
            batch=ev.NewBatch(id=f"{self.prefix}-{n}", mineral="lithium", form="ore", mass_g=1_000),
        )
        document: dict[str, object] = msgspec.to_builtins(envelope_for(event, self.key))
        return document

    def run(self) -> None:
        headers = {"Authorization": f"Bearer {self.token}"}
        n = 0
        with httpx.Client(base_url=self.url, timeout=10) as client:
            while True:
                try:
                    if self.batch > 1:
                        body = {"envelopes": [self.envelope(n + i) for i in range(self.batch)]}
                        response = client.post("/v1/events/batch", json=body, headers=headers)
                        results = response.json()["results"] if response.status_code == 200 else []
                    else:
                        response = client.post("/v1/events", json=self.envelope(n), headers=headers)
                        results = [response.json()] if response.status_code in (200, 201) else []
                except (httpx.HTTPError, ValueError):
                    return  # the server is gone: whatever was not answered was not acknowledged
                for result in results:
                    if result.get("status") in ("accepted", "duplicate"):
                        self.acknowledged.add(result["event_id"])
                n += self.batch


def _admit_miner(url: str, data: Path) -> tuple[str, SigningKey]:
    from ledger.client import LedgerClient

    registrar_key = SigningKey.load(data / "registrar.key")
    token = (data / "registrar.token").read_text().strip()
    key = SigningKey.generate()
    with LedgerClient(url, token=token, actor="registrar", key=registrar_key) as registrar:
        registrar.admit_participant(
            "crash-miner", "Crash Miner", ["miner"], "CA", public_keys=[key.public_key_b64]
        )
        registrar.register_facility("crash-mine", "crash-miner", "mine", "CA", "Crash mine")
        return registrar.issue_token("crash-miner", "crash").token, key


@pytest.mark.parametrize("batch", [50, 1], ids=["batch-ingest", "single-ingest"])
def test_sigkill_during_ingest_loses_nothing_acknowledged(
    env: dict[str, str], tmp_path: Path, batch: int
) -> None:
    env = {**env, "LEDGER_RATE_LIMIT": "0"}
    ledger(env, "init")
    data = Path(env["LEDGER_DATA_DIR"])
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "server.log"
    server = _start(env, port, log)
    try:
        token, key = _admit_miner(url, data)
        acknowledged: set[str] = set()
        for round_ in range(2):
            writers = [Writer(url, token, key, f"r{round_}w{w}", batch) for w in range(3)]
            for writer in writers:
                writer.start()
            time.sleep(1.5)
            os.kill(server.pid, signal.SIGKILL)
            server.wait(timeout=10)
            for writer in writers:
                writer.join(timeout=30)
                acknowledged |= writer.acknowledged
            server = _start(env, port, log)
        assert len(acknowledged) >= 10, (
            f"only {len(acknowledged)} acknowledged before the kills: the test proved little"
        )
        registrar_token = (data / "registrar.token").read_text().strip()
        headers = {"Authorization": f"Bearer {registrar_token}"}
        with httpx.Client(base_url=url, timeout=10) as client:
            missing = [
                e for e in acknowledged if client.get(f"/v1/events/{e}", headers=headers).status_code != 200
            ]
            assert not missing, f"{len(missing)} acknowledged events are gone, e.g. {missing[:3]}"
            deadline = time.monotonic() + 60
            size = -1
            while time.monotonic() < deadline:
                checkpoint = client.get("/v1/log/checkpoint").text
                size = int(checkpoint.splitlines()[1])
                last = client.get("/v1/log/entries", params={"start": size, "end": size + 1}, headers=headers)
                if last.status_code == 200 and not last.json().get("entries"):
                    break  # the checkpoint covers every sequenced entry
                time.sleep(0.2)
            else:
                raise AssertionError(f"integration did not catch up (checkpoint size {size})")
    finally:
        server.terminate()
        server.wait(timeout=10)
    ledger(
        env, "audit"
    )  # exits non-zero unless indices, signatures, tree, checkpoints and projections all hold
