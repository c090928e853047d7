"""Apply 1,000 specs through the API, then re-apply them unchanged; report peak RSS.

Numbers are ratios against a bare FastAPI endpoint that writes the same
documents to SQLite (bare_apply_server.py), measured in the same run, because
these machines are shared and noisy. Run: python bench/bench_apply.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).parent))
import _servers

HERE = Path(__file__).parent
# The connectors name a catalog entry whose server exits at once: applying is measured, not running.
CATALOG = "connectors:\n  orders:\n    stdio: {command: 'true'}\n"


def documents(count: int = 1000) -> list[dict[str, Any]]:
    """A realistic mix: policies, connectors, webhooks, and operators bound to them."""
    docs: list[dict[str, Any]] = []
    groups = count // 10
    for g in range(groups):
        docs.append(_doc("Policy", f"guard-{g}", {
            "rego": f"package fibric.g{g}\n\ndefault decision := {{\"decision\": \"BLOCK\", "
                    f"\"rule\": \"default-deny\"}}\n",
            "query": f"data.fibric.g{g}.decision",
        }))
        docs.append(_doc("Connector", f"orders-{g}", {
            "display_name": f"Orders {g}", "kind": "saas",
            "transport": {"catalog": "orders"},
            "capabilities": {f"orders{g}.read": "orders.read", f"orders{g}.hold": "orders.hold"},
        }))
        docs.append(_doc("Webhook", f"hook-{g}", {
            "url": f"https://hooks.example/{g}", "events": ["plan.proposed", "receipt.created"],
            "secret_ref": "hook-secret",
        }))
        for o in range(7):
            docs.append(_doc("Operator", f"op-{g}-{o}", {
                "capabilities": [f"orders{g}.hold"], "policy": f"guard-{g}",
                "subscribes": ["order.updated"], "sense": [f"orders{g}.read"],
                "schedule": "*/15 * * * *",
            }, labels={"team": f"team-{o}"}))
    return docs


def _doc(kind: str, name: str, spec: dict[str, Any], labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {"apiVersion": "fibric.io/v1", "kind": kind,
            "metadata": {"name": name, "labels": labels or {}}, "spec": spec}


def timed_post(client: httpx.Client, url: str, body: dict[str, Any]) -> tuple[float, dict[str, Any]]:
    start = time.perf_counter()
    response = client.post(url, json=body)
    elapsed = time.perf_counter() - start
    response.raise_for_status()
    return elapsed, response.json()


def run_once(docs: list[dict[str, Any]]) -> dict[str, float]:
    body = {"documents": docs, "apply_set": "bench"}
    with tempfile.TemporaryDirectory() as tmp:
        with _servers.python_server(HERE / "bare_apply_server.py", str(Path(tmp) / "bare")) as (_, url), \
                httpx.Client(timeout=120) as client:
            bare, _ = timed_post(client, url + "/v1/apply", body)
            bare_again, _ = timed_post(client, url + "/v1/apply", body)
        catalog = Path(tmp) / "catalog.yaml"
        catalog.write_text(CATALOG, encoding="utf-8")
        with _servers.fibric_serve(Path(tmp) / "fibric", "--connector-catalog", str(catalog)) as (
                proc, url, key), \
                httpx.Client(timeout=120, headers={"Authorization": f"Bearer {key}"}) as client:
            first, result = timed_post(client, url + "/v1/apply", body)
            created = sum(c["action"] == "created" for c in result["changes"])
            again, result = timed_post(client, url + "/v1/apply", body)
            unchanged = sum(c["action"] == "unchanged" for c in result["changes"])
            rss = _servers.peak_rss_mib(proc.pid)
    if created != len(docs) or unchanged != len(docs):
        raise SystemExit(f"apply was wrong: created={created} unchanged={unchanged}")
    return {"bare": bare, "bare_again": bare_again, "apply": first, "reapply": again, "rss": rss}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--count", type=int, default=1000)
    args = parser.parse_args()
    docs = documents(args.count)
    runs = [run_once(docs) for _ in range(args.repeat)]

    def med(key: str) -> float:
        return statistics.median(r[key] for r in runs)

    print(f"apply of {len(docs)} specs through POST /v1/apply, median of {args.repeat} runs")
    print(f"  bare FastAPI+SQLite insert (baseline): {med('bare') * 1000:8.1f} ms")
    print(f"  fibric apply (all created):            {med('apply') * 1000:8.1f} ms"
          f"   ratio to baseline {med('apply') / med('bare'):.2f}x")
    print(f"  fibric re-apply (all unchanged):       {med('reapply') * 1000:8.1f} ms"
          f"   ratio to baseline {med('reapply') / med('bare_again'):.2f}x"
          f"   ratio to first apply {med('reapply') / med('apply'):.2f}")
    print(f"  peak RSS of fibric serve holding them: {med('rss'):8.1f} MiB")


if __name__ == "__main__":
    main()
