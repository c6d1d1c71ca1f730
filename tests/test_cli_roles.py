"""The CLI for every role, as real processes against a real server (SQLite and PostgreSQL): a miner extracts and
ships, a refiner receives, splits, merges and refines, a recycler recycles, an auditor attests, a facility owner
claims; everyone reads batches, history, lineage, eligibility and bundles. Keys are signed locally from key
files. Also: the one-line errors (server down, a problem answer), --json everywhere, the option names."""

from __future__ import annotations

import hashlib
import json
import os
import pty
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from ledger.cli.common import progress_line
from ledger.cli.roles import parse_leg, parse_mass, parse_money
from tests.support import LEDGER, free_port, ledger


def _in_a_terminal(env: dict[str, str], *args: str) -> str:
    """Run ``ledger`` with its stderr on a pseudo-terminal (progress bars show only there); return what it drew."""
    main, follower = pty.openpty()
    try:
        done = subprocess.run([*LEDGER, *args], env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=follower, timeout=300)  # fmt: skip
    finally:
        os.close(follower)
    drawn = b""
    while True:
        try:
            chunk = os.read(main, 65536)
        except OSError:  # EIO: nothing more to read
            break
        if not chunk:
            break
        drawn += chunk
    os.close(main)
    assert done.returncode == 0, drawn.decode(errors="replace")
    return drawn.decode(errors="replace")


PEOPLE = [
    ("ca-miner", "miner", "CA", ("ca-mine", "mine", "CA")),
    ("us-refiner", "processor", "US", ("us-refinery", "refinery", "US")),
    ("us-recycler", "recycler", "US", ("us-recycling", "recycler", "US")),
    ("verity", "auditor", "CA", None),
]


def _admit(env: dict[str, str], server: str, tmp_path: Path) -> dict[str, list[str]]:
    """Every participant admitted through the registrar's commands; returns each one's signer options."""
    signer: dict[str, list[str]] = {}
    for pid, role, country, facility in PEOPLE:
        keyfile = tmp_path / f"{pid}.key"
        generated = json.loads(ledger(env, "keygen", "--json", "--out", str(keyfile)).stdout)
        ledger(
            env, "participant", "add", "--url", server, "--id", pid, "--name", pid, "--role", role,
            "--country", country, "--public-key", generated["public_key"],
        )  # fmt: skip
        if facility is not None:
            fid, kind, where = facility
            ledger(
                env, "facility", "add", "--url", server, "--id", fid, "--participant", pid, "--kind", kind,
                "--country", where, "--name", fid,
            )  # fmt: skip
        issued = ledger(env, "token", "issue", "--json", "--url", server, "--participant", pid).stdout
        signer[pid] = [
            "--url",
            server,
            "--token",
            json.loads(issued)["token"],
            "--as",
            pid,
            "--key-file",
            str(keyfile),
        ]
    return signer


def _accepted(result: str, kind: str) -> str:
    """The event id from a human answer: ``accepted: extract sha256:... at log index N``."""
    assert result.startswith(f"accepted: {kind} sha256:"), result
    assert " at log index " in result
    return result.split()[2]


