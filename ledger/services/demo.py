"""The demo supply chain: spodumene from Quebec and Western Australia, refined in Texas, made into cathode
material in Mexico. Played through the HTTP client, so it works against any running server (``ledger demo``)
and in-process for ``make run``."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, field

from ledger.client import ClientError, LedgerClient
from ledger.domain import events as ev
from ledger.domain.keys import SigningKey

Say = Callable[[str], None]


@dataclass
class DemoResult:
    suffix: str
    participants: dict[str, LedgerClient] = field(default_factory=dict)
    batches: dict[str, str] = field(default_factory=dict)
    """Role in the story -> batch id."""


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


def play(registrar: LedgerClient, *, suffix: str | None = None, say: Say = print) -> DemoResult:
    """Play the scenario as ``registrar`` and the participants it admits; return who and what was made."""
    sfx = pick_suffix(registrar) if suffix is None else suffix
    result = DemoResult(suffix=sfx)

    def admit(
        pid: str, name: str, roles: list[str], country: str, facility: tuple[str, str, str]
    ) -> LedgerClient:
        key = SigningKey.generate()
        registrar.admit_participant(pid + sfx, name, roles, country, public_keys=[key.public_key_b64])
        facility_id, kind, facility_name = facility
        registrar.register_facility(facility_id + sfx, pid + sfx, kind, country, facility_name)
        token = registrar.issue_token(pid + sfx, "demo").token
        client = registrar.acting_as(pid + sfx, key, token)
        result.participants[pid] = client
        say(f"  admitted {pid + sfx} ({', '.join(roles)}, {country}) with {kind} {facility_id + sfx}")
        return client

    say("registering participants and facilities")
    northstar = admit(
        "northstar-lithium",
        "Northstar Lithium Inc.",
        ["miner"],
        "CA",
        ("northstar-qc-mine", "mine", "Baie-James spodumene mine, Quebec"),
    )
    outback = admit(
        "outback-minerals",
        "Outback Minerals Pty Ltd",
        ["miner"],
        "AU",
        ("outback-wa-mine", "mine", "Pilbara spodumene mine, Western Australia"),
    )
    gulf = admit(
        "gulf-refining",
        "Gulf Coast Lithium Refining LLC",
        ["processor"],
        "US",
        ("gulf-tx-refinery", "refinery", "Corpus Christi lithium hydroxide refinery, Texas"),
    )
    monterrey = admit("monterrey-cathodes", "Cátodos de Monterrey S.A. de C.V.", ["processor", "manufacturer"], "MX", ("monterrey-cam-plant", "plant", "Cathode active material plant, Nuevo León"))  # fmt: skip

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
        timestamp="2026-09-01T08:00:00-04:00",
    )
    northstar.transfer(
        qc,
        gulf.actor or "",
        [("CA", False), ("US", False)],
        to_facility=refinery,
        timestamp="2026-09-02T07:30:00-04:00",
    )
    gulf.receive(
        qc, refinery, mass_g=19_950_000, timestamp="2026-09-06T10:00:00-05:00"
    )  # 50 kg lost in transit
    outback.extract(
        mine_wa,
        wa,
        "lithium",
        "concentrate",
        10_000_000,
        value=_usd("11500.00"),
        timestamp="2026-08-20T09:00:00+08:00",
    )
    outback.transfer(
        wa,
        gulf.actor or "",
        [("AU", False), ("SG", True), ("US", False)],
        to_facility=refinery,
        timestamp="2026-08-22T16:00:00+08:00",
    )
    gulf.receive(wa, refinery, timestamp="2026-09-18T11:00:00-05:00")  # fmt: skip

    say("refining into lithium hydroxide, splitting, shipping to Mexico")
    gulf.transform(
        refinery,
        "refining",
        [(qc, 19_950_000), (wa, 10_000_000)],
        [ev.Output(id=lioh, mineral="lithium", form="hydroxide", mass_g=4_500_000, value=_usd("67500.00"))],
        _usd("40000.00"),
        timestamp="2026-09-25T14:00:00-05:00",
    )
    gulf.split(lioh, [(lioh_a, 3_000_000), (lioh_b, 1_500_000)], timestamp="2026-09-26T09:00:00-05:00")
    gulf.transfer(
        lioh_a,
        monterrey.actor or "",
        [("US", False), ("MX", False)],
        to_facility=plant,
        timestamp="2026-09-28T08:00:00-05:00",
    )
    monterrey.receive(lioh_a, plant, timestamp="2026-09-30T12:00:00-06:00")
    say("making cathode material in Monterrey")
    monterrey.transform(
        plant,
        "cathode",
        [(lioh_a, 3_000_000)],
        [ev.Output(id=cam, mineral="lithium", form="cathode_material", mass_g=2_800_000, value=_usd("96000.00"))],
        _usd("52000.00"),
        timestamp="2026-10-05T15:00:00-06:00",
    )  # fmt: skip
    result.batches.update(
        {"quebec_spodumene": qc, "australian_spodumene": wa, "hydroxide": lioh, "hydroxide_a": lioh_a, "hydroxide_b": lioh_b, "cathode": cam}
    )  # fmt: skip
    say(f"done: cathode batch {cam}; its upstream lineage:")
    say(registrar.lineage_picture(cam, "upstream", "mermaid"))
    return result
