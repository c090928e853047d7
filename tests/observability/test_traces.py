"""Traces from event to receipt: a real `fibric serve` exporting OTLP/HTTP to a collector on loopback.

Three traces, linked (fibric/tracing.py): the event's ingest, the run it
started, the approval that executed the run's plan.

The collector is a plain HTTP server that decodes what the exporter sends
with OpenTelemetry's own protobuf messages (the OTLP wire protocol), so
the spans checked are the spans a real collector would receive. Callers pass
W3C `traceparent` headers, as an instrumented GitOps job or gateway would;
the approval's trace and request id end up on each receipt it wrote.
"""

from __future__ import annotations

import re
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import orders_system
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from served_process import RUNNING, Served

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "executor"))

from executor_support import EXAMPLE_EVENT, running, write_specs

from fibric import store
from fibric.store import chain_audit

KEY = re.compile(r"FIBRIC_KEY=(sk_live_[0-9a-f]+)")
EVENT_TRACE, APPROVAL_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736", "0af7651916cd43dd8448eb211c80319c"
CALLER_SPAN = "00f067aa0ba902b7"


@dataclass(frozen=True)
class Span:
    name: str
    trace_id: str
    span_id: str
    parent_id: str
    attributes: dict[str, Any]
    links: list[tuple[str, str]]  # (trace id, span id) of each linked span


