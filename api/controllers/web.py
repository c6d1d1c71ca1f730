"""The web explorer at ``/``: server-rendered pages over the same services as the JSON API, with the API's read
scoping (a page is built for the caller behind the session, exactly as the API answers that caller's token).

Sign-in turns an API token into an HttpOnly, SameSite=Strict session cookie that holds the token itself (nothing
is kept on the server, so every worker accepts it and revoking the token ends the session). Every form that
changes something carries a CSRF token: before sign-in a random value that must equal a sign-in cookie (double
submit); after, SHA-256 of a fixed label and the session token, which a page of another origin cannot compute
because it cannot read the HttpOnly cookie. The JSON API keeps its bearer tokens and is untouched: the cookie
means nothing there.

Verification (inclusion and consistency proofs, checkpoint and envelope signatures, bundles) and signing run
in the browser (``api/web/static/verify.js``); the pages only hand them the data.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
from collections.abc import Mapping
from datetime import UTC, datetime
from fractions import Fraction
from typing import Annotated, Any
from urllib.parse import quote, urlsplit

import msgspec
from litestar import Controller, MediaType, Request, Response, get, post
from litestar.datastructures import Cookie
from litestar.di import NamedDependency
from litestar.exceptions import HTTPException
from litestar.params import PathParameter
from litestar.response import Redirect, Template
from litestar.types import ExceptionHandlersMap

from api.auth import _TOKEN_CHARACTERS, services_of
from api.params import EventIdPath, IdPath
from api.web.graph import grams, lineage_svg, share_bar, stacked_bar
from ledger.domain import events as ev
from ledger.domain.dsse import Envelope
from ledger.errors import Forbidden, InvalidInput, LedgerError, NotFound, Unauthenticated
from ledger.services.container import Services
from ledger.services.eligibility import parse_day
from ledger.services.tokens import Caller
from ledger.services.views import SubmitResultView

log = logging.getLogger("ledger.api")

SESSION_COOKIE = "ledger_session"
SIGNIN_COOKIE = "ledger_signin"
CSRF_FIELD = "csrf"
CSRF_HEADER = "x-csrf-token"
_CSRF_LABEL = b"mineral-ledger explorer csrf\n"
SESSION_SECONDS = 8 * 3600
WRITER_ROLES = frozenset({"miner", "processor", "recycler", "manufacturer", "trader", "carrier", "auditor"})


class SignInNeeded(Unauthenticated):
    """No session, or its token no longer works: the page asks to sign in."""


class CsrfRejected(Forbidden):
    code = "csrf-rejected"
    title = "Form rejected"


def csrf_for(token: str) -> str:
    """The CSRF token of a session: SHA-256 of a fixed label and the session's API token."""
    return hashlib.sha256(_CSRF_LABEL + token.encode()).hexdigest()


LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
"""Hosts a browser reaches without TLS for local use; anywhere else the session cookie is ``Secure`` even when a
proxy in front does not say (X-Forwarded-Proto) that the browser used HTTPS."""


def _secure(request: Request[Any, Any, Any]) -> bool:
    if request.url.scheme == "https" or request.headers.get("x-forwarded-proto", "") == "https":
        return True
    return (request.url.hostname or "") not in LOOPBACK_HOSTS


def _session_cookie(request: Request[Any, Any, Any], token: str, max_age: int | None) -> Cookie:
    return Cookie(
        key=SESSION_COOKIE,
        value=token,
        path="/",
        httponly=True,
        samesite="strict",
        secure=_secure(request),
        max_age=max_age,
    )


async def session_of(request: Request[Any, Any, Any]) -> tuple[Caller, str]:
    """The caller behind the session cookie and the session's CSRF token; :class:`SignInNeeded` without one."""
    token = request.cookies.get(SESSION_COOKIE, "")
    if not token:
        raise SignInNeeded("sign in with an API token to use the explorer")
    if not _TOKEN_CHARACTERS.fullmatch(token):
        raise SignInNeeded("the session cookie is malformed; sign in again")
    services = services_of(request)
    try:
        caller = await services.rate_limiter.authenticate(services.tokens, token, request.client)
    except Unauthenticated as exc:
        raise SignInNeeded(f"the session's token no longer works ({exc.detail}); sign in again") from None
    return caller, csrf_for(token)


