"""Witnesses, monitor and tiles as real processes on both databases: two ``ledger witness serve`` cosign what a
``ledger serve`` signs; ``ledger verify --witness --quorum`` and ``ledger monitor`` accept the honest log and flag
it once an insider rolls it back and re-signs it; a witness that never answers does not hold up ingest."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from ledger.log.cosignature import Witness, verify_cosignatures
from ledger.log.offline import open_signed_checkpoint
from tests.support import LEDGER, free_port, ledger, serving


@contextlib.contextmanager
def witness_process(
    env: dict[str, str], tmp_path: Path, name: str, log_vkey: Path
) -> Iterator[tuple[str, str]]:
    """``ledger witness keygen`` then ``ledger witness serve``; yields (its vkey, its URL)."""
    key = tmp_path / f"{name}.key"
    vkey = ledger(
        env, "witness", "keygen", "--name", f"witness.test/{name}", "--out", str(key)
    ).stdout.strip()
    port = free_port()
    log = tmp_path / f"{name}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                *LEDGER,
                "witness",
                "serve",
                "--key-file",
                str(key),
                "--state",
                str(tmp_path / f"{name}-state"),
                "--log-key",
                str(log_vkey),
                "--port",
                str(port),
            ],
            env=env,
            stdout=out,
            stderr=out,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            for _ in range(100):
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                        break
                time.sleep(0.1)
            else:
                raise AssertionError("the witness did not start: " + log.read_text()[-2000:])
            yield vkey, url
        finally:
            process.terminate()
            process.wait(timeout=20)


def _wait_for_cosignatures(url: str, witnesses: list[str], count: int, seconds: float = 20) -> str:
    known = [Witness.parse(vkey) for vkey in witnesses]
    deadline = time.monotonic() + seconds
    while True:
        note = httpx.get(f"{url}/v1/log/checkpoint", timeout=5).text
        if len(verify_cosignatures(note, known)) >= count:
            return note
        if time.monotonic() > deadline:
            raise AssertionError(f"no {count} cosignatures within {seconds} s: {note}")
        time.sleep(0.1)


@contextlib.contextmanager
def _webhook() -> Iterator[tuple[str, list[dict[str, object]]]]:
    """A local HTTP endpoint that keeps the JSON bodies POSTed to it."""
    import http.server
    import threading

    received: list[dict[str, object]] = []

    class Hook(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/alarms", received
    finally:
        server.shutdown()


def _mth(hashes: list[bytes]) -> bytes:
    """RFC 9162 section 2.1.1 over leaf hashes, written out here independently of ledger.log.merkle."""
    if len(hashes) == 1:
        return hashes[0]
    k = 1
    while k * 2 < len(hashes):
        k *= 2
    return hashlib.sha256(b"\x01" + _mth(hashes[:k]) + _mth(hashes[k:])).digest()


def test_witnessed_log_end_to_end(env: dict[str, str], tmp_path: Path) -> None:
    ledger(env, "init")
    log_vkey_file = Path(env["LEDGER_DATA_DIR"]) / "log.vkey"
    log_vkey = log_vkey_file.read_text().strip()
    with (
        witness_process(env, tmp_path, "w1", log_vkey_file) as (w1, w1_url),
        witness_process(env, tmp_path, "w2", log_vkey_file) as (w2, w2_url),
    ):
        served = {**env, "LEDGER_WITNESSES": f"{w1} {w1_url},{w2} {w2_url}"}
        with serving(served, tmp_path / "server.log") as url:
            ledger(served, "demo", "--url", url)
            note = _wait_for_cosignatures(url, [w1, w2], 2)
            checkpoint = open_signed_checkpoint(note, log_vkey)
            (tmp_path / "checkpoint").write_text(note)

            # the metrics say how far each witness has cosigned, against the quorum
            from prometheus_client.parser import text_string_to_metric_families

            families = {f.name: f for f in text_string_to_metric_families(httpx.get(f"{url}/metrics").text)}
            sizes = {s.labels["witness"]: s.value for s in families["ledger_witness_cosigned_size"].samples}
            assert sizes["witness.test/w1"] >= checkpoint.size and sizes["witness.test/w2"] >= checkpoint.size
            assert families["ledger_witness_quorum"].samples[0].value == 2
            assert families["ledger_log_guard_refusing"].samples[0].value == 0

            # a verifier with a quorum policy accepts it; one that needs a witness who did not cosign refuses
            ok = ledger(
                served,
                "verify",
                "checkpoint",
                str(tmp_path / "checkpoint"),
                "--log-key",
                log_vkey,
                "--witness",
                w1,
                "--witness",
                w2,
                "--quorum",
                "2",
            )
            assert "cosigned by witness.test/w1, witness.test/w2" in ok.stdout
            stranger = ledger(
                served, "witness", "keygen", "--name", "witness.test/w3", "--out", str(tmp_path / "w3.key")
            ).stdout.strip()
            refused = ledger(
                served,
                "verify",
                "checkpoint",
                str(tmp_path / "checkpoint"),
                "--log-key",
                log_vkey,
                "--witness",
                w1,
                "--witness",
                stranger,
                check=False,
            )
            assert refused.returncode == 1
            assert "missing: witness.test/w3" in refused.stderr

            # tiles: the level-0 tile holds the leaf hashes, the entry bundle the entries they hash, and both
            # rebuild the checkpoint's root
            size = checkpoint.size
            assert size < 256
            tile = httpx.get(f"{url}/v1/log/tile/0/000.p/{size}")
            assert tile.status_code == 200
            assert tile.headers["content-type"] == "application/octet-stream"
            assert "immutable" in tile.headers["cache-control"]
            leaves = [tile.content[i : i + 32] for i in range(0, len(tile.content), 32)]
            assert len(leaves) == size
            assert _mth(leaves) == checkpoint.root_hash
            bundle = httpx.get(f"{url}/v1/log/tile/entries/000.p/{size}").content
            entries, at = [], 0
            while at < len(bundle):
                length = int.from_bytes(bundle[at : at + 2], "big")
                entries.append(bundle[at + 2 : at + 2 + length])
                at += 2 + length
            assert [hashlib.sha256(b"\x00" + e).digest() for e in entries] == leaves
            latest = open_signed_checkpoint(httpx.get(f"{url}/v1/log/checkpoint").text, log_vkey).size
            assert httpx.get(f"{url}/v1/log/tile/0/000.p/{latest + 1}").status_code == 404
            assert httpx.get(f"{url}/v1/log/tile/0/000").status_code == 404  # not a full tile yet
            assert httpx.get(f"{url}/v1/log/tile/0/0000").status_code == 404

            # the monitor follows the honest log, replaying every entry, and agrees with the witnesses' views
            token = (Path(env["LEDGER_DATA_DIR"]) / "registrar.token").read_text().strip()
            state = tmp_path / "monitor"
            watch = [
                "monitor",
                url,
                "--state",
                str(state),
                "--log-key",
                log_vkey,
                "--token",
                token,
                "--witness",
                w1,
                "--witness",
                w2,
                "--witness-url",
                w1_url,
                "--witness-url",
                w2_url,
                "--once",
            ]
            first = ledger(served, *watch, check=False)
            assert first.returncode == 0, first.stderr
            assert f"verified entries 0 to {latest:,}" in first.stdout
            history = [json.loads(line) for line in (state / "checkpoints.jsonl").read_text().splitlines()]
            assert history[-1]["size"] == latest

        # the insider stops the server, rolls the log back ten entries, rebuilds the tree, removes the record of
        # the last signed checkpoint and re-signs with the log key
        asyncio.run(_roll_back_and_resign(env, 10))
        old_url = url
        with serving(served, tmp_path / "server2.log") as url:
            note = httpx.get(f"{url}/v1/log/checkpoint").text
            assert open_signed_checkpoint(note, log_vkey).size == latest - 10
            time.sleep(1)  # let the cosigner try: the witnesses refuse
            note = httpx.get(f"{url}/v1/log/checkpoint").text
            assert verify_cosignatures(note, [Witness.parse(w1), Witness.parse(w2)]) == {}
            (tmp_path / "forged").write_text(note)
            plain = ledger(served, "verify", "checkpoint", str(tmp_path / "forged"), "--log-key", log_vkey)
            assert plain.returncode == 0  # the log key signed it: without witnesses nobody can tell
            quorum = ledger(
                served,
                "verify",
                "checkpoint",
                str(tmp_path / "forged"),
                "--log-key",
                log_vkey,
                "--witness",
                w1,
                "--witness",
                w2,
                "--quorum",
                "1",
                check=False,
            )
            assert quorum.returncode == 1
            assert "fewer than the quorum of 1" in quorum.stderr
            with _webhook() as (hook_url, received):
                flagged = ledger(
                    served, *[url if w == old_url else w for w in watch], "--webhook", hook_url, check=False
                )
            assert flagged.returncode == 3
            assert "ALARM rollback" in flagged.stderr
            assert [alarm["kind"] for alarm in received] == ["rollback"]
            assert f"fewer than the {latest}" in received[0]["detail"]
            assert "rollback" in (state / "alarms.jsonl").read_text()


async def _roll_back_and_resign(env: dict[str, str], entries: int) -> None:
    """The insider's attack of tests/test_witnessing.py, on the stopped server's database; then the record of the
    last signed checkpoint is removed too (the insider has the host)."""
    from ledger.domain.keys import SigningKey
    from ledger.services.log import LogSigner
    from ledger.settings import Settings
    from ledger.store.db import create_engine
    from tests.test_audit import _drop_triggers
    from tests.test_witnessing import rebuild_tree_and_resign, roll_back

    data = Path(env["LEDGER_DATA_DIR"])
    engine = create_engine(env["LEDGER_DATABASE_URL"])
    try:
        async with engine.begin() as conn:
            await _drop_triggers(conn)
            await roll_back(conn, entries)
            await rebuild_tree_and_resign(
                conn, LogSigner(Settings().log_origin, SigningKey.load(data / "log.key"))
            )
    finally:
        await engine.dispose()
    (data / "log-signed.checkpoint").unlink()


def test_a_witness_that_never_answers_does_not_hold_up_ingest(env: dict[str, str], tmp_path: Path) -> None:
    """The witness's port accepts connections and then says nothing; the log still accepts, integrates and signs
    at once, and collects the cosignature of the witness that does answer."""
    ledger(env, "init")
    log_vkey_file = Path(env["LEDGER_DATA_DIR"]) / "log.vkey"
    mute = ledger(
        env, "witness", "keygen", "--name", "witness.test/mute", "--out", str(tmp_path / "mute.key")
    )
    mute_vkey = mute.stdout.strip()
    with socket.socket() as silent, witness_process(env, tmp_path, "w1", log_vkey_file) as (w1, w1_url):
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)  # accepts connections (the kernel does), never answers
        served = {
            **env,
            "LEDGER_WITNESSES": f"{mute_vkey} http://127.0.0.1:{silent.getsockname()[1]},{w1} {w1_url}",
            "LEDGER_WITNESS_QUORUM": "1",
            # far beyond the 300 s the `ledger` helper allows the demo: had anything waited for the mute witness,
            # the demo would not finish
            "LEDGER_WITNESS_TIMEOUT": "900",
        }
        with serving(served, tmp_path / "server.log") as url:
            ledger(served, "demo", "--url", url)
            note = _wait_for_cosignatures(url, [w1], 1, seconds=10)
            assert "witness.test/mute" not in note
            size = open_signed_checkpoint(note, log_vkey_file.read_text()).size
            events = httpx.get(f"{url}/metrics").text
            assert "ledger_log_unintegrated_entries 0.0" in events or size > 0
