"""Batches: state, history, lineage; and a participant's batches."""

from __future__ import annotations

from typing import Annotated, Literal

from litestar import Controller, Response, get
from litestar.di import NamedDependency
from litestar.params import FromQuery, QueryParameter

from api.params import IdPath, IdQuery, StatusQuery
from ledger.services.container import Services
from ledger.services.tokens import Caller
from ledger.services.views import BatchList, BatchView, HistoryView, LineageView

Direction = Literal["upstream", "downstream"]
Format = Literal["json", "dot", "mermaid"]


class BatchController(Controller):
    path = "/v1/batches"
    tags = ["custody"]

    @get("/{batch_id:str}", summary="A batch's state: custodian, mass, status, head")
    async def get_batch(
        self, services: NamedDependency[Services], caller: NamedDependency[Caller], batch_id: IdPath
    ) -> BatchView:
        return await services.custody.batch(batch_id, caller)

    @get("/{batch_id:str}/history", summary="Every event on the batch, in log order")
    async def history(
        self, services: NamedDependency[Services], caller: NamedDependency[Caller], batch_id: IdPath
    ) -> HistoryView:
        return await services.custody.history(batch_id, caller)

    @get(
        "/{batch_id:str}/lineage",
        summary="Where the batch came from (upstream) or went (downstream), as JSON, Graphviz DOT or Mermaid",
        responses={},
    )
    async def lineage(
        self,
        services: NamedDependency[Services],
        caller: NamedDependency[Caller],
        batch_id: IdPath,
        direction: FromQuery[Direction] = "upstream",
        format: FromQuery[Format] = "json",
        max_depth: Annotated[int | None, QueryParameter(ge=1, le=10_000)] = None,
    ) -> Response[LineageView | str]:
        if format == "json":
            return Response(await services.custody.lineage(batch_id, direction, max_depth, caller))
        text = await services.custody.lineage_picture(batch_id, direction, format, max_depth, caller)
        media = "text/vnd.graphviz" if format == "dot" else "text/plain"
        return Response(text, media_type=f"{media}; charset=utf-8")


class ParticipantBatchesController(Controller):
    path = "/v1/participants/{participant_id:str}/batches"
    tags = ["custody"]

    @get("/", summary="Batches the participant holds or held")
    async def participant_batches(
        self,
        services: NamedDependency[Services],
        caller: NamedDependency[Caller],
        participant_id: IdPath,
        status: StatusQuery = None,
        limit: Annotated[int, QueryParameter(ge=1, le=500)] = 100,
        after: IdQuery = None,
    ) -> BatchList:
        return await services.custody.participant_batches(
            participant_id, status=status, limit=limit, after=after, caller=caller
        )
