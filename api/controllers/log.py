"""The transparency log: checkpoints and proofs are public; entries need a token."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, Response, get
from litestar.di import NamedDependency
from litestar.params import PathParameter, QueryParameter

from ledger.errors import NotFound
from ledger.services.container import Services
from ledger.services.tokens import Caller
from ledger.services.views import CheckpointList, ConsistencyProofView, EntriesView, InclusionProofView

TEXT = "text/plain; charset=utf-8"
Size = Annotated[int, QueryParameter(ge=0, le=2**62)]


class LogController(Controller):
    path = "/v1/log"
    tags = ["transparency log"]

    @get(
        "/checkpoint",
        summary="The latest checkpoint (C2SP tlog-checkpoint note), with the witness cosignatures collected so far",
        media_type=TEXT,
    )
    async def checkpoint(self, services: NamedDependency[Services]) -> Response[str]:
        # mutable: c2sp.org/tlog-tiles asks that caches keep it no more than a few seconds
        return Response(
            (await services.log.latest_checkpoint()).note,
            media_type=TEXT,
            headers={"Cache-Control": "public, max-age=2"},
        )

    @get(
        "/tile/{path:path}",
        summary="C2SP tlog-tiles: a Merkle tile (tile/<L>/<N>[.p/<W>]) or an entry bundle (tile/entries/<N>...)",
        media_type="application/octet-stream",
    )
    async def tile(
        self, services: NamedDependency[Services], path: Annotated[str, PathParameter()]
    ) -> Response[bytes]:
        body = await services.log.tile("tile/" + path.lstrip("/"))
        # immutable: what a signed checkpoint covers never changes
        return Response(
            body,
            media_type="application/octet-stream",
            headers={"Cache-Control": "public, max-age=31536000, immutable"},
        )

    @get("/checkpoints", summary="Earlier checkpoints, oldest first")
    async def checkpoints(
        self,
        services: NamedDependency[Services],
        after: Annotated[
            int | None, QueryParameter(ge=0, le=2**62, description="list sizes greater than this")
        ] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=1000)] = 100,
    ) -> CheckpointList:
        return await services.log.checkpoints(after=after, limit=limit)

    @get(
        "/checkpoints/{size:int}",
        summary="The checkpoint of one tree size, as a signed note",
        media_type=TEXT,
    )
    async def checkpoint_at(
        self, services: NamedDependency[Services], size: Annotated[int, PathParameter(ge=0, le=2**62)]
    ) -> Response[str]:
        return Response((await services.log.checkpoint(size)).note, media_type=TEXT)

    @get("/key", summary="The log's verifier key (C2SP vkey); pin it out of band", media_type=TEXT)
    async def key(self, services: NamedDependency[Services]) -> Response[str]:
        if services.log.signer is None:
            raise NotFound("this server has no log key; run `ledger init`")
        return Response(services.log.signer.vkey + "\n", media_type=TEXT)

    @get(
        "/proofs/inclusion",
        summary="RFC 9162 inclusion proof of an event (default: latest checkpoint's size)",
    )
    async def inclusion(
        self,
        services: NamedDependency[Services],
        event_id: Annotated[str, QueryParameter(pattern=r"^sha256:[0-9a-f]{64}$")],
        tree_size: Annotated[int | None, QueryParameter(ge=1, le=2**62)] = None,
    ) -> InclusionProofView:
        return await services.log.inclusion_proof(event_id, tree_size)

    @get("/proofs/consistency", summary="RFC 9162 consistency proof between two tree sizes")
    async def consistency(
        self,
        services: NamedDependency[Services],
        first: Size,
        second: Annotated[int | None, QueryParameter(ge=0, le=2**62)] = None,
    ) -> ConsistencyProofView:
        return await services.log.consistency_proof(first, second)

    @get("/entries", summary="Log entries [start, end), at most 1000, to mirror the log")
    async def entries(
        self,
        services: NamedDependency[Services],
        caller: NamedDependency[Caller],
        start: Size,
        end: Annotated[int | None, QueryParameter(ge=1, le=2**62)] = None,
    ) -> EntriesView:
        services.access.require_privileged(caller, "mirroring the log's entries")
        return await services.log.entries(start, end)
