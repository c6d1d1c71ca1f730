"""GS1 EPCIS 2.0 REST binding, the parts that matter here: events by query, one event by its eventID, and a
batch's events. Every answer is an ``EPCISQueryDocument`` (JSON-LD), under the caller's read scoping."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlencode

from litestar import Controller, Request, Response, get
from litestar.di import NamedDependency
from litestar.params import PathParameter, QueryParameter

from api.params import IdPath
from ledger.services.container import Services
from ledger.services.epcis import DEFAULT_PER_PAGE, MAX_PER_PAGE, EventQuery
from ledger.services.tokens import Caller

JSON_LD = "application/ld+json"
HEADERS = {"GS1-EPCIS-Version": "2.0.0", "GS1-CBV-Version": "2.0.0"}
"""The REST binding's version headers (EPCIS 2.0 section 12.4)."""
ListParam = Annotated[str | None, QueryParameter(max_length=4000)]


class EpcisController(Controller):
    path = "/epcis"
    tags = ["EPCIS 2.0"]

    @get(
        "/events",
        summary="Custody events as EPCIS 2.0 events (SimpleEventQuery parameters; the next page in the Link header)",
        media_type=JSON_LD,
    )
    async def events(
        self,
        request: Request[Any, Any, Any],
        services: NamedDependency[Services],
        caller: NamedDependency[Caller],
        event_type: Annotated[str | None, QueryParameter(name="eventType", max_length=200)] = None,
        ge_event_time: Annotated[str | None, QueryParameter(name="GE_eventTime", max_length=40)] = None,
        lt_event_time: Annotated[str | None, QueryParameter(name="LT_eventTime", max_length=40)] = None,
        eq_biz_step: Annotated[str | None, QueryParameter(name="EQ_bizStep", max_length=1000)] = None,
        eq_biz_location: Annotated[str | None, QueryParameter(name="EQ_bizLocation", max_length=4000)] = None,
        match_any_epc: Annotated[str | None, QueryParameter(name="MATCH_anyEPC", max_length=4000)] = None,
        per_page: Annotated[int, QueryParameter(name="perPage", ge=1, le=MAX_PER_PAGE)] = DEFAULT_PER_PAGE,
        next_page_token: Annotated[str | None, QueryParameter(name="nextPageToken", max_length=200)] = None,
    ) -> Response[dict[str, Any]]:
        query = EventQuery.parse(
            event_type=event_type,
            ge_event_time=ge_event_time,
            lt_event_time=lt_event_time,
            eq_biz_step=eq_biz_step,
            eq_biz_location=eq_biz_location,
            match_any_epc=match_any_epc,
            per_page=per_page,
            next_page_token=next_page_token,
        )
        page = await services.epcis.events(query, caller)
        headers = dict(HEADERS)
        if page.next_page_token is not None:
            params = {k: v for k, v in request.query_params.items() if k != "nextPageToken"}
            params["nextPageToken"] = page.next_page_token
            headers["Link"] = f'<{request.url.path}?{urlencode(params)}>; rel="next"'
        return Response(page.document, media_type=JSON_LD, headers=headers)

    @get(
        "/events/{event_ref:path}",
        summary="One event by its EPCIS eventID (GS1 event hash, URL-encoded) or its ledger event id",
        media_type=JSON_LD,
    )
    async def event(
        self,
        services: NamedDependency[Services],
        caller: NamedDependency[Caller],
        event_ref: Annotated[str, PathParameter(max_length=300)],
    ) -> Response[dict[str, Any]]:
        document = await services.epcis.event(event_ref, caller)
        return Response(document, media_type=JSON_LD, headers=HEADERS)

    @get(
        "/batches/{batch_id:str}/events",
        summary="Every custody event on a batch, in log order, as an EPCISQueryDocument",
        media_type=JSON_LD,
    )
    async def batch_events(
        self, services: NamedDependency[Services], caller: NamedDependency[Caller], batch_id: IdPath
    ) -> Response[dict[str, Any]]:
        return Response(
            await services.epcis.batch_events(batch_id, caller), media_type=JSON_LD, headers=HEADERS
        )
