"""What an operator sees: Prometheus metrics at /metrics (parsed with prometheus_client's own parser), one JSON log
line per request with a request id echoed in a header, and no secret in any log line."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ledger.client import envelope_for
from tests.support import Chain, World


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def _value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_metrics_count_requests_events_and_show_integration_lag(chain: Chain) -> None:
    world = chain.world
    before = _samples((await world.client.get("/metrics")).text)
    await chain.send(chain.extract("m-1", 1_000), chain.miner)
    await chain.send(chain.extract("m-2", 1_000), chain.miner)
    refused = await chain.send(chain.extract("m-1", 2_000), chain.miner, expect=None)  # same batch id again
    assert refused.status_code == 409
    await world.client.get("/v1/no-such-route", headers=world.registrar.headers)
    for made_up in ("BREW", "WHEN"):  # a made-up method does not make a label set of its own
        await world.client.request(made_up, "/v1/no-such-route")
    response = await world.client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    after = _samples(response.text)

    def grew(name: str, **labels: str) -> float:
        return _value(after, name, **labels) - _value(before, name, **labels)

    route = "/v1/events"
    assert grew("ledger_http_requests_total", route=route, method="POST", status="201") == 2
    assert grew("ledger_http_requests_total", route=route, method="POST", status="409") == 1
    assert grew("ledger_http_requests_total", route="(unmatched)", method="GET", status="404") == 1
    assert grew("ledger_http_requests_total", route="(unmatched)", method="OTHER", status="404") == 2
    assert not [
        labels for name, labels in after if ("method", "BREW") in labels or ("method", "WHEN") in labels
    ]
    assert grew("ledger_http_request_duration_seconds_count", route=route, method="POST") == 3
    assert grew("ledger_events_total", outcome="accepted", reason="") == 2
    assert grew("ledger_events_total", outcome="rejected", reason=refused.json()["code"]) == 1
    assert grew("ledger_group_commit_events_count") >= 1
    # the acceptance rules ran: under the sequencer's lock ("accept"), or before its one write statement ("check")
    assert (
        grew("ledger_submit_stage_seconds_total", stage="accept")
        + grew("ledger_submit_stage_seconds_total", stage="check")
        > 0
    )
    # nothing integrated yet in this test's world (no integrator runs): every entry is waiting
    entries = _value(after, "ledger_log_entries")
    assert entries >= 3 and _value(after, "ledger_log_unintegrated_entries") == entries
    await world.services.log.integrate_all()
    integrated = _samples((await world.client.get("/metrics")).text)
    assert _value(integrated, "ledger_log_unintegrated_entries") == 0
    assert 0 <= _value(integrated, "ledger_log_checkpoint_age_seconds") < 60
    assert _value(integrated, "ledger_db_pool_size") >= 0


async def test_metrics_can_need_a_token_or_be_off(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    import dataclasses

    settings = world.services.settings
    monkeypatch.setattr(
        world.services, "settings", dataclasses.replace(settings, metrics_token="scrape-secret")
    )
    missing = await world.client.get("/metrics")
    assert missing.status_code == 401 and "LEDGER_METRICS_TOKEN" in missing.json()["detail"]
    wrong = await world.client.get("/metrics", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401
    api_token = await world.client.get("/metrics", headers=world.registrar.headers)
    assert api_token.status_code == 401  # an API token is not the scraper's secret
    right = await world.client.get("/metrics", headers={"Authorization": "Bearer scrape-secret"})
    assert right.status_code == 200
    monkeypatch.setattr(world.services, "settings", dataclasses.replace(settings, metrics=False))
    assert (await world.client.get("/metrics")).status_code == 404


def test_the_real_server_logs_one_json_line_per_request_without_secrets(server: str, tmp_path: Path) -> None:
    token = (tmp_path / "var" / "registrar.token").read_text().strip()
    headers = {"Authorization": f"Bearer {token}"}
    echoed = httpx.get(f"{server}/v1/participants", headers={**headers, "X-Request-ID": "trace-42.a"})
    assert echoed.status_code == 200 and echoed.headers["x-request-id"] == "trace-42.a"
    assert "server" not in echoed.headers  # `ledger serve` does not name its HTTP server to everyone who asks
    made_up = httpx.get(
        f"{server}/v1/participants/registrar", headers={**headers, "X-Request-ID": "bad id {}"}
    )
    assert len(made_up.headers["x-request-id"]) == 32  # an unusable id is replaced, not echoed
    refused = httpx.post(f"{server}/v1/events", content=b"{", headers={"Content-Type": "application/json"})
    assert refused.status_code == 400 and refused.headers["x-request-id"]
    httpx.get(f"{server}/healthz")
    lines = (tmp_path / "server.log").read_text().splitlines()
    records = [json.loads(line) for line in lines]  # every line is one JSON object, uvicorn's own included
    requests = {r["request_id"]: r for r in records if r.get("message") == "request"}
    first = requests["trace-42.a"]
    assert first["participant"] == "registrar" and first["status"] == 200
    assert first["route"] == "/v1/participants" and first["method"] == "GET" and first["duration_ms"] >= 0
    second = requests[made_up.headers["x-request-id"]]
    assert second["route"] == "/v1/participants/{participant_id}"
    bad = requests[refused.headers["x-request-id"]]
    assert bad["status"] == 400 and bad["participant"] is None
    assert all({"time", "level", "logger", "message"} <= set(r) for r in records)
    text = "\n".join(lines)
    secret = token.removeprefix("tok_").split("_", 1)[1]  # tok_<id>_<secret>; the secret may hold "_" itself
    assert len(secret) >= 20 and token not in text and secret not in text


async def test_metrics_survive_a_refused_envelope_in_a_batch(chain: Chain) -> None:
    """Outcomes are counted per envelope, not per request."""
    world = chain.world
    before = _samples((await world.client.get("/metrics")).text)
    good = envelope_for(chain.extract("mb-1", 1_000), chain.miner.key)
    again = envelope_for(chain.extract("mb-1", 5), chain.miner.key)
    response = await world.batch([good, good, again], chain.miner)
    assert response.status_code == 200
    after = _samples((await world.client.get("/metrics")).text)
    assert (
        _value(after, "ledger_events_total", outcome="accepted", reason="")
        - _value(before, "ledger_events_total", outcome="accepted", reason="")
        == 1
    )
    assert (
        _value(after, "ledger_events_total", outcome="duplicate", reason="")
        - _value(before, "ledger_events_total", outcome="duplicate", reason="")
        == 1
    )
