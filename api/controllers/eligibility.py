"""Eligibility: rule profiles, determinations, proof bundles, and facilities' attestations."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Controller, get, post
from litestar.di import NamedDependency
from litestar.params import JSONBody, QueryParameter

from api.params import IdPath
from ledger.rules.engine import Determination
from ledger.services.container import Services
from ledger.services.eligibility import parse_day
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


def _profile_view(services: Services, profile_id: str) -> ProfileView:
    profile = services.profiles.get(profile_id)
    return ProfileView(
        id=profile.id,
        name=profile.name,
        version=profile.version,
        content_hash=profile.content_hash,
        default=profile.default,
        document=profile.document(),
    )


class ProfileController(Controller):
    path = "/v1/profiles"
    tags = ["eligibility"]

    @get("/", summary="Rule profiles shipped with this ledger")
    async def list_profiles(
        self, services: NamedDependency[Services], caller: NamedDependency[Caller]
    ) -> ProfileList:
        return ProfileList(items=[_profile_view(services, p.id) for p in services.profiles.all()])

    @get("/{profile_id:str}", summary="One rule profile, with its content hash")
    async def get_profile(
        self, services: NamedDependency[Services], caller: NamedDependency[Caller], profile_id: IdPath
    ) -> ProfileView:
        return _profile_view(services, profile_id)


class EligibilityController(Controller):
    path = "/v1/batches/{batch_id:str}"
    tags = ["eligibility"]

    @get("/eligibility", summary="Does this batch qualify? The engine's determination, with every reason")
    async def eligibility(
        self,
        services: NamedDependency[Services],
        caller: NamedDependency[Caller],
        batch_id: IdPath,
        profile: ProfileParam = None,
        at: AtParam = None,
    ) -> Determination:
        return await services.eligibility.determine(batch_id, profile, at, caller)

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
