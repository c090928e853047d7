"""Tenants' receipt SQL in worker processes the server can kill.

DuckDB bounds a query's working memory (its buffer manager) and checks for an
interrupt between vectors, but not inside one function call: a single value a
function builds (`repeat('x', 1000000000)`) takes its gigabyte and more
whatever `memory_limit` says, and runs to its end however long after its time
budget `interrupt()` came. In the server's process that is memory the server
may never give back, times the queries running at once. So POST
/v1/receipts/query runs each query (audit_sql.over_files and audit_sql.query,
every lock-down included) in a worker process of a `Pool`:

- a worker caps its own address space (PROCESS_MEMORY, RLIMIT_AS) before it
  takes a query: an allocation past the cap fails, DuckDB's as its
  out-of-memory error, anything else by the process dying;
- the server waits for an answer the query's time budget plus GRACE, then
  SIGKILLs the worker;
- a worker that died, was killed or has grown (RETIRE_RSS) is replaced. The
  server's own memory holds at most the answer (audit_sql.MAX_RESPONSE_BYTES).

Starting a worker (an interpreter importing DuckDB) takes about half a second,
so the pool keeps `warm` workers started, as audit_sql's spares keep DuckDB
databases; the ones a burst of queries needed beyond those go when it is
over. A worker takes one query at a time and serves many, each on a fresh
database, and makes the next query's database while it is idle.

Workers are started by the pool's own thread with subprocess (a fresh
interpreter, never a fork of the threaded server) with nothing of the
server's environment (only PYTHONPATH, to this fibric, and MALLOC_ARENA_MAX),
and die with that thread (PR_SET_PDEATHSIG), so with the server. The wire, over
a socket pair (multiprocessing.connection framing): the request as JSON; the
worker's TAKEN as it starts on it; the answer as a 4-byte header length, a
JSON header, then the rows' JSON back to back. A worker found dead before its
TAKEN had died idle (an operator's kill, the OOM killer): the query goes to
another worker. One that dies after it died of the query.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import json
import logging
import os
import queue
import resource
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import traceback
import weakref
from collections.abc import Sequence
from multiprocessing import connection
from pathlib import Path
from typing import Any

import fibric
from fibric import errors
from fibric.store import audit_sql

log = logging.getLogger(__name__)

PROCESS_MEMORY = 768 * 2**20  # a worker's address space: DuckDB's QUERY_MEMORY, the interpreter, the answer
RETIRE_RSS = 384 * 2**20  # a worker this large after a query is replaced rather than reused
GRACE = 2.0  # seconds past a query's time budget before its worker is killed
START_SECONDS = 30.0  # the longest a query waits for a worker to start
GONE_RETRIES = 2  # workers found dead as a query was handed over, before the query fails
WARM = 2  # idle workers kept started: a tenant's two queries at once (QUERIES_PER_TENANT) wait for none

READY = b"ready"
TAKEN = b"taken"  # a worker's first word on a query: a death after it is the query's doing, before it not
HEADER = struct.Struct("!I")
_SPAWN, _STOP = "spawn", "stop"
_PR_SET_PDEATHSIG = 1
_SHUTTING_DOWN = "receipt queries stopped: the server is shutting down"
_BOOT = "import sys; from fibric.store import query_worker; query_worker.main(sys.argv[1:])"


class _Overtime(Exception):
    """The worker did not answer within the query's time budget and grace."""


class _Lost(Exception):
    """The worker's pipe broke after it took the query: it died (over its memory cap, crashed or killed)."""


class _Gone(Exception):
    """The worker's pipe broke before it took the query: it had died idle (killed, say), unnoticed."""


