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
from ledger.rules.profiles import Profiles

PROFILES = Profiles()
REPORT = "ab" * 32
ADMITTED = "2025-01-02T09:00:00Z"


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
        self, actor: str, facility: str, batch: str, mass_g: int, ts: str, mineral: str = "lithium"
    ) -> str:
        eid = self.add(
            ev.Extract(
                actor=actor,
                timestamp=ts,
                facility=facility,
                batch=ev.NewBatch(id=batch, mineral=mineral, form="concentrate", mass_g=mass_g),
            )
        )
        self.heads[batch], self.masses[batch] = eid, mass_g
        return eid

    def ship(
        self, sender: str, batch: str, receiver: str, facility: str, ts: str, route: list[tuple[str, bool]]
    ) -> None:
        self.heads[batch] = self.add(
            ev.Transfer(
                actor=sender,
                timestamp=ts,
                batch=batch,
                parent=self.heads[batch],
                to=receiver,
                route=[ev.RouteLeg(country=c, customs_control=b) for c, b in route],
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
    ) -> str:
        eid = self.add(
            ev.Transform(
                actor=actor,
                timestamp=ts,
                facility=facility,
                process=process,
                inputs=[ev.Input(batch=b, parent=self.heads[b], mass_g=m) for b, m in inputs],
                outputs=[ev.Output(id=o, mineral=mineral, form="hydroxide", mass_g=m) for o, m in outputs],
                value_added=ev.Money(amount=value_added, currency=currency),
            )
        )
        for b, m in inputs:
            self.heads[b] = eid
            self.masses[b] -= m
        for o, m in outputs:
            self.heads[o], self.masses[o] = eid, m
        return eid

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

    def determine(self, batch: str, at: str = "2030-12-31", profile: str = "ptz-2026") -> Determination:
        return determine(self.events, batch, PROFILES.get(profile), date.fromisoformat(at))


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
