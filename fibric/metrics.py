"""The Prometheus metrics of one running Fibric, in a registry of its own (docs/operations.md#metrics).

Each part counts what it does where it does it, in a line: the API's access
middleware (requests), the events route (events ingested), the runner (runs
finished), the executor (decisions disposed of), the connector runtime
(tool-call latency), the sealer (sealing lag), the webhook dispatcher
(delivery attempts) and recovery (lease takeovers). They all receive the
same `Metrics` from `system.build`; a part built on its own gets a private
one, so counting never needs a check for "no metrics". Gauges of what is
stored (plans by status, the webhook backlog) are read at scrape time, by
the reader the app installs (`watch`): a few indexed COUNTs per scrape,
nothing on the hot path.

Nothing here is a module-level global: tests build many systems in one
process, and each has its own registry, so no count leaks between them.

Label values come from closed sets (route templates, methods, status
classes, decisions, outcomes, run statuses) or from names of stored
objects (connectors), so their number is bounded. Tenant ids are labels
only when the installation opts in (`FIBRIC_METRICS=tenants`): /metrics is
unauthenticated, as Prometheus expects, and by default says nothing about
which tenants exist or what each of them does.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import prometheus_client
from prometheus_client import core, registry

import fibric

log = logging.getLogger(__name__)

CONTENT_TYPE = prometheus_client.CONTENT_TYPE_LATEST
TENANT = "tenant_id"  # the label of the opt-in per-tenant mode
SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
LAG_SECONDS = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0)
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class Mode(enum.Enum):
    """`FIBRIC_METRICS`: whether /metrics is served, and whether its labels name tenants."""

    ON = "on"
    OFF = "off"  # no /metrics, no request accounting
    TENANTS = "tenants"  # on, and the per-tenant metrics carry a tenant_id label

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Mode:
        """The mode `FIBRIC_METRICS` names (default on); ValueError naming the variable otherwise."""
        value = environ.get("FIBRIC_METRICS", "").strip().lower() or cls.ON.value
        try:
            return cls(value)
        except ValueError:
            choices = ", ".join(m.value for m in cls)
            raise ValueError(f"FIBRIC_METRICS must be one of {choices}, not {value!r}") from None


@dataclass(frozen=True)
class Tallies:
    """What is stored, counted at scrape time; keys are tenant ids ("" unless per tenant)."""

    plans: Mapping[tuple[str, str], int] = field(default_factory=dict)  # (tenant, status) -> plans
    outbox: Mapping[str, int] = field(default_factory=dict)  # webhook events not yet fanned out
    deliveries: Mapping[str, int] = field(default_factory=dict)  # deliveries pending (due or retrying)


class Metrics:
    """Every metric of one system; the methods are the hooks the parts call."""

    def __init__(self, mode: Mode = Mode.ON) -> None:
        self.mode = mode
        self.registry = registry.CollectorRegistry()
        self._tenant = mode is Mode.TENANTS
        t: tuple[str, ...] = (TENANT,) if self._tenant else ()
        into = self.registry
        self.requests = prometheus_client.Histogram(
            "fibric_http_request_duration_seconds",
            "API requests by route template, method and status class, and how long each took.",
            (*t, "route", "method", "status"), registry=into)
        self.events = prometheus_client.Counter(
            "fibric_events_ingested", "Events POSTed, new or deduplicated.", (*t, "result"), registry=into)
        self.runs = prometheus_client.Counter(
            "fibric_runs_finished", "Operator runs finished, by trigger and status.",
            (*t, "trigger", "status"), registry=into)
        self.decisions = prometheus_client.Counter(
            "fibric_decisions",
            "Actions the executor disposed of, by decision and outcome (one receipt each).",
            (*t, "decision", "outcome"), registry=into)
        self.shadows = prometheus_client.Counter(
            "fibric_shadow_decisions",
            "Executor decisions whose Policy has a shadow candidate: the live decision and what the "
            "candidate would have decided (FAILED: it did not compile, errored or timed out).",
            (*t, "live", "shadow"), registry=into)
        self.tool_calls = prometheus_client.Histogram(
            "fibric_tool_call_duration_seconds",
            "MCP tool calls by connector and result (ok, tool_error, error: no answer), and their latency.",
            (*t, "connector", "result"), buckets=SECONDS, registry=into)
        self.sealing_lag = prometheus_client.Histogram(
            "fibric_sealing_lag_seconds", "Time from a receipt's commit to its seal in the auditors' ledger.",
            buckets=LAG_SECONDS, registry=into)
        self.caught_up = prometheus_client.Gauge(
            "fibric_sealer_caught_up_timestamp_seconds",
            "When this process's sealer last left no receipt unsealed (0: never; only the sealing replica).",
            registry=into)
        self.attempts = prometheus_client.Counter(
            "fibric_webhook_attempts", "Webhook delivery attempts, by result (delivered, retry, failed).",
            (*t, "result"), registry=into)
        self.takeovers = prometheus_client.Counter(
            "fibric_lease_takeovers",
            "Executions recovery took over from a holder that stopped (execution), or recorded after "
            "their approver died before starting them (approval).", ("kind",), registry=into)
        prometheus_client.Info("fibric_build", "This Fibric.", registry=into).info(
            {"version": fibric.__version__})
        self._request_series: dict[tuple[str, str, str, int], Any] = {}
        self._stored = _Stored(self._tenant)
        self.registry.register(self._stored)

    @property
    def enabled(self) -> bool:
        return self.mode is not Mode.OFF

    # --- the hooks ----------------------------------------------------------------------

    def request(self, tenant_id: str, route: str, method: str, status: int, seconds: float) -> None:
        verb = method if method in METHODS else "other"  # any token is a method: bound them
        key = (tenant_id if self._tenant else "", route, verb, status // 100)
        series = self._request_series.get(key)
        if series is None:  # labels() validates and locks: a few microseconds, once per series
            series = self._request_series[key] = self.requests.labels(
                *self._of(tenant_id), route, verb, f"{status // 100}xx")
        series.observe(seconds)

    def event_ingested(self, tenant_id: str, *, dedup: bool) -> None:
        self.events.labels(*self._of(tenant_id), "dedup" if dedup else "new").inc()

    def run_finished(self, tenant_id: str, trigger: str, status: str) -> None:
        self.runs.labels(*self._of(tenant_id), trigger, status).inc()

    def disposed(self, tenant_id: str, decision: str, outcome: str) -> None:
        self.decisions.labels(*self._of(tenant_id), decision, outcome).inc()

    def shadow_decided(self, tenant_id: str, live: str, shadow: str, *, failed: bool) -> None:
        """A shadow candidate evaluated beside a live decision (docs/policies.md#shadow-mode)."""
        self.shadows.labels(*self._of(tenant_id), live, "FAILED" if failed else shadow).inc()

    def tool_called(self, tenant_id: str, connector: str, result: str, seconds: float) -> None:
        self.tool_calls.labels(*self._of(tenant_id), connector, result).observe(seconds)

    def sealed(self, lags: Iterable[float], *, caught_up: bool) -> None:
        """A sealing pass: each receipt's lag, and whether it left none behind."""
        for lag in lags:
            self.sealing_lag.observe(lag)
        if caught_up:
            self.caught_up.set(time.time())

    def delivery_attempted(self, tenant_id: str, status: str) -> None:
        """One attempt; `status` is what it left its delivery (delivered, pending: a retry, failed)."""
        self.attempts.labels(*self._of(tenant_id), "retry" if status == "pending" else status).inc()

    def lease_taken_over(self, kind: str) -> None:
        self.takeovers.labels(kind).inc()

    # --- scrape time ---------------------------------------------------------------------

    def watch(self, read: Callable[[bool], Tallies]) -> None:
        """Count what is stored at each scrape with `read(per_tenant)` (blocking; replaces any reader)."""
        self._stored.read = read

    def exposition(self) -> bytes:
        """The registry in Prometheus' text format (blocking: runs the scrape-time reader)."""
        return prometheus_client.generate_latest(self.registry)

    def _of(self, tenant_id: str) -> tuple[str, ...]:
        return (tenant_id,) if self._tenant else ()


class _Stored(registry.Collector):
    """The gauges read from the store at scrape time; nothing when no reader is installed."""

    def __init__(self, per_tenant: bool) -> None:
        self.per_tenant = per_tenant
        self.read: Callable[[bool], Tallies] | None = None

    def describe(self) -> Iterator[core.Metric]:
        yield from self._families(Tallies())  # names only: registering must not query the store

    def collect(self) -> Iterator[core.Metric]:
        if self.read is None:
            return
        try:
            tallies = self.read(self.per_tenant)
        except Exception as e:  # a scrape must not fail: the stored gauges are absent this time
            log.warning("metrics: cannot count plans and the webhook backlog: %s", e)
            return
        yield from self._families(tallies)

    def _families(self, tallies: Tallies) -> Iterator[core.Metric]:
        t = [TENANT] if self.per_tenant else []
        plans = core.GaugeMetricFamily("fibric_plans", "Plans stored, by status.", labels=[*t, "status"])
        for (tenant_id, status), count in sorted(tallies.plans.items()):
            plans.add_metric([*self._of(tenant_id), status], count)
        backlog = core.GaugeMetricFamily(
            "fibric_webhook_backlog", "Webhook work waiting: outbox events not yet fanned out (outbox), "
            "deliveries due or awaiting a retry (delivery).", labels=[*t, "stage"])
        for stage, counts in (("outbox", tallies.outbox), ("delivery", tallies.deliveries)):
            for tenant_id, count in sorted(counts.items()):
                backlog.add_metric([*self._of(tenant_id), stage], count)
        yield plans
        yield backlog

    def _of(self, tenant_id: str) -> list[str]:
        return [tenant_id] if self.per_tenant else []
