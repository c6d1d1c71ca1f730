"""Eligibility: rule profiles, determinations, proof bundles, and facilities' attestations."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from litestar import Controller, get, post
from litestar.di import NamedDependency
from litestar.params import JSONBody, Parameter, QueryParameter

from api.params import IdPath
from ledger.rules.engine import Determination, DeterminationSummary, RecycledContent
from ledger.services.container import Services
from ledger.services.eligibility import BalanceView, parse_day
from ledger.services.tokens import Caller
from ledger.services.views import AttestationList, ProfileList, ProfileView, SubmitResultView

ProfileParam = Annotated[
    str | None,
    QueryParameter(description="rule profile id; default ptz-2026", pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$"),
]
AtParam = Annotated[
    str | None,
    QueryParameter(
        description="determination date YYYY-MM-DD: events with a later local date are ignored; default today"
    ),
]


class DeterminationRequest(msgspec.Struct, forbid_unknown_fields=True):
    profile: str | None = None
    at: str | None = None


class ProfileController(Controller):
    path = "/v1/profiles"
    tags = ["eligibility"]

    @get("/", summary="Rule profiles: the current version of each")
    async def list_profiles(
        self, services: NamedDependency[Services], caller: NamedDependency[Caller]
    ) -> ProfileList:
        return await services.eligibility.profile_list()

    @get("/{profile_id:str}", summary="One rule profile (its current version), with its content hash")
    async def get_profile(
        self, services: NamedDependency[Services], caller: NamedDependency[Caller], profile_id: IdPath
    ) -> ProfileView:
        return await services.eligibility.profile_view(profile_id)

    @get("/{profile_id:str}/versions", summary="Every published version of a rule profile")
    async def versions(
        self, services: NamedDependency[Services], caller: NamedDependency[Caller], profile_id: IdPath
    ) -> ProfileList:
        return await services.eligibility.profile_versions(profile_id)

    @get("/{profile_id:str}/versions/{version:int}", summary="One version of a rule profile")
    async def version(
        self,
        services: NamedDependency[Services],
        caller: NamedDependency[Caller],
        profile_id: IdPath,
        version: Annotated[int, Parameter(ge=1, le=1_000_000)],
    ) -> ProfileView:
        return await services.eligibility.profile_view(profile_id, version)


class EligibilityController(Controller):
    path = "/v1/batches/{batch_id:str}"
    tags = ["eligibility"]

    @get(
        "/eligibility",
        summary="Does this batch qualify? The verdict, the share against its threshold and the deciding reasons "
        "(detail=full: every reason and every source)",
    )
    async def eligibility(
        self,
        services: NamedDependency[Services],
        caller: NamedDependency[Caller],
        batch_id: IdPath,
        profile: ProfileParam = None,
        at: AtParam = None,
        detail: Annotated[
            Literal["summary", "full"],
            QueryParameter(
                description="summary (default): deciding reasons and sources in groups; full: all"
            ),
        ] = "summary",
    ) -> Determination | DeterminationSummary:
        if detail == "full":
            return await services.eligibility.determine(batch_id, profile, at, caller)
        return await services.eligibility.summary(batch_id, profile, at, caller)

    @post(
        "/determinations",
        summary="Record the determination: signed by the ledger's log key, appended to the log",
    )
    async def record(
        self,
        services: NamedDependency[Services],
        caller: NamedDependency[Caller],
        batch_id: IdPath,
        data: JSONBody[DeterminationRequest],
    ) -> SubmitResultView:
        return await services.eligibility.record(batch_id, data.profile, data.at, caller.participant, caller)

    @get(
        "/recycled-content",
        summary="Recycled share of each mineral in the batch, by mass, against the profile's minimums",
    )
    async def recycled_content(
        self,
        services: NamedDependency[Services],
        caller: NamedDependency[Caller],
        batch_id: IdPath,
        profile: ProfileParam = None,
        at: AtParam = None,
    ) -> RecycledContent:
        return await services.eligibility.recycled_content(batch_id, profile, at, caller)

    @get("/bundle", summary="A proof bundle that `ledger verify bundle` checks offline")
    async def bundle(
        self,
        services: NamedDependency[Services],
        caller: NamedDependency[Caller],
        batch_id: IdPath,
        profile: ProfileParam = None,
        at: AtParam = None,
    ) -> dict[str, Any]:
        return await services.eligibility.bundle(batch_id, profile, at, caller)


class FacilityController(Controller):
    path = "/v1/facilities"
    tags = ["eligibility"]

    @get(
        "/{facility_id:str}/attestations",
        summary="A facility's attestations, full history, and validity on a date",
    )
    async def attestations(
        self,
        services: NamedDependency[Services],
        caller: NamedDependency[Caller],
        facility_id: IdPath,
        on: Annotated[
            str | None, QueryParameter(description="YYYY-MM-DD: say which attestations counted that day")
        ] = None,
    ) -> AttestationList:
        return await services.registry.facility_attestations(facility_id, parse_day(on) if on else None)

    @get(
        "/{facility_id:str}/balance",
        summary="Mass-balance credits (credit method): made, claimed and left in a period, traced to events",
    )
    async def balance(
        self,
        services: NamedDependency[Services],
        caller: NamedDependency[Caller],
        facility_id: IdPath,
        period: Annotated[
            str,
            QueryParameter(description="YYYY, YYYY-Qn or YYYY-MM", pattern=r"^[0-9]{4}(-[0-9]{2}|-Q[1-4])?$"),
        ],
        profile: ProfileParam = None,
    ) -> BalanceView:
        return await services.eligibility.balance(facility_id, period, profile, caller)
