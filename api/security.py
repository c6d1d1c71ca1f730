"""Security headers on every response, errors included (a pure ASGI middleware, so nothing escapes it)."""

from __future__ import annotations

from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send

API_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"strict-transport-security", b"max-age=63072000; includeSubDomains"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"permissions-policy", b"geolocation=(), camera=(), microphone=()"),
]
API_CSP = (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'")
# The interactive docs load Swagger UI's script and styles from its CDN.
DOCS_CSP = (
    b"content-security-policy",
    b"default-src 'self'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
    b"style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; img-src 'self' data: https:; frame-ancestors 'none'",
)
NO_STORE = (b"cache-control", b"no-store")


def security_headers(app: ASGIApp) -> ASGIApp:
    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await app(scope, receive, send)
            return
        path = scope.get("path", "")
        docs = path.startswith("/schema")
        public_log = path.startswith("/v1/log/checkpoint") or path.startswith("/v1/log/key")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [h for h in message.get("headers", []) if h[0].lower() not in _OURS]
                headers.extend(API_HEADERS)
                headers.append(DOCS_CSP if docs else API_CSP)
                if not docs and not public_log:
                    headers.append(NO_STORE)
                message["headers"] = headers
            await send(message)

        await app(scope, receive, send_with_headers)

    return middleware


_OURS = {name for name, _ in (*API_HEADERS, API_CSP, NO_STORE)}
