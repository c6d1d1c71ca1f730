"""Helpers for tests that drive a ledger through its HTTP API."""

from __future__ import annotations

from dataclasses import dataclass, field

import httpx
import msgspec

from ledger.client import envelope_for
from ledger.domain import events as ev
from ledger.domain.dsse import Envelope
from ledger.domain.keys import SigningKey
from ledger.services.container import Services

T0 = "2026-03-02T09:00:00-05:00"
"""A fixed event time well in the past of the machine's clock."""


@dataclass
class Member:
    id: str
    key: SigningKey
    token: str
    roles: list[str] = field(default_factory=list)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@dataclass
class World:
    """A ledger with its registrar, reached through the API."""

    client: httpx.AsyncClient
    services: Services
    registrar: Member

    async def post(self, envelope: Envelope, member: Member) -> httpx.Response:
        return await self.client.post(
            "/v1/events",
            content=envelope.to_json(),
            headers={**member.headers, "Content-Type": "application/json"},
        )

    async def submit(self, event: ev.Event, member: Member, expect: int | None = 201) -> httpx.Response:
        response = await self.post(envelope_for(event, member.key), member)
        if expect is not None:
            assert response.status_code == expect, response.text
        return response

    async def batch(self, envelopes: list[Envelope], member: Member) -> httpx.Response:
        body = msgspec.json.encode({"envelopes": envelopes})
        return await self.client.post(
            "/v1/events/batch", content=body, headers={**member.headers, "Content-Type": "application/json"}
        )

    async def admit(
        self,
        participant_id: str,
        roles: list[str],
        country: str = "US",
        *,
        ownership: ev.Ownership | None = None,
        timestamp: str = T0,
    ) -> Member:
        key = SigningKey.generate()
        event = ev.ParticipantAdmitted(
            actor=self.registrar.id,
            timestamp=timestamp,
            participant=ev.ParticipantInfo(
                id=participant_id,
                name=participant_id.replace("-", " ").title(),
                roles=roles,
                country=country,
                ownership=ownership or ev.Ownership(incorporated_in=country, headquartered_in=country),
            ),
            keys=[ev.NewKey(public_key=key.public_key_b64)],
        )
        await self.submit(event, self.registrar)
        issued = await self.services.tokens.issue(participant_id, "test")
        return Member(participant_id, key, issued.token, roles)

    async def facility(
        self, facility_id: str, owner: Member, kind: str, country: str, *, loss_tolerance: str = "0.005"
    ) -> str:
        event = ev.FacilityRegistered(
            actor=self.registrar.id,
            timestamp=T0,
            facility=ev.FacilityInfo(
                id=facility_id,
                participant=owner.id,
                kind=kind,
                country=country,
                name=facility_id,
                loss_tolerance=loss_tolerance,
            ),
        )
        await self.submit(event, self.registrar)
        return facility_id

    async def count_events(self) -> int:
        import sqlalchemy as sa

        from ledger.store.repo import events_t

        async with self.services.engine.connect() as conn:
            return int((await conn.execute(sa.select(sa.func.count()).select_from(events_t))).scalar_one())
