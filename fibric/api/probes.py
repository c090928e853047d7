"""The routes orchestrators and Prometheus call: /healthz, /readyz and /metrics (docs/operations.md#probes).

All three are outside /v1, need no key and are not in the OpenAPI document:

- `/healthz` is liveness: the process answers. Nothing else is checked, so a
  store outage never gets a healthy process restarted.
- `/readyz` is readiness: 200 `{"status": "ready", "checks": {...}}` when
  the state store answers a trivial query, the sealed ledger opens and its
  catalog answers, and the policy engine decides; otherwise 503
  `"not_ready"` with the failing checks named. The checks run at once, in
  the app's quick threads, and one that has not answered within
  READY_SECONDS is failing. The body says only "ok", "failed" or "timed
  out" (and the policy's fail-closed rule): why a check failed is logged,
  not told to whoever asks, since a driver's error can name hosts and users.
- `/metrics` is the system's registry in Prometheus' text format (fibric/metrics.py),
  absent when FIBRIC_METRICS is off.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from concurrent.futures import Executor

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from fibric import metrics as metrics_module
from fibric import store

log = logging.getLogger("fibric.api")

READY_SECONDS = 2.0
Check = Callable[[], str | None]  # blocking; None when fine, else what failed; raising fails it too


def install(app: FastAPI, checks: Mapping[str, Check], metrics: metrics_module.Metrics) -> None:
    """Add the three routes: `checks` are /readyz's, by name."""

    async def readyz(request: Request) -> JSONResponse:
        """Readiness: every check passes (200), or the failing ones are named (503)."""
        results = await run_checks(checks, request.app.state.quick_threads)
        failing = sorted(name for name, result in results.items() if result != "ok")
        body: dict[str, object] = {"status": "not_ready" if failing else "ready", "checks": results}
        if failing:
            body["failing"] = failing
        return JSONResponse(body, status_code=503 if failing else 200)

    async def scrape(request: Request) -> Response:
        """The metrics, in Prometheus' text format."""
        loop = asyncio.get_running_loop()  # counting what is stored reads the store: off the loop
        body = await loop.run_in_executor(request.app.state.quick_threads, metrics.exposition)
        return Response(body, media_type=metrics_module.CONTENT_TYPE)

    app.add_api_route("/healthz", healthz, methods=["GET"], include_in_schema=False)
    app.add_api_route("/readyz", readyz, methods=["GET"], include_in_schema=False)
    if metrics.enabled:
        app.add_api_route("/metrics", scrape, methods=["GET"], include_in_schema=False)


async def healthz() -> dict[str, str]:
    """Liveness for load balancers and scripts: the process answers."""
    return {"status": "ok"}


async def run_checks(checks: Mapping[str, Check], threads: Executor | None) -> dict[str, str]:
    """Each check's result ("ok", "failed", "timed out", or what it reported), run concurrently."""
    loop = asyncio.get_running_loop()
    futures = {name: loop.run_in_executor(threads, _outcome, name, check) for name, check in checks.items()}
    if futures:
        await asyncio.wait(futures.values(), timeout=READY_SECONDS)  # a late one finishes unawaited
    results = {}
    for name, future in futures.items():
        if future.done():
            results[name] = future.result()
        else:
            log.warning("readiness check %s did not answer within %gs", name, READY_SECONDS)
            results[name] = "timed out"
    return results


def _outcome(name: str, check: Check) -> str:
    try:
        failure = check()
    except Exception as e:
        log.warning("readiness check %s failed: %s", name, e)
        return "failed"
    if failure is not None:
        log.warning("readiness check %s failed: %s", name, failure)
    return "ok" if failure is None else failure


def store_answers(state: store.StateStore) -> Check:
    """The store check: a trivial query in a read transaction."""

    def check() -> None:
        with state.backend.transaction(write=False) as cur:
            cur.execute("SELECT 1")
            cur.fetchone()

    return check
