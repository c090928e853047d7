"""When `fibric serve` gives up on a graceful stop, it kills its policy processes before it exits.

Past FIBRIC_SHUTDOWN_SECONDS the watchdog exits without closing the
embedded engine. Left alone, the engine's zygote and forkserver notice the
server's end by themselves, and on a loaded machine winding down an
interpreter that imported DuckDB and regopy took them seconds: they outlived
the server. So the watchdog SIGKILLs the workers, the zygote and the
forkserver first (zygote.kill_now).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from bulkhead_servers import alive, start_stuck_write
from served_process import RUNNING, Served

from fibric import store

BOUND = 2.0  # FIBRIC_SHUTDOWN_SECONDS here
EXIT_MARGIN = 2.0

OPEN_AND_KILL = """
import sys, time
from fibric import policies, settings
from fibric.cli import serve
engine = policies.open_configured(settings.PolicySettings(workers=2))
deadline = time.monotonic() + 60
while len(engine.processes()) < 3 and time.monotonic() < deadline:
    time.sleep(0.05)
print(" ".join(map(str, engine.processes())), flush=True)
sys.stdin.readline()
serve.stop_policy_processes(engine)
print("killed", flush=True)
time.sleep(60)
"""


def parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[1])


def children_of(root: int) -> list[int]:
    """Every live descendant of `root`."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                parents.setdefault(parent(int(entry)), []).append(int(entry))
            except (OSError, ValueError, IndexError):
                continue
    found, todo = [], [root]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def gone_within(pids: list[int], seconds: float) -> list[int]:
    """The pids still alive after `seconds`."""
    ends = time.monotonic() + seconds
    while (left := [p for p in pids if alive(p)]) and time.monotonic() < ends:
        time.sleep(0.02)
    return left


def test_the_policy_processes_die_at_once_while_the_server_process_lives_on() -> None:
    with subprocess.Popen([sys.executable, "-c", OPEN_AND_KILL], stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True) as process:
        try:
            check_killed_at_once(process)
        finally:
            process.kill()


def check_killed_at_once(process: subprocess.Popen[str]) -> None:
    """The engine's zygote, workers and forkserver, dead within a second of the kill; the process alive."""
    assert process.stdin is not None and process.stdout is not None
    zygote_pid, *workers = map(int, process.stdout.readline().split())
    forkserver = parent(zygote_pid)
    assert len(workers) == 2 and parent(forkserver) == process.pid
    assert all(parent(w) == zygote_pid for w in workers)

    process.stdin.write("\n")
    process.stdin.flush()
    assert process.stdout.readline().strip() == "killed"

    assert gone_within([zygote_pid, *workers, forkserver], 1.0) == []
    assert process.poll() is None  # the engine's own process has not exited: nothing else ended them


def test_a_serve_that_gives_up_kills_its_policy_processes_before_it_exits(tmp_path: Path) -> None:
    data = tmp_path / "data"
    state = store.open_store(data)
    try:
        tenant = state.create_tenant("tenant-a", "rs_fibric")
        _, key = state.create_api_key(tenant.id, frozenset(store.SCOPES))
    finally:
        state.close()
    served = Served(["--data-dir", str(data)], cwd=tmp_path, env={"FIBRIC_SHUTDOWN_SECONDS": f"{BOUND:g}",
                                                                  "FIBRIC_POLICY_WORKERS": "2"})
    blocker = sqlite3.connect(data / "state.db", isolation_level=None, timeout=30)
    try:
        running = served.wait_for(RUNNING)
        assert running is not None, served.text
        url = running.group(1)
        deadline = time.monotonic() + 30
        while len(policy := [p for p in children_of(served.process.pid) if _is_policy(p)]) < 4:
            assert time.monotonic() < deadline, f"the policy workers never started: {served.text[-2000:]}"
            time.sleep(0.1)
        blocker.execute("BEGIN EXCLUSIVE")  # every writer now waits out SQLite's busy timeout (30 s)

        stuck = start_stuck_write(url, key)
        time.sleep(1.0)
        assert stuck.is_alive(), "the write did not wait on the lock: the test proves nothing"

        started = time.monotonic()
        served.process.send_signal(signal.SIGTERM)
        try:
            code = served.process.wait(timeout=BOUND + 30)
        except subprocess.TimeoutExpired:
            code = -999
        exited = time.monotonic() - started
        left = gone_within(policy, 0.5)
    finally:
        with contextlib.suppress(sqlite3.Error):
            blocker.execute("ROLLBACK")
        blocker.close()
        served.kill()

    said = served.text
    assert code == 0, said[-3000:]
    assert exited <= BOUND + EXIT_MARGIN, f"SIGTERM to exit took {exited:.1f}s: {said[-3000:]}"
    assert f"shutdown took longer than {BOUND:g}s" in said, said[-3000:]
    assert "killed the policy engine's 4 processes (workers, zygote, forkserver)" in said, said[-3000:]
    assert left == [], f"policy processes outlived the server: {left}"


def _is_policy(pid: int) -> bool:
    try:
        return b"multiprocessing.forkserver" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
