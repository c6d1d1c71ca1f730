"""A builder of event histories for the eligibility engine, so that tests state their scenario in a few lines.

Events are real typed events with real ids (SHA-256 of their canonical payload); the engine does not check
signatures, so none are made here (signatures are covered by the bundle and API tests).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

from ledger.domain import events as ev
from ledger.domain.canonical import canonical_bytes
from ledger.domain.dsse import event_id
from ledger.rules.engine import Determination, LoggedEvent, determine
from ledger.rules.profiles import Profile, Profiles, parse_profile

PROFILES = Profiles()


def variant(base: str = "ptz-2026", **changes: object) -> Profile:
    """A built-in profile with some fields changed (a new version, so its hash differs)."""
    document = PROFILES.get(base).document()
    document.update(changes)
    document["version"] = document["version"] + 1
    return parse_profile(document, f"{base} variant")


PTZ_MASS = variant(share_basis="mass")
"""ptz-2026 weighing by mass: the first release's tests state their arithmetic in grams."""
REPORT = "ab" * 32
ADMITTED = "2025-01-02T09:00:00Z"


def money(text: str | None) -> ev.Money | None:
    """ "1000.50 USD" -> Money."""
    if text is None:
        return None
    amount, currency = text.split()
    return ev.Money(amount=amount, currency=currency)


