"""Requests seen from outside: a request id, one JSON log line and the HTTP metrics for every request, and
``GET /metrics``.

This wraps the whole application, outside the edge's checks, so that a request refused before routing (413, 408,
400) or by the router (404, 405) is logged and counted like any other; Litestar's own Prometheus middleware runs
per route and would miss those. The route label is the matched route's template (``/v1/batches/{batch_id}``),
never the raw path, so that the metrics' label sets stay small.
"""

from __future__ import annotations

import functools
import hmac
import logging
import os
import re
import time
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from litestar import Controller, Request, Response, get
from litestar.connection import ASGIConnection
from litestar.enums import ScopeType
from litestar.handlers.base import BaseRouteHandler
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from ledger import metrics
from ledger.errors import NotFound, Unauthenticated
from ledger.log.cosignature import Witness
from ledger.services.container import Services
from ledger.store.models import CheckpointRow, CosignatureRow, LogState

log = logging.getLogger("ledger.request")

REQUEST_ID_HEADER = b"x-request-id"
_GOOD_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:-]{1,64}")
UNMATCHED = "(unmatched)"
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
"""The methods the metrics name; any other a client sends is counted as :data:`OTHER_METHOD`, so that made-up
methods cannot add label sets without end."""
OTHER_METHOD = "OTHER"


def observed(app: ASGIApp) -> ASGIApp:
    """``app`` with a request id (the client's ``X-Request-ID`` if it is a plain token of at most 64 characters,
    else a new one, echoed in the response), a log line and the HTTP metrics for every request."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = _request_id(scope)
        seen: dict[str, Any] = {"status": 500, "participant": None}
        scope["ledger"] = seen  # type: ignore[typeddict-unknown-key]

        async def send_observed(message: Message) -> None:
            if message["type"] == "http.response.start":
                seen["status"] = message["status"]
                message["headers"] = [*message.get("headers", []), (REQUEST_ID_HEADER, request_id)]
            await send(message)

        try:
            await app(scope, receive, send_observed)
        finally:
            seconds = time.perf_counter() - started
            route = scope.get("path_template") or UNMATCHED
            method = scope.get("method", "")
            status = int(seen["status"])
            requests, durations = _http_metrics(
                route, method if method in HTTP_METHODS else OTHER_METHOD, status
            )
            requests.inc()
            durations.observe(seconds)
            log.info(
                "request",
                extra={
                    "request_id": request_id.decode(),
                    "method": method,
                    "route": route,
                    "status": status,
                    "duration_ms": round(seconds * 1000, 2),
                    "participant": seen["participant"],
                },
            )

    return middleware


@functools.lru_cache(maxsize=4096)
def _http_metrics(route: str, method: str, status: int) -> tuple[Any, Any]:
    """The request counter and duration histogram of (route, method, status), kept: looking a labelled child up
    in prometheus_client takes a lock and checks the labels, a few per cent of a small request's cost."""
    return (
        metrics.HTTP_REQUESTS.labels(route, method, str(status)),
        metrics.HTTP_SECONDS.labels(route, method),
    )


def _request_id(scope: Scope) -> bytes:
    for name, value in scope.get("headers", []):
        if name.lower() == REQUEST_ID_HEADER and _GOOD_REQUEST_ID.fullmatch(value):
            return bytes(value)
    return os.urandom(16).hex().encode()  # 32 hex digits, like a UUID4 but without building one


def note_participant(scope: Scope, participant: str) -> None:
    """Record the authenticated caller for the request's log line."""
    seen = scope.get("ledger")
    if isinstance(seen, dict):
        seen["participant"] = participant


async def metrics_access(connection: ASGIConnection[Any, Any, Any, Any], _handler: BaseRouteHandler) -> None:
    """LEDGER_METRICS=off hides ``/metrics``; with LEDGER_METRICS_TOKEN set it needs that bearer token."""
    services = connection.app.state.services
    assert isinstance(services, Services)
    settings = services.settings
    if not settings.metrics:
        raise NotFound("metrics are turned off (LEDGER_METRICS=off)")
    if settings.metrics_token:
        scheme, _blank, token = connection.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip(), settings.metrics_token):
            raise Unauthenticated(
                "/metrics needs the metrics token: Authorization: Bearer <LEDGER_METRICS_TOKEN>"
            )


class MetricsController(Controller):
    path = "/metrics"
    include_in_schema = False
    guards = [metrics_access]

    @get("/", summary="Prometheus metrics")
    async def scrape(self, request: Request[Any, Any, Any]) -> Response[bytes]:
        services = request.app.state.services
        assert isinstance(services, Services)
        body = metrics.exposition(await log_gauges(services))
        return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")


async def log_gauges(services: Services) -> metrics.LogGauges:
    state = sa.select(LogState.size).where(LogState.id == 1).scalar_subquery()
    latest = (
        sa.select(CheckpointRow.size, CheckpointRow.created_at).order_by(CheckpointRow.size.desc()).limit(1)
    )
    per_witness = sa.select(CosignatureRow.witness, sa.func.max(CosignatureRow.size)).group_by(
        CosignatureRow.witness
    )
    async with services.engine.connect() as conn:
        sequenced = int(await conn.scalar(sa.select(state)) or 0)
        row = (await conn.execute(latest)).first()
        cosigned = {str(name): int(size) for name, size in await conn.execute(per_witness)}
        on_latest = sum(1 for size in cosigned.values() if row is not None and size == row.size)
    configured = [Witness.parse(vkey).name for vkey, _ in services.settings.witness_endpoints]
    pool: Any = services.engine.pool
    age = (datetime.now(UTC) - row.created_at).total_seconds() if row is not None else None
    return metrics.LogGauges(
        sequenced=sequenced,
        checkpoint_size=int(row.size) if row is not None else 0,
        checkpoint_age_seconds=age,
        pool_checked_out=int(pool.checkedout()) if hasattr(pool, "checkedout") else 0,
        pool_size=int(pool.size()) if hasattr(pool, "size") else 0,
        witness_sizes={name: cosigned.get(name, 0) for name in configured},
        latest_cosignatures=on_latest,
        witness_quorum=services.settings.effective_witness_quorum,
        guard_refusing=services.log.guard.refusal is not None,
    )
