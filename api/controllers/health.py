"""Liveness and readiness."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, Response, get

from api.auth import services_of
from api.errors import problem_of
from ledger.errors import LogRefusesToSign, NotMigrated
from ledger.store.db import ensure_migrated


class HealthController(Controller):
    tags = ["health"]

    @get("/healthz", summary="The process is alive")
    async def healthz(self) -> dict[str, str]:
        return {"status": "ok"}

    @get(
        "/readyz",
        summary="The database is reachable and migrated, and the log signs checkpoints (503 otherwise)",
    )
    async def readyz(self, request: Request[Any, Any, Any]) -> Response[dict[str, Any]]:
        services = services_of(request)
        try:
            await ensure_migrated(services.engine)
            if services.log.guard.refusal is not None:
                raise LogRefusesToSign(f"the log refuses to sign checkpoints: {services.log.guard.refusal}")
        except (NotMigrated, LogRefusesToSign) as exc:
            return Response(
                problem_of(exc, request.url.path), status_code=503, media_type="application/problem+json"
            )
        return Response({"status": "ready"}, status_code=200)
