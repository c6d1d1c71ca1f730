"""The API's documentation, served offline: Swagger UI at ``/schema``, ReDoc at ``/schema/redoc``, both from
files vendored in ``api/docs_assets/`` (no CDN: customs networks are often closed), and an OpenAPI document that
says what the server really does: a bearer token on every protected operation (so Swagger's Authorize works) and
RFC 9457 problem documents, with the ledger's stable ``code``, on every error response."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from litestar import Litestar
from litestar.openapi.plugins import (
    JsonRenderPlugin,
    OpenAPIRenderPlugin,
    RedocRenderPlugin,
    SwaggerRenderPlugin,
)
from litestar.openapi.spec import (
    Components,
    OpenAPIMediaType,
    OpenAPIResponse,
    Operation,
    Reference,
    Schema,
    SecurityScheme,
)
from litestar.openapi.spec.enums import OpenAPIType
from litestar.router import Router
from litestar.static_files import create_static_files_router

from api.errors import PROBLEM_JSON, TYPE_BASE

ASSETS = Path(__file__).parent / "docs_assets"
STATIC = "/schema/static"
"""Where the vendored files are served (under the docs' path, so they get the docs' security headers)."""
SWAGGER_UI_VERSION = "5.35.0"
REDOC_VERSION = "2.5.4"
FAVICON = f"<link rel='icon' type='image/png' href='{STATIC}/swagger-ui/favicon-32x32.png'>"

BEARER = "bearer"
PUBLIC_PATHS = (
    "/healthz",
    "/readyz",
    "/metrics",
    "/v1/log/checkpoint",
    "/v1/log/key",
    "/v1/log/proofs/",
    "/v1/log/tile/",
    "/.well-known/",
    "/v1/credentials/status/",
)
"""Operations that need no API token: health, the metrics scrape (its own optional secret), the public log
(checkpoints, the log key, proofs, tiles), the ledger's DID document and the credential status list. Everything else (under /v1 and /epcis) needs
``Authorization: Bearer <token>``."""

ERRORS = {
    400: "Invalid input: the detail names the field and what is wrong with it",
    401: "No API token, or an unknown, expired or revoked one",
    403: "The token's participant may not do this (the detail says who may)",
    404: "Not found, or not the caller's to see (the same answer either way)",
    408: "The request body did not arrive within LEDGER_BODY_TIMEOUT",
    409: "Conflicts with what the ledger holds (an id taken, a profile version not above the last, ...)",
    413: "The request body exceeds LEDGER_MAX_BODY_BYTES",
    422: "Well-formed, but breaks a rule of the ledger (the code says which)",
    429: "Too many requests for this token or address; Retry-After says when to try again",
    500: "The server failed; nothing was changed",
    503: "Overloaded, a replica behind, or the database unreachable; Retry-After when it is worth retrying",
}
PUBLIC_ERRORS = (400, 404, 408, 409, 413, 429, 500, 503)

PROBLEM_SCHEMA = Schema(
    type=OpenAPIType.OBJECT,
    title="Problem",
    description=(
        "An RFC 9457 problem document (media type application/problem+json). ``code`` is the ledger's stable "
        "error code (also the last segment of ``type``); some problems add fields that say more, e.g. "
        "``balance_g`` for insufficient-balance or ``element`` for invalid-certificate."
    ),
    required=["type", "title", "status", "detail", "code"],
    properties={
        "type": Schema(type=OpenAPIType.STRING, description=f"{TYPE_BASE}<code>"),
        "title": Schema(
            type=OpenAPIType.STRING, description="short, the same for every problem of this code"
        ),
        "status": Schema(type=OpenAPIType.INTEGER, description="the HTTP status code"),
        "detail": Schema(
            type=OpenAPIType.STRING, description="what went wrong here, and what to do about it"
        ),
        "instance": Schema(type=OpenAPIType.STRING, description="the request path"),
        "code": Schema(type=OpenAPIType.STRING, description="stable machine-readable code, e.g. not-found"),
    },
    additional_properties=True,
    examples=[
        {
            "type": f"{TYPE_BASE}not-found",
            "title": "Not found",
            "status": 404,
            "detail": "batch 'spod-qc-0001' does not exist",
            "instance": "/v1/batches/spod-qc-0001",
            "code": "not-found",
        }
    ],
)


def render_plugins() -> list[OpenAPIRenderPlugin]:
    """Swagger UI at ``/schema`` (``/schema/swagger`` too), ReDoc at ``/schema/redoc``, the JSON document at
    ``/schema/openapi.json``: every script, stylesheet and icon from :data:`STATIC`."""
    return [
        SwaggerRenderPlugin(
            path=["/", "/swagger"],
            version=SWAGGER_UI_VERSION,
            js_url=f"{STATIC}/swagger-ui/swagger-ui-bundle.js",
            css_url=f"{STATIC}/swagger-ui/swagger-ui.css",
            standalone_preset_js_url=f"{STATIC}/swagger-ui/swagger-ui-standalone-preset.js",
            favicon=FAVICON,
        ),
        RedocRenderPlugin(
            path="/redoc",
            version=REDOC_VERSION,
            js_url=f"{STATIC}/redoc/redoc.standalone.js",
            google_fonts=False,
            favicon=FAVICON,
        ),
        JsonRenderPlugin(path="/openapi.json"),
    ]


def static_router() -> Router:
    """The vendored files, public and cacheable, not in the OpenAPI document."""
    return create_static_files_router(
        path=STATIC,
        directories=[ASSETS],
        include_in_schema=False,
        name="docs-assets",
        cache_control=None,
    )


def components() -> Components:
    return Components(
        security_schemes={
            BEARER: SecurityScheme(
                type="http",
                scheme="bearer",
                description=(
                    "An API token issued by the registrar (`ledger token issue`), sent as "
                    "`Authorization: Bearer <token>`. It acts as one participant; reads are scoped to what that "
                    "participant may see, and a write must be signed by that participant's key."
                ),
            )
        },
    )


def is_public(path: str) -> bool:
    return path.startswith(PUBLIC_PATHS)


def _problem_response(description: str) -> OpenAPIResponse:
    return OpenAPIResponse(
        description=description,
        content={PROBLEM_JSON: OpenAPIMediaType(schema=Reference(ref="#/components/schemas/Problem"))},
    )


def _operations(path_item: Any) -> list[Operation]:
    methods = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
    return [op for op in (getattr(path_item, m, None) for m in methods) if isinstance(op, Operation)]


def document_security_and_problems(app: Litestar) -> None:
    """Finish the generated OpenAPI document (before it is first served): the bearer scheme on every protected
    operation, none on public ones, and the problem document on every error response instead of Litestar's
    ValidationException shape."""
    openapi = app.openapi_schema
    openapi.components.schemas["Problem"] = PROBLEM_SCHEMA  # the build replaces the configured schemas
    for path, path_item in (openapi.paths or {}).items():
        public = is_public(path)
        for operation in _operations(path_item):
            operation.security = None if public else [{BEARER: []}]
            responses = dict(operation.responses or {})
            for code in PUBLIC_ERRORS if public else ERRORS:
                responses[str(code)] = _problem_response(ERRORS[code])
            for key, response in list(responses.items()):
                if key[:1] in "45" and isinstance(response, OpenAPIResponse):
                    known = ERRORS.get(int(key)) if key.isdigit() else None
                    responses[key] = _problem_response(known or response.description)
            operation.responses = dict(sorted(responses.items()))