class _Worker:
    """The server's handle on one worker process; one query at a time."""

    def __init__(self, process: subprocess.Popen[bytes], conn: connection.Connection) -> None:
        self.process = process
        self.pid = process.pid
        self._conn = conn
        self._ready = False
        self.querying = False  # between sending a query and reading its answer

    def await_ready(self, timeout: float) -> bool:
        """Whether the worker has its interpreter and DuckDB up (waiting up to `timeout` the first time)."""
        if not self._ready:
            with contextlib.suppress(EOFError, OSError):
                self._ready = self._conn.poll(timeout) and self._conn.recv_bytes() == READY
        return self._ready

    def idle_and_alive(self) -> bool:
        """False if the worker died while idle (an idle worker never has anything to read but EOF)."""
        try:
            return self.process.poll() is None and not self._conn.poll(0)
        except OSError:
            return False

    def exchange(self, request: bytes, timeout: float, maxlength: int | None) -> bytes:
        """The worker's reply to `request`: _Overtime after `timeout`; _Gone if it was dead before it
        took the query, _Lost if it died running it."""
        deadline = time.monotonic() + timeout
        self.querying = True
        try:
            try:
                self._conn.send_bytes(request)
                if not self._conn.poll(timeout):
                    raise _Overtime
                if self._conn.recv_bytes() != TAKEN:
                    raise _Lost("the worker answered out of turn")
            except (EOFError, OSError) as e:
                raise _Gone(str(e)) from e
            try:
                if not self._conn.poll(max(0.0, deadline - time.monotonic())):
                    raise _Overtime
                return self._conn.recv_bytes(maxlength)
            except (EOFError, OSError) as e:
                raise _Lost(str(e)) from e
        finally:
            self.querying = False

    def rss(self) -> int:
        """Resident bytes now (0 once gone)."""
        try:
            return int(Path(f"/proc/{self.pid}/statm").read_text().split()[1]) * resource.getpagesize()
        except (OSError, IndexError, ValueError):
            return 0

    def kill(self) -> None:
        """SIGKILL the process now (nothing happens once it has been reaped)."""
        with contextlib.suppress(OSError):
            self.process.kill()

    def close(self) -> None:
        """Close the server's end of the pipe: an idle worker exits on it."""
        self._conn.close()