def test_every_role_signs_and_reads_from_the_command_line(
    server: str, env: dict[str, str], tmp_path: Path
) -> None:
    who = _admit(env, server, tmp_path)
    registrar_token = (Path(env["LEDGER_DATA_DIR"]) / "registrar.token").read_text().strip()
    auth = {"Authorization": f"Bearer {registrar_token}"}

    people = ledger(env, "participant", "list", "--url", server).stdout.splitlines()
    assert "ca-miner: ca-miner (miner, CA); 1 valid key(s); ca-mine" in people
    assert "verity: verity (auditor, CA); 1 valid key(s); no facility" in people
    tokens = ledger(env, "token", "list", "--url", server, "--participant", "ca-miner").stdout.splitlines()
    assert len(tokens) == 1 and tokens[0].split(": ", 1)[1].startswith("ca-miner, created ")
    assert tokens[0].endswith(", active")

    # an auditor attests the mine and the refinery; the report's hash is computed from the file
    report = tmp_path / "audit.pdf"
    report.write_bytes(b"%PDF-1.7 audit report of the Quebec mine\n")
    attested = ledger(
        env, "attest", "att-mine", "--facility", "ca-mine", "--standard", "irma", "--level", "irma_75",
        "--valid-from", "2026-01-01", "--valid-to", "2027-12-31", "--report", str(report), "--mineral", "lithium",
        "--json", *who["verity"],
    )  # fmt: skip
    event_id = json.loads(attested.stdout)["event_id"]
    payload = httpx.get(f"{server}/v1/events/{event_id}", headers=auth).json()["payload"]
    assert payload["attestation"]["report_sha256"] == hashlib.sha256(report.read_bytes()).hexdigest()
    assert payload["actor"] == "verity"
    ledger(
        env, "attest", "att-refinery", "--facility", "us-refinery", "--standard", "rmap", "--level", "conformant",
        "--valid-from", "2026-01-01", "--valid-to", "2027-12-31", "--report-sha256", "ab" * 32, *who["verity"],
    )  # fmt: skip

    # the miner extracts 20 t worth 24,000 USD and ships it through the US border
    out = ledger(
        env, "extract", "--facility", "ca-mine", "--batch", "ore-1", "--mineral", "lithium", "--form", "concentrate",
        "--mass", "20t", "--value", "24000.00 USD", *who["ca-miner"],
    ).stdout.strip()  # fmt: skip
    extract_id = _accepted(out, "extract")
    shipped = ledger(
        env, "transfer", "ore-1", "--to", "us-refiner", "--to-facility", "us-refinery", "--route", "CA",
        "--route", "US", "--json", *who["ca-miner"],
    )  # fmt: skip
    assert json.loads(shipped.stdout)["status"] == "accepted"

    # the refiner receives 19,950 kg (50 kg lost: 0.25 %, within the 0.5 % tolerance), splits, merges, refines
    _accepted(ledger(env, "receive", "ore-1", "--facility", "us-refinery", "--mass", "19950kg", *who["us-refiner"]).stdout, "receive")  # fmt: skip
    _accepted(ledger(env, "split", "ore-1", "--part", "ore-1a=12950kg", "--part", "ore-1b=7t", *who["us-refiner"]).stdout, "split")  # fmt: skip
    _accepted(ledger(env, "merge", "--input", "ore-1a", "--input", "ore-1b", "--output", "ore-2", *who["us-refiner"]).stdout, "merge")  # fmt: skip
    # the refinery follows the mass-balance credit method (ISO 22095) this year: its outputs qualify as claimed
    today = datetime.now(UTC).date()
    declared = ledger(
        env, "custody-model", "declare", "--facility", "us-refinery", "--model", "mass_balance_credit",
        "--effective-date", today.isoformat(), "--period", "year", *who["us-refiner"],
    ).stdout  # fmt: skip
    _accepted(declared, "custody_model")
    refined = ledger(
        env, "transform", "--facility", "us-refinery", "--process", "refining", "--input", "ore-2=19950kg",
        "--output", "id=lioh-1,mineral=lithium,form=hydroxide,mass=4500kg,value=67500.00 USD",
        "--value-added", "40000.00 USD", "--json", *who["us-refiner"],
    )  # fmt: skip
    transform_id = json.loads(refined.stdout)["event_id"]
    made = httpx.get(f"{server}/v1/events/{transform_id}", headers=auth).json()["payload"]
    assert made["inputs"][0]["batch"] == "ore-2" and made["inputs"][0]["mass_g"] == 19_950_000
    assert made["outputs"][0]["mass_g"] == 4_500_000 and made["value_added"] == {
        "amount": "40000.00",
        "currency": "USD",
    }

    # the refiner claims credits for the whole 4,500 kg made (19,950 kg of qualifying input made the credits); a
    # batch is never claimed beyond the mass it was made with
    claimed = ledger(
        env, "claim", "--facility", "us-refinery", "--profile", "ptz-2026", "--period", str(today.year),
        "--batch", "lioh-1", "--mass", "4500kg", "--json", *who["us-refiner"],
    )  # fmt: skip
    assert json.loads(claimed.stdout)["status"] == "accepted"
    over = ledger(
        env, "claim", "--facility", "us-refinery", "--profile", "ptz-2026", "--period", str(today.year),
        "--batch", "lioh-1", "--mass", "1g", *who["us-refiner"], check=False,
    )  # fmt: skip
    assert over.returncode == 1 and len(over.stderr.splitlines()) == 1 and "Traceback" not in over.stderr
    assert "4500000" in over.stderr.replace(",", "") and over.stderr.rstrip().endswith("]")

    # a recycler recovers black mass from end-of-life cells
    recycled = ledger(
        env, "recycle", "--facility", "us-recycling",
        "--feedstock", "description=EV cells,category=end_of_life_battery,mass=1t,origin_country=US",
        "--output", "id=bm-1,mineral=lithium,form=black_mass,mass=300kg", "--json", *who["us-recycler"],
    )  # fmt: skip
    assert json.loads(recycled.stdout)["status"] == "accepted"

    # reads: batch show (human and JSON), history in log order, lineage with the mass a consumed batch had
    reader = ["--url", server, "--token", registrar_token]
    shown = json.loads(ledger(env, "batch", "show", "lioh-1", "--json", *reader).stdout)
    assert (shown["mass_g"], shown["custodian"], shown["status"]) == (4_500_000, "us-refiner", "at_facility")
    human = ledger(env, "batch", "show", "ore-1", *reader).stdout
    assert human.splitlines()[0] == "batch ore-1: lithium concentrate, 19,950 kg, split"
    assert "lost in transit: 50 kg" in human
    history = json.loads(ledger(env, "batch", "history", "ore-1", "--json", *reader).stdout)
    assert [e["kind"] for e in history["events"]] == ["extract", "transfer", "receive", "split"]
    assert history["events"][0]["event_id"] == extract_id
    lineage = ledger(env, "batch", "lineage", "lioh-1", *reader).stdout
    assert "ore-2: lithium concentrate, 19,950 kg when consumed" in lineage
    assert "ore-1: lithium concentrate, 19,950 kg (split)" in lineage
    assert "from ore-1a (12,950 kg), ore-1b (7,000 kg)" in lineage
    dot = ledger(env, "batch", "lineage", "lioh-1", "--format", "dot", *reader).stdout
    assert "19,950 kg when consumed" in dot and "0 kg (consumed)" not in dot
    as_json = json.loads(ledger(env, "batch", "lineage", "lioh-1", "--json", *reader).stdout)
    used = {b["id"]: b.get("used_up_g") for b in as_json["batches"]}
    assert used["ore-2"] == 19_950_000 and used["ore-1"] is None and used["lioh-1"] is None

    # eligibility: one source, extracted in Canada, refined in the US, both attested: 100 % qualifies
    verdict = json.loads(ledger(env, "eligibility", "lioh-1", "--json", *reader).stdout)
    assert (verdict["verdict"], verdict["qualifying_share"]) == ("eligible", "1")
    words = ledger(env, "eligibility", "lioh-1", *reader).stdout.splitlines()
    assert words[0].startswith("lioh-1: eligible under ptz-2026 v")
    assert words[0].endswith(
        ": share meets threshold: qualifying share of traced value 1 (100.00 %) >= required 0.60"
    )
    assert words[1].startswith("  qualifying share of traced value: 100.00 %")

    # a bundle, fetched and verified on the spot against the pinned key, then again by `ledger verify bundle`
    vkey = (Path(env["LEDGER_DATA_DIR"]) / "log.vkey").read_text().strip()
    path = tmp_path / "lioh-1.bundle.json"
    got = json.loads(
        ledger(env, "bundle", "get", "lioh-1", "--out", str(path), "--verify", "--log-key", vkey, "--json", *reader).stdout
    )  # fmt: skip
    assert got["verified"] is True and got["verdict"] == "eligible" and got["entries"] > 5
    offline = ledger(env, "verify", "bundle", str(path), "--log-key", vkey).stdout
    assert offline.startswith(f"OK: {got['entries']} events, every signature and inclusion proof verified")
    assert "traced value 23940 USD" in offline  # 24,000 USD x 19,950 kg received / 20,000 kg extracted
    drawn = _in_a_terminal(env, "verify", "bundle", str(path), "--log-key", vkey)
    assert "verifying signatures" in drawn and "100%" in drawn and "events/s" in drawn  # a bar, with its rate

    # a competitor does not see the refiner's batch: the problem answer is one line, with its code
    recycler_token = who["us-recycler"][3]
    hidden = ledger(env, "batch", "show", "lioh-1", "--url", server, "--token", recycler_token, check=False)
    assert hidden.returncode == 1
    assert hidden.stderr == "error: 404 Not found: batch 'lioh-1' does not exist [not-found]\n"

    # an auditor revokes and suspends; a miner reaffirms its own event
    ledger(
        env, "attest", "att-recycler", "--facility", "us-recycling", "--standard", "iso14001", "--level", "certified",
        "--valid-from", "2026-01-01", "--valid-to", "2027-12-31", "--report-sha256", "cd" * 32, *who["verity"],
    )  # fmt: skip
    suspended = ledger(
        env, "attestation", "suspend", "att-recycler", "--effective-date", "2027-01-01", "--reason", "follow-up audit",
        "--json", *who["verity"],
    )  # fmt: skip
    suspend_id = json.loads(suspended.stdout)["event_id"]
    assert httpx.get(f"{server}/v1/events/{suspend_id}", headers=auth).json()["kind"] == "suspend_attestation"
    _accepted(ledger(env, "attestation", "revoke", "att-recycler", "--effective-date", "2027-02-01", "--reason", "closed", *who["verity"]).stdout, "revoke_attestation")  # fmt: skip
    _accepted(ledger(env, "reaffirm", extract_id, "--statement", "ours, signed at the mine", *who["ca-miner"]).stdout, "reaffirm")  # fmt: skip

    # a claim at a facility that does not follow the mass-balance credit method is refused, and says why
    claimed = ledger(
        env, "claim", "--facility", "us-recycling", "--profile", "ptz-2026", "--period", "2026", "--batch", "bm-1",
        "--mass", "1kg", *who["us-recycler"], check=False,
    )  # fmt: skip
    assert claimed.returncode == 1 and "Traceback" not in claimed.stderr
    assert len(claimed.stderr.splitlines()) == 1 and "mass_balance_credit" in claimed.stderr
    assert claimed.stderr.rstrip().endswith("]")  # the stable problem code

    # --url and --token from the environment
    from_env = {**env, "LEDGER_URL": server, "LEDGER_TOKEN": registrar_token}
    assert json.loads(ledger(from_env, "batch", "show", "bm-1", "--json").stdout)["mass_g"] == 300_000


