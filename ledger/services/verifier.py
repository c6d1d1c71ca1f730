"""Signature checks off the event loop's thread: worker processes for a server, worker threads otherwise. The
worker processes also decode and check the payloads of a large submission's chunks and of the small submissions
of one turn of the event loop together (:func:`prepare_many`).

libsodium releases the GIL while it verifies, but a verifier thread needs the GIL back after every signature and
waits for it while the event loop's thread runs Python (up to the interpreter's switch interval each time), so two
verifier threads beside a busy event loop verify well below two cores' worth. Worker processes have no GIL to share:
with two requests in flight, ingest went from 0.48-0.49x to 0.52-0.54x of bare single-core verify
(``python -m tests.bench --only ingest --concurrency 2``). ``ledger audit`` checks its rows in processes for the
same reason.

The workers (:class:`ledger.services.workers.WorkerPool`, which the event loop drives through pipes) are spawned,
started and warmed once by the serving app's start-up, so that no request waits for them to import the ledger, and
each exits as soon as the server process that started it is gone, however that one ended (``kill -9`` included).
Without a started pool (tests, the CLI, one-shot tools) checks run on two threads as before.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from ledger.domain import events as ev
from ledger.domain.accept import Prepared, add_references, merge_references, prepare
from ledger.domain.dsse import Envelope, pae
from ledger.domain.keys import b64decode, signature_verifies
from ledger.errors import LedgerError
from ledger.services.workers import WorkerPool, WorkersGone

log = logging.getLogger(__name__)

T = TypeVar("T")

SignatureJob = tuple[str, str, str, bytes, bytes, bytes]
"""(event id, key id, the signature as the envelope carries it, public key, signed message, raw signature)."""

Verified = tuple[str, str, str]
"""(event id, key id, the signature as the envelope carries it) of a signature that verified. The signature itself
is part of it: two envelopes of one payload (so one event id) may carry different signatures by the same key, and
only the one checked may skip acceptance's own check (:func:`ledger.domain.accept.accept`)."""

KnownKeys = dict[str, tuple[str, bytes]]
"""Key id -> (the participant it is registered to, raw public key)."""

PreparedParts = tuple[bytes, ev.Event, str, str, Verified | None]
"""What a worker process sends back for an envelope that prepared: :class:`Prepared`'s payload, event, event id and
kind (the envelope stays with the caller), and the signature that verified, if any."""

PreparedChunk = tuple[list[PreparedParts | None], dict[str, set[str]]]
"""What a worker process sends back for a chunk: the parts of each envelope (None where it did not prepare), and
the ids the prepared ones refer to, by table (:func:`ledger.domain.accept.references`, their union)."""


def signature_job(item: Prepared, keys: KnownKeys) -> SignatureJob | None:
    """The check worth doing before acceptance: the envelope's first signature by a key registered to the event's
    actor (acceptance decides anything else, with the keys as they are then)."""
    for signature in item.envelope.signatures:
        owner = keys.get(signature.keyid)
        if owner is not None and owner[0] == item.event.actor:
            try:
                raw = b64decode(signature.sig, "sig")
            except LedgerError:
                continue
            return (
                item.event_id,
                signature.keyid,
                signature.sig,
                owner[1],
                pae(item.envelope.payloadType, item.payload),
                raw,
            )
    return None


def prepare_many(envelopes: list[Envelope], keys: KnownKeys) -> PreparedChunk:
    """In a worker process: :func:`ledger.domain.accept.prepare` each envelope and check its
    :func:`signature_job`; None for an envelope that does not prepare (the caller prepares it again to name the
    error). Also the union of what the prepared envelopes refer to, which the commit loads."""
    out: list[PreparedParts | None] = []
    refs: dict[str, set[str]] = {}
    for envelope in envelopes:
        try:
            item = prepare(envelope)
        except LedgerError:
            out.append(None)
            continue
        add_references(refs, item)
        job = signature_job(item, keys)
        good = job[:3] if job is not None and signature_verifies(*job[3:]) else None
        out.append((item.payload, item.event, item.event_id, item.kind, good))
    return out, refs


