"""Every error leaves as RFC 9457 ``application/problem+json``, mapped once, here."""

from __future__ import annotations

import logging
from typing import Any

from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR

from ledger.errors import LedgerError

PROBLEM_JSON = "application/problem+json"
TYPE_BASE = "https://mineral-ledger.example/problems/"

log = logging.getLogger("ledger.api")


class BodyTooLarge(LedgerError):
    """The request body is larger than LEDGER_MAX_BODY_BYTES (refused at the edge, before it is all read)."""

    status = 413
    code = "body-too-large"
    title = "Request body too large"


class BodyTimeout(LedgerError):
    """The request body did not arrive in full within LEDGER_BODY_TIMEOUT seconds (a slow or stalled client)."""

    status = 408
    code = "request-timeout"
    title = "Request body too slow"


def too_large_detail(limit: int) -> str:
    return (
        f"the request body exceeds the size limit of {limit:,} bytes (LEDGER_MAX_BODY_BYTES); send a smaller "
        "body (split a batch into several requests)"
    )


def problem(status: int, code: str, title: str, detail: str, instance: str, **extra: Any) -> dict[str, Any]:
    return {
        "type": TYPE_BASE + code,
        "title": title,
        "status": status,
        "detail": detail,
        "instance": instance,
        "code": code,
        **extra,
    }


def problem_of(error: LedgerError, instance: str = "") -> dict[str, Any]:
    return problem(error.status, error.code, error.title, error.detail, instance, **error.extra)


def _response(body: dict[str, Any], headers: dict[str, str] | None = None) -> Response[dict[str, Any]]:
    return Response(body, status_code=body["status"], media_type=PROBLEM_JSON, headers=headers)


def ledger_error_handler(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    assert isinstance(exc, LedgerError)
    headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after is not None else None
    return _response(problem_of(exc, request.url.path), headers)


def _validation_detail(exc: ValidationException) -> str:
    extra = exc.extra
    messages: list[str] = []
    if isinstance(extra, list):
        for item in extra:
            if isinstance(item, dict):
                message = str(item.get("message", ""))
                key = item.get("key")
                messages.append(f"{key}: {message}" if key and key not in message else message)
    detail = "; ".join(m for m in messages if m) or str(exc.detail)
    if "JSON is malformed" in detail or "malformed" in detail.lower():
        return f"request body is not valid JSON: {detail}"
    return f"request is invalid: {detail}"


def http_error_handler(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    assert isinstance(exc, HTTPException)
    status = exc.status_code
    if isinstance(exc, ValidationException):
        body = problem(400, "invalid-input", "Invalid input", _validation_detail(exc), request.url.path)
    elif status == 400:
        body = problem(
            400,
            "invalid-input",
            "Invalid input",
            f"request body is not valid JSON: {exc.detail}",
            request.url.path,
        )
    elif status == 413:
        services = getattr(request.app.state, "services", None)
        detail = (
            too_large_detail(services.settings.max_body_bytes)
            if services
            else "the request body exceeds the size limit (LEDGER_MAX_BODY_BYTES)"
        )
        body = problem(413, BodyTooLarge.code, BodyTooLarge.title, detail, request.url.path)
    elif status == 404:
        body = problem(404, "not-found", "Not found", f"no resource at {request.url.path}", request.url.path)
    elif status == 405:
        body = problem(
            405,
            "method-not-allowed",
            "Method not allowed",
            f"{request.method} is not allowed here",
            request.url.path,
        )
    else:
        body = problem(status, "http-error", str(exc.detail), str(exc.detail), request.url.path)
    headers = dict(exc.headers or {})
    return _response(body, headers or None)


def internal_error_handler(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return _response(
        problem(
            HTTP_500_INTERNAL_SERVER_ERROR,
            "internal-error",
            "Internal server error",
            "the server failed to handle this request; nothing was changed. The error is logged.",
            request.url.path,
        )
    )


EXCEPTION_HANDLERS = {
    LedgerError: ledger_error_handler,
    HTTPException: http_error_handler,
    Exception: internal_error_handler,
}
