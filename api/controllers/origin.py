"""Trade-agreement origin: agreement profiles, origin determinations and their bundles, certificates of origin."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Controller, get, post
from litestar.di import NamedDependency
from litestar.params import JSONBody, QueryParameter

from api.params import IdPath
from ledger.rules.origin import OriginDetermination
from ledger.services.container import Services
from ledger.services.origin import AgreementList, AgreementView, CertificateList, CertificateView
from ledger.services.tokens import Caller
from ledger.services.views import SubmitResultView

AgreementParam = Annotated[
    str | None,
    QueryParameter(description="agreement profile id; default usmca", pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$"),
]
MethodParam = Annotated[
    str | None,
    QueryParameter(
        description="regional value content method: tv (transaction value, default) or nc (net cost); a rule "
        "that allows only net cost uses it whatever is asked",
        max_length=8,
    ),
]
AtParam = Annotated[
    str | None,
    QueryParameter(
        description="determination date YYYY-MM-DD: events with a later local date are ignored; default today"
    ),
]


class OriginRequest(msgspec.Struct, forbid_unknown_fields=True):
    agreement: str | None = None
    method: str | None = None
    at: str | None = None


class AgreementController(Controller):
    path = "/v1/agreements"
    tags = ["origin"]

    @get("/", summary="Trade-agreement origin profiles: the current version of each")
    async def list_agreements(
        self, services: NamedDependency[Services], caller: NamedDependency[Caller]
    ) -> AgreementList:
        return await services.origin.agreement_list()

    @get("/{agreement_id:str}", summary="One agreement profile (its current version), with its content hash")
    async def get_agreement(
        self, services: NamedDependency[Services], caller: NamedDependency[Caller], agreement_id: IdPath
    ) -> AgreementView:
        return await services.origin.agreement_view(agreement_id)


class OriginController(Controller):
    path = "/v1/batches/{batch_id:str}"
    tags = ["origin"]

    @get(
        "/origin",
        summary="Does this good originate under the agreement? Criterion (A-D), RVC under each method, every "
        "material's status, and every reason it does not",
    )
    async def origin(
        self,
        services: NamedDependency[Services],
        caller: NamedDependency[Caller],
        batch_id: IdPath,
        agreement: AgreementParam = None,
        method: MethodParam = None,
        at: AtParam = None,
    ) -> OriginDetermination:
        return await services.origin.determine(batch_id, agreement, method, at, caller)

    @post(
        "/origin/determinations",
        summary="Record the origin determination: signed by the ledger's log key, appended to the log",
    )
    async def record(
        self,
        services: NamedDependency[Services],
        caller: NamedDependency[Caller],
        batch_id: IdPath,
        data: JSONBody[OriginRequest],
    ) -> SubmitResultView:
        return await services.origin.record(
            batch_id, data.agreement, data.method, data.at, caller.participant, caller
        )

    @get("/origin/bundle", summary="An origin bundle that `ledger verify bundle` checks offline")
    async def bundle(
        self,
        services: NamedDependency[Services],
        caller: NamedDependency[Caller],
        batch_id: IdPath,
        agreement: AgreementParam = None,
        method: MethodParam = None,
        at: AtParam = None,
    ) -> dict[str, Any]:
        return await services.origin.bundle(batch_id, agreement, method, at, caller)

    @get("/certificates", summary="The certifications of origin that cover this batch")
    async def certificates(
        self, services: NamedDependency[Services], caller: NamedDependency[Caller], batch_id: IdPath
    ) -> CertificateList:
        return await services.origin.batch_certificates(batch_id, caller)


class CertificateController(Controller):
    path = "/v1/certificates"
    tags = ["origin"]

    @get(
        "/{certificate_id:str}",
        summary="One certification of origin, its goods and supporting determinations",
    )
    async def certificate(
        self, services: NamedDependency[Services], caller: NamedDependency[Caller], certificate_id: IdPath
    ) -> CertificateView:
        return await services.origin.certificate(certificate_id, caller)

    @get(
        "/{certificate_id:str}/bundle",
        summary="A certificate bundle a customs officer verifies offline with `ledger verify bundle`",
    )
    async def bundle(
        self, services: NamedDependency[Services], caller: NamedDependency[Caller], certificate_id: IdPath
    ) -> dict[str, Any]:
        return await services.origin.certificate_bundle(certificate_id, caller)