def prepare_each(submissions: list[list[Envelope]], keys: KnownKeys) -> list[PreparedChunk]:
    """In a worker process: :func:`prepare_many` for each of several small submissions gathered in one trip."""
    return [prepare_many(envelopes, keys) for envelopes in submissions]


def verify_many(jobs: list[SignatureJob]) -> frozenset[Verified]:
    """The signatures of ``jobs`` that verify."""
    return frozenset(
        (event, kid, sig)
        for event, kid, sig, public_key, message, signature in jobs
        if signature_verifies(public_key, message, signature)
    )


class Verifier:
    """Checks batches of signatures in two halves, on worker processes once :meth:`start` ran, else on threads."""

    def __init__(self, processes: int = 0) -> None:
        self.processes = processes
        """Worker processes :meth:`start` launches (LEDGER_VERIFY_PROCESSES); 0 keeps to threads."""
        self._pool: WorkerPool | None = None
        self._gathering: _Gathered | None = None
        """Small submissions waiting for the event loop's next turn (see :meth:`prepare_gathered`)."""

    async def start(self) -> None:
        """Launch and warm the worker processes (each imports the ledger once, here rather than in a request)."""
        if self.processes <= 0 or self._pool is not None:
            return
        try:
            self._pool = await WorkerPool.start(self.processes, warm_up=_warm_up)
        except Exception:
            log.exception("signature-checking worker processes did not start; checking on threads")

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def _lost(self, pool: WorkerPool) -> None:
        """The worker processes are gone for good (a broken pool stays broken): go on without them."""
        if self._pool is pool:
            log.warning("the signature-checking worker processes are gone; checking signatures on threads")
            self.close()

    @property
    def has_processes(self) -> bool:
        return self._pool is not None

    async def prepare_gathered(self, envelopes: list[Envelope], keys: KnownKeys) -> PreparedChunk | None:
        """:func:`prepare_many` for a small submission, in one trip to a worker process with every other small
        submission that reaches this point in the same turn of the event loop: concurrent single-event POSTs, which
        one at a time are not worth a trip each, share one, and the event loop only reassembles the answers. None
        when fewer than :data:`GATHER_MIN` envelopes gathered in all, without worker processes, or if the trip
        failed: the caller then prepares the envelopes itself, and acceptance checks their signatures."""
        if self._pool is None or not envelopes:
            return None
        loop = asyncio.get_running_loop()
        gathered = self._gathering
        if gathered is None:
            gathered = self._gathering = _Gathered()
            loop.call_soon(self._ship, gathered)
        answer: asyncio.Future[PreparedChunk | None] = loop.create_future()
        gathered.submissions.append(envelopes)
        gathered.answers.append(answer)
        gathered.envelopes += len(envelopes)
        gathered.keys.update(keys)
        if gathered.envelopes >= GATHER_SHIP:
            self._ship(gathered)  # now: the worker starts while this turn reads the rest of a burst
        return await answer  # a caller that goes away leaves the others' answers alone (see _Gathered.settle)

    def _ship(self, gathered: _Gathered) -> None:
        """Send what was gathered to a worker process (or let the callers prepare a handful): at the end of its
        turn of the event loop, or earlier once :data:`GATHER_SHIP` envelopes are in; a new gathering then takes
        the turn's later callers, and the end of the turn finds this one shipped already."""
        if gathered.shipped:
            return
        gathered.shipped = True
        if self._gathering is gathered:
            self._gathering = None
        pool = self._pool
        if pool is None or gathered.envelopes < GATHER_MIN:
            gathered.settle(None)
            return
        try:
            future = pool.submit(prepare_each, gathered.submissions, gathered.keys, urgent=True)
        except WorkersGone:
            gathered.settle(None)  # first: nothing that follows may leave a caller waiting
            self._lost(pool)
            return
        except Exception:  # not sent (an envelope that would not pickle, say): the callers do the work
            gathered.settle(None)
            log.exception("small submissions could not be sent to a worker process; preparing them here")
            return

        def settle(done: asyncio.Future[list[PreparedChunk]]) -> None:
            if done.cancelled() or done.exception() is not None:
                gathered.settle(None)  # the callers prepare their envelopes themselves
                if isinstance(done.exception(), WorkersGone):
                    self._lost(pool)
            else:
                gathered.settle(done.result())

        future.add_done_callback(settle)

    async def verify(self, jobs: list[SignatureJob]) -> frozenset[Verified]:
        """The signatures of ``jobs`` that verify, checked in two halves at once."""
        half = (len(jobs) + 1) // 2
        halves = await self._on_workers(verify_many, (jobs[:half],), (jobs[half:],))
        if halves is None:  # no worker processes (any more): threads will do
            first, second = await asyncio.gather(
                asyncio.to_thread(verify_many, jobs[:half]), asyncio.to_thread(verify_many, jobs[half:])
            )
        else:
            first, second = halves
        return first | second

    async def prepare(self, envelopes: list[Envelope], keys: KnownKeys) -> PreparedChunk | None:
        """:func:`prepare_many` in two halves on the worker processes: decoding, the canonical-form and schema
        checks, the signature checks and the references all off the event loop. None without worker processes
        (or once they are gone): the caller then does the work itself."""
        half = (len(envelopes) + 1) // 2
        halves = await self._on_workers(prepare_many, (envelopes[:half], keys), (envelopes[half:], keys))
        if halves is None:
            return None
        (first, refs), (second, more) = halves
        merge_references(refs, more)
        return first + second, refs

    async def _on_workers(self, fn: Callable[..., T], *calls: tuple[Any, ...]) -> list[T] | None:
        """``fn(*args)`` for each ``args`` of ``calls`` at once on the worker processes; None if there are none, or
        if the pool broke (a worker was killed) or was shut down meanwhile, which also ends its use for good.
        An exception ``fn`` itself raised propagates, and leaves the pool alone."""
        pool = self._pool
        if pool is None:
            return None
        try:
            futures = [pool.submit(fn, *args) for args in calls]
            return list(await asyncio.gather(*futures))
        except WorkersGone:  # a worker died, or the pool was shut down while these waited
            self._lost(pool)
            return None


