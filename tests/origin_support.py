"""A builder of histories for trade-agreement origin tests: goods with HS codes, materials with values, and the
producer's transaction value and net cost, on top of the eligibility tests' :class:`History`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from ledger.domain import events as ev
from ledger.rules.agreement import Agreement, Agreements, parse_agreement
from ledger.rules.origin import OriginDetermination, determine_origin
from tests.engine_support import History, money

AGREEMENTS = Agreements()
USMCA = AGREEMENTS.get("usmca")

TS = "2026-05-10T10:00:00-04:00"
LATER = "2026-06-01T10:00:00-05:00"
MADE = "2026-07-01T10:00:00-05:00"


def agreement_variant(**changes: object) -> Agreement:
    """usmca with some fields changed (a new version, so its hash differs)."""
    document = USMCA.document()
    document.update(changes)
    document["version"] = document["version"] + 1
    return parse_agreement(document, "usmca variant")


def with_rule(hs: str, alternatives: list[dict[str, object]], **extra: object) -> Agreement:
    """usmca with the product rule for ``hs`` replaced."""
    rules = [r for r in USMCA.document()["rules"] if r["hs"] != hs]
    rules.append({"hs": hs, "description": f"test rule for {hs}", "alternatives": alternatives, **extra})
    return agreement_variant(rules=rules)


@dataclass
class Material:
    batch: str
    mass_g: int
    value: str | None = None
    """e.g. "450 USD": the material's value as used (Art. 4.7)."""


class Trade(History):
    """Histories whose goods carry HS codes and whose productions declare the values origin needs."""

    def mined(
        self, actor: str, facility: str, batch: str, mass_g: int, hs6: str | None, mineral: str = "lithium"
    ) -> str:
        eid = self.add(
            ev.Extract(
                actor=actor,
                timestamp=TS,
                facility=facility,
                batch=ev.NewBatch(id=batch, mineral=mineral, form="ore", mass_g=mass_g, hs6=hs6),
            )
        )
        self.heads[batch], self.masses[batch] = eid, mass_g
        return eid

    def produce(
        self,
        actor: str,
        facility: str,
        materials: list[Material],
        output: str,
        mass_g: int,
        hs6: str | None,
        *,
        tv: str | None = None,
        nc: str | None = None,
        total_cost: str | None = None,
        process: str = "cell_assembly",
        ts: str = MADE,
        mineral: str = "mixed",
        form: str = "cell",
    ) -> str:
        eid = self.add(
            ev.Transform(
                actor=actor,
                timestamp=ts,
                facility=facility,
                process=process,
                inputs=[
                    ev.Input(batch=m.batch, parent=self.heads[m.batch], mass_g=m.mass_g, value=money(m.value))
                    for m in materials
                ],
                outputs=[
                    ev.Output(
                        id=output,
                        mineral=mineral,
                        form=form,
                        mass_g=mass_g,
                        hs6=hs6,
                        transaction_value=money(tv),
                        net_cost=money(nc),
                        total_cost=money(total_cost),
                    )
                ],
                value_added=ev.Money(amount="0", currency="USD"),
            )
        )
        for m in materials:
            self.heads[m.batch] = eid
            self.masses[m.batch] -= m.mass_g
        self.heads[output], self.masses[output] = eid, mass_g
        return eid

    def origin(
        self,
        batch: str,
        *,
        method: str = "transaction_value",
        agreement: Agreement = USMCA,
        at: str = "2030-12-31",
    ) -> OriginDetermination:
        return determine_origin(self.events, batch, agreement, date.fromisoformat(at), method)  # type: ignore[arg-type]


def parties() -> Trade:
    """A registrar; a Mexican miner, a Canadian refiner, a US cell maker (USMCA parties); a Chilean miner and a
    Korean supplier (not parties). Every site is in its owner's country."""
    t = Trade()
    t.participant("registrar", ["registrar"], "US")
    t.participant("mx-miner", ["miner"], "MX")
    t.participant("ca-refiner", ["processor"], "CA")
    t.participant("us-maker", ["manufacturer", "processor"], "US")
    t.participant("cl-miner", ["miner"], "CL")
    t.participant("kr-supplier", ["miner", "processor", "manufacturer"], "KR")
    t.facility("mx-mine", "mx-miner", "mine", "MX")
    t.facility("ca-refinery", "ca-refiner", "refinery", "CA")
    t.facility("us-plant", "us-maker", "plant", "US")
    t.facility("cl-mine", "cl-miner", "mine", "CL")
    t.facility("kr-plant", "kr-supplier", "plant", "KR")
    t.facility("kr-mine", "kr-supplier", "mine", "KR")
    return t


def imported(
    t: Trade,
    batch: str,
    hs6: str,
    mass_g: int,
    *,
    to: tuple[str, str] = ("us-maker", "us-plant"),
    form: str = "intermediate",
    mineral: str = "nickel",
) -> None:
    """A material made in Korea (not a party) from Korean ore and shipped to a party's site: non-originating."""
    t.mined("kr-supplier", "kr-mine", f"{batch}-raw", mass_g, None, mineral)
    t.ship("kr-supplier", f"{batch}-raw", "kr-supplier", "kr-plant", TS, [("KR", False)])
    t.produce(
        "kr-supplier",
        "kr-plant",
        [Material(f"{batch}-raw", mass_g)],
        batch,
        mass_g,
        hs6,
        process="refining",
        ts=TS,
        mineral=mineral,
        form=form,
    )
    country = {"us-plant": "US", "ca-refinery": "CA"}[to[1]]
    t.ship("kr-supplier", batch, to[0], to[1], LATER, [("KR", False), (country, False)])


def reason_codes(d: OriginDetermination, outcome: str | None = None) -> list[str]:
    return [r.code for r in d.reasons if outcome is None or r.outcome == outcome]
