"""Every benchmark still runs: each at a tiny size, end to end, as its docstring's command line.

The numbers are not checked (they are measured in bench/, against same-run
baselines, not asserted); that the script runs to the end and prints its
report is. A benchmark that no longer runs is a failing test.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
NEEDS_SERVICES = {"bench_replicas.py"}  # PostgreSQL and Redis

SMALL: dict[str, list[str]] = {
    "bench_api.py": ["--requests", "60", "--repeat", "1"],
    "bench_apply.py": ["--count", "20", "--repeat", "1"],
    "bench_approver_page.py": ["--plans", "30", "--requests", "20", "--warmup", "2"],
    "bench_bulkheads.py": ["--plans", "4", "--events", "10", "--cases", "quiet,a"],
    "bench_cli_start.py": ["--runs", "2", "--warmup", "0", "--operators", "2"],
    "bench_connectors.py": ["--calls", "20", "--repeat", "1"],
    "bench_executor.py": ["--plans", "4", "--sizes", "0,200"],
    "bench_ledger.py": ["--appends", "50", "--seal", "200", "--rows", "2000"],
    "bench_model_calls.py": ["--runs", "5", "--repeat", "1"],
    "bench_observability.py": ["--requests", "50", "--rounds", "1"],
    "bench_policies.py": ["--decisions", "50", "--opa-decisions", "20"],
    "bench_proposers.py": ["--events", "200", "--repeat", "1"],
    "bench_replay.py": ["--decisions", "300", "--threads", "2"],
    "bench_replicas.py": ["--events", "4", "--kills", "1", "--lease", "2", "--replicas", "1,2"],
    "bench_runs.py": ["--events", "20", "--repeat", "1"],
    "bench_trust.py": ["--count", "20", "--calls", "20", "--repeat", "1"],
    "bench_webhooks.py": ["--events", "20"],
}


def test_every_benchmark_has_a_small_run() -> None:
    assert set(SMALL) == {p.name for p in BENCH.glob("bench_*.py")}


@pytest.mark.parametrize("script", sorted(SMALL))
def test_the_benchmark_runs_to_its_report(script: str, tmp_path: Path) -> None:
    if script in NEEDS_SERVICES and not (os.environ.get("FIBRIC_TEST_POSTGRES_URL")
                                         and os.environ.get("FIBRIC_TEST_REDIS_URL")):
        pytest.skip("needs FIBRIC_TEST_POSTGRES_URL and FIBRIC_TEST_REDIS_URL")
    done = subprocess.run([sys.executable, str(BENCH / script), *SMALL[script]], cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    assert done.stdout.strip(), done.stderr[-2000:]
