"""The registrar's commands for rule profiles, owners, stakes and exchange rates, and `ledger init` publishing the
built-in profiles, run as real processes."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from ledger.rules.profiles import PROFILE_DIR, Profiles
from ledger.services.bootstrap import initialise
from ledger.services.container import Services
from ledger.settings import Settings
from tests.support import ledger

DEFAULT = Profiles().builtin[Profiles().default_id]


def _profile_file(tmp_path: Path, name: str, replace: tuple[str, str]) -> Path:
    text = (PROFILE_DIR / f"{DEFAULT.id}.toml").read_text()
    assert replace[0] in text
    path = tmp_path / name
    path.write_text(text.replace(replace[0], replace[1], 1))
    return path


def test_profile_publish_with_a_bad_file_prints_one_line_naming_file_and_field(
    env: dict[str, str], tmp_path: Path
) -> None:
    bad = _profile_file(tmp_path, "weights.toml", ('share_basis = "value"', 'share_basis = "weight"'))
    result = ledger(env, "profile", "publish", str(bad), "--url", "http://127.0.0.1:9", check=False)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "weights.toml" in lines[0] and "share_basis" in lines[0]
    assert "Traceback" not in result.stderr
    broken = tmp_path / "broken.toml"
    broken.write_text('id = "x"\nversion = [\n')
    result = ledger(env, "profile", "publish", str(broken), check=False)
    assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1
    assert "broken.toml" in result.stderr and "TOML" in result.stderr
    missing = ledger(env, "profile", "publish", str(tmp_path / "nope.toml"), check=False)
    assert missing.returncode == 2 and "nope.toml" in missing.stderr


def test_init_publishes_the_builtin_profiles_and_registrar_commands(
    server: str, env: dict[str, str], tmp_path: Path
) -> None:
    token = (Path(env["LEDGER_DATA_DIR"]) / "registrar.token").read_text().strip()
    auth = {"Authorization": f"Bearer {token}"}
    # `ledger init` (run by the server fixture) published the built-in profiles: the same version is refused
    again = ledger(
        env, "profile", "publish", str(PROFILE_DIR / f"{DEFAULT.id}.toml"), "--url", server, check=False
    )
    assert again.returncode == 1 and f"published up to version {DEFAULT.version}" in again.stderr
    assert "published built-in" not in ledger(env, "init", "--if-needed").stdout

    newer = _profile_file(
        tmp_path, "next.toml", (f"version = {DEFAULT.version}", f"version = {DEFAULT.version + 1}")
    )
    out = json.loads(ledger(env, "profile", "publish", str(newer), "--json", "--url", server).stdout)
    assert (out["id"], out["version"], out["status"]) == (DEFAULT.id, DEFAULT.version + 1, "accepted")
    assert out["content_hash"].startswith("sha256:") and out["content_hash"] != DEFAULT.content_hash
    event = httpx.get(f"{server}/v1/events/{out['event_id']}", headers=auth).json()
    assert (
        event["kind"] == "profile_published" and event["payload"]["profile"]["version"] == DEFAULT.version + 1
    )

    owner = ledger(
        env, "owner", "add", "--json", "--url", server, "--id", "gov-cn", "--name", "Government of China",
        "--kind", "government", "--country", "CN",
    )  # fmt: skip
    assert json.loads(owner.stdout)["status"] == "accepted"
    ledger(env, "owner", "add", "--url", server, "--id", "cn-hold", "--name", "Holding", "--kind", "state_enterprise", "--country", "CN")  # fmt: skip
    ledger(
        env, "stake", "record", "--url", server, "--holder", "gov-cn", "--subject", "cn-hold",
        "--equity", "0.51", "--votes", "1/2", "--board-seats", "1/3", "--effective-date", "2026-01-01",
    )  # fmt: skip
    held = httpx.get(f"{server}/v1/owners/cn-hold", headers=auth).json()["held_by"]
    assert [(s["holder"], s["equity"], s["votes"], s["board_seats"]) for s in held] == [
        ("gov-cn", "0.51", "1/2", "1/3")
    ]
    cycle = ledger(
        env, "stake", "record", "--url", server, "--holder", "cn-hold", "--subject", "gov-cn",
        "--equity", "0.1", "--effective-date", "2026-01-01", check=False,
    )  # fmt: skip
    assert cycle.returncode == 1 and "government" in cycle.stderr

    rates = ledger(
        env, "rates", "publish", "--json", "--url", server, "--date", "2026-03-02", "--rate", "EUR:USD:1.0834",
        "--rate", "USD:JPY:149.5", "--source", "ECB reference rates",
    )  # fmt: skip
    assert json.loads(rates.stdout)["status"] == "accepted"
    listed = httpx.get(f"{server}/v1/exchange-rates", params={"date": "2026-03-02"}, headers=auth).json()
    assert [(r["from"], r["to"], r["rate"]) for r in listed["items"]] == [
        ("EUR", "USD", "1.0834"),
        ("USD", "JPY", "149.5"),
    ]
    twice = ledger(env, "rates", "publish", "--url", server, "--date", "2026-03-02", "--rate", "USD:EUR:0.92", "--source", "x", check=False)  # fmt: skip
    assert twice.returncode == 1 and "EUR/USD" in twice.stderr
    bad = ledger(env, "rates", "publish", "--url", server, "--date", "2026-03-03", "--rate", "EUR-USD", "--source", "x", check=False)  # fmt: skip
    assert bad.returncode == 1 and "FROM:TO:RATE" in bad.stderr


async def test_init_if_needed_publishes_builtin_profiles_an_older_ledger_lacks(
    env: dict[str, str], tmp_path: Path
) -> None:
    settings = Settings(database_url=env["LEDGER_DATABASE_URL"], data_dir=Path(env["LEDGER_DATA_DIR"]))
    services = Services(settings)
    try:
        await initialise(services)  # as before profiles were published: the registrar only
    finally:
        await services.close()
    first = ledger(env, "init", "--if-needed").stdout
    assert "already initialised" in first
    for profile in Profiles().builtin.values():
        assert f"published built-in rule profile {profile.id} version {profile.version}" in first
    assert "published built-in" not in ledger(env, "init", "--if-needed").stdout
