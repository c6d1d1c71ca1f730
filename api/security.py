"""The edge: what every HTTP request passes through before Litestar routes it, and every response on its way out.

``edge`` wraps the whole Litestar ASGI handler (router, exception handling and CORS included), so nothing escapes
it: router-level 404 and 405 responses, CORS preflights and unhandled errors alike.

- Security headers on every response.
- Strict request input, before routing and so before authentication does any work: the body is read here, up
  to LEDGER_MAX_BODY_BYTES (413) and within LEDGER_BODY_TIMEOUT seconds (408), and must be strict JSON
  (``canonical.loads_strict``: UTF-8, nested at most 32 levels, no key twice in an object, no control
  characters); the path and query string may hold no control characters. Litestar then reads the checked
  body, so no route can bypass the checks. A submission's body written as compact JSON of its own type passes
  the same checks on a quicker path (``canonical.is_compact_form``).

``HeaderDeadlineHttpToolsProtocol`` (what ``ledger serve`` uses: uvicorn's httptools parser, the C llhttp) and
``HeaderDeadlineH11Protocol`` (pure Python h11, where httptools is not installed) add a deadline for a request's
line and headers, so that a client trickling headers cannot hold a connection forever, and bound their size.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl

import h11
import msgspec
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, ReceiveMessage, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # httptools is a dependency; without it, ``ledger serve`` falls back to h11
    HttpToolsProtocol = None  # type: ignore[assignment,misc]

from api.errors import PROBLEM_JSON, BodyTimeout, BodyTooLarge, problem_of, too_large_detail
from ledger.domain.canonical import check_text, is_compact_form, loads_strict
from ledger.errors import InvalidInput, LedgerError
from ledger.settings import Settings

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
# The interactive docs (Swagger UI at /schema, ReDoc at /schema/redoc) load only files the app serves itself
# (api/docs_assets, under /schema/static): no CDN. Their pages start the viewer with an inline script and the
# viewers style themselves inline; ReDoc's search runs in a worker made from a blob.
DOCS_CSP = (
    b"content-security-policy",
    b"default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    b"img-src 'self' data:; font-src 'self' data:; worker-src 'self' blob:; connect-src 'self'; "
    b"frame-ancestors 'none'",
)
# The web explorer (``/`` and ``/ui/``): its own scripts and styles only, no inline script or style; its scripts
# fetch proofs from this origin only; forms post to this origin only.
EXPLORER_CSP = (
    b"content-security-policy",
    b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    b"form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
)
NO_STORE = (b"cache-control", b"no-store")
FORM = b"application/x-www-form-urlencoded"


def is_explorer(path: str) -> bool:
    """The web explorer's pages and assets (``api/controllers/web.py``), which get :data:`EXPLORER_CSP`."""
    return path == "/" or path.startswith("/ui/")


def edge(
    app: ASGIApp, settings: Settings, typed_bodies: Mapping[tuple[str, str], Any] | None = None
) -> ASGIApp:
    """``app`` behind strict input checks, behind security headers (``typed_bodies``: see :func:`strict_input`)."""
    return security_headers(
        strict_input(
            app,
            max_body_bytes=settings.max_body_bytes,
            body_timeout=settings.body_timeout_seconds,
            typed_bodies=typed_bodies,
        )
    )


def security_headers(app: ASGIApp) -> ASGIApp:
    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await app(scope, receive, send)
            return
        path = scope.get("path", "")
        docs = path.startswith("/schema")
        # public, cacheable log resources keep the Cache-Control their handler set (tiles are immutable)
        public_log = path.startswith(("/v1/log/checkpoint", "/v1/log/key", "/v1/log/tile/"))
        explorer = is_explorer(path)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [
                    (name, value)
                    for name, value in message.get("headers", [])
                    if name.lower() != b"content-type"
                    and (name.lower() not in _OURS or (public_log and name.lower() == NO_STORE[0]))
                ]
                content_type = _clean_content_type(message.get("headers", []))
                if content_type is not None:
                    headers.append((b"content-type", content_type))
                headers.extend(API_HEADERS)
                headers.append(DOCS_CSP if docs else EXPLORER_CSP if explorer else API_CSP)
                if not docs and not public_log:
                    headers.append(NO_STORE)
                message["headers"] = headers
            await send(message)

        await app(scope, receive, send_with_headers)

    return middleware


_OURS = {name for name, _ in (*API_HEADERS, API_CSP, NO_STORE)}


def _is_form(scope: Scope) -> bool:
    """An HTML form's body (the explorer's sign-in and record forms), checked as text, not as JSON."""
    if not is_explorer(scope.get("path", "")):
        return False
    for name, value in scope.get("headers", []):
        if name.lower() == b"content-type":
            return bool(value.split(b";")[0].strip().lower() == FORM)
    return False


