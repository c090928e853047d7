"""Traces and request ids: what ties a receipt back to the request and the trace that made it.

Every API request runs with its request id (the `Request-Id` header, `req_...`)
in `REQUEST_ID`; the executor copies it, and the current trace id, onto each
receipt it writes (fibric/controller/executor.py `receipt_fields`), so an
auditor can go from a receipt to the request's log line and its trace.

Spans are made with OpenTelemetry's API, which records nothing until a
tracer provider is installed. `configure` installs one, exporting over
OTLP/HTTP, only when the installation names an endpoint with the standard
variables (`OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`,
with `OTEL_SERVICE_NAME` and the exporter's other `OTEL_*` variables as the
SDK reads them). The SDK and its exporter are the `otel` extra
(`pip install 'fibric[otel]'`); without an endpoint neither is imported.
These are the installation's variables: nothing a tenant declares reaches them.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Mapping
from contextlib import AbstractContextManager
from typing import Any

from opentelemetry import trace

log = logging.getLogger(__name__)

REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("fibric_request_id", default=None)
ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")

tracer = trace.get_tracer("fibric")


def request_id() -> str | None:
    """The id of the API request this code runs for; None in a background service (recovery, a run)."""
    return REQUEST_ID.get()


def trace_id() -> str | None:
    """The current trace's id, 32 hex digits as every OpenTelemetry backend shows it; None when untraced."""
    context = trace.get_current_span().get_span_context()
    return trace.format_trace_id(context.trace_id) if context.is_valid else None


def span(name: str, *, client: bool = False, **attributes: Any) -> AbstractContextManager[trace.Span]:
    """A span named `name`, current inside the block, with `fibric.<name>` attributes; `client` for a call
    out of the process (a tool call)."""
    kind = trace.SpanKind.CLIENT if client else trace.SpanKind.INTERNAL
    return tracer.start_as_current_span(name, kind=kind, attributes={
        f"fibric.{key}": value for key, value in attributes.items() if value is not None})


def annotate(**attributes: Any) -> None:
    """Add `fibric.<name>` attributes to the current span (a no-op when nothing is traced)."""
    span = trace.get_current_span()
    if span.is_recording():
        for name, value in attributes.items():
            if value is not None:
                span.set_attribute(f"fibric.{name}", value)


def configure(environ: Mapping[str, str]) -> str | None:
    """Export spans over OTLP/HTTP when the environment names an endpoint; returns it (None: tracing off).

    Raises ValueError naming the variable when an endpoint is set but the
    `otel` extra is not installed: a server told to trace must not run untraced
    without saying so.
    """
    if environ.get(ENDPOINT_VARIABLES[0]):
        endpoint = environ[ENDPOINT_VARIABLES[0]]  # the traces URL itself
    elif environ.get(ENDPOINT_VARIABLES[1]):
        endpoint = environ[ENDPOINT_VARIABLES[1]].rstrip("/") + "/v1/traces"  # the collector's base URL
    else:
        return None
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as e:
        raise ValueError(f"{ENDPOINT_VARIABLES[1]} is set but OpenTelemetry's SDK is not installed: "
                         "pip install 'fibric[otel]'") from e
    resource = Resource.create({"service.name": environ.get("OTEL_SERVICE_NAME") or "fibric"})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    trace.set_tracer_provider(provider)
    return endpoint


def shutdown() -> None:
    """Flush and stop the installed provider, so the last spans reach the collector before exit."""
    provider = trace.get_tracer_provider()
    stop = getattr(provider, "shutdown", None)
    if callable(stop):
        stop()
