"""Participants, events and tokens."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import msgspec
from litestar import Controller, Response, get, post
from litestar.params import Parameter

from api.auth import registrar_only
from api.errors import problem_of
from ledger.domain.dsse import Envelope
from ledger.errors import InvalidInput
from ledger.services.container import Services
from ledger.services.tokens import Caller
from ledger.services.views import (
    BatchSubmitView,
    EventView,
    IssuedTokenView,
    ParticipantList,
    ParticipantView,
    SubmitResultView,
    TokenList,
    TokenView,
)

EVENT_ID = r"^sha256:[0-9a-f]{64}$"


class BatchSubmission(msgspec.Struct, forbid_unknown_fields=True):
    envelopes: list[Envelope]


class TokenRequest(msgspec.Struct, forbid_unknown_fields=True):
    participant: str
    label: str = ""
    expires_at: datetime | None = None


class ParticipantController(Controller):
    path = "/v1/participants"
    tags = ["registry"]

    @get("/", summary="List participants with their keys and facilities")
    async def list_participants(
        self,
        services: Services,
        caller: Caller,
        limit: Annotated[int, Parameter(ge=1, le=500)] = 100,
        after: Annotated[
            str | None, Parameter(description="cursor: the last id of the previous page")
        ] = None,
        role: str | None = None,
    ) -> ParticipantList:
        return await services.registry.participants(limit=limit, after=after, role=role)

    @get("/{participant_id:str}", summary="One participant with its keys and facilities")
    async def get_participant(
        self, services: Services, caller: Caller, participant_id: str
    ) -> ParticipantView:
        return await services.registry.participant(participant_id)


class EventController(Controller):
    path = "/v1/events"
    tags = ["events"]

    @post("/", summary="Submit one signed envelope", status_code=201)
    async def submit(self, services: Services, caller: Caller, data: Envelope) -> Response[SubmitResultView]:
        (result,) = await services.submitter.submit([data], caller.participant)
        if result.error is not None:
            raise result.error
        view = SubmitResultView(status=result.status, event_id=result.event_id, log_index=result.log_index)
        return Response(view, status_code=201 if result.status == "accepted" else 200)

    @post(
        "/batch", summary="Submit up to LEDGER_MAX_BATCH envelopes; one result per envelope", status_code=200
    )
    async def submit_batch(
        self, services: Services, caller: Caller, data: BatchSubmission
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
    async def get_event(self, services: Services, caller: Caller, event_id: str) -> EventView:
        return await services.registry.event(event_id)


class TokenController(Controller):
    path = "/v1/tokens"
    tags = ["tokens"]
    guards = [registrar_only]

    @post("/", summary="Issue an API token for a participant (shown once)", status_code=201)
    async def issue(self, services: Services, data: TokenRequest) -> IssuedTokenView:
        return await services.tokens.issue(data.participant, data.label, data.expires_at)

    @get("/", summary="List tokens (never their secrets)")
    async def list_tokens(self, services: Services, participant: str | None = None) -> TokenList:
        return await services.tokens.list(participant)

    @post("/{token_id:str}/revoke", summary="Revoke a token", status_code=200)
    async def revoke(self, services: Services, token_id: str) -> TokenView:
        return await services.tokens.revoke(token_id)
