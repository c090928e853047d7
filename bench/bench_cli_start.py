"""How long the `fibric` command takes to start, as ratios to `python -c pass` in the same run.

Each command runs --runs times as a fresh process (after --warmup runs), the
commands taking turns so a burst of load elsewhere lands on all of them;
each reports its median and p90 wall time, its median over the median of
`python -c pass` (these machines are shared and noisy), and its median CPU
time (user + system, which waiting for a busy CPU inflates less). The
commands:

- `fibric --version` and `fibric get operators --help`: start-up alone;
- `fibric get operators`: start-up plus one request to a real `fibric serve`
  (a fresh data dir holding --operators operators) and the table printed.

`fibric` is the console script beside this Python (`python -m fibric.cli`
where there is none). Run: python bench/bench_cli_start.py [--runs 15]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).parent))
import _servers

# The connector names a catalog entry whose server exits at once: listing is measured, not running.
CATALOG = "connectors:\n  orders:\n    stdio: {command: 'true'}\n"


def fibric_command() -> list[str]:
    script = Path(sys.executable).with_name("fibric")
    return [str(script)] if script.exists() else [sys.executable, "-m", "fibric.cli"]


def documents(operators: int) -> list[dict[str, Any]]:
    """One policy, one connector, and `operators` operators bound to them."""
    docs = [
        _doc("Policy", "guard", {
            "rego": "package fibric.guard\n\ndefault decision := {\"decision\": \"BLOCK\", "
                    "\"rule\": \"default-deny\"}\n",
            "query": "data.fibric.guard.decision",
        }),
        _doc("Connector", "orders", {
            "display_name": "Orders", "kind": "saas", "transport": {"catalog": "orders"},
            "capabilities": {"orders.read": "orders.read", "orders.hold": "orders.hold"},
        }),
    ]
    docs += [_doc("Operator", f"op-{n}", {"capabilities": ["orders.hold"], "policy": "guard",
                                          "subscribes": ["order.updated"]}) for n in range(operators)]
    return docs


def _doc(kind: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "fibric.io/v1", "kind": kind, "metadata": {"name": name}, "spec": spec}


def timed(argv: Sequence[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall and CPU seconds of one run (CPU of waited-for children: the server is still running)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr[-2000:]}")
    return elapsed, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def measure(commands: dict[str, list[str]], env: dict[str, str], runs: int, warmup: int
            ) -> dict[str, list[tuple[float, float]]]:
    """(wall, CPU) seconds of each command's runs, the commands taking turns."""
    times: dict[str, list[tuple[float, float]]] = {label: [] for label in commands}
    for n in range(warmup + runs):
        for label, argv in commands.items():
            measured = timed(argv, env)
            if n >= warmup:
                times[label].append(measured)
    return times


def p90(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=10, method="inclusive")[-1] if len(samples) > 1 else samples[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--operators", type=int, default=20)
    args = parser.parse_args()
    fibric = fibric_command()
    with tempfile.TemporaryDirectory() as tmp:
        catalog = Path(tmp) / "catalog.yaml"
        catalog.write_text(CATALOG, encoding="utf-8")
        with _servers.fibric_serve(Path(tmp) / "data", "--connector-catalog", str(catalog)) as (_, url, key):
            httpx.post(url + "/v1/apply", json={"documents": documents(args.operators), "apply_set": "bench"},
                       headers={"Authorization": f"Bearer {key}"}, timeout=120).raise_for_status()
            env = dict(os.environ, FIBRIC_URL=url, FIBRIC_KEY=key)
            commands = {
                "python -c pass": [sys.executable, "-c", "pass"],
                "fibric --version": [*fibric, "--version"],
                "fibric get operators --help": [*fibric, "get", "operators", "--help"],
                "fibric get operators": [*fibric, "get", "operators"],
            }
            times = measure(commands, env, args.runs, args.warmup)
    baseline = statistics.median(wall for wall, _ in times["python -c pass"])
    print(f"CLI start, a fresh process each run, {args.runs} runs each after {args.warmup} warm-up "
          f"({' '.join(fibric)}; `get operators` lists {args.operators} from a live server)")
    print(f"  {'command':<30} {'wall median':>11} {'wall p90':>10} {'/ python -c pass':>17}"
          f" {'CPU median':>11}")
    for label, samples in times.items():
        walls = [wall for wall, _ in samples]
        median = statistics.median(walls)
        cpu = statistics.median(cpu for _, cpu in samples)
        print(f"  {label:<30} {median * 1000:8.1f} ms {p90(walls) * 1000:7.1f} ms {median / baseline:16.2f}x"
              f" {cpu * 1000:8.1f} ms")


if __name__ == "__main__":
    main()
