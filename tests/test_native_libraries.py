"""Fibric loads two C++ engines into one process: regopy (policies) and DuckDB (the sealed ledger).

With regopy's library loaded first, DuckDB's first connect aborts the whole
process, so a server that evaluated a policy before sealing receipts would die.
This runs the risky order in a child process, where a crash fails the test
instead of the test run.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = """
import sys
from fibric import policies
from fibric.store import sealed
lake = sealed.SealedLedger(__import__("pathlib").Path(sys.argv[1]))
print(lake.count())
lake.close()
"""


def test_policies_then_the_sealed_ledger_in_one_process(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path / "data")],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "0"
