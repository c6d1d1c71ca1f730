"""W3C Verifiable Credentials: a recorded determination as ``application/vc+jwt``, the ledger's ``did:web``
document and the revocation status list (both public, as a verifier needs them without an account)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from litestar import Controller, Request, Response, get
from litestar.di import NamedDependency

from api.auth import services_of
from api.params import EventIdPath, IdPath
from ledger.interop.credentials import MEDIA_TYPE
from ledger.services.container import Services
from ledger.services.tokens import Caller


def _where(request: Request[Any, Any, Any]) -> tuple[str, str]:
    """The host (for ``did:web``) and the base URL of the ledger: LEDGER_PUBLIC_URL when set (as it must be in
    production: otherwise a request's Host header would choose the issuer that signed credentials name)."""
    public = services_of(request).settings.public_url
    if public:
        return urlsplit(public).netloc, public.rstrip("/")
    return request.url.netloc, str(request.base_url).rstrip("/")


class DidController(Controller):
    path = "/.well-known"
    tags = ["credentials"]

    @get("/did.json", summary="The ledger's did:web DID document (its credential-signing key as a JWK)")
    async def did(
        self, request: Request[Any, Any, Any], services: NamedDependency[Services]
    ) -> dict[str, Any]:
        host, _ = _where(request)
        return services.credentials.did_document(host)


class CredentialController(Controller):
    path = "/v1/credentials"
    tags = ["credentials"]

    @get(
        "/determinations/{event_id:str}",
        summary="A recorded determination (eligibility or origin) as a W3C Verifiable Credential (application/vc+jwt)",
        media_type=MEDIA_TYPE,
    )
    async def determination(
        self,
        request: Request[Any, Any, Any],
        services: NamedDependency[Services],
        caller: NamedDependency[Caller],
        event_id: EventIdPath,
    ) -> Response[str]:
        host, base = _where(request)
        token = await services.credentials.determination(event_id, host, base, caller)
        return Response(token, media_type=MEDIA_TYPE)

    @get(
        "/certificates/{certificate_id:str}",
        summary="A certification of origin as a W3C Verifiable Credential (application/vc+jwt)",
        media_type=MEDIA_TYPE,
    )
    async def certificate(
        self,
        request: Request[Any, Any, Any],
        services: NamedDependency[Services],
        caller: NamedDependency[Caller],
        certificate_id: IdPath,
    ) -> Response[str]:
        host, base = _where(request)
        token = await services.credentials.certificate(certificate_id, host, base, caller)
        return Response(token, media_type=MEDIA_TYPE)

    @get(
        "/batches/{batch_id:str}/traceability",
        summary="A batch's custody events as a UNTP Digital Traceability Event credential (application/vc+jwt)",
        media_type=MEDIA_TYPE,
    )
    async def traceability(
        self,
        request: Request[Any, Any, Any],
        services: NamedDependency[Services],
        caller: NamedDependency[Caller],
        batch_id: IdPath,
    ) -> Response[str]:
        host, base = _where(request)
        return Response(
            await services.credentials.traceability(batch_id, host, base, caller), media_type=MEDIA_TYPE
        )

    @get(
        "/attestations/{attestation_id:str}",
        summary="An attestation as a UNTP Digital Conformity Credential (application/vc+jwt)",
        media_type=MEDIA_TYPE,
    )
    async def conformity(
        self,
        request: Request[Any, Any, Any],
        services: NamedDependency[Services],
        caller: NamedDependency[Caller],
        attestation_id: IdPath,
    ) -> Response[str]:
        host, base = _where(request)
        return Response(
            await services.credentials.conformity(attestation_id, host, base), media_type=MEDIA_TYPE
        )

    @get(
        "/status/revocation",
        summary="Bitstring Status List credential: determinations whose verdict a later revocation changed",
        media_type=MEDIA_TYPE,
    )
    async def status(
        self, request: Request[Any, Any, Any], services: NamedDependency[Services]
    ) -> Response[str]:
        host, base = _where(request)
        return Response(await services.credentials.status_list(host, base), media_type=MEDIA_TYPE)
