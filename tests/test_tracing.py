"""Optional OpenTelemetry tracing: with a tracer provider (in production, the OTLP exporter that
OTEL_EXPORTER_OTLP_ENDPOINT turns on) every request is a span named by its route, and no credential is recorded."""

from __future__ import annotations

import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from api.app import create_app, tracing_plugins
from tests.support import World


async def test_requests_become_spans_without_credentials(world: World) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    app = create_app(services=world.services, tracer_provider=provider)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver"
    ) as client:
        response = await client.get("/v1/participants/registrar", headers=world.registrar.headers)
        assert response.status_code == 200
    spans = exporter.get_finished_spans()
    (span,) = [s for s in spans if s.attributes and s.attributes.get("http.status_code") == 200]
    assert "/v1/participants/{participant_id}" in span.name
    recorded = " ".join(f"{k}={v}" for s in spans for k, v in (s.attributes or {}).items())
    assert world.registrar.token not in recorded


def test_no_endpoint_no_tracing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    assert tracing_plugins() == []
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")
    (plugin,) = tracing_plugins()
    assert type(plugin).__name__ == "OpenTelemetryPlugin"
