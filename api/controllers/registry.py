"""Participants, owners and stakes, exchange rates, custody models, events and tokens."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency
from litestar.params import JSONBody, QueryParameter

from api.auth import provide_caller, registrar_only, services_of
from api.errors import problem_of
from api.params import EventIdPath, IdPath, IdQuery, RoleQuery, TokenIdPath
from ledger.domain.dsse import Envelope
from ledger.domain.events import DATE_PATTERN, parse_date, parse_timestamp
from ledger.errors import InvalidInput
from ledger.services.container import Services
from ledger.services.tokens import Caller
from ledger.services.views import (
    BatchSubmitView,
    CustodyModelHistory,
    EventView,
    ExchangeRateList,
    IssuedTokenView,
    OwnerList,
    OwnerView,
    ParticipantList,
    ParticipantView,
    StakeList,
    SubmitResultView,
    TokenList,
    TokenView,
)

DayQuery = Annotated[str, QueryParameter(name="date", pattern=DATE_PATTERN, description="YYYY-MM-DD")]
OnQuery = Annotated[
    str | None,
    QueryParameter(
        pattern=DATE_PATTERN, description="YYYY-MM-DD: which declaration was in force then; default today"
    ),
]

# Request bodies hold strings only (envelope payloads are base64 of canonical JSON that the core decodes strictly),
# so Litestar's lax conversion, which turns strings into numbers but never numbers into strings, cannot coerce
# anything: a number where a string belongs is rejected and named.


class BatchSubmission(msgspec.Struct, forbid_unknown_fields=True):
    envelopes: list[Envelope]


class TokenRequest(msgspec.Struct, forbid_unknown_fields=True):
    participant: str
    label: Annotated[str, msgspec.Meta(max_length=200)] = ""
    expires_at: Annotated[
        str | None, msgspec.Meta(description="RFC 3339 with offset; omit for no expiry")
    ] = None


class ParticipantController(Controller):
    path = "/v1/participants"
    tags = ["registry"]

    @get("/", summary="List participants with their keys and facilities")
    async def list_participants(
        self,
        services: NamedDependency[Services],
        caller: NamedDependency[Caller],
        limit: Annotated[int, QueryParameter(ge=1, le=500)] = 100,
        after: IdQuery = None,
        role: RoleQuery = None,
    ) -> ParticipantList:
        return await services.registry.participants(limit=limit, after=after, role=role)

    @get("/{participant_id:str}", summary="One participant with its keys and facilities")
    async def get_participant(
        self,
        services: NamedDependency[Services],
        caller: NamedDependency[Caller],
        participant_id: IdPath,
    ) -> ParticipantView:
        return await services.registry.participant(participant_id)

    @get("/{participant_id:str}/stakes", summary="Stakes held in the participant: every record, in log order")
    async def participant_stakes(
        self,
        services: NamedDependency[Services],
        caller: NamedDependency[Caller],
        participant_id: IdPath,
    ) -> StakeList:
        return await services.registry.participant_stakes(participant_id)


class OwnerController(Controller):
    path = "/v1/owners"
    tags = ["registry"]

    @get("/", summary="List owners that are not participants (governments, state enterprises, funds...)")
    async def list_owners(
        self,
        services: NamedDependency[Services],
        caller: NamedDependency[Caller],
        limit: Annotated[int, QueryParameter(ge=1, le=500)] = 100,
        after: IdQuery = None,
    ) -> OwnerList:
        return await services.registry.owners(limit=limit, after=after)

    @get("/{owner_id:str}", summary="One owner with the stakes it holds and the stakes held in it")
    async def get_owner(
        self, services: NamedDependency[Services], caller: NamedDependency[Caller], owner_id: IdPath
    ) -> OwnerView:
        return await services.registry.owner(owner_id)


class ExchangeRateController(Controller):
    path = "/v1/exchange-rates"
    tags = ["registry"]

    @get("/", summary="The exchange rates published for a date")
    async def exchange_rates(
        self, services: NamedDependency[Services], caller: NamedDependency[Caller], day: DayQuery
    ) -> ExchangeRateList:
        return await services.registry.exchange_rates(parse_date(day, "date"))


class CustodyModelController(Controller):
    path = "/v1/facilities/{facility_id:str}/custody-model"
    tags = ["registry"]

    @get("/", summary="A facility's chain-of-custody declarations and the model in force (today by default)")
    async def custody_model(
        self,
        services: NamedDependency[Services],
        caller: NamedDependency[Caller],
        facility_id: IdPath,
        on: OnQuery = None,
    ) -> CustodyModelHistory:
        day = parse_date(on, "on") if on else datetime.now(UTC).date()
        return await services.registry.custody_model(facility_id, day)


class EventController(Controller):
    path = "/v1/events"
    tags = ["events"]

    @post("/", summary="Submit one signed envelope", status_code=201)
    async def submit(
        self, request: Request[Any, Any, Any], data: JSONBody[Envelope]
    ) -> Response[SubmitResultView]:
        # the caller is resolved here rather than by dependency injection, which costs this, the busiest
        # endpoint, a tenth of its event-loop time under load (the same checks: see provide_caller)
        services = services_of(request)
        caller = await provide_caller(request, services)
        (result,) = await services.submitter.submit([data], caller.participant)
        if result.error is not None:
            raise result.error
        view = SubmitResultView(status=result.status, event_id=result.event_id, log_index=result.log_index)
        return Response(view, status_code=201 if result.status == "accepted" else 200)

    @post(
        "/batch", summary="Submit up to LEDGER_MAX_BATCH envelopes; one result per envelope", status_code=200
    )
    async def submit_batch(
        self,
        services: NamedDependency[Services],
        caller: NamedDependency[Caller],
        data: JSONBody[BatchSubmission],
    ) -> BatchSubmitView:
        limit = services.settings.max_batch_envelopes
        if len(data.envelopes) > limit:
            raise InvalidInput(
                f"envelopes has {len(data.envelopes)} items; at most {limit} per request (LEDGER_MAX_BATCH)"
            )
        results = await services.submitter.submit(data.envelopes, caller.participant)
        views = [
            SubmitResultView(
                status=r.status,
                event_id=r.event_id,
                log_index=r.log_index,
                problem=problem_of(r.error) if r.error is not None else None,
            )
            for r in results
        ]
        return BatchSubmitView(
            results=views,
            accepted=sum(r.status == "accepted" for r in results),
            duplicate=sum(r.status == "duplicate" for r in results),
            rejected=sum(r.status == "rejected" for r in results),
        )

    @get("/{event_id:str}", summary="One event: its envelope as signed and its place in the log")
    async def get_event(
        self, services: NamedDependency[Services], caller: NamedDependency[Caller], event_id: EventIdPath
    ) -> EventView:
        return await services.registry.event(event_id, caller)


class TokenController(Controller):
    path = "/v1/tokens"
    tags = ["tokens"]
    guards = [registrar_only]

    @post("/", summary="Issue an API token for a participant (shown once)", status_code=201)
    async def issue(
        self, services: NamedDependency[Services], data: JSONBody[TokenRequest]
    ) -> IssuedTokenView:
        expires_at = parse_timestamp(data.expires_at, "expires_at") if data.expires_at else None
        return await services.tokens.issue(data.participant, data.label, expires_at)

    @get("/", summary="List tokens (never their secrets)")
    async def list_tokens(
        self, services: NamedDependency[Services], participant: IdQuery = None
    ) -> TokenList:
        return await services.tokens.list(participant)

    @post("/{token_id:str}/revoke", summary="Revoke a token", status_code=200)
    async def revoke(self, services: NamedDependency[Services], token_id: TokenIdPath) -> TokenView:
        return await services.tokens.revoke(token_id)
