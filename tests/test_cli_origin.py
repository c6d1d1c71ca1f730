"""`ledger agreement`, `ledger origin` and `ledger certificate` as real processes against a real server: `ledger init`
publishes usmca, a producer records the origin of its cells, signs a certificate of origin locally, and customs
fetch its bundle and verify it offline."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from ledger.client import LedgerClient, timestamp_now
from ledger.domain import events as ev
from ledger.domain.keys import SigningKey
from ledger.rules.agreement import AGREEMENT_DIR, Agreements
from ledger.settings import Settings
from tests.support import ledger

USMCA = Agreements().builtin["usmca"]


def _participant(registrar: LedgerClient, pid: str, roles: list[str], country: str, tmp: Path) -> Path:
    key = SigningKey.generate()
    path = tmp / f"{pid}.key"
    key.save(path)
    registrar.admit_participant(pid, pid, roles, country, public_keys=[key.public_key_b64])
    return path


def test_origin_and_certificate_commands(server: str, env: dict[str, str], tmp_path: Path) -> None:
    settings = Settings(database_url=env["LEDGER_DATABASE_URL"], data_dir=Path(env["LEDGER_DATA_DIR"]))
    registrar_token = settings.registrar_token_path.read_text().strip()
    auth = {"Authorization": f"Bearer {registrar_token}"}
    listed = httpx.get(f"{server}/v1/agreements", headers=auth).json()["items"]
    assert [(a["id"], a["published"]) for a in listed] == [("usmca", True)]  # `ledger init` published it
    again = ledger(
        env, "agreement", "publish", str(AGREEMENT_DIR / "usmca.toml"), "--url", server, check=False
    )
    assert again.returncode == 1 and "published up to version 1" in again.stderr

    registrar = LedgerClient(
        server, token=registrar_token, actor="registrar", key=SigningKey.load(settings.registrar_key_path)
    )
    miner_key = _participant(registrar, "mx-miner", ["miner"], "MX", tmp_path)
    maker_key = _participant(registrar, "us-maker", ["manufacturer"], "US", tmp_path)
    registrar.register_facility("mx-mine", "mx-miner", "mine", "MX", "Sonora mine")
    registrar.register_facility("us-plant", "us-maker", "plant", "US", "Reno plant")
    tokens = {}
    for pid in ("mx-miner", "us-maker"):
        issued = json.loads(
            ledger(env, "token", "issue", "--json", "--url", server, "--participant", pid).stdout
        )
        tokens[pid] = issued["token"]
    miner = LedgerClient(server, token=tokens["mx-miner"], actor="mx-miner", key=SigningKey.load(miner_key))
    maker = LedgerClient(server, token=tokens["us-maker"], actor="us-maker", key=SigningKey.load(maker_key))
    miner.submit(
        ev.Extract(
            actor="mx-miner",
            timestamp=timestamp_now(),
            facility="mx-mine",
            batch=ev.NewBatch(id="ore", mineral="lithium", form="ore", mass_g=1_000, hs6="253090"),
        )
    )
    miner.transfer("ore", "us-maker", [("MX", False), ("US", False)], to_facility="us-plant")
    maker.receive("ore", "us-plant")
    maker.submit(
        ev.Transform(
            actor="us-maker",
            timestamp=timestamp_now(),
            facility="us-plant",
            process="cell_assembly",
            inputs=[ev.Input(batch="ore", parent=maker.head("ore"), mass_g=1_000)],
            outputs=[
                ev.Output(
                    id="cells",
                    mineral="lithium",
                    form="cell",
                    mass_g=900,
                    hs6="850760",
                    transaction_value=ev.Money(amount="1000", currency="USD"),
                )
            ],
            value_added=ev.Money(amount="600", currency="USD"),
        )
    )
    as_maker = ["--url", server, "--as", "us-maker", "--token", tokens["us-maker"]]
    shown = json.loads(ledger(env, "origin", "cells", "--json", *as_maker).stdout)
    # made in the US exclusively from Mexican ore, wholly obtained: criterion A
    assert (shown["verdict"], shown["criterion"]) == ("originating", "A")
    recorded = json.loads(ledger(env, "origin", "cells", "--record", "--json", *as_maker).stdout)
    assert recorded["status"] == "accepted"

    today = datetime.now(UTC).date()
    document = {
        "id": "cert-cli-1",
        "agreement": "usmca",
        "certifier_role": "producer",
        "certifier": {
            "name": "Ada Lovelace",
            "title": "Compliance",
            "address": "1 Battery Way, Reno NV",
            "phone": "+1 775 555 0100",
            "email": "ada@maker.example",
        },
        "producer": "Various",
        "goods": [
            {
                "batch": "cells",
                "description": "Lithium-ion cells",
                "hs6": "850760",
                "origin_criterion": "A",
                "determination": recorded["event_id"],
            }
        ],
        "blanket_period": {"from": today.isoformat(), "to": ev.add_months(today, 12).isoformat()},
        "signature": {
            "date": today.isoformat(),
            "statement": "I certify that the goods described in this document qualify as originating and the "
            "information contained in this document is true and accurate.",
        },
    }
    path = tmp_path / "cert.json"
    path.write_text(json.dumps(document))
    too_long = ledger(
        env, "certificate", "issue", str(path), *as_maker, "--key-file", str(maker_key), check=False
    )
    # from D to the same day a year later is 12 months and a day
    assert too_long.returncode == 1 and "certificate element 8 (blanket period)" in too_long.stderr
    document["blanket_period"]["to"] = (ev.add_months(today, 12) - timedelta(days=1)).isoformat()  # 12 months
    path.write_text(json.dumps(document))
    issued = json.loads(
        ledger(
            env, "certificate", "issue", str(path), "--json", *as_maker, "--key-file", str(maker_key)
        ).stdout
    )
    assert issued["status"] == "accepted"
    shown = ledger(env, "certificate", "show", "cert-cli-1", "--url", server).stdout  # the registrar's token
    assert shown.startswith("certificate cert-cli-1 (usmca), certified by us-maker as ")
    assert f"criterion A, determination {recorded['event_id']}" in shown
    assert f"signed in event {issued['event_id']}" in shown
    as_json = json.loads(ledger(env, "certificate", "show", "cert-cli-1", "--json", "--url", server).stdout)
    assert (as_json["id"], as_json["event_id"], as_json["batches"]) == (
        "cert-cli-1",
        issued["event_id"],
        ["cells"],
    )
    out = tmp_path / "bundle.json"
    ledger(
        env, "certificate", "bundle", "cert-cli-1", "--url", server, "--out", str(out)
    )  # the registrar's token
    vkey = httpx.get(f"{server}/v1/log/key").text.strip()
    verified = ledger(env, "verify", "bundle", str(out), "--log-key", vkey)
    assert "certificate cert-cli-1 (usmca), signed by us-maker as producer" in verified.stdout
    assert "originating under usmca, criterion A" in verified.stdout
    audit = ledger(env, "audit", "--log-key", vkey)
    assert audit.returncode == 0
