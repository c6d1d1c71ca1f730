"""``ledger serve --workers N`` on PostgreSQL: several API processes over one database, their metrics added up
whichever worker answers a scrape; refused on SQLite with the reason."""

from __future__ import annotations

from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from ledger.client import envelope_for, timestamp_now
from ledger.domain import events as ev
from ledger.domain.keys import SigningKey
from tests.support import ledger, serving


def _accepted(text: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "ledger_events_total" and sample.labels.get("outcome") == "accepted":
                return sample.value
    return 0.0


def test_workers_share_one_database_and_one_set_of_metrics(env: dict[str, str], tmp_path: Path) -> None:
    if env["LEDGER_DATABASE_URL"].startswith("sqlite"):
        refused = ledger(env, "serve", "--workers", "2", check=False)
        assert refused.returncode != 0 and "needs PostgreSQL" in refused.stderr
        return
    ledger(env, "init")
    workers_env = {**env, "LEDGER_RATE_LIMIT": "0", "LEDGER_AUTH_FAIL_LIMIT": "0"}
    with serving(workers_env, tmp_path / "server.log", "--workers", "2") as url:
        token = (tmp_path / "var" / "registrar.token").read_text().strip()
        key = SigningKey.load(tmp_path / "var" / "registrar.key")
        for i in range(12):  # a new connection each time, so that both workers take some
            owner = ev.OwnerRegistered(
                actor="registrar",
                timestamp=timestamp_now(),
                owner=ev.OwnerInfo(id=f"owner-{i}", name=f"Owner {i}", kind="company", country="CA"),
            )
            response = httpx.post(
                f"{url}/v1/events",
                content=envelope_for(owner, key).to_json(),
                headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            )
            assert response.status_code == 201, response.text
        for _ in range(6):
            scraped = httpx.get(f"{url}/metrics")
            assert scraped.status_code == 200
            assert _accepted(scraped.text) == 12  # the same total whichever worker answers
        lines = (tmp_path / "server.log").read_text()
        assert lines.count("Started server process") == 2
