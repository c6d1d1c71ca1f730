"""Compare-and-swap on batch heads under real concurrency: two writers with their own engines (as two API
processes would have) race to ship the same batch; exactly one wins, on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio

from ledger.client import envelope_for
from ledger.domain import events as ev
from ledger.errors import StaleParent
from ledger.services.submit import Submitter
from ledger.store.db import create_engine
from tests.support import World

TS = "2026-09-01T08:00:00-04:00"


async def test_two_concurrent_transfers_of_one_batch_exactly_one_wins(
    world: World, database_url: str
) -> None:
    miner = await world.admit("northstar", ["miner"], "CA")
    buyer_a = await world.admit("buyer-a", ["processor"], "US")
    buyer_b = await world.admit("buyer-b", ["processor"], "MX")
    await world.facility("mine-qc", miner, "mine", "CA")
    engines = [create_engine(database_url, pool_size=2) for _ in range(2)]
    submitters = [Submitter(engine, max_backdate=None) for engine in engines]  # the test replays fixed dates
    try:
        for round_ in range(8):
            batch_id = f"spod-{round_}"
            extract = ev.Extract(
                actor=miner.id,
                timestamp=TS,
                facility="mine-qc",
                batch=ev.NewBatch(id=batch_id, mineral="lithium", form="concentrate", mass_g=1000),
            )
            (created,) = await submitters[0].submit([envelope_for(extract, miner.key)], miner.id)
            assert created.status == "accepted" and created.event_id is not None
            transfers = [
                envelope_for(
                    ev.Transfer(
                        actor=miner.id,
                        timestamp=TS,
                        batch=batch_id,
                        parent=created.event_id,
                        to=buyer.id,
                        route=[ev.RouteLeg(country="CA", customs_control=False)],
                    ),
                    miner.key,
                )
                for buyer in (buyer_a, buyer_b)
            ]
            results = await asyncio.gather(
                submitters[0].submit([transfers[0]], miner.id), submitters[1].submit([transfers[1]], miner.id)
            )
            statuses = sorted(r[0].status for r in results)
            assert statuses == ["accepted", "rejected"], results
            loser = next(r[0] for r in results if r[0].status == "rejected")
            winner = next(r[0] for r in results if r[0].status == "accepted")
            assert isinstance(loser.error, StaleParent)
            assert loser.error.extra["current_head"] == winner.event_id
            state = await world.services.custody.batch(batch_id)
            assert state.head == winner.event_id and state.status == "in_transit"
        # every accepted event got its own index, with no gap
        async with engines[0].connect() as conn:
            import sqlalchemy as sa

            indices = [
                row[0]
                for row in await conn.execute(sa.text("SELECT log_index FROM events ORDER BY log_index"))
            ]
        assert indices == list(range(len(indices)))
    finally:
        for engine in engines:
            await engine.dispose()
