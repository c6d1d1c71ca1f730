"""Helpers for tests that drive a ledger through its HTTP API."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import msgspec

from ledger.client import envelope_for
from ledger.domain import events as ev
from ledger.domain.dsse import Envelope
from ledger.domain.keys import SigningKey
from ledger.services.container import Services

T0 = "2026-03-02T09:00:00-05:00"
"""A fixed event time well in the past of the machine's clock."""
TS = "2026-09-01T08:00:00-04:00"


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


@dataclass
class Chain:
    world: World
    miner: Member
    refiner: Member
    maker: Member
    mine: str = "mine-qc"
    refinery: str = "refinery-tx"
    plant: str = "plant-mx"

    async def send(self, event: ev.Event, member: Member, expect: int | None = 201) -> httpx.Response:
        return await self.world.submit(event, member, expect=expect)

    async def head(self, batch_id: str) -> str:
        response = await self.world.client.get(
            f"/v1/batches/{batch_id}", headers=self.world.registrar.headers
        )
        assert response.status_code == 200, response.text
        return str(response.json()["head"])

    async def batch(self, batch_id: str) -> dict[str, object]:
        response = await self.world.client.get(
            f"/v1/batches/{batch_id}", headers=self.world.registrar.headers
        )
        assert response.status_code == 200, response.text
        return dict(response.json())

    def extract(self, batch_id: str, mass_g: int = 1_000_000, **kw: object) -> ev.Extract:
        fields: dict[str, object] = {
            "id": batch_id,
            "mineral": "lithium",
            "form": "concentrate",
            "mass_g": mass_g,
        }
        fields.update(kw)
        return ev.Extract(actor=self.miner.id, timestamp=TS, facility=self.mine, batch=ev.NewBatch(**fields))  # type: ignore[arg-type]

    async def transfer(
        self, batch_id: str, sender: Member, to: Member, facility: str | None = None
    ) -> ev.Transfer:
        return ev.Transfer(
            actor=sender.id,
            timestamp=TS,
            batch=batch_id,
            parent=await self.head(batch_id),
            to=to.id,
            route=[
                ev.RouteLeg(country="CA", customs_control=False),
                ev.RouteLeg(country="US", customs_control=False),
            ],
            to_facility=facility,
        )

    async def receive(self, batch_id: str, member: Member, facility: str, mass_g: int) -> ev.Receive:
        return ev.Receive(
            actor=member.id,
            timestamp=TS,
            batch=batch_id,
            parent=await self.head(batch_id),
            facility=facility,
            mass_g=mass_g,
        )

    async def ship(self, batch_id: str, sender: Member, to: Member, facility: str, mass_g: int) -> None:
        await self.send(await self.transfer(batch_id, sender, to, facility), sender)
        await self.send(await self.receive(batch_id, to, facility, mass_g), to)


LEDGER = [sys.executable, "-m", "ledger.cli"]


def ledger(env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run the ``ledger`` command as a real process."""
    result = subprocess.run([*LEDGER, *args], env=env, capture_output=True, text=True, timeout=300)
    if check:
        assert result.returncode == 0, result.stderr + result.stdout
    return result


@contextlib.contextmanager
def serving(env: dict[str, str], log: Path, *args: str) -> Iterator[str]:
    """``ledger serve`` (with ``args``) as a real process on a free loopback port, once ready; yields its URL."""
    port = free_port()
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*LEDGER, "serve", "--port", str(port), *args], env=env, stdout=out, stderr=out
        )
        url = f"http://127.0.0.1:{port}"
        try:
            for _ in range(200):
                try:
                    if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.1)
            else:
                raise AssertionError("the server did not become ready: " + log.read_text()[-2000:])
            yield url
        finally:
            process.terminate()
            process.wait(timeout=20)


def count_rows(database_url: str, table: str) -> int:
    """Rows in ``table`` of the database at ``database_url`` (read with a fresh engine)."""
    import asyncio

    import sqlalchemy as sa

    from ledger.store.db import create_engine

    async def count() -> int:
        engine = create_engine(database_url)
        try:
            async with engine.connect() as conn:
                return int(await conn.scalar(sa.text(f"SELECT count(*) FROM {table}")) or 0)
        finally:
            await engine.dispose()

    return asyncio.run(count())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