def test_one_line_errors_and_option_names(env: dict[str, str], tmp_path: Path) -> None:
    down = f"http://127.0.0.1:{free_port()}"
    for args in (
        ("batch", "show", "b1", "--url", down, "--token", "t"),
        ("eligibility", "b1", "--url", down, "--token", "t"),
        ("participant", "list", "--url", down, "--token", "t", "--key-file", str(tmp_path / "none.key")),
    ):
        result = ledger(env, *args, check=False)
        if args[0] == "participant":  # the registrar's key file is read first: named, still one line
            assert result.returncode == 1 and result.stderr.count("\n") == 1, result.stderr
            assert "does not exist" in result.stderr
            continue
        assert result.returncode == 3, result.stderr
        assert result.stderr == (
            f"error: cannot reach {down}: connection refused; is `ledger serve` running? set --url or LEDGER_URL\n"
        )
    keyfile = tmp_path / "m.key"
    ledger(env, "keygen", "--out", str(keyfile))
    signer = ["--url", down, "--token", "t", "--as", "m", "--key-file", str(keyfile)]
    sent = ledger(env, "extract", "--facility", "f", "--batch", "b", "--mineral", "lithium", "--form", "ore", "--mass", "5kg", *signer, check=False)  # fmt: skip
    assert sent.returncode == 3 and "cannot reach" in sent.stderr and "Traceback" not in sent.stderr

    # signing needs the signer's key file; --key no longer names a private key anywhere
    unsigned = ledger(env, "extract", "--facility", "f", "--batch", "b", "--mineral", "lithium", "--form", "ore", "--mass", "5kg", "--url", down, "--token", "t", check=False)  # fmt: skip
    assert unsigned.returncode == 1 and "--as PARTICIPANT and --key-file KEYFILE" in unsigned.stderr
    old = ledger(env, "receive", "b", "--facility", "f", "--as", "m", "--key", str(keyfile), "--token", "t", check=False)  # fmt: skip
    assert old.returncode == 2 and "--key-file" in old.stderr
    for command in (
        ["verify", "checkpoint"],
        ["verify", "bundle"],
        ["audit"],
        ["mirror", "http://x"],
        ["import"],
    ):
        helped = ledger(env, *command, "--help").stdout
        assert "--log-key" in helped and "--key " not in helped and "--key-file" not in helped, command
    for command in (["extract"], ["transfer"], ["participant", "add"], ["certificate", "issue"], ["demo"]):
        helped = ledger(env, *command, "--help").stdout
        assert "--key-file" in helped and "--log-key" not in helped, command

    # the deprecated spelling of --log-key still works, with a warning
    checkpoint = tmp_path / "cp.txt"
    checkpoint.write_text("not a checkpoint\n")
    deprecated = ledger(env, "verify", "checkpoint", str(checkpoint), "--key", "x+00000000+AAAA", check=False)
    assert "warning: --key is deprecated here; use --log-key" in deprecated.stderr
    assert "Missing option" not in deprecated.stderr
    missing = ledger(env, "verify", "checkpoint", str(checkpoint), check=False)
    assert missing.returncode == 2 and "--log-key" in missing.stderr


