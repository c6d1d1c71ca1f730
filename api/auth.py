"""Bearer-token authentication and role guards."""

from __future__ import annotations

import re
from typing import Any

from litestar import Request
from litestar.connection import ASGIConnection
from litestar.di import NamedDependency
from litestar.handlers.base import BaseRouteHandler

from api.observability import note_participant
from ledger.errors import Forbidden, Unauthenticated
from ledger.services.container import Services
from ledger.services.tokens import Caller


def services_of(connection: ASGIConnection[Any, Any, Any, Any]) -> Services:
    services = connection.app.state.services
    assert isinstance(services, Services)
    return services


_TOKEN_CHARACTERS = re.compile(r"[\x21-\x7e]{1,256}")


async def provide_caller(request: Request[Any, Any, Any], services: NamedDependency[Services]) -> Caller:
    """The authenticated caller; every endpoint but health, readiness and the schema depends on it.

    It names ``services`` so that Litestar resolves the two dependencies one after the other: two independent
    dependencies are resolved concurrently in a task group, whose tasks cost more than both lookups."""
    caller = await caller_of(request, services)
    note_participant(request.scope, caller.participant)
    return caller


async def caller_of(connection: ASGIConnection[Any, Any, Any, Any], services: Services) -> Caller:
    header = connection.headers.get("authorization")
    if not header:
        raise Unauthenticated("send an API token: Authorization: Bearer <token>")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("the Authorization header must be 'Bearer <token>'")
    token = token.strip()
    if not _TOKEN_CHARACTERS.fullmatch(token):
        # before any lookup: a NUL or a non-ASCII byte would reach the database (PostgreSQL refuses a NUL)
        raise Unauthenticated(
            "the bearer token is malformed: tokens are printable ASCII, at most 256 characters, "
            "and look like tok_<id>_<secret>"
        )
    return await services.rate_limiter.authenticate(services.tokens, token, connection.client)


async def provide_services(request: Request[Any, Any, Any]) -> Services:
    return services_of(request)


async def registrar_only(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    caller = await caller_of(connection, services_of(connection))
    if not caller.is_registrar:
        raise Forbidden(f"only the registrar may do this; the token belongs to {caller.participant!r}")
