"""The Litestar application factory: ``api.app:create_app``."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from litestar import Litestar, Request
from litestar.config.cors import CORSConfig
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig

from api.auth import provide_caller, provide_services, services_of
from api.controllers.credentials import CredentialController, DidController
from api.controllers.custody import BatchController, ParticipantBatchesController
from api.controllers.eligibility import EligibilityController, FacilityController, ProfileController
from api.controllers.epcis import EpcisController
from api.controllers.health import HealthController
from api.controllers.log import LogController
from api.controllers.origin import AgreementController, CertificateController, OriginController
from api.controllers.registry import (
    BatchSubmission,
    CustodyModelController,
    EventController,
    ExchangeRateController,
    OwnerController,
    ParticipantController,
    TokenController,
)
from api.controllers.web import ExplorerController, ExplorerSubmitController
from api.docs import components, document_security_and_problems, render_plugins, static_router
from api.errors import EXCEPTION_HANDLERS
from api.observability import MetricsController, observed
from api.security import edge
from api.web import explorer_static, explorer_templates
from ledger.domain.dsse import Envelope
from ledger.errors import InvalidInput
from ledger.logs import litestar_logging_config
from ledger.services.container import Services
from ledger.settings import Settings
from ledger.tuning import tune_garbage_collector

MIN_LOG_SIZE = "x-min-log-size"


def _span_details(scope: Any) -> tuple[str, dict[str, Any]]:
    """A span's name and route attribute: the route template, never the raw path (which names batches). The span
    starts before routing, so it is renamed once the route is known (:func:`_name_span`)."""
    route = scope.get("path_template") or "(unmatched)"
    return f"{scope.get('method', 'HTTP')} {route}", {"http.route": route}


def _name_span(scope: Any) -> None:
    from opentelemetry import trace

    name, attributes = _span_details(scope)
    span = trace.get_current_span()
    span.update_name(name)
    span.set_attributes(attributes)


def tracing_plugins(tracer_provider: Any = None) -> list[Any]:
    """Litestar's OpenTelemetry plugin when tracing is asked for: a ``tracer_provider`` given, or the standard
    ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``..._TRACES_ENDPOINT``) set, which exports spans over OTLP/HTTP (the
    ``otel`` extra). Span names are route templates; the Authorization header is never recorded."""
    endpoint = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    if tracer_provider is None and not endpoint:
        return []
    try:
        from litestar.plugins.opentelemetry import OpenTelemetryConfig, OpenTelemetryPlugin
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as exc:
        raise InvalidInput(
            "OTEL_EXPORTER_OTLP_ENDPOINT is set but OpenTelemetry is not installed: "
            "pip install 'mineral-ledger[otel]', or unset it"
        ) from exc
    if tracer_provider is None:
        tracer_provider = TracerProvider(resource=Resource.create({"service.name": "mineral-ledger"}))
        tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    config = OpenTelemetryConfig(
        tracer_provider=tracer_provider,
        scope_span_details_extractor=_span_details,
        exclude_spans=["receive", "send"],
        http_capture_headers_sanitize_fields=["authorization", "cookie"],
    )
    return [OpenTelemetryPlugin(config)]


def create_app(
    settings: Settings | None = None, services: Services | None = None, tracer_provider: Any = None
) -> Litestar:
    """Build the app. ``services`` lets tests share an engine; otherwise one is made from ``settings``.
    ``tracer_provider`` (OpenTelemetry) traces every request; by default there is one only when an OTLP endpoint is
    configured (:func:`tracing_plugins`)."""
    settings = settings or (services.settings if services else Settings.from_env())

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        owned = services is None
        app.state.services = services or Services(settings)
        if owned:
            tune_garbage_collector()
            await app.state.services.submitter.verifier.start()
        stop = asyncio.Event()
        integrator = asyncio.create_task(
            app.state.services.log.run(stop) if not settings.read_only else stop.wait(), name="log-integrator"
        )
        cosigner = asyncio.create_task(
            app.state.services.cosigner.run(stop) if not settings.read_only else stop.wait(), name="cosigner"
        )
        try:
            yield
        finally:
            stop.set()
            app.state.services.log.notify()
            await integrator
            await cosigner
            if owned:
                app.state.services.submitter.verifier.close()
                await app.state.services.close()

    plugins = tracing_plugins(tracer_provider)

    async def before_request(request: Request[Any, Any, Any]) -> None:
        """Name the request's span by its route (once routed); read-your-writes on a replica:
        ``X-Min-Log-Size: N`` waits until reads see N log entries."""
        if plugins:
            _name_span(request.scope)
        wanted = request.headers.get(MIN_LOG_SIZE)
        if wanted is not None:
            if not wanted.strip().isdigit() or len(wanted.strip()) > 18:
                raise InvalidInput(f"{MIN_LOG_SIZE} must be a log size (a whole number), got {wanted[:40]!r}")
            await services_of(request).wait_for_log_size(int(wanted))

    app = Litestar(
        before_request=before_request,
        route_handlers=[
            HealthController,
            ParticipantController,
            ParticipantBatchesController,
            EventController,
            TokenController,
            BatchController,
            LogController,
            ProfileController,
            EligibilityController,
            FacilityController,
            OwnerController,
            ExchangeRateController,
            CustodyModelController,
            MetricsController,
            AgreementController,
            OriginController,
            CertificateController,
            ExplorerController,
            ExplorerSubmitController,
            explorer_static(),
            static_router(),
            EpcisController,
            DidController,
            CredentialController,
        ],
        template_config=explorer_templates(),
        dependencies={"services": Provide(provide_services), "caller": Provide(provide_caller)},
        exception_handlers=EXCEPTION_HANDLERS,  # type: ignore[arg-type]
        lifespan=[lifespan],
        plugins=plugins,
        logging_config=litestar_logging_config(),
        request_max_body_size=settings.max_body_bytes,
        cors_config=CORSConfig(allow_origins=list(settings.cors_origins)) if settings.cors_origins else None,
        openapi_config=OpenAPIConfig(
            title="Mineral provenance ledger",
            version="1",
            description="Signed, hash-chained custody events for critical-mineral batches.",
            path="/schema",
            render_plugins=render_plugins(),
            components=components(),
        ),
    )
    document_security_and_problems(app)
    # Outside routing, exception handling and CORS: every response gets the security headers (router-level 404
    # and 405 too), and every request body is read and checked strictly before anything else runs.
    # Outermost: a request id, a JSON log line and the HTTP metrics for every request, refused ones included.
    # the submissions' bodies, when written as compact JSON, pass the strict input check on a quick path
    typed_bodies = {("POST", "/v1/events"): Envelope, ("POST", "/v1/events/batch"): BatchSubmission}
    app.asgi_handler = observed(edge(app.asgi_handler, settings, typed_bodies))
    if services is not None:
        app.state.services = (
            services  # usable without running the lifespan (tests drive the ASGI app directly)
        )
    return app