def _check_form(body: bytes) -> None:
    try:
        text = body.decode("ascii")
    except UnicodeDecodeError:
        raise InvalidInput("a form body is percent-encoded ASCII") from None
    try:
        fields = parse_qsl(text, keep_blank_values=True, strict_parsing=True, errors="strict")
    except (ValueError, UnicodeDecodeError):
        raise InvalidInput("the form body is malformed") from None
    for name, value in fields:
        check_text(name, "a form field's name")
        check_text(value, f"form field {name!r}")


def _clean_content_type(headers: Any) -> bytes | None:
    """One content-type, with at most one parameter of each name: JSON is UTF-8 by definition (RFC 8259), so
    ``application/json`` and ``application/problem+json`` go without ``charset``; text keeps one charset."""
    values = [value for name, value in headers if name.lower() == b"content-type"]
    if not values:
        return None
    media, *parameters = (part.strip() for part in values[-1].split(b";"))
    json_type = media.lower() == b"application/json" or media.lower().endswith(b"+json")
    kept: dict[bytes, bytes] = {}
    for parameter in parameters:
        name = parameter.partition(b"=")[0].strip().lower()
        if not name or (json_type and name == b"charset"):
            continue
        kept.setdefault(name, parameter)
    return b"; ".join([media, *kept.values()])


class _Disconnected(Exception):
    """The client went away while sending its body: there is nobody to answer."""


def strict_input(
    app: ASGIApp,
    *,
    max_body_bytes: int,
    body_timeout: float,
    typed_bodies: Mapping[tuple[str, str], Any] | None = None,
) -> ASGIApp:
    """Read and check every request's body (and its path and query string) before ``app`` sees the request.

    ``typed_bodies`` maps (method, path) to the type of the body that route reads, for the busiest routes (the
    submissions): a body that is exactly that type's compact JSON, as clients usually write it, passes with
    :func:`is_compact_form` (0.9 ms for 1,000 envelopes, against 2.6 ms for :func:`loads_strict`); any other body,
    and every other route's, is checked by :func:`loads_strict`."""
    compact = {
        route: (msgspec.json.Decoder(body_type), msgspec.json.Encoder())
        for route, body_type in (typed_bodies or {}).items()
    }

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await app(scope, receive, send)
            return
        try:
            body = await _read_body(scope, receive, max_body_bytes, body_timeout)
            _check_target(scope)
            if body and _is_form(scope):
                _check_form(body)
            elif body:
                typed = compact.get((scope.get("method", ""), scope.get("path", "")))
                if typed is None or not is_compact_form(body, *typed):
                    loads_strict(body, "request body")
        except _Disconnected:
            return
        except LedgerError as error:
            await _send_problem(scope, send, error)
            return
        await app(scope, _replay(body, receive), send)

    return middleware


def _check_target(scope: Scope) -> None:
    check_text(scope.get("path", ""), "the request path")
    query = scope.get("query_string", b"")
    if query:
        for name, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
            check_text(name, "a query parameter's name")
            check_text(value, f"query parameter {name!r}")


