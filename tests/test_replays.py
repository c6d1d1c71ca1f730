"""A resubmitted event is acknowledged as a duplicate only to its own signer (both databases): a replay with a
broken signature or with another participant's token is refused, and nothing changes."""

from __future__ import annotations

import base64

import msgspec

from ledger.client import envelope_for
from ledger.domain.dsse import Signature
from tests.support import Chain


async def test_duplicates_are_acknowledged_only_to_their_signer(chain: Chain) -> None:
    world = chain.world
    envelope = envelope_for(chain.extract("b-1", 1_000), chain.miner.key)
    assert (await world.post(envelope, chain.miner)).status_code == 201
    before = await world.count_events()
    # the same envelope from its signer: an idempotent reply
    again = await world.post(envelope, chain.miner)
    assert again.status_code == 200 and again.json()["status"] == "duplicate", again.text
    # with a signature that does not verify (one byte flipped)
    raw = bytearray(base64.b64decode(envelope.signatures[0].sig))
    raw[0] ^= 1
    broken = msgspec.structs.replace(
        envelope,
        signatures=[Signature(keyid=envelope.signatures[0].keyid, sig=base64.b64encode(raw).decode())],
    )
    response = await world.post(broken, chain.miner)
    assert response.status_code == 422 and response.json()["code"] == "bad-signature", response.text
    # with another participant's token
    response = await world.post(envelope, chain.refiner)
    assert response.status_code == 403 and response.json()["code"] == "forbidden", response.text
    assert await world.count_events() == before