async def _optional_session(request: Request[Any, Any, Any]) -> tuple[Caller, str] | None:
    try:
        return await session_of(request)
    except SignInNeeded:
        return None


def _check_csrf(request: Request[Any, Any, Any], sent: str | None, expected: str) -> None:
    origin = request.headers.get("origin")
    if origin is not None and origin != "null":
        # the host the browser addressed: Host, or X-Forwarded-Host behind the TLS proxy
        own = {request.headers.get("host", ""), request.headers.get("x-forwarded-host", "")} - {""}
        if urlsplit(origin).netloc not in own:
            raise CsrfRejected(
                f"the form was sent from {origin}, not from this explorer ({', '.join(sorted(own))})"
            )
    if not sent or not hmac.compare_digest(sent.encode(), expected.encode()):
        raise CsrfRejected(
            "the form's CSRF token is missing or wrong (a form from another site, or an old page): reload the page "
            "and send the form again"
        )


async def _form(request: Request[Any, Any, Any]) -> dict[str, str]:
    form = await request.form()
    return {key: value for key, value in form.items() if isinstance(value, str)}


def _page(name: str, session: tuple[Caller, str] | None, status_code: int = 200, **context: Any) -> Template:
    caller, csrf = session if session else (None, "")
    return Template(
        template_name=name,
        context={
            "caller": caller,
            "csrf": csrf,
            "writer": bool(caller and (caller.roles & WRITER_ROLES)),
            "grams": grams,
            **context,
        },
        status_code=status_code,
    )