def test_values_on_the_command_line_are_exact() -> None:
    assert parse_mass("19.95kg") == 19_950
    assert parse_mass("20t") == 20_000_000
    assert parse_mass("1,250") == 1_250
    assert parse_mass("0.001kg") == 1
    for bad in ("1.5g", "0.0001kg", "-3kg", "lots"):
        with pytest.raises(SystemExit):
            parse_mass(bad)
    assert parse_money("24000.00 USD").amount == "24000.00"
    assert parse_money("eur 12.5").currency == "EUR"
    leg = parse_leg("sg:bonded:ops=unloading+storage")
    assert (leg.country, leg.customs_control, leg.operations) == ("SG", True, ["unloading", "storage"])
    assert parse_leg("MX").customs_control is False


def test_progress_lines_give_rate_and_time_left() -> None:
    # 3 of 9 in 60 s: 0.05 a second, so the 6 left take 120 s
    assert (
        progress_line(3, 9, 60, "benchmarks")
        == "3/9 benchmarks (33 %), 0.05 benchmarks/s, about 2 min 0 s left"
    )
    assert progress_line(9, 9, 100, "benchmarks") == "9/9 benchmarks (100 %), 0.09 benchmarks/s"


def test_operator_commands_answer_json_for_scripts(env: dict[str, str], tmp_path: Path) -> None:
    assert json.loads(ledger(env, "db", "upgrade", "--json").stdout)["at_latest_schema"] is True
    created = json.loads(ledger(env, "init", "--json").stdout)
    data = Path(env["LEDGER_DATA_DIR"])
    assert created["initialised"] is True and created["registrar"] == "registrar"
    assert created["token"] == (data / "registrar.token").read_text().strip()
    assert created["log_vkey"] == (data / "log.vkey").read_text().strip()
    assert {(p["kind"], p["id"]) for p in created["published"]} >= {
        ("profile", "ptz-2026"),
        ("agreement", "usmca"),
    }
    again = json.loads(ledger(env, "init", "--if-needed", "--json").stdout)
    assert again == {"initialised": False, "data_dir": str(data), "published": []}
    integrated = json.loads(ledger(env, "log", "integrate", "--json").stdout)["integrated"]
    audited = json.loads(ledger(env, "audit", "--json").stdout)
    assert audited["passed"] is True and audited["signatures_checked"] is True
    assert audited["events"] == audited["tree_size"] >= integrated > 0
    exported = json.loads(ledger(env, "export", str(tmp_path / "all.jsonl.gz"), "--json").stdout)
    assert exported["entries"] == audited["events"] and exported["checkpoints"] >= 1
    issued = json.loads(ledger(env, "token", "issue-local", "--participant", "registrar", "--json").stdout)
    assert issued["participant"] == "registrar" and issued["token"]
