"""The noisy neighbour: whatever tenant A's dependencies do, B's work completes; SIGTERM is bounded.

One real `fibric serve` per case (bulkhead_support.py says what runs). Tenant
A declares one of its faults, or all of them at once, and keeps it busy;
meanwhile tenant B ingests 100 events, its ship-risk operator proposes a plan
for each, and B approves the 100 plans with 8 clients. Then, with A's fault
still in flight in the server (a DNS lookup waiting, a delivery holding a
connection to the silent receiver, tool calls hanging in the stalled MCP
server, an approval waiting on the slow policy, A's events queued for runs),
the server gets SIGTERM and must be gone within FIBRIC_SHUTDOWN_SECONDS,
exit code 0, leaving no process it started behind.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from bulkhead_servers import alive
from bulkhead_support import FAULT_NAMES, SHUTDOWN_SECONDS, Batch, Installation, TenantB, b_orders
from noisy_tenant import TenantA

PLANS = 100
CLIENTS = 8
B_BOUND = 90.0  # seconds for B's 100 events and 100 approvals; about 10 s on a quiet 2-CPU machine
EXIT_MARGIN = 2.0  # seconds past FIBRIC_SHUTDOWN_SECONDS for the process to be reaped
CASES = ["a", "b", "c", "d", "e", "abcde"]


def case_id(faults: str) -> str:
    return "all-at-once" if len(faults) > 1 else f"{faults}-{FAULT_NAMES[faults].replace(' ', '-')}"


@pytest.mark.parametrize("noisy", CASES, ids=[case_id(c) for c in CASES], indirect=True)
def test_tenant_b_completes_beside_tenant_a_and_sigterm_exits_within_the_bound(
    noisy: tuple[Installation, TenantA],
) -> None:
    setup, a = noisy
    b = TenantB(setup, clients=CLIENTS)

    started = time.monotonic()
    batch = b.run(Batch(b_orders("SO-B", PLANS)))
    took = time.monotonic() - started

    assert took < B_BOUND, f"B's work took {took:.1f}s beside A's faults ({a.describe()})"
    b.check(batch)  # every plan executed, receipts and effects agree, every receipt.created delivered once

    evidence = a.wait_in_flight()
    descendants = children_of(setup.served.process.pid)
    code, exited = setup.terminate()

    assert code == 0, setup.served.text[-3000:]
    assert exited <= SHUTDOWN_SECONDS + EXIT_MARGIN, (
        f"SIGTERM to exit took {exited:.1f}s with A's faults in flight: {evidence}")
    survivors = {p: command(p) for p in descendants if outlives(p)}
    assert not survivors, f"processes the server started outlived it: {survivors}"


def children_of(root: int) -> list[int]:
    """Every live descendant of `root` (its MCP servers, policy zygote and workers, ...)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parents.setdefault(int(stat.rpartition(")")[2].split()[1]), []).append(int(entry))
    found, todo = [], [root]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def outlives(pid: int, grace: float = 2.0) -> bool:
    """Whether `pid` still runs `grace` seconds from now (an orphan's own exit takes a moment)."""
    ends = time.monotonic() + grace
    while alive(pid):
        if time.monotonic() > ends:
            return True
        time.sleep(0.05)
    return False


def command(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")[:160]
    except OSError:
        return "?"