def html_error(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """Errors on explorer pages are pages: sign-in when there is no session, otherwise the problem in words,
    with the status the JSON API would give."""
    if isinstance(exc, HTTPException) and not isinstance(exc, LedgerError):
        status, title, detail = exc.status_code, "Request refused", str(exc.detail)
        if status == 404:
            title, detail = "Not found", f"nothing at {request.url.path}"
    elif isinstance(exc, LedgerError):
        status, title, detail = exc.status, exc.title, exc.detail
    else:
        log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        status, title = 500, "Internal server error"
        detail = "the server failed to build this page; nothing was changed. The error is logged."
    if isinstance(exc, SignInNeeded):
        token = secrets.token_urlsafe(24)
        page = Response(
            content=_render(
                request,
                "signin.html",
                {
                    "message": detail
                    if request.method == "POST" or request.cookies.get(SESSION_COOKIE)
                    else "",
                    "signin_csrf": token,
                    "next": _next(request),
                },
            ),
            status_code=401,
            media_type=MediaType.HTML,
        )
        page.set_cookie(
            SIGNIN_COOKIE, token, path="/ui/signin", httponly=True, samesite="strict", secure=_secure(request)
        )
        return page
    return Response(
        content=_render(
            request, "error.html", {"status": status, "title": title, "detail": detail, "caller": None}
        ),
        status_code=status,
        media_type=MediaType.HTML,
    )


def _next(request: Request[Any, Any, Any]) -> str:
    if request.method != "GET":
        return "/"
    query = request.url.query
    return request.url.path + (f"?{query}" if query else "")


def _render(request: Request[Any, Any, Any], name: str, context: Mapping[str, Any]) -> str:
    engine = request.app.template_engine
    assert engine is not None
    return str(
        engine.get_template(name).render(
            {"caller": None, "csrf": "", "writer": False, "grams": grams, **context}
        )
    )


def _safe_next(target: str | None) -> str:
    """Only a path of this site (no scheme, no host, no '//' or backslash tricks)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


HTML_ERRORS: ExceptionHandlersMap = {
    LedgerError: html_error,
    HTTPException: html_error,
    Exception: html_error,
}


def _fraction(text: str) -> Fraction | None:
    """An exact decimal or ``n/d`` of the engine; None for what the caller may not see ("redacted")."""
    try:
        return Fraction(text)
    except (ValueError, ZeroDivisionError):
        return None


def headline(summary: Any) -> str:
    """The verdict in words, naming what decided it first (a foreign entity of concern before the share)."""
    failing = [r for r in summary.deciding_reasons if r.outcome == "fail"]
    share = f"qualifying share {summary.qualifying_share_percent} %"
    threshold = summary.threshold
    against = f" against a threshold of {float(Fraction(threshold.share)) * 100:.2f} %" if threshold else ""
    if summary.verdict == "eligible":
        return f"Eligible: {share}{against}."
    if summary.verdict == "not_applicable":
        reason = (
            summary.deciding_reasons[0].message if summary.deciding_reasons else "the profile does not apply"
        )
        return f"Not applicable: {reason}."
    if summary.foreign_entity_of_concern:
        feoc = next((r for r in failing if "foreign" in r.code or "feoc" in r.code), None)
        named = feoc.message if feoc else "a participant in its supply chain is a foreign entity of concern"
        return f"Not eligible because of a foreign entity of concern: {named}."
    if failing:
        return f"Not eligible: {failing[0].message} ({share}{against})."
    return f"Not eligible: {share}{against}."


class ExplorerController(Controller):
    """The explorer's pages. Not part of the OpenAPI document: the JSON API is."""

    path = "/"
    include_in_schema = False
    exception_handlers = HTML_ERRORS

    @get("/", name="explorer-home")
    async def home(self, request: Request[Any, Any, Any], services: NamedDependency[Services]) -> Template:
        caller, csrf = await session_of(request)
        try:
            checkpoint: Any = await services.log.latest_checkpoint()
        except NotFound:
            checkpoint = None  # a new ledger, before its first checkpoint
        held = await services.custody.participant_batches(
            caller.participant, status=None, limit=20, after=None, caller=caller
        )
        return _page("home.html", (caller, csrf), checkpoint=checkpoint, batches=held.items)

    @post("/ui/signin", name="explorer-signin", status_code=303)
    async def signin(
        self, request: Request[Any, Any, Any], services: NamedDependency[Services]
    ) -> Response[Any]:
        form = await _form(request)
        _check_csrf(
            request, form.get(CSRF_FIELD), request.cookies.get(SIGNIN_COOKIE) or secrets.token_hex(16)
        )
        token = form.get("token", "").strip()
        if not _TOKEN_CHARACTERS.fullmatch(token):
            raise SignInNeeded("that is not an API token: tokens look like tok_<id>_<secret>")
        try:
            await services.rate_limiter.authenticate(services.tokens, token, request.client)
        except Unauthenticated as exc:
            raise SignInNeeded(f"sign-in failed: {exc.detail}") from None
        response: Response[Any] = Redirect(path=_safe_next(form.get("next")), status_code=303)
        response.set_cookie(_session_cookie(request, token, SESSION_SECONDS))
        response.delete_cookie(SIGNIN_COOKIE, path="/ui/signin")
        return response

    @post("/ui/signout", name="explorer-signout", status_code=303)
    async def signout(self, request: Request[Any, Any, Any]) -> Response[Any]:
        form = await _form(request)
        token = request.cookies.get(SESSION_COOKIE, "")
        _check_csrf(request, form.get(CSRF_FIELD), csrf_for(token) if token else secrets.token_hex(16))
        response: Response[Any] = Redirect(path="/", status_code=303)
        response.set_cookie(_session_cookie(request, "", 0))
        return response

    @get("/ui/search", name="explorer-search")
    async def search(
        self, request: Request[Any, Any, Any], services: NamedDependency[Services]
    ) -> Response[Any]:
        session = await session_of(request)
        caller = session[0]
        q = (request.query_params.get("q") or "").strip()
        if not q:
            return _page("search.html", session, q=q, status_code=400)
        if q.startswith("sha256:"):
            return Redirect(path=f"/ui/events/{quote(q, safe=':')}", status_code=303)
        try:
            await services.custody.batch(q, caller)
            return Redirect(path=f"/ui/batches/{quote(q, safe=':')}", status_code=303)
        except (NotFound, InvalidInput):
            pass
        try:
            await services.registry.participant(q)
            return Redirect(path=f"/ui/participants/{quote(q, safe=':')}", status_code=303)
        except (NotFound, InvalidInput):
            pass
        try:
            await _facility_exists(services, q)
            return Redirect(path=f"/ui/facilities/{quote(q, safe=':')}", status_code=303)
        except (NotFound, InvalidInput):
            pass
        try:
            certificate = await services.origin.certificate(q, caller)
            return Redirect(path=f"/ui/events/{quote(certificate.event_id, safe=':')}", status_code=303)
        except (NotFound, InvalidInput, Forbidden):
            pass
        return _page("search.html", session, q=q, status_code=404)

    @get("/ui/batches/{batch_id:str}", name="explorer-batch")
    async def batch(
        self, request: Request[Any, Any, Any], services: NamedDependency[Services], batch_id: IdPath
    ) -> Template:
        session = await session_of(request)
        caller = session[0]
        batch = await services.custody.batch(batch_id, caller)
        history = await services.custody.history(batch_id, caller)
        upstream = await services.custody.lineage(batch_id, "upstream", None, caller)
        downstream = await services.custody.lineage(batch_id, "downstream", None, caller)
        hidden = await services.custody.hidden_children(batch_id, caller)
        countries = await _countries(services, [*upstream.batches, *downstream.batches])
        places = await _facility_places(services, [e.payload for e in history.events])
        return _page(
            "batch.html",
            session,
            batch=batch,
            events=[e for e in history.events if e.kind != "determination"],
            determinations=[e for e in history.events if e.kind == "determination"],
            places=places,
            upstream_svg=lineage_svg(upstream, countries),
            downstream_svg=lineage_svg(downstream, countries, hidden),
            upstream=upstream,
            downstream=downstream,
            hidden=sum(hidden.values()),
        )

    @get("/ui/batches/{batch_id:str}/eligibility", name="explorer-eligibility")
    async def eligibility(
        self, request: Request[Any, Any, Any], services: NamedDependency[Services], batch_id: IdPath
    ) -> Template:
        session = await session_of(request)
        caller = session[0]
        profile = request.query_params.get("profile") or None
        at = request.query_params.get("at") or None
        if at is not None:
            parse_day(at)
        summary = await services.eligibility.summary(batch_id, profile, at, caller)
        full = await services.eligibility.determine(batch_id, profile, at, caller)
        profiles = await services.eligibility.profile_list()
        groups = [
            (f"{t.rule} · {t.kind} · {t.country} · {t.mineral}", float(share / full.mass_g))
            for t in summary.source_totals
            if full.mass_g and (share := _fraction(t.traced_mass_g)) is not None
        ]
        threshold = _fraction(summary.threshold.share) if summary.threshold else None
        share = _fraction(summary.qualifying_share_fraction)
        return _page(
            "eligibility.html",
            session,
            batch_id=batch_id,
            summary=summary,
            full=full,
            headline=headline(summary),
            profiles=profiles.items,
            chosen_profile=summary.profile.get("id"),
            at=summary.at,
            share_svg=share_bar(float(share), None if threshold is None else float(threshold))
            if share is not None
            else "",
            stack_svg=stacked_bar(groups),
            threshold_percent=f"{float(threshold) * 100:.2f}" if threshold is not None else None,
        )

    @post("/ui/batches/{batch_id:str}/determinations", name="explorer-record", status_code=303)
    async def record(
        self, request: Request[Any, Any, Any], services: NamedDependency[Services], batch_id: IdPath
    ) -> Response[Any]:
        caller, csrf = await session_of(request)
        form = await _form(request)
        _check_csrf(request, form.get(CSRF_FIELD), csrf)
        at = form.get("at") or None
        if at is not None:
            parse_day(at)
        result = await services.eligibility.record(
            batch_id, form.get("profile") or None, at, caller.participant, caller
        )
        assert result.event_id is not None
        return Redirect(path=f"/ui/events/{quote(result.event_id, safe=':')}?recorded=1", status_code=303)

    @get("/ui/batches/{batch_id:str}/bundle", name="explorer-bundle")
    async def bundle(
        self, request: Request[Any, Any, Any], services: NamedDependency[Services], batch_id: IdPath
    ) -> Response[bytes]:
        caller, _ = await session_of(request)
        document = await services.eligibility.bundle(
            batch_id,
            request.query_params.get("profile") or None,
            request.query_params.get("at") or None,
            caller,
        )
        name = f"bundle-{batch_id}-{document['at']}.json"
        return Response(
            json.dumps(document, indent=2).encode(),
            media_type=MediaType.JSON,
            headers={"content-disposition": f'attachment; filename="{name}"'},
        )

    @get("/ui/events/{event_id:str}", name="explorer-event")
    async def event(
        self, request: Request[Any, Any, Any], services: NamedDependency[Services], event_id: EventIdPath
    ) -> Template:
        session = await session_of(request)
        view = await services.registry.event(event_id, session[0])
        signer = None
        ledger_signed = view.actor == ev.LEDGER_ACTOR
        if not ledger_signed:
            try:
                participant = await services.registry.participant(view.actor)
                signer = next((k for k in participant.keys if k.key_id == view.key_id), None)
            except NotFound:
                signer = None
        return _page(
            "event.html",
            session,
            event=view,
            signer=signer,
            recorded=request.query_params.get("recorded") == "1",
            ledger_signed=ledger_signed,
            payload_json=json.dumps(view.payload, indent=2, ensure_ascii=False),
            envelope=msgspec.to_builtins(view.envelope) if view.envelope else None,
            envelope_json=json.dumps(msgspec.to_builtins(view.envelope), indent=2) if view.envelope else "",
            vkey=services.log.signer.vkey if services.log.signer else "",
        )

    @get("/ui/log", name="explorer-log")
    async def log(self, request: Request[Any, Any, Any], services: NamedDependency[Services]) -> Template:
        session = await session_of(request)
        latest = await services.log.latest_checkpoint()
        # the checkpoints of the last 1,000 entries (at most one per size, so one page holds them all), newest
        # first; where checkpoints are sparse (bulk imports), the log's first ones too
        recent = (await services.log.checkpoints(after=max(latest.size - 1000, -1), limit=1000)).items
        first = (await services.log.checkpoints(limit=50)).items if len(recent) < 50 else []
        by_size = {c.size: c for c in [*first, *recent]}
        items = [by_size[size] for size in sorted(by_size, reverse=True)][:60]
        return _page(
            "log.html",
            session,
            latest=latest,
            checkpoints=items,
            vkey=services.log.signer.vkey if services.log.signer else "",
        )

    @get("/ui/participants/{participant_id:str}", name="explorer-participant")
    async def participant(
        self, request: Request[Any, Any, Any], services: NamedDependency[Services], participant_id: IdPath
    ) -> Template:
        session = await session_of(request)
        participant = await services.registry.participant(participant_id)
        stakes = await services.registry.participant_stakes(participant_id)
        today = datetime.now(UTC).date()
        attestations: dict[str, Any] = {}
        for facility in participant.facilities:
            for attestation in (await services.registry.facility_attestations(facility.id, today)).items:
                attestations.setdefault(attestation.id, attestation)
        return _page(
            "participant.html",
            session,
            participant=participant,
            stakes=stakes.items,
            attestations=sorted(attestations.values(), key=lambda a: (a.valid_from, a.id)),
            today=today.isoformat(),
        )

    @get("/ui/facilities/{facility_id:str}", name="explorer-facility")
    async def facility(
        self, request: Request[Any, Any, Any], services: NamedDependency[Services], facility_id: IdPath
    ) -> Template:
        session = await session_of(request)
        owner = await _facility_exists(services, facility_id)
        participant = await services.registry.participant(owner)
        facility = next(f for f in participant.facilities if f.id == facility_id)
        today = datetime.now(UTC).date()
        attestations = await services.registry.facility_attestations(facility_id, today)
        model = await services.registry.custody_model(facility_id, today)
        return _page(
            "facility.html",
            session,
            facility=facility,
            participant=participant,
            attestations=sorted(attestations.items, key=lambda a: (a.valid_from, a.id)),
            model=model,
            today=today.isoformat(),
        )

    @get("/ui/bundle-check", name="explorer-bundle-check")
    async def bundle_check(
        self, request: Request[Any, Any, Any], services: NamedDependency[Services]
    ) -> Template:
        session = await _optional_session(request)
        return _page(
            "bundle_check.html", session, vkey=services.log.signer.vkey if services.log.signer else ""
        )

    @get("/ui/record", name="explorer-record-forms")
    async def record_forms(
        self, request: Request[Any, Any, Any], services: NamedDependency[Services]
    ) -> Template:
        session = await session_of(request)
        batch_id = request.query_params.get("batch")
        batch = await services.custody.batch(batch_id, session[0]) if batch_id else None
        return _page("record.html", session, batch=batch)

    @get("/ui/{rest:path}", name="explorer-missing")
    async def missing(
        self, request: Request[Any, Any, Any], rest: Annotated[str, PathParameter(max_length=2000)]
    ) -> Template:
        """Any other explorer path: a 404 page, not the API's problem document."""
        raise NotFound(f"the explorer has no page at {request.url.path}")


class ExplorerSubmitController(Controller):
    """What the explorer's signing forms post to: one envelope signed in the browser, submitted for the session's
    participant exactly as ``POST /v1/events`` does for a bearer token (the cookie cannot authenticate the JSON
    API). The CSRF token travels in the ``X-CSRF-Token`` header; errors are problem+json."""

    path = "/ui/api"
    include_in_schema = False

    @post("/events", name="explorer-submit", status_code=201)
    async def submit(
        self, request: Request[Any, Any, Any], services: NamedDependency[Services]
    ) -> Response[SubmitResultView]:
        caller, csrf = await session_of(request)
        _check_csrf(request, request.headers.get(CSRF_HEADER), csrf)
        try:
            envelope = msgspec.json.decode(await request.body(), type=Envelope)
        except msgspec.DecodeError as exc:  # malformed JSON (an empty body too) or not an envelope
            raise InvalidInput(f"the envelope is invalid: {exc}") from None
        (result,) = await services.submitter.submit([envelope], caller.participant)
        if result.error is not None:
            raise result.error
        view = SubmitResultView(status=result.status, event_id=result.event_id, log_index=result.log_index)
        return Response(view, status_code=201 if result.status == "accepted" else 200)


async def _facility_exists(services: Services, facility_id: str) -> str:
    owner = await services.access.facility_owner(facility_id)
    if owner is None:
        raise NotFound(f"facility {facility_id!r} does not exist")
    return owner


async def _countries(services: Services, batches: list[Any]) -> dict[str, str]:
    """Each batch's country: that of the facility holding it (or of its custodian when in transit)."""
    participants: dict[str, Any] = {}
    countries: dict[str, str] = {}
    for batch in batches:
        if batch.custodian not in participants:
            try:
                participants[batch.custodian] = await services.registry.participant(batch.custodian)
            except NotFound:
                participants[batch.custodian] = None
        owner = participants[batch.custodian]
        if owner is None:
            continue
        facility = next((f for f in owner.facilities if f.id == batch.facility), None)
        countries[batch.id] = facility.country if facility else owner.country
    return countries


async def _facility_places(services: Services, payloads: list[dict[str, Any]]) -> dict[str, str]:
    """Facility id -> "name, country" for the facilities events name (where each event happened)."""
    places: dict[str, str] = {}
    for payload in payloads:
        for key in ("facility", "to_facility"):
            fid = payload.get(key)
            if isinstance(fid, str) and fid not in places:
                try:
                    owner = await _facility_exists(services, fid)
                    participant = await services.registry.participant(owner)
                except NotFound:
                    continue
                found = next((f for f in participant.facilities if f.id == fid), None)
                if found:
                    places[fid] = f"{found.name}, {found.country}"
    return places