async def _read_body(scope: Scope, receive: Receive, limit: int, seconds: float) -> bytes:
    for name, value in scope.get("headers", []):
        if name.lower() == b"content-length" and value.strip().isdigit() and int(value) > limit:
            raise BodyTooLarge(too_large_detail(limit))
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(seconds):
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise _Disconnected
                chunk = message.get("body", b"")
                assert isinstance(chunk, bytes)
                size += len(chunk)
                if size > limit:
                    raise BodyTooLarge(too_large_detail(limit))
                chunks.append(chunk)
                if not message.get("more_body", False):
                    return b"".join(chunks)
    except TimeoutError:
        raise BodyTimeout(
            f"the request body did not arrive in full within {seconds:g} seconds (LEDGER_BODY_TIMEOUT; "
            f"{size:,} bytes came); send the whole body promptly, or split a batch into smaller requests"
        ) from None


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that hands the app the body already read, then passes on whatever comes next."""
    sent = False

    async def replay() -> ReceiveMessage:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _send_problem(scope: Scope, send: Send, error: LedgerError) -> None:
    body = msgspec.json.encode(problem_of(error, scope.get("path", "")))
    headers = [(b"content-type", PROBLEM_JSON.encode()), (b"content-length", str(len(body)).encode())]
    if error.retry_after is not None:
        headers.append((b"retry-after", str(error.retry_after).encode()))
    if isinstance(error, BodyTooLarge | BodyTimeout):
        headers.append(
            (b"connection", b"close")
        )  # the rest of the body is not read: do not reuse the connection
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


# --- the server ---------------------------------------------------------------------------------------------


MAX_HEADER_BYTES = 16 * 1024
"""Largest request line plus headers ``ledger serve`` reads (h11's limit; beyond, uvicorn answers 400)."""


@functools.cache
def _header_timeout() -> float:
    return Settings.from_env().header_timeout_seconds


class HeaderDeadlineH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, with a deadline (LEDGER_HEADER_TIMEOUT) for a request's line and headers.

    The clock starts when the connection opens and again when a response completes (uvicorn's own keep-alive
    timeout closes an idle connection, but a client sending a byte now and then would reset it forever). When the
    headers are not complete by then, the connection is closed: there is no request yet to answer."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.header_timeout = _header_timeout()
        self._header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_deadline()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:
            self._disarm_header_deadline()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm_header_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_deadline()
        super().connection_lost(exc)

    def _arm_header_deadline(self) -> None:
        self._disarm_header_deadline()
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self._header_timer = self.loop.call_later(self.header_timeout, self._header_deadline_passed)

    def _disarm_header_deadline(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_deadline_passed(self) -> None:
        self._header_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()


if HttpToolsProtocol is not None:

    class HeaderDeadlineHttpToolsProtocol(HttpToolsProtocol):
        """uvicorn's httptools protocol with the same deadline as :class:`HeaderDeadlineH11Protocol`, and a bound of
        :data:`MAX_HEADER_BYTES` on a request's line and headers (431, then the connection closes)."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.header_timeout = _header_timeout()
            self._header_timer: asyncio.TimerHandle | None = None
            self._in_headers = True
            self._header_bytes = 0
            """Bytes received while the current request's headers are incomplete (a trickle that never ends)."""
            self._head_bytes = 0
            """Bytes of the current request's line and headers, as parsed."""
            self._refused = False

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm_header_deadline()

        def data_received(self, data: bytes) -> None:
            if self._refused:
                return
            if self._in_headers:
                self._header_bytes += len(data)
            super().data_received(data)
            if self._in_headers and self._header_bytes > MAX_HEADER_BYTES and not self._refused:
                self._refuse_headers()

        def on_message_begin(self) -> None:
            self._head_bytes = 0
            super().on_message_begin()

        def on_url(self, url: bytes) -> None:
            self._head_bytes += len(url)
            super().on_url(url)

        def on_header(self, name: bytes, value: bytes) -> None:
            self._head_bytes += len(name) + len(value) + 4
            super().on_header(name, value)

        def on_headers_complete(self) -> None:
            self._in_headers = False
            self._disarm_header_deadline()
            if self._head_bytes > MAX_HEADER_BYTES:
                self._refuse_headers()
                return
            super().on_headers_complete()

        def on_body(self, body: bytes) -> None:
            if not self._refused:
                super().on_body(body)

        def on_message_complete(self) -> None:
            if not self._refused:
                super().on_message_complete()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._arm_header_deadline()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm_header_deadline()
            super().connection_lost(exc)

        def _arm_header_deadline(self) -> None:
            self._disarm_header_deadline()
            self._in_headers = True
            self._header_bytes = 0
            if not self.transport.is_closing():
                self._header_timer = self.loop.call_later(self.header_timeout, self._header_deadline_passed)

        def _disarm_header_deadline(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _header_deadline_passed(self) -> None:
            self._header_timer = None
            if self._in_headers and not self.transport.is_closing():
                self.transport.close()

        def _refuse_headers(self) -> None:
            self._refused = True
            self._disarm_header_deadline()
            body = msgspec.json.encode(
                {
                    "type": "about:blank",
                    "title": "Request Header Fields Too Large",
                    "status": 431,
                    "code": "headers-too-large",
                    "detail": f"the request line and headers exceed {MAX_HEADER_BYTES} bytes",
                }
            )
            head = [
                b"HTTP/1.1 431 Request Header Fields Too Large\r\n",
                b"content-type: application/problem+json\r\n",
                b"content-length: " + str(len(body)).encode() + b"\r\n",
                b"connection: close\r\n",
                *(name + b": " + value + b"\r\n" for name, value in API_HEADERS),
                b"\r\n",
            ]
            self.transport.write(b"".join(head) + body)
            self.transport.close()


def http_protocol() -> type[asyncio.Protocol]:
    """The protocol ``ledger serve`` runs: httptools (C llhttp, about twice the requests per second of pure-Python
    h11) when installed, else h11; either with the header deadline and size bound."""
    if HttpToolsProtocol is not None:
        return HeaderDeadlineHttpToolsProtocol
    return HeaderDeadlineH11Protocol