class Collector:
    """An OTLP/HTTP trace receiver on loopback: POST /v1/traces, protobuf in, spans kept in order."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        self.service_names: set[str] = set()
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                collector.receive(self.path, self.headers.get("Content-Type", ""), body)
                answer = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._lock = threading.Lock()

    def receive(self, path: str, content_type: str, body: bytes) -> None:
        assert path == "/v1/traces" and content_type == "application/x-protobuf", (path, content_type)
        request = trace_service_pb2.ExportTraceServiceRequest.FromString(body)
        with self._lock:
            for resource_spans in request.resource_spans:
                for attribute in resource_spans.resource.attributes:
                    if attribute.key == "service.name":
                        self.service_names.add(attribute.value.string_value)
                for scope_spans in resource_spans.scope_spans:
                    for s in scope_spans.spans:
                        self.spans.append(Span(
                            s.name, s.trace_id.hex(), s.span_id.hex(), s.parent_span_id.hex(),
                            {a.key: _value(a.value) for a in s.attributes},
                            [(link.trace_id.hex(), link.span_id.hex()) for link in s.links]))

    def named(self, name: str, trace_id: str | None = None) -> list[Span]:
        with self._lock:
            return [s for s in self.spans if s.name == name and trace_id in (None, s.trace_id)]

    def wait_for(self, name: str, count: int = 1, trace_id: str | None = None) -> list[Span]:
        deadline = time.monotonic() + 30
        while len(found := self.named(name, trace_id)) < count:
            assert time.monotonic() < deadline, f"{count} {name} span(s) never arrived: {self.spans}"
            time.sleep(0.05)
        return found


def _value(value: Any) -> Any:
    return getattr(value, value.WhichOneof("value")) if value.WhichOneof("value") else None


@pytest.fixture
def collector() -> Iterator[Collector]:
    collector = Collector()
    collector._thread.start()
    try:
        yield collector
    finally:
        collector.server.shutdown()
        collector.server.server_close()


def traceparent(trace_id: str) -> str:
    return f"00-{trace_id}-{CALLER_SPAN}-01"


def test_the_loop_is_traced_and_each_receipt_names_its_request_and_trace(
    tmp_path: Path, collector: Collector
) -> None:
    orders_db = tmp_path / "orders.db"
    write_specs(tmp_path / "repo")
    orders_system.write_orders_catalog(tmp_path / "catalog.yaml", orders_db)
    served = Served(["--data-dir", str(tmp_path / "data"), "--specs", str(tmp_path / "repo" / "specs"),
                     "--connector-catalog", str(tmp_path / "catalog.yaml")], cwd=tmp_path,
                    env={"OTEL_EXPORTER_OTLP_ENDPOINT": collector.url, "OTEL_SERVICE_NAME": "fibric-test",
                         "OTEL_BSP_SCHEDULE_DELAY": "50"})
    try:
        started = served.wait_for(RUNNING)
        assert started is not None, served.text
        assert f"traces=otlp:{collector.url}/v1/traces" in served.text  # the banner says where spans go
        bootstrap = served.wait_for(KEY)
        assert bootstrap is not None, served.text
        headers = {"Authorization": f"Bearer {bootstrap.group(1)}"}
        with httpx.Client(base_url=started.group(1), headers=headers, timeout=60) as c:
            deadline = time.monotonic() + 60
            while c.get("/v1/connectors/cn_magento").json().get("status") != "connected":
                assert time.monotonic() < deadline, "the order system never connected"
                time.sleep(0.05)

            ingested = c.post("/v1/events", json=EXAMPLE_EVENT,
                              headers={"traceparent": traceparent(EVENT_TRACE)})
            assert ingested.status_code == 202, ingested.text
            [run_span] = collector.wait_for("fibric.run")
            deadline = time.monotonic() + 60
            while not (proposed := c.get("/v1/plans", params={"status": "proposed"}).json()["data"]):
                assert time.monotonic() < deadline, "the run never proposed a plan"
                time.sleep(0.1)
            [plan] = proposed
            approved = c.post(f"/v1/plans/{plan['id']}/approve", json={"approver": "ops@acme.com"},
                              headers={"traceparent": traceparent(APPROVAL_TRACE)})
            assert approved.status_code == 200, approved.text
            receipts = [c.get(f"/v1/receipts/{r['receipt_id']}").json() for r in approved.json()["results"]]
        assert served.finish() == 0, served.text
    finally:
        served.kill()

    # The event's request continues the caller's trace, and says which event it stored.
    [ingest] = collector.named("POST /v1/events", EVENT_TRACE)
    assert ingest.parent_id == CALLER_SPAN
    assert ingest.attributes["fibric.event_id"] == ingested.json()["id"]
    assert ingest.attributes["http.response.status_code"] == 202
    # The run, later and in a trace of its own, links to the ingest of its event...
    assert run_span.attributes["fibric.operator"] == "ship-risk"
    assert run_span.attributes["fibric.plan_id"] == plan["id"]
    assert run_span.trace_id != EVENT_TRACE and run_span.links == [(EVENT_TRACE, ingest.span_id)]

    # The approval's trace holds the whole disposal: request > execution > each action > its tool call.
    # So from a receipt's trace_id, the links lead back to the run that proposed it and its events.
    [request] = collector.named("POST /v1/plans/{plan_id}/approve", APPROVAL_TRACE)
    [execute] = collector.named("fibric.execute", APPROVAL_TRACE)
    disposals = collector.named("fibric.dispose", APPROVAL_TRACE)
    calls = collector.named("fibric.tool_call", APPROVAL_TRACE)
    assert request.parent_id == CALLER_SPAN and execute.parent_id == request.span_id
    assert execute.attributes["fibric.plan_id"] == plan["id"]
    assert execute.links == [(run_span.trace_id, run_span.span_id)]  # ...and the execution to the run
    assert {d.parent_id for d in disposals} == {execute.span_id}
    assert sorted(d.attributes["fibric.capability"] for d in disposals) == ["orders.hold", "orders.notify"]
    assert {d.attributes["fibric.receipt_id"] for d in disposals} == {r["id"] for r in receipts}
    assert {c.parent_id for c in calls} == {d.span_id for d in disposals}
    assert collector.service_names == {"fibric-test"}

    # Each receipt names the request (as in the access log and the Request-Id header) and the trace.
    for receipt in receipts:
        assert receipt["request_id"] == approved.headers["Request-Id"]
        assert receipt["trace_id"] == APPROVAL_TRACE


def test_untraced_receipts_still_name_their_request_and_the_chain_verifies(
    state: store.StateStore, tenant: store.Tenant, tmp_path: Path
) -> None:
    with running(state, tenant, tmp_path) as fibric:
        plan = fibric.propose()
        with fibric.client() as c:
            approved = c.post(f"/v1/plans/{plan.id}/approve", json={"approver": "ops@acme.com"})
            assert approved.status_code == 200, approved.text
            receipts = [c.get(f"/v1/receipts/{r['receipt_id']}").json() for r in approved.json()["results"]]
    assert [r["request_id"] for r in receipts] == [approved.headers["Request-Id"]] * 2
    assert [r["trace_id"] for r in receipts] == [None, None]
    chain = chain_audit.verify_tenant(fibric.ledger, tenant.id)  # request_id is in each receipt's hash
    assert (chain.receipts, chain.broken) == (2, None)
