"""The demo supply chain: spodumene from Quebec and Western Australia, refined in Texas, made into cathode
material in Mexico (qualifies); cobalt from the DRC refined in Finland by a refiner 30 % owned by a covered-nation
government, made into precursor in Mexico (does not: foreign entity of concern). Played through the HTTP client, so it works against any running server (``ledger demo``)
and in-process for ``make run``."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from ledger.client import ClientError, LedgerClient
from ledger.domain import events as ev
from ledger.domain.keys import SigningKey
from ledger.rules.bundle import verify_bundle
from ledger.rules.profiles import Profiles
from ledger.services.wording import headline, share_line

Say = Callable[[str], None]


@dataclass
class DemoResult:
    suffix: str
    participants: dict[str, LedgerClient] = field(default_factory=dict)
    batches: dict[str, str] = field(default_factory=dict)
    """Role in the story -> batch id."""
    bundle: dict[str, Any] = field(default_factory=dict)


DEMO_START = datetime(2026, 7, 10, 6, 0, tzinfo=UTC)
"""The demo's story runs from 10 July to 6 October 2026. It is replayed compressed into the few minutes after the
demo starts: events are recorded as they happen, none may predate its signer's admission (which the demo does
now), and the server accepts timestamps up to LEDGER_CLOCK_SKEW_SECONDS ahead of its clock."""
DEMO_REQUESTS = 65
"""How many HTTP requests a play makes (for a progress bar's total; tests/test_cli_roles.py keeps it true)."""
DEMO_SECONDS = 180
"""The story's 88 days become this many seconds, starting 20 s after the demo starts."""
_clock = {"start": datetime.now(UTC)}
"""When the current play started (set by :func:`play`)."""


def _when(story_time: str) -> str:
    """A time of the story, moved into the demo's window, in the same local offset."""
    original = datetime.fromisoformat(story_time)
    elapsed = (original - DEMO_START) / timedelta(days=88)
    moved = _clock["start"] + timedelta(seconds=20 + elapsed * DEMO_SECONDS)
    return moved.astimezone(original.tzinfo).replace(microsecond=0).isoformat()


def _day(offset_days: int) -> str:
    return (_clock["start"] + timedelta(days=offset_days)).date().isoformat()


def _usd(amount: str) -> ev.Money:
    return ev.Money(amount=amount, currency="USD")


def pick_suffix(registrar: LedgerClient) -> str:
    """No suffix on a fresh ledger; a random one if the demo already ran there, so it can be replayed."""
    try:
        registrar.participant("northstar-lithium")
    except ClientError as exc:
        if exc.status == 404:
            return ""
        raise
    return "-" + secrets.token_hex(2)


def play(
    registrar: LedgerClient, *, suffix: str | None = None, say: Say = print, vkey: str | None = None
) -> DemoResult:
    """Play the scenario as ``registrar`` and the participants it admits; return who and what was made."""
    _clock["start"] = datetime.now(UTC).replace(microsecond=0)
    sfx = pick_suffix(registrar) if suffix is None else suffix
    result = DemoResult(suffix=sfx)

    def admit(
        pid: str,
        name: str,
        roles: list[str],
        country: str,
        facility: tuple[str, str, str, str] | None,
        stakes: list[ev.GovernmentStake] | None = None,
    ) -> LedgerClient:
        key = SigningKey.generate()
        registrar.admit_participant(
            pid + sfx, name, roles, country, public_keys=[key.public_key_b64], government_stakes=stakes or []
        )
        where = ""
        if facility is not None:
            facility_id, kind, facility_country, facility_name = facility
            registrar.register_facility(facility_id + sfx, pid + sfx, kind, facility_country, facility_name)
            where = f" with {kind} {facility_id + sfx} in {facility_country}"
        token = registrar.issue_token(pid + sfx, "demo").token
        client = registrar.acting_as(pid + sfx, key, token)
        result.participants[pid] = client
        say(f"  admitted {pid + sfx} ({', '.join(roles)}, {country}){where}")
        return client

    say("registering participants and facilities")
    northstar = admit(
        "northstar-lithium",
        "Northstar Lithium Inc.",
        ["miner"],
        "CA",
        ("northstar-qc-mine", "mine", "CA", "Baie-James spodumene mine, Quebec"),
    )
    outback = admit(
        "outback-minerals",
        "Outback Minerals Pty Ltd",
        ["miner"],
        "AU",
        ("outback-wa-mine", "mine", "AU", "Pilbara spodumene mine, Western Australia"),
    )
    gulf = admit(
        "gulf-refining",
        "Gulf Coast Lithium Refining LLC",
        ["processor"],
        "US",
        ("gulf-tx-refinery", "refinery", "US", "Corpus Christi lithium hydroxide refinery, Texas"),
    )
    monterrey = admit(
        "monterrey-cathodes",
        "Cátodos de Monterrey S.A. de C.V.",
        ["processor", "manufacturer"],
        "MX",
        ("monterrey-cam-plant", "plant", "MX", "Cathode active material plant, Nuevo León"),
    )
    kivu = admit(
        "kivu-cobalt",
        "Kivu Cobalt SARL",
        ["miner"],
        "CD",
        ("kivu-mine", "mine", "CD", "Kolwezi copper-cobalt mine, Lualaba"),
    )
    nordic = admit(
        "nordic-cobalt",
        "Nordic Cobalt Refining Oy",
        ["processor"],
        "FI",
        ("nordic-kokkola-refinery", "refinery", "FI", "Kokkola cobalt refinery, Finland"),
        stakes=[ev.GovernmentStake(country="CN", equity="0.30", votes="0.30", board_seats="0.20")],
    )
    auditor = admit("verity-assurance", "Verity Assurance Ltd", ["auditor"], "CA", None)

    say("auditors attest mines and refineries")
    report = "9f2c4e6a8b0d1f3e5a7c9b1d3f5e7a9c1b3d5f7e9a1c3b5d7f9e1a3c5b7d9f1e"
    auditor.attest(
        "att-irma-northstar" + sfx,
        facility="northstar-qc-mine" + sfx,
        standard="irma",
        level="irma_75",
        valid_from=_day(-365),
        valid_to=_day(365),
        report_sha256=report,
        minerals=["lithium"],
    )
    auditor.attest(
        "att-irma-outback" + sfx,
        facility="outback-wa-mine" + sfx,
        standard="irma",
        level="irma_50",
        valid_from=_day(-365),
        valid_to=_day(365),
        report_sha256=report,
        minerals=["lithium"],
    )
    auditor.attest(
        "att-rmap-gulf" + sfx,
        facility="gulf-tx-refinery" + sfx,
        standard="rmap",
        level="conformant",
        valid_from=_day(-365),
        valid_to=_day(365),
        report_sha256=report,
        minerals=["lithium"],
    )
    auditor.attest(
        "att-irma-kivu" + sfx,
        facility="kivu-mine" + sfx,
        standard="irma",
        level="irma_50",
        valid_from=_day(-365),
        valid_to=_day(365),
        report_sha256=report,
        minerals=["cobalt"],
    )
    auditor.attest("att-rmap-nordic" + sfx, facility="nordic-kokkola-refinery" + sfx, standard="rmap", level="conformant", valid_from=_day(-365), valid_to=_day(365), report_sha256=report, minerals=["cobalt"])  # fmt: skip

    qc, wa = "spod-qc-0001" + sfx, "spod-wa-0001" + sfx
    lioh, lioh_a, lioh_b, cam = (
        f"{name}{sfx}" for name in ("lioh-tx-0001", "lioh-tx-0001-a", "lioh-tx-0001-b", "cam-mx-0001")
    )
    mine_qc, mine_wa = "northstar-qc-mine" + sfx, "outback-wa-mine" + sfx
    refinery, plant = "gulf-tx-refinery" + sfx, "monterrey-cam-plant" + sfx

    say("mining and shipping spodumene concentrate")
    northstar.extract(
        mine_qc,
        qc,
        "lithium",
        "concentrate",
        20_000_000,
        value=_usd("24000.00"),
        timestamp=_when("2026-09-01T08:00:00-04:00"),
    )
    northstar.transfer(
        qc,
        gulf.actor or "",
        [("CA", False), ("US", False)],
        to_facility=refinery,
        timestamp=_when("2026-09-02T07:30:00-04:00"),
    )
    gulf.receive(
        qc, refinery, mass_g=19_950_000, timestamp=_when("2026-09-06T10:00:00-05:00")
    )  # 50 kg lost in transit
    outback.extract(
        mine_wa,
        wa,
        "lithium",
        "concentrate",
        10_000_000,
        value=_usd("11500.00"),
        timestamp=_when("2026-08-20T09:00:00+08:00"),
    )
    outback.transfer(
        wa,
        gulf.actor or "",
        [("AU", False), ("SG", True), ("US", False)],
        to_facility=refinery,
        timestamp=_when("2026-08-22T16:00:00+08:00"),
    )
    gulf.receive(wa, refinery, timestamp=_when("2026-09-18T11:00:00-05:00"))  # fmt: skip

    say("refining into lithium hydroxide, splitting, shipping to Mexico")
    gulf.transform(
        refinery,
        "refining",
        [(qc, 19_950_000), (wa, 10_000_000)],
        [ev.Output(id=lioh, mineral="lithium", form="hydroxide", mass_g=4_500_000, value=_usd("67500.00"))],
        _usd("40000.00"),
        timestamp=_when("2026-09-25T14:00:00-05:00"),
    )
    gulf.split(lioh, [(lioh_a, 3_000_000), (lioh_b, 1_500_000)], timestamp=_when("2026-09-26T09:00:00-05:00"))
    gulf.transfer(
        lioh_a,
        monterrey.actor or "",
        [("US", False), ("MX", False)],
        to_facility=plant,
        timestamp=_when("2026-09-28T08:00:00-05:00"),
    )
    monterrey.receive(lioh_a, plant, timestamp=_when("2026-09-30T12:00:00-06:00"))
    say("making cathode material in Monterrey")
    monterrey.transform(
        plant,
        "cathode",
        [(lioh_a, 3_000_000)],
        [ev.Output(id=cam, mineral="lithium", form="cathode_material", mass_g=2_800_000, value=_usd("96000.00"))],
        _usd("52000.00"),
        timestamp=_when("2026-10-05T15:00:00-06:00"),
    )  # fmt: skip
    say("cobalt from the DRC, refined in Finland by a refiner 30 % owned by a covered-nation government")
    cobalt, sulfate, pcam = "co-kv-0001" + sfx, "coso4-fi-0001" + sfx, "pcam-mx-0002" + sfx
    kivu.extract(
        "kivu-mine" + sfx,
        cobalt,
        "cobalt",
        "intermediate",
        8_000_000,
        value=_usd("90000.00"),
        timestamp=_when("2026-07-10T08:00:00+02:00"),
    )
    kivu.transfer(
        cobalt,
        nordic.actor or "",
        [("CD", False), ("ZA", True), ("FI", False)],
        to_facility="nordic-kokkola-refinery" + sfx,
        timestamp=_when("2026-07-12T08:00:00+02:00"),
    )
    nordic.receive(
        cobalt,
        "nordic-kokkola-refinery" + sfx,
        mass_g=7_990_000,
        timestamp=_when("2026-08-25T09:00:00+03:00"),
    )
    nordic.transform(
        "nordic-kokkola-refinery" + sfx,
        "refining",
        [(cobalt, 7_990_000)],
        [ev.Output(id=sulfate, mineral="cobalt", form="sulfate", mass_g=6_000_000)],
        _usd("30000.00"),
        timestamp=_when("2026-09-01T10:00:00+03:00"),
    )
    nordic.transfer(
        sulfate,
        monterrey.actor or "",
        [("FI", False), ("MX", False)],
        to_facility=plant,
        timestamp=_when("2026-09-03T10:00:00+03:00"),
    )
    monterrey.receive(sulfate, plant, timestamp=_when("2026-09-29T12:00:00-06:00"))
    monterrey.transform(
        plant,
        "precursor",
        [(sulfate, 6_000_000)],
        [ev.Output(id=pcam, mineral="cobalt", form="precursor", mass_g=5_500_000)],
        _usd("20000.00"),
        timestamp=_when("2026-10-06T15:00:00-06:00"),
    )

    result.batches.update(
        {"quebec_spodumene": qc, "australian_spodumene": wa, "hydroxide": lioh, "hydroxide_a": lioh_a, "hydroxide_b": lioh_b, "cathode": cam, "precursor": pcam}
    )  # fmt: skip
    say(f"cathode batch {cam}; its upstream lineage:")
    say(registrar.lineage_picture(cam, "upstream", "mermaid"))
    for label, batch in (("lithium cathode material", cam), ("cobalt precursor", pcam)):
        determination = registrar.eligibility(batch, at=None)
        say(f"{label} {batch}: {headline(determination, determination.reasons)}")
        say(f"  {share_line(determination)}")
        for reason in determination.reasons:
            if reason.code != "attestation-valid":
                say(
                    f"  {'+' if reason.outcome == 'pass' else '-' if reason.outcome == 'fail' else 'i'} {reason.message}"
                )
    recorded = registrar.record_determination(cam, at=None)
    say(f"recorded the determination for {cam} in the log as {recorded.event_id}")
    bundle = registrar.bundle(cam, at=None)
    verified = verify_bundle(bundle, vkey=vkey or registrar.log_key(), local_profiles=Profiles().by_id)
    say(
        f"verified the proof bundle offline: {verified.entries} events, checkpoint of size {verified.checkpoint.size}, "
        f"verdict {verified.determination.verdict.replace('_', ' ')} reproduced"
    )
    say(f"done: cathode batch {cam} qualifies; cobalt precursor {pcam} does not")
    result.bundle = bundle
    return result
