"""What the trust boundary costs: an apply of 1,000 specs and connector calls, with and without its guards.

Both sides run in the same process and the same run, because these machines
are shared and noisy; the numbers are ratios.

- Apply: the same 1,000 documents (connectors naming a catalog entry or an
  https URL, webhooks signing with a tenant secret, policies, operators) are
  applied into a fresh tenant by the installation (no guards: `admit` checks
  only catalog names) and by a tenant (every guard: stdio/env refusals, the
  egress check of every URL), then re-applied unchanged.
- Calls: `orders.read` on the example order system over streamable HTTP on
  loopback, through a tenant's grant (the guarded network backend checks the
  address of every connection against the egress allowlist) and through the
  same runtime with the guard swapped for a plain httpx2 client.

Run: python bench/bench_trust.py [--count 1000] [--calls 2000] [--concurrency 8] [--repeat 6]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx2

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from orders_system import HttpOrders  # noqa: E402

from fibric import connectors, specs, store, trust  # noqa: E402
from fibric.connectors import transports  # noqa: E402
from fibric.controller import applier  # noqa: E402
from fibric.store import secretbox  # noqa: E402

CATALOG = "connectors:\n  orders:\n    stdio: {command: 'true'}\n"
CAPABILITIES = {"orders.read": "orders.read"}


def documents(count: int) -> list[specs.Loaded]:
    """Tenant-shaped specs: a tenth policies, a tenth catalog connectors, a tenth https connectors..."""
    docs: list[dict[str, Any]] = []
    for g in range(count // 10):
        docs.append(_doc("Policy", f"guard-{g}", {
            "rego": f"package fibric.g{g}\n\ndefault decision := {{\"decision\": \"BLOCK\"}}\n",
            "query": f"data.fibric.g{g}.decision"}))
        docs.append(_doc("Connector", f"orders-{g}", {
            "transport": {"catalog": "orders"}, "capabilities": {f"orders{g}.read": "orders.read"}}))
        docs.append(_doc("Connector", f"remote-{g}", {
            "transport": {"http": {"url": f"https://93.184.215.{g % 250 + 1}/mcp",
                                   "bearer_token_ref": "remote-token"}},
            "capabilities": {f"remote{g}.read": "orders.read"}}))
        docs.append(_doc("Webhook", f"hook-{g}", {
            "url": f"https://93.184.216.{g % 250 + 1}/hooks", "events": ["plan.proposed"],
            "secret_ref": "hook-secret"}))
        for o in range(6):
            docs.append(_doc("Operator", f"op-{g}-{o}", {
                "capabilities": [f"orders{g}.read"], "policy": f"guard-{g}",
                "subscribes": ["order.updated"]}))
    return [specs.Loaded(specs.validate_data(d), specs.Source(file=f"documents[{n}]"))
            for n, d in enumerate(docs)]


def _doc(kind: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "fibric.io/v1", "kind": kind, "metadata": {"name": name}, "spec": spec}


def time_apply(state: store.StateStore, loaded: list[specs.Loaded], origin: trust.Origin,
               options: applier.Options, n: int) -> tuple[float, float]:
    """Seconds to create every document in a fresh tenant, then to re-apply them unchanged."""
    tenant = state.create_tenant(f"bench-{origin}-{n}", "rs_bench")
    started = time.perf_counter()
    result = applier.apply(state, tenant.id, loaded, origin=origin, options=options)
    created = time.perf_counter() - started
    assert all(c.action == "created" for c in result.changes)
    started = time.perf_counter()
    result = applier.apply(state, tenant.id, loaded, origin=origin, options=options)
    unchanged = time.perf_counter() - started
    assert all(c.action == "unchanged" for c in result.changes)
    return created, unchanged


@contextmanager
def unguarded() -> Iterator[None]:
    """The connector transport as it was before the guard: a plain httpx2 client."""
    original = transports.guarded_client

    def plain(egress: trust.Egress, resolver: trust.Resolver, **options: Any) -> httpx2.AsyncClient:
        return httpx2.AsyncClient(trust_env=False, **options)

    transports.guarded_client = plain  # type: ignore[assignment]
    try:
        yield
    finally:
        transports.guarded_client = original  # type: ignore[assignment]


async def calls_per_second(url: str, grant: trust.Grant | None, calls: int, concurrency: int) -> float:
    spec = specs.models.ConnectorSpec.model_validate(
        {"transport": {"http": {"url": url}}, "capabilities": CAPABILITIES})
    async with connectors.ConnectorRuntime(connectors.MemoryPinStore()) as runtime:
        await runtime.ensure("t_bench", "orders", spec, grant=grant)
        await runtime.wait_for("t_bench", "orders", lambda s: s.connection == "connected", 30)
        for _ in range(50):  # warm the connections
            await runtime.call("t_bench", "orders.read", {"order_id": "SO-10884"}, None)
        left = calls

        async def worker() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                await runtime.call("t_bench", "orders.read", {"order_id": "SO-10884"}, None)

        started = time.perf_counter()
        async with anyio.create_task_group() as tg:
            for _ in range(concurrency):
                tg.start_soon(worker)
        return calls / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=6)
    args = parser.parse_args()
    loaded = documents(args.count)
    boundary = trust.Boundary(catalog=trust.Catalog.parse(CATALOG, "catalog.yaml"),
                              egress=trust.Egress.parse(["127.0.0.1"]))
    rows: dict[str, list[float]] = {k: [] for k in ("bare-apply", "guarded-apply", "bare-reapply",
                                                    "guarded-reapply", "bare-calls", "guarded-calls")}
    with tempfile.TemporaryDirectory() as tmp:
        state = store.open_store(Path(tmp) / "data")
        options = applier.Options(boundary, secretbox.SecretBox(key=secretbox.new_key()))
        orders = HttpOrders(Path(tmp) / "orders.db")
        orders.start()
        spec = specs.models.ConnectorSpec.model_validate(
            {"transport": {"http": {"url": orders.url}}, "capabilities": CAPABILITIES})
        grant = boundary.grant(spec, trust.Origin.TENANT)
        try:
            for n in range(args.repeat):  # interleaved, first one then the other, so drift hits both alike
                sides = [("bare", trust.Origin.INSTALLATION), ("guarded", trust.Origin.TENANT)]
                for side, origin in sides if n % 2 == 0 else reversed(sides):
                    created, again = time_apply(state, loaded, origin, options, n)
                    rows[f"{side}-apply"].append(created)
                    rows[f"{side}-reapply"].append(again)
                with unguarded():
                    rows["bare-calls"].append(anyio.run(
                        calls_per_second, orders.url, trust.Grant.trusted(spec.transport), args.calls,
                        args.concurrency))
                rows["guarded-calls"].append(anyio.run(
                    calls_per_second, orders.url, grant, args.calls, args.concurrency))
        finally:
            orders.stop()
            state.close()

    med = {k: statistics.median(v) for k, v in rows.items()}
    print(f"trust boundary cost, median of {args.repeat} runs (ratio = without guards / with guards "
          "for time, with / without for rates; 1.00 is free)")
    print(f"  apply {len(loaded)} specs, created:   without {med['bare-apply'] * 1000:7.1f} ms   "
          f"with {med['guarded-apply'] * 1000:7.1f} ms   "
          f"ratio {med['bare-apply'] / med['guarded-apply']:.3f}")
    print(f"  apply {len(loaded)} specs, unchanged: without {med['bare-reapply'] * 1000:7.1f} ms   "
          f"with {med['guarded-reapply'] * 1000:7.1f} ms   "
          f"ratio {med['bare-reapply'] / med['guarded-reapply']:.3f}")
    print(f"  orders.read over HTTP, {args.concurrency} in flight: without {med['bare-calls']:7.0f}/s   "
          f"with {med['guarded-calls']:7.0f}/s   ratio {med['guarded-calls'] / med['bare-calls']:.3f}")


if __name__ == "__main__":
    main()