class Pool:
    """Worker processes for receipt queries: `warm` kept started, at most `size` at once.

    `run` is what audit_sql.query_ledger calls (its `Workers`); `close` kills
    every worker and waits for them. `counters` counts workers started,
    killed over time, died and retired (for tests and metrics).
    """

    def __init__(self, size: int, *, warm: int = WARM, memory: int = PROCESS_MEMORY, grace: float = GRACE,
                 start_seconds: float = START_SECONDS) -> None:
        if size < 1:
            raise ValueError("a query worker pool needs at least one worker")
        self.size = size
        self.warm = min(warm, size)
        self.memory = memory
        self.grace = grace
        self._start_seconds = start_seconds
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._idle: collections.deque[_Worker] = collections.deque()
        self._live: set[_Worker] = set()  # idle and busy
        self._starting = 0  # spawns asked of the supervisor and not yet made
        self._waiting = 0  # callers waiting for an idle worker
        self._closed = False
        self._tasks: queue.SimpleQueue[str | _Worker] = queue.SimpleQueue()  # a spawn, a worker to reap
        self._stopping = threading.Event()
        self.counters: collections.Counter[str] = collections.Counter()
        # The thread holds the pool weakly: a pool no one closed (an app whose lifespan never ran)
        # kills its workers and stops its thread when collected, or when the interpreter exits.
        self._thread = threading.Thread(target=_supervise, name="fibric-query-workers", daemon=True,
                                        args=(weakref.ref(self), self._tasks, self._stopping))
        self._thread.start()
        weakref.finalize(self, _abandon, self._live, self._tasks)
        with self._lock:
            self._top_up()

    def run(self, files: Sequence[str], calls: Sequence[str], sql: str, *, max_rows: int,
            max_bytes: int | None, timeout: float) -> audit_sql.Result:
        """audit_sql.over_files(files, calls=calls) and audit_sql.query(...) in a worker; QueryRejected past
        its time budget (plus `grace`) or its memory cap, as for any query it refuses."""
        request = json.dumps({"files": list(files), "calls": list(calls), "sql": sql, "max_rows": max_rows,
                              "max_bytes": max_bytes, "timeout": timeout}).encode()
        # The answer is the result's document, cut up: never more than max_bytes, plus the row sizes.
        maxlength = None if max_bytes is None else 2 * max_bytes + 16 * max_rows + 4096
        gone = 0
        while True:
            worker = self._acquire()
            try:
                reply = worker.exchange(request, timeout + self.grace, maxlength)
            except _Gone:
                self._discard(worker, "died")  # it died idle, the moment before: not this query's doing
                if self._closed:
                    raise errors.TemporaryError(_SHUTTING_DOWN) from None
                gone += 1
                if gone <= GONE_RETRIES:
                    continue  # on another worker
                raise errors.TemporaryError("receipt query workers die before they take a query; the "
                                            "server log may say why") from None
            except _Overtime:
                self._discard(worker, "killed")  # kills it first: its CPU and memory stop here
                raise audit_sql.QueryRejected(audit_sql.OVERTIME.format(timeout=timeout)) from None
            except _Lost as e:
                self._discard(worker, "died")
                if self._closed:
                    raise errors.TemporaryError(_SHUTTING_DOWN) from None
                log.warning("receipt query worker %d died mid-query (%s, exit %s)", worker.pid, e,
                            worker.process.poll())
                raise audit_sql.QueryRejected(over_memory(self.memory)) from None
            except BaseException:
                self._discard(worker, "failed")  # its pipe may hold a half-read answer: never reuse it
                raise
            self._release(worker)
            return decode(reply)

    def pids(self) -> list[int]:
        """The live workers' pids."""
        with self._lock:
            return sorted(w.pid for w in self._live)

    def busy(self) -> list[int]:
        """The pids of the workers running a query."""
        with self._lock:
            return sorted(w.pid for w in self._live if w.querying)

    def close(self, timeout: float = 5.0) -> None:
        """Kill every worker now and reap them; returns once they are gone (or `timeout`)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            workers, idle = list(self._live), list(self._idle)
            self._live.clear()
            self._idle.clear()
            self._cond.notify_all()
        for worker in workers:
            worker.kill()
        ends = time.monotonic() + timeout
        for worker in workers:
            with contextlib.suppress(subprocess.TimeoutExpired):
                worker.process.wait(max(0.0, ends - time.monotonic()))
        for worker in idle:  # a busy worker's pipe is closed by the caller holding it
            worker.close()
        self._stopping.set()
        self._tasks.put(_STOP)
        if threading.current_thread() is not self._thread:
            self._thread.join(max(0.0, ends - time.monotonic()))

    def _acquire(self) -> _Worker:
        deadline = time.monotonic() + self._start_seconds
        unstarted = 0
        while True:
            with self._cond:
                self._waiting += 1
                try:
                    while not self._idle:
                        if self._closed:
                            raise errors.TemporaryError(_SHUTTING_DOWN)
                        self._top_up()
                        left = deadline - time.monotonic()
                        if left <= 0:
                            raise errors.TemporaryError(
                                f"no receipt query worker started within {self._start_seconds:g} s")
                        self._cond.wait(left)
                    worker = self._idle.pop()  # the last released: ready, and warm in every cache
                finally:
                    self._waiting -= 1
                self._top_up()
            if not worker.await_ready(max(0.0, deadline - time.monotonic())):
                self._discard(worker, "unstarted")  # it failed to start, or was killed before its first query
                unstarted += 1
                if unstarted == 3 or time.monotonic() >= deadline:
                    raise errors.TemporaryError(f"receipt query workers do not start (the last, pid "
                                                f"{worker.pid}, exited {worker.process.poll()}); the server "
                                                "log may say why")
                continue
            if worker.idle_and_alive():
                return worker
            self._discard(worker, "died")  # while idle: not this query's doing; take another

    def _top_up(self) -> None:
        """Ask for workers until there are `warm`, and one for each caller waiting (lock held)."""
        if self._closed:
            return
        wanted = min(self.size, max(self.warm, len(self._live) - len(self._idle) + self._waiting))
        while len(self._live) + self._starting < wanted:
            self._starting += 1
            self._tasks.put(_SPAWN)

    def _release(self, worker: _Worker) -> None:
        grown = worker.rss() > RETIRE_RSS
        with self._cond:
            # Kept while the pool holds no more than `warm` and what the waiting callers need: the
            # workers a burst of queries started go again once it is over.
            needed = max(self.warm, len(self._live) - len(self._idle) - 1 + self._waiting)
            if not self._closed and not grown and len(self._live) <= needed:
                self._idle.append(worker)
                self._cond.notify()
                return
            self._live.discard(worker)
            self.counters["retired"] += 1
            self._top_up()
        worker.close()  # it exits on EOF; the supervisor reaps it
        self._tasks.put(worker)

    def _discard(self, worker: _Worker, why: str) -> None:
        worker.kill()
        worker.close()
        with self._lock:
            self._live.discard(worker)
            self.counters[why] += 1
            self._top_up()
        self._tasks.put(worker)

    def _spawn(self) -> bool:
        try:
            worker = start(self.memory)
        except Exception as e:
            log.warning("cannot start a receipt query worker: %s", e)
            with self._cond:
                self._starting -= 1
                self._cond.notify_all()  # waiters ask again (after the supervisor's back-off)
            return False
        with self._cond:
            self._starting -= 1
            wanted = max(self.warm, len(self._live) - len(self._idle) + self._waiting)
            if not self._closed and len(self._live) < wanted:  # else a burst ended before it started
                self._live.add(worker)
                self._idle.appendleft(worker)  # taken after those already up (it may still be starting)
                self.counters["started"] += 1
                self._cond.notify()
                return True
        worker.kill()
        worker.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            worker.process.wait(1.0)
        return True


def _supervise(pool_ref: weakref.ref[Pool], tasks: queue.SimpleQueue[str | _Worker],
               stopping: threading.Event) -> None:
    """The pool's thread: start workers on request and reap the ones let go, until the pool closes
    (or is collected). Every worker is started here, so every worker dies when this thread ends."""
    dying: list[tuple[_Worker, float]] = []
    delay = 0.1
    while True:
        try:
            task = tasks.get(timeout=0.2 if dying else None)
        except queue.Empty:
            task = ""
        if task == _STOP:
            break
        if isinstance(task, _Worker):
            dying.append((task, time.monotonic() + 5.0))
        elif task == _SPAWN:
            pool = pool_ref()
            if pool is None:
                break
            started = pool._spawn()
            del pool  # never held while waiting: see Pool.__init__
            if started:
                delay = 0.1
            elif stopping.wait(delay):
                break
            else:
                delay = min(delay * 2, 5.0)
        dying = [(w, until) for w, until in dying if not _reaped(w, until)]
    for worker, _ in dying:
        worker.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            worker.process.wait(1.0)


def _abandon(live: set[_Worker], tasks: queue.SimpleQueue[str | _Worker]) -> None:
    """Kill and reap a collected pool's workers (`live`, as it left them) and stop its thread."""
    for worker in list(live):
        worker.kill()
    for worker in list(live):
        with contextlib.suppress(subprocess.TimeoutExpired):
            worker.process.wait(1.0)
        worker.close()
    tasks.put(_STOP)


