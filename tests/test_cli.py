"""The ``ledger`` command, run as a real process: init, serve refusal, keygen, and registrar commands."""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path

import httpx

from ledger.client import LedgerClient
from ledger.domain.keys import SigningKey
from ledger.services.demo import DEMO_REQUESTS
from tests.support import free_port, ledger


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
    generated = json.loads(ledger(env, "keygen", "--json", "--out", str(keyfile)).stdout)
    add = ledger(
        env, "participant", "add", "--json", "--url", server, "--id", "acme-mining", "--name", "Acme Mining",
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
    issued = json.loads(
        ledger(env, "token", "issue", "--json", "--url", server, "--participant", "acme-mining").stdout
    )
    listed = json.loads(
        ledger(env, "token", "list", "--json", "--url", server, "--participant", "acme-mining").stdout
    )
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
    assert "done: cathode batch cam-mx-0001 qualifies; cobalt precursor pcam-mx-0002 does not" in first.stdout
    assert "verified the proof bundle offline" in first.stdout
    # the failing batch's headline names the reason that decided, not just a share that did not matter
    headline = next(
        line for line in first.stdout.splitlines() if line.startswith("cobalt precursor pcam-mx-0002:")
    )
    assert headline.startswith("cobalt precursor pcam-mx-0002: not eligible under ptz-2026 v")
    assert ": foreign entity of concern: participant nordic-cobalt " in headline
    assert "not what decided: a foreign entity of concern fails the batch whatever its share" in first.stdout
    # consumed batches in the lineage picture show the mass they had: 3,000 kg of hydroxide went into the cathode
    assert "0 kg (consumed)" not in first.stdout and "3,000 kg when consumed" in first.stdout
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
    third = json.loads(ledger(env, "demo", "--url", server, "--json").stdout)  # for scripts: what was made
    assert third["batches"]["cathode"] == "cam-mx-0001" + third["suffix"] and third["suffix"]
    assert third["requests"] == DEMO_REQUESTS  # the progress bar's total

    # the bundle verifies offline from a file, with the pinned key, and fails when a byte changes
    token = (Path(env["LEDGER_DATA_DIR"]) / "registrar.token").read_text().strip()
    bundle = httpx.get(
        f"{server}/v1/batches/cam-mx-0001/bundle",  # as of today: the demo plays its story as it happens
        headers={"Authorization": f"Bearer {token}"},
    ).json()
    path = Path(env["LEDGER_DATA_DIR"]) / "bundle.json"
    path.write_text(json.dumps(bundle))
    vkey = str(Path(env["LEDGER_DATA_DIR"]) / "log.vkey")
    ok = ledger(env, "verify", "bundle", str(path), "--log-key", vkey)
    assert "ELIGIBLE: batch cam-mx-0001 under ptz-2026" in ok.stdout
    bundle["determination"]["verdict"] = "not_eligible"
    path.write_text(json.dumps(bundle))
    bad = ledger(env, "verify", "bundle", str(path), "--log-key", vkey, check=False)
    assert bad.returncode == 1 and "verdict: stated 'not_eligible', recomputed 'eligible'" in bad.stderr


def test_make_run_loads_the_demo_once_and_can_be_turned_off(env: dict[str, str]) -> None:
    ledger(env, "init")
    off = ledger({**env, "LEDGER_DEMO": "0"}, "demo", "--local", "--if-empty")
    assert "LEDGER_DEMO=0" in off.stdout
    loaded = ledger(env, "demo", "--local", "--if-empty")
    assert "done: cathode batch cam-mx-0001 qualifies" in loaded.stdout
    again = ledger(env, "demo", "--local", "--if-empty")
    assert "already holds batches" in again.stdout


def _wait_for_checkpoint(server: str, size: int) -> str:
    for _ in range(100):
        response = httpx.get(f"{server}/v1/log/checkpoint")
        if response.status_code == 200 and int(response.text.splitlines()[1]) >= size:
            return response.text
        time.sleep(0.1)
    raise AssertionError("the server's integrator did not produce a checkpoint")


def test_offline_verification_of_checkpoints_and_proofs(
    server: str, env: dict[str, str], tmp_path: Path
) -> None:
    ledger(env, "demo", "--url", server)
    token = (Path(env["LEDGER_DATA_DIR"]) / "registrar.token").read_text().strip()
    auth = {"Authorization": f"Bearer {token}"}
    size = (
        httpx.get(f"{server}/v1/log/entries", params={"start": 0}, headers=auth).json()["entries"][-1][
            "log_index"
        ]
        + 1
    )
    note = _wait_for_checkpoint(server, size)
    vkey = (Path(env["LEDGER_DATA_DIR"]) / "log.vkey").read_text().strip()
    assert httpx.get(f"{server}/v1/log/key").text.strip() == vkey
    (tmp_path / "cp.txt").write_text(note)
    ok = ledger(env, "verify", "checkpoint", str(tmp_path / "cp.txt"), "--log-key", vkey)
    assert f"tree size {size}" in ok.stdout

    cathode = httpx.get(f"{server}/v1/batches/cam-mx-0001", headers=auth).json()
    event = httpx.get(f"{server}/v1/events/{cathode['created_event']}", headers=auth).json()
    proof = httpx.get(
        f"{server}/v1/log/proofs/inclusion", params={"event_id": event["event_id"], "tree_size": size}
    ).json()
    (tmp_path / "proof.json").write_text(json.dumps(proof))
    (tmp_path / "event.json").write_text(json.dumps(event))
    args = [
        "verify",
        "inclusion",
        "--checkpoint",
        str(tmp_path / "cp.txt"),
        "--log-key",
        str(Path(env["LEDGER_DATA_DIR"]) / "log.vkey"),
    ]
    assert (
        "OK:"
        in ledger(
            env, *args, "--proof", str(tmp_path / "proof.json"), "--envelope", str(tmp_path / "event.json")
        ).stdout
    )

    # each tampering fails with a sentence naming what failed
    (tmp_path / "bad-cp.txt").write_text(note.replace(f"\n{size}\n", f"\n{size + 1}\n"))
    bad = ledger(env, "verify", "checkpoint", str(tmp_path / "bad-cp.txt"), "--log-key", vkey, check=False)
    assert bad.returncode == 1 and "signature" in bad.stderr
    flipped = dict(
        proof,
        hashes=[
            proof["hashes"][0][:-4] + ("AAA=" if proof["hashes"][0][-4:] != "AAA=" else "BBB="),
            *proof["hashes"][1:],
        ],
    )
    (tmp_path / "bad-proof.json").write_text(json.dumps(flipped))
    bad = ledger(env, *args, "--proof", str(tmp_path / "bad-proof.json"), check=False)
    assert bad.returncode == 1 and "inclusion proof" in bad.stderr
    other_event = dict(
        event, envelope=dict(event["envelope"], payload=event["envelope"]["payload"][:-4] + "fQ==")
    )
    (tmp_path / "bad-event.json").write_text(json.dumps(other_event))
    bad = ledger(
        env,
        *args,
        "--proof",
        str(tmp_path / "proof.json"),
        "--envelope",
        str(tmp_path / "bad-event.json"),
        check=False,
    )
    assert bad.returncode == 1 and "hashes to" in bad.stderr

    # consistency between the demo's checkpoint and a later one
    ledger(env, "demo", "--url", server)
    new_size = (
        httpx.get(f"{server}/v1/log/entries", params={"start": size}, headers=auth).json()["entries"][-1][
            "log_index"
        ]
        + 1
    )
    (tmp_path / "new.txt").write_text(_wait_for_checkpoint(server, new_size))
    new_size = int((tmp_path / "new.txt").read_text().splitlines()[1])
    consistency = httpx.get(
        f"{server}/v1/log/proofs/consistency", params={"first": size, "second": new_size}
    ).json()
    (tmp_path / "cons.json").write_text(json.dumps(consistency))
    cons_args = [
        "verify",
        "consistency",
        "--old",
        str(tmp_path / "cp.txt"),
        "--new",
        str(tmp_path / "new.txt"),
        "--log-key",
        vkey,
    ]
    assert "extends" in ledger(env, *cons_args, "--proof", str(tmp_path / "cons.json")).stdout
    swapped = [
        "verify",
        "consistency",
        "--old",
        str(tmp_path / "new.txt"),
        "--new",
        str(tmp_path / "cp.txt"),
        "--log-key",
        vkey,
    ]
    assert ledger(env, *swapped, "--proof", str(tmp_path / "cons.json"), check=False).returncode == 1

    # and the whole database audits clean
    audited = ledger(env, "audit")
    assert "audit passed" in audited.stdout and f"{new_size:,} events" in audited.stdout
