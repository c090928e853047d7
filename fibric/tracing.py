"""Traces and request ids: what ties a receipt back to the request and the trace that made it.

Every API request runs with its request id (the `Request-Id` header, `req_...`)
in `REQUEST_ID`; the executor copies it, and the current trace id, onto each
receipt it writes (fibric/controller/executor.py `receipt_fields`), so an
auditor can go from a receipt to the request's log line and its trace.

Spans are made with OpenTelemetry's API, which records nothing until a
tracer provider is installed. A person's approval comes long after the event
that led to it, so the path from event to receipt is three traces, linked:
the event's ingest, the operator's run (linked to the ingest of each of its
events) and the approval's execution (linked to the run that proposed the
plan); events and plans keep the `traceparent` of the span that stored them.

`configure` installs a provider, exporting over OTLP/HTTP, only when the
installation names an endpoint with the standard variables
(`OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, with
`OTEL_SERVICE_NAME` and the exporter's other `OTEL_*` variables as the SDK
reads them). The SDK and its exporter are the `otel` extra
(`pip install 'fibric[otel]'`); without an endpoint neither is imported.
These are the installation's variables: nothing a tenant declares reaches them.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any

from opentelemetry import propagate, trace

log = logging.getLogger(__name__)

REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("fibric_request_id", default=None)
ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")

tracer = trace.get_tracer("fibric")
_exporting = False  # set by configure: only then is it worth a query to find what a span links to


def active() -> bool:
    """Whether spans are exported (configure found an endpoint)."""
    return _exporting


def traceparent() -> str | None:
    """The current span as a W3C `traceparent`, kept beside what it stored (an event, a plan) so later
    work in another trace can link back to it; None when untraced."""
    if not trace.get_current_span().get_span_context().is_valid:
        return None
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier.get("traceparent")


def links(traceparents: Iterable[str | None]) -> list[trace.Link]:
    """Links to the spans these `traceparent`s name (the unreadable and the absent are skipped)."""
    found = []
    for value in traceparents:
        if value:
            context = trace.get_current_span(propagate.extract({"traceparent": value})).get_span_context()
            if context.is_valid:
                found.append(trace.Link(context))
    return found


def request_id() -> str | None:
    """The id of the API request this code runs for; None in a background service (recovery, a run)."""
    return REQUEST_ID.get()


def trace_id() -> str | None:
    """The current trace's id, 32 hex digits as every OpenTelemetry backend shows it; None when untraced."""
    context = trace.get_current_span().get_span_context()
    return trace.format_trace_id(context.trace_id) if context.is_valid else None


def span(
    name: str, *, client: bool = False, linked: Sequence[trace.Link] = (), **attributes: Any,
) -> AbstractContextManager[trace.Span]:
    """A span named `name`, current inside the block, with `fibric.<name>` attributes; `client` for a call
    out of the process (a tool call); `linked` to the spans of earlier traces it continues."""
    kind = trace.SpanKind.CLIENT if client else trace.SpanKind.INTERNAL
    return tracer.start_as_current_span(name, kind=kind, links=list(linked), attributes={
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
    global _exporting
    _exporting = True
    return endpoint


def shutdown() -> None:
    """Flush and stop the installed provider, so the last spans reach the collector before exit."""
    provider = trace.get_tracer_provider()
    stop = getattr(provider, "shutdown", None)
    if callable(stop):
        stop()