def _reaped(worker: _Worker, until: float) -> bool:
    if worker.process.poll() is not None:
        return True
    if time.monotonic() > until:  # an idle worker let go should have exited on EOF by now
        worker.kill()
    return False


def start(memory: int) -> _Worker:
    """A new worker process capped at `memory` bytes of address space (not yet ready: _Worker.await_ready)."""
    ours, theirs = socket.socketpair()
    try:
        root = str(Path(fibric.__file__).resolve().parent.parent)  # where this fibric is imported from
        process = subprocess.Popen(
            [sys.executable, "-B", "-c", _BOOT, str(theirs.fileno()), str(os.getpid()), str(memory)],
            pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            env={"PYTHONPATH": root, "MALLOC_ARENA_MAX": "2"})  # few malloc arenas: each reserves 64 MiB
    except BaseException:
        ours.close()
        raise
    finally:
        theirs.close()
    return _Worker(process, connection.Connection(ours.detach()))


def encode(result: audit_sql.Result) -> bytes:
    """A worker's answer: the result's fields, its rows' JSON as they are (no re-encoding on either side)."""
    header = json.dumps({"columns": result.columns, "types": result.types, "truncated": result.truncated,
                         "sizes": [len(row) for row in result.row_json]}).encode()
    return HEADER.pack(len(header)) + header + b"".join(result.row_json)


