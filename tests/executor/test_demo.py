"""`fibric demo`: one command from event to verified receipts, leaving the data dir to explore."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from executor_support import effect_keys


def demo(data_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FIBRIC_")}
    return subprocess.run([sys.executable, "-m", "fibric.cli", "demo", "--data-dir", str(data_dir),
                           "--timeout", "60"], capture_output=True, text=True, timeout=300, env=env,
                          cwd=data_dir.parent, check=False)


def test_the_demo_runs_the_loop_and_leaves_its_data_dir(tmp_path: Path) -> None:
    data_dir = tmp_path / "demo"

    done = demo(data_dir)

    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "ingested event ev_" in out and "dedup=false" in out
    assert "ALLOW  orders.hold" in out and "ALERT  orders.notify" in out  # the proposed plan
    assert "plan executed" in out
    assert out.count(" applied ") == 2 and "flagged for a person" in out
    assert "ok      tenant t_" in out and "2 receipts" in out  # fibric audit verify
    assert (data_dir / "data" / "ledger.ducklake").exists() and (data_dir / "serve.log").exists()
    assert "2 sealed, each as recorded" in out  # the auditors' copy matches the record
    keys = effect_keys(data_dir / "orders.db")  # one hold, one notification: one effect per action
    assert len(keys) == 2 and len(set(keys)) == 2

    again = demo(data_dir)  # the event is deduplicated: nothing runs twice, and it says why
    assert again.returncode == 1
    assert "already ran the demo" in again.stderr
    assert len(effect_keys(data_dir / "orders.db")) == 2
