"""The witness we ship, without any ledger: it witnesses any log that speaks C2SP tlog-witness (here two synthetic
logs with their own origins and keys), keeps its state across restarts, and never lets two concurrent requests
roll it back (the race c2sp.org/tlog-witness describes)."""

from __future__ import annotations

import threading
from pathlib import Path

from nacl.signing import SigningKey

from ledger.log import merkle
from ledger.log.checkpoint import Checkpoint, sign_checkpoint, verifier_key
from ledger.log.cosignature import Witness, verify_cosignatures, witness_signer_key
from ledger.log.witness import format_add_checkpoint, origin_hash
from ledger.services.witness import WitnessService

WITNESS_SEED = bytes([7]) * 32


class SyntheticLog:
    """A log of ``n`` leaves ``i.to_bytes(4)``, with its own origin and key: not a ledger."""

    def __init__(self, origin: str, seed: bytes) -> None:
        self.origin, self.seed = origin, seed
        self.vkey = verifier_key(origin, SigningKey(seed).verify_key.encode())

    def _nodes(self, size: int) -> dict[merkle.NodeId, bytes]:
        leaves = [merkle.leaf_hash(self.origin.encode() + i.to_bytes(4, "big")) for i in range(size)]
        _, completed = merkle.append(merkle.Frontier.empty(), leaves)
        return {(level, index): digest for level, index, digest in completed}

    def note(self, size: int) -> str:
        root = merkle.Frontier.from_nodes(size, self._nodes(size)).root() if size else merkle.EMPTY_ROOT
        return sign_checkpoint(Checkpoint(self.origin, size, root), self.origin, self.seed)

    def request(self, old: int, size: int) -> bytes:
        proof = merkle.consistency_proof(old, size, self._nodes(size)) if 0 < old < size else []
        return format_add_checkpoint(old, proof, self.note(size))


def _service(tmp_path: Path, *logs: SyntheticLog) -> WitnessService:
    return WitnessService(
        witness_signer_key("w.test/any", WITNESS_SEED), [log.vkey for log in logs], tmp_path
    )


def test_it_witnesses_two_unrelated_logs_and_remembers_across_restarts(tmp_path: Path) -> None:
    alpha, beta = (
        SyntheticLog("alpha.test/log", bytes([1]) * 32),
        SyntheticLog("beta.test/log", bytes([2]) * 32),
    )
    witness = _service(tmp_path, alpha, beta)
    assert witness.add_checkpoint(alpha.request(0, 10)).status == 200
    assert witness.add_checkpoint(beta.request(0, 3)).status == 200
    assert witness.add_checkpoint(alpha.request(10, 25)).status == 200
    # a fresh process over the same state directory continues where the old one stopped
    again = _service(tmp_path, alpha, beta)
    assert {origin: size for origin, (size, _) in again.state().items()} == {
        "alpha.test/log": 25,
        "beta.test/log": 3,
    }
    stale = again.add_checkpoint(alpha.request(10, 30))
    assert (stale.status, stale.body, stale.content_type) == (409, "25\n", "text/x.tlog.size")
    answer = again.add_checkpoint(alpha.request(25, 30))
    assert answer.status == 200
    me = Witness("w.test/any", SigningKey(WITNESS_SEED).verify_key.encode())
    assert "w.test/any" in verify_cosignatures(alpha.note(30) + answer.body, [me])
    served = again.latest(origin_hash("alpha.test/log"))
    assert served.status == 200 and "w.test/any" in verify_cosignatures(served.body, [me])
    assert again.latest(origin_hash("gamma.test/log")).status == 404
    # a log it does not know
    gamma = SyntheticLog("gamma.test/log", bytes([3]) * 32)
    assert again.add_checkpoint(gamma.request(0, 1)).status == 404


def test_concurrent_requests_cannot_roll_the_witness_back(tmp_path: Path) -> None:
    """Many threads each send a different size, all claiming the witness stands at 5. Exactly one is cosigned;
    every other is told the witness's new size, and the witness ends at the one it cosigned."""
    log = SyntheticLog("race.test/log", bytes([4]) * 32)
    witness = _service(tmp_path, log)
    assert witness.add_checkpoint(log.request(0, 5)).status == 200
    sizes = list(range(6, 26))
    answers: dict[int, int] = {}

    def send(size: int) -> None:
        answers[size] = witness.add_checkpoint(log.request(5, size)).status

    threads = [threading.Thread(target=send, args=(size,)) for size in sizes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [size for size, status in answers.items() if status == 200]
    assert len(winners) == 1
    assert sorted(status for status in answers.values() if status != 200) == [409] * (len(sizes) - 1)
    assert witness.state()["race.test/log"][0] == winners[0]