def decode(reply: bytes) -> audit_sql.Result:
    """The Result a worker sent; QueryRejected if it refused the query."""
    (size,) = HEADER.unpack_from(reply)
    at = HEADER.size + size
    header = json.loads(reply[HEADER.size:at])
    if "rejected" in header:
        raise audit_sql.QueryRejected(header["rejected"])
    if "failed" in header:  # not the tenant's doing (a sealed file gone mid-query, a bug): a 500
        raise errors.TemporaryError(f"the receipt query failed: {header['failed']}")
    rows = []
    for length in header["sizes"]:
        rows.append(reply[at:at + length])
        at += length
    return audit_sql.Result(header["columns"], header["types"], rows, header["truncated"])


def over_memory(memory: int) -> str:
    """What a tenant is told when a query took its worker past `memory` bytes."""
    return (f"query stopped: it needs more than the {memory // 2**20} MiB of memory a query's process may "
            "use; have it read fewer rows or build shorter values")


def _refusal(key: str, message: str) -> bytes:
    header = json.dumps({key: message}).encode()
    return HEADER.pack(len(header)) + header


# --- in the worker process ----------------------------------------------------------------


def main(argv: Sequence[str]) -> None:
    """The worker's entry point (`_BOOT`): die with the server, cap memory, then serve until EOF."""
    fd, parent, memory = (int(arg) for arg in argv)
    code = 0
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the server; it stops us
        if sys.platform == "linux":
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the server died before prctl took effect
            return
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # an abort past the cap leaves no core file
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))  # lowered for good: no query raises it
        serve(connection.Connection(fd), memory)
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        sys.stderr.flush()
        os._exit(code)  # never run interpreter shutdown: DuckDB's and the timers' threads may be mid-call


def serve(conn: connection.Connection, memory: int) -> None:
    """Answer queries on `conn` until the server closes it (or a query ran the process out of memory)."""
    database = audit_sql.new_database(threads=1)  # the next query's, made while idle
    conn.send_bytes(READY)
    while True:
        try:
            request = conn.recv_bytes()
        except EOFError:
            return
        conn.send_bytes(TAKEN)
        try:
            reply, spent = answer(request, database, memory)
        finally:
            database.close()
        conn.send_bytes(reply)
        if spent:
            return
        database = audit_sql.new_database(threads=1)


def answer(request: bytes, database: Any, memory: int) -> tuple[bytes, bool]:
    """The reply to one request, run on `database`, and whether this process must now exit."""
    try:
        ask = json.loads(request)
        copy = audit_sql.over_files(ask["files"], calls=ask["calls"], database=database)
        result = audit_sql.query(copy, ask["sql"], max_rows=ask["max_rows"], max_bytes=ask["max_bytes"],
                                 timeout=ask["timeout"])
    except audit_sql.QueryRejected as e:
        if "bad allocation" in str(e.__cause__):  # DuckDB's words for an allocation past the cap
            return _refusal("rejected", over_memory(memory)), False
        return _refusal("rejected", str(e)), False
    except MemoryError:  # Python ran out under the cap: the heap may be in any state, so exit after
        return _refusal("rejected", over_memory(memory)), True
    except Exception as e:
        return _refusal("failed", f"{type(e).__name__}: {e}"[:2000]), False
    return encode(result), False