def _warm_up() -> None:
    """Run once in each worker as it starts: the imports a first check would otherwise pay for."""
    verify_many([])


GATHER_MIN = 4
"""Fewest envelopes gathered from concurrent small submissions worth a worker process's round trip: the pickled
trip and reassembling its answer cost the event loop about as much as preparing a few envelopes itself."""

GATHER_SHIP = 16
"""Envelopes gathered after which a trip leaves at once, before its turn of the event loop ends. A burst of 64
single POSTs read in one turn used to wait for the whole turn and then for one worker to prepare all 64 (7.5 ms
of a 24 ms answer at concurrency 64), while the event loop, having nothing else to do, waited with them; in trips
of 16 the first is prepared while the loop still reads the rest, and both workers share the burst (the wait
3 ms; POSTs/s up 4-6 % on SQLite, 25 % on PostgreSQL)."""


class _Gathered:
    """Small submissions gathered during one turn of the event loop (up to :data:`GATHER_SHIP` envelopes), each
    with the future of its own answer, and the registered keys their signatures name."""

    __slots__ = ("answers", "envelopes", "keys", "shipped", "submissions")

    def __init__(self) -> None:
        self.submissions: list[list[Envelope]] = []
        self.answers: list[asyncio.Future[PreparedChunk | None]] = []
        self.envelopes = 0
        self.keys: KnownKeys = {}
        self.shipped = False

    def settle(self, chunks: list[PreparedChunk] | None) -> None:
        """Answer each caller still waiting with its own chunk (None: prepare it yourself)."""
        if chunks is not None and len(chunks) != len(self.answers):
            chunks = None  # not the answer to these questions: nobody takes a wrong one
        for number, answer in enumerate(self.answers):
            if not answer.done():  # a cancelled caller's future is done already
                answer.set_result(None if chunks is None else chunks[number])