@dataclass
class History:
    events: list[LoggedEvent] = field(default_factory=list)
    heads: dict[str, str] = field(default_factory=dict)
    masses: dict[str, int] = field(default_factory=dict)

    def add(self, event: ev.Event) -> str:
        eid = event_id(canonical_bytes(ev.encode_event(event)))
        self.events.append(LoggedEvent(len(self.events), eid, event))
        return eid

    # --- registry ---------------------------------------------------------------------------------------------

    def participant(
        self,
        pid: str,
        roles: list[str],
        country: str,
        *,
        stakes: list[ev.GovernmentStake] | None = None,
        incorporated_in: str | None = None,
        headquartered_in: str | None = None,
    ) -> str:
        self.add(
            ev.ParticipantAdmitted(
                actor="registrar",
                timestamp=ADMITTED,
                participant=ev.ParticipantInfo(
                    id=pid,
                    name=pid,
                    roles=roles,
                    country=country,
                    ownership=ev.Ownership(
                        incorporated_in=incorporated_in or country,
                        headquartered_in=headquartered_in or country,
                        government_stakes=stakes or [],
                    ),
                ),
            )
        )
        return pid

    def ownership(self, pid: str, effective: str, ownership: ev.Ownership) -> None:
        self.add(
            ev.OwnershipChanged(
                actor="registrar",
                timestamp=ADMITTED,
                participant=pid,
                effective_date=effective,
                ownership=ownership,
            )
        )

    def facility(self, fid: str, owner: str, kind: str, country: str) -> str:
        self.add(
            ev.FacilityRegistered(
                actor="registrar",
                timestamp=ADMITTED,
                facility=ev.FacilityInfo(id=fid, participant=owner, kind=kind, country=country, name=fid),
            )
        )
        return fid

    def attest(
        self,
        aid: str,
        facility: str,
        standard: str,
        level: str,
        valid_from: str = "2020-01-01",
        valid_to: str = "2030-12-31",
        *,
        auditor: str = "auditor",
        minerals: list[str] | None = None,
    ) -> str:
        return self.add(
            ev.Attest(
                actor=auditor,
                timestamp=ADMITTED,
                attestation=ev.AttestationInfo(
                    id=aid,
                    subject=ev.AttestationSubject(facility=facility),
                    standard=standard,
                    level=level,
                    valid_from=valid_from,
                    valid_to=valid_to,
                    report_sha256=REPORT,
                    minerals=minerals or [],
                ),
            )
        )

    def revoke(self, aid: str, effective: str, *, suspend: bool = False) -> None:
        kind = ev.SuspendAttestation if suspend else ev.RevokeAttestation
        self.add(
            kind(
                actor="auditor",
                timestamp=ADMITTED,
                attestation=aid,
                effective_date=effective,
                reason="audit finding",
            )
        )

    def mine(self, fid: str, owner: str, country: str, *, attested: bool = True) -> str:
        self.facility(fid, owner, "mine", country)
        if attested:
            self.attest(f"irma-{fid}", fid, "irma", "irma_75")
        return fid

    def refinery(
        self, fid: str, owner: str, country: str, *, attested: bool = True, kind: str = "refinery"
    ) -> str:
        self.facility(fid, owner, kind, country)
        if attested:
            self.attest(f"rmap-{fid}", fid, "rmap", "conformant")
        return fid

    # --- custody ----------------------------------------------------------------------------------------------

    def extract(
        self,
        actor: str,
        facility: str,
        batch: str,
        mass_g: int,
        ts: str,
        mineral: str = "lithium",
        value: str | None = None,
    ) -> str:
        eid = self.add(
            ev.Extract(
                actor=actor,
                timestamp=ts,
                facility=facility,
                batch=ev.NewBatch(
                    id=batch, mineral=mineral, form="concentrate", mass_g=mass_g, value=money(value)
                ),
            )
        )
        self.heads[batch], self.masses[batch] = eid, mass_g
        return eid

    def ship(
        self,
        sender: str,
        batch: str,
        receiver: str,
        facility: str,
        ts: str,
        route: list[tuple[str, bool]] | list[ev.RouteLeg],
    ) -> None:
        legs = [
            leg if isinstance(leg, ev.RouteLeg) else ev.RouteLeg(country=leg[0], customs_control=leg[1])
            for leg in route
        ]
        self.heads[batch] = self.add(
            ev.Transfer(
                actor=sender,
                timestamp=ts,
                batch=batch,
                parent=self.heads[batch],
                to=receiver,
                route=legs,
                to_facility=facility,
            )
        )
        self.heads[batch] = self.add(
            ev.Receive(
                actor=receiver,
                timestamp=ts,
                batch=batch,
                parent=self.heads[batch],
                facility=facility,
                mass_g=self.masses[batch],
            )
        )

    def transform(
        self,
        actor: str,
        facility: str,
        inputs: list[tuple[str, int]],
        outputs: list[tuple[str, int]],
        value_added: str,
        ts: str,
        *,
        process: str = "refining",
        currency: str = "USD",
        mineral: str = "lithium",
        form: str = "hydroxide",
    ) -> str:
        eid = self.add(
            ev.Transform(
                actor=actor,
                timestamp=ts,
                facility=facility,
                process=process,
                inputs=[ev.Input(batch=b, parent=self.heads[b], mass_g=m) for b, m in inputs],
                outputs=[ev.Output(id=o, mineral=mineral, form=form, mass_g=m) for o, m in outputs],
                value_added=ev.Money(amount=value_added, currency=currency),
            )
        )
        for b, m in inputs:
            self.heads[b] = eid
            self.masses[b] -= m
        for o, m in outputs:
            self.heads[o], self.masses[o] = eid, m
        return eid

    def recycle(
        self, actor: str, facility: str, outputs: list[tuple[str, int, str, str | None]], ts: str
    ) -> str:
        """Outputs are (batch id, grams, mineral, value such as "100 USD")."""
        eid = self.add(
            ev.Recycle(
                actor=actor,
                timestamp=ts,
                facility=facility,
                feedstock=[
                    ev.Feedstock(
                        description="end-of-life EV packs",
                        category="end_of_life_battery",
                        mass_g=sum(m for _, m, _, _ in outputs) * 2,
                    )
                ],
                outputs=[
                    ev.Output(id=o, mineral=mineral, form="sulfate", mass_g=m, value=money(v))
                    for o, m, mineral, v in outputs
                ],
            )
        )
        for o, m, _, _ in outputs:
            self.heads[o], self.masses[o] = eid, m
        return eid

    def rates(self, day: str, rates: list[tuple[str, str, str]]) -> None:
        self.add(
            ev.ExchangeRatesPublished(
                actor="registrar",
                timestamp=ADMITTED,
                date=day,
                rates=[ev.ExchangeRate(from_=f, to=t, rate=r) for f, t, r in rates],
                source="test rates",
            )
        )

    def owner(self, oid: str, kind: str, country: str) -> str:
        self.add(
            ev.OwnerRegistered(
                actor="registrar",
                timestamp=ADMITTED,
                owner=ev.OwnerInfo(id=oid, name=oid, kind=kind, country=country),
            )
        )
        return oid

    def stake(self, holder: str, subject: str, effective: str = "2020-01-01", **measures: str) -> None:
        self.add(
            ev.StakeRecorded(
                actor="registrar",
                timestamp=ADMITTED,
                holder=holder,
                subject=subject,
                effective_date=effective,
                **measures,
            )
        )

    def custody_model(self, facility: str, model: str, effective: str = "2020-01-01", **kw: object) -> None:
        owner = next(
            e.event.facility.participant
            for e in self.events
            if isinstance(e.event, ev.FacilityRegistered) and e.event.facility.id == facility
        )
        self.add(
            ev.CustodyModelDeclared(
                actor=owner,
                timestamp=ADMITTED,
                facility=facility,
                model=model,
                effective_date=effective,
                **kw,  # type: ignore[arg-type]
            )
        )

    def claim(
        self, actor: str, facility: str, batch: str, mass_g: int, period: str, ts: str, profile: str
    ) -> None:
        self.heads[batch] = self.add(
            ev.Claim(
                actor=actor,
                timestamp=ts,
                facility=facility,
                profile=profile,
                period=period,
                batch=batch,
                mass_g=mass_g,
            )
        )

    def merge(self, actor: str, inputs: list[str], output: str, ts: str) -> str:
        eid = self.add(
            ev.Merge(
                actor=actor,
                timestamp=ts,
                inputs=[ev.MergeInput(batch=b, parent=self.heads[b]) for b in inputs],
                output=output,
            )
        )
        self.heads[output], self.masses[output] = eid, sum(self.masses[b] for b in inputs)
        for b in inputs:
            self.heads[b] = eid
        return eid

    def split(self, actor: str, batch: str, parts: list[tuple[str, int]], ts: str) -> str:
        eid = self.add(
            ev.Split(
                actor=actor,
                timestamp=ts,
                batch=batch,
                parent=self.heads[batch],
                outputs=[ev.SplitPart(id=i, mass_g=m) for i, m in parts],
            )
        )
        self.heads[batch] = eid
        for i, m in parts:
            self.heads[i], self.masses[i] = eid, m
        return eid

    def determine(
        self, batch: str, at: str = "2030-12-31", profile: str | Profile = PTZ_MASS
    ) -> Determination:
        chosen = PROFILES.get(profile) if isinstance(profile, str) else profile
        return determine(self.events, batch, chosen, date.fromisoformat(at))


def base(
    *, processor_stakes: list[ev.GovernmentStake] | None = None, processor_country: str = "US"
) -> History:
    """A registrar, an auditor, a Canadian and an Australian miner with attested mines, and a refiner with an
    attested refinery (in the US unless told otherwise)."""
    h = History()
    h.participant("registrar", ["registrar"], "US")
    h.participant("auditor", ["auditor"], "CA")
    h.participant("ca-miner", ["miner"], "CA")
    h.participant("au-miner", ["miner"], "AU")
    h.participant("refiner", ["processor", "recycler"], processor_country, stakes=processor_stakes)
    h.mine("ca-mine", "ca-miner", "CA")
    h.mine("au-mine", "au-miner", "AU")
    h.refinery("us-refinery", "refiner", processor_country)
    return h


def reasons(determination: Determination, outcome: str | None = None) -> list[str]:
    return [r.code for r in determination.reasons if outcome is None or r.outcome == outcome]
