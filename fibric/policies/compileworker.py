"""Where policies compile: a worker process, so rego-cpp aborting on a tenant's Rego harms no one.

rego-cpp 1.5.2 aborts the process while compiling some policies (`with input
as <a reference>` is one, see rego.py), and compiling happens on every apply,
including POST /v1/apply by any tenant. So compiler.compile() hands the steps
that reach rego-cpp (bundler.py) to a compile worker, a child Python process,
instead of running them in its caller's process:

- The worker (compileprocess.py) starts on the first compile, about a second
  to import DuckDB, regopy and fibric.policies, and is kept for later ones.
  It compiles in a forked child of its own and survives that child: a crash
  comes back with its signal and rego-cpp's last words, a compile past
  `BUDGET` is killed. compile() raises either as SpecInvalid on the policy's
  Rego field, naming the policy; the next compile gets a fresh child.
- The worker itself failing (it cannot start, it dies, it hangs past the
  budget) is not the policy's fault: TemporaryError, and the next compile
  starts a new worker.

One worker per process: `build()` uses a module-level `CompileWorker`, and
compiles run one at a time (they are rare: once per policy version, as the
controller caches them); a caller waits at most a budget for its turn. The
worker stops at interpreter exit (atexit) or on `close()`, and exits by itself
when this process dies (its socket closes); a forked copy of this process
forgets the worker and starts its own.
"""

from __future__ import annotations

import atexit
import os
import socket
import subprocess
import sys
import threading
from multiprocessing import connection
from pathlib import Path

from fibric import errors
from fibric.policies import bundler, compileprocess

BUDGET = 10.0  # seconds one compile may take; generous: the example policy compiles in ~15 ms
START_TIMEOUT = 30.0  # seconds for a new worker to import what it needs (about 1 s)
_GRACE = 5.0  # past the budget, the worker itself is presumed hung and killed
_ENTRY = ("import sys; from fibric.policies import compileprocess; "
          "compileprocess.serve(int(sys.argv[1]), float(sys.argv[2]))")
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])


class CompileWorker:
    """The handle on one compile worker process: started on first use, restarted when it dies.

    Thread-safe; compiles run one at a time.
    """

    def __init__(self, *, budget: float = BUDGET, start_timeout: float = START_TIMEOUT) -> None:
        if budget <= 0:
            raise ValueError("budget must be positive")
        self.budget = budget
        self.start_timeout = start_timeout
        self._lock = threading.Lock()  # one compile at a time; also guards _process and _conn
        self._process: subprocess.Popen[bytes] | None = None
        self._conn: connection.Connection | None = None

    @property
    def pid(self) -> int | None:
        """The worker's pid while it runs (for tests)."""
        process = self._process
        return process.pid if process is not None and process.poll() is None else None

    def build(self, request: bundler.Request) -> bundler.Built:
        """Compile in the worker: SpecInvalid if the policy does not compile, crashes it or runs too long."""
        frame = compileprocess.encode_request(request)
        if not self._lock.acquire(timeout=self.budget + _GRACE):
            raise errors.TemporaryError("the Rego compiler is busy with other policies; retry", delay=1.0)
        try:
            data = self._exchange(frame)
        finally:
            self._lock.release()
        return _reply_to(data, request)

    def close(self, timeout: float = 1.0) -> None:
        """Stop the worker (a later compile starts a new one); a compile in flight fails, temporarily."""
        if self._lock.acquire(timeout=timeout):
            try:
                self._stop(kill=False)
            finally:
                self._lock.release()
            return
        process = self._process  # a compile is in flight: it sees EOF and cleans up
        if process is not None:
            process.kill()

    def _exchange(self, frame: bytes) -> bytes:
        """Send one request and wait for its answer; a worker that dies meanwhile is replaced, once.

        The worker never runs rego-cpp itself (its compile child does), so its
        death is never the policy's doing, and a compile is safe to repeat. A
        killed worker can also look alive for a moment (its threads still
        exiting, its compile child still holding the socket), so a request may
        reach a dying worker: the fresh one answers it.
        """
        why = ""
        for _ in range(2):
            conn = self._connection()
            try:
                conn.send_bytes(frame)
                if conn.poll(self.budget + _GRACE):
                    return conn.recv_bytes()
                why = f"did not answer within {self.budget + _GRACE:.0f} s"
                self._stop(kill=True)
                break
            except (EOFError, OSError) as e:
                why = f"died ({type(e).__name__})"
                self._stop(kill=True)
        raise errors.TemporaryError(f"the Rego compile worker {why}; retry", delay=1.0)

    def _connection(self) -> connection.Connection:
        """The live worker's connection, starting a worker if there is none (lock held)."""
        if self._conn is not None and not self._idle_and_alive(self._conn):
            self._stop(kill=True)  # died while idle (the OOM killer, an operator): start afresh
        return self._conn or self._start()

    def _start(self) -> connection.Connection:
        ours, theirs = socket.socketpair()
        try:
            process = subprocess.Popen(
                [sys.executable, "-c", _ENTRY, str(theirs.fileno()), repr(self.budget)],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, cwd=_PACKAGE_ROOT)
        except OSError as e:
            ours.close()
            raise errors.TemporaryError(f"cannot start the Rego compile worker: {e}") from e
        finally:
            theirs.close()
        conn = connection.Connection(ours.detach())
        try:
            ready = conn.poll(self.start_timeout) and conn.recv_bytes() == compileprocess.READY
        except (EOFError, OSError):
            ready = False
        if not ready:
            conn.close()
            process.kill()
            process.wait()
            raise errors.TemporaryError(
                f"the Rego compile worker did not start within {self.start_timeout:.0f} s "
                f"(exit status {process.returncode})")
        self._process, self._conn = process, conn
        return conn

    def _stop(self, *, kill: bool) -> None:
        conn, process = self._conn, self._process
        self._conn = self._process = None
        if conn is not None:
            conn.close()  # EOF: an idle worker exits at once
        if process is None:
            return
        if kill:
            process.kill()
        try:
            process.wait(1.0)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    @staticmethod
    def _idle_and_alive(conn: connection.Connection) -> bool:
        """An idle worker never has anything to read but EOF."""
        try:
            return not conn.poll(0)
        except OSError:
            return False


_shared = CompileWorker()


def build(request: bundler.Request) -> bundler.Built:
    """Compile `request` in this process's compile worker (see the module docstring)."""
    return _shared.build(request)


def shared() -> CompileWorker:
    """This process's compile worker (for tests: its pid, close())."""
    return _shared


def close() -> None:
    """Stop this process's compile worker; the next compile starts a new one."""
    _shared.close()


def _forget_in_child() -> None:
    """In a forked child: leave the parent's worker to the parent, start our own when needed."""
    global _shared
    inherited = _shared._conn
    _shared = CompileWorker(budget=_shared.budget, start_timeout=_shared.start_timeout)
    if inherited is not None:
        inherited.close()  # our copy of the descriptor only; the parent keeps its worker


atexit.register(close)
os.register_at_fork(after_in_child=_forget_in_child)


def _reply_to(data: bytes, request: bundler.Request) -> bundler.Built:
    """The worker's reply as what was built, or SpecInvalid naming the policy."""
    try:
        header, bundle = compileprocess.decode_reply(data)
    except ValueError as e:
        raise errors.TemporaryError(f"the Rego compile worker answered garbage: {e}") from None
    if "package" in header:
        return bundler.Built(package=header["package"], query=header["query"], bundle=bundle)
    if "problems" in header:
        raise errors.SpecInvalid([errors.SpecProblem(**p) for p in header["problems"]])
    if "crashed" in header:
        detail = f": {header['detail']}" if header.get("detail") else ""
        message = (f"the Rego compiler crashed on this policy ({header['crashed']}{detail}); "
                   "rego-cpp cannot compile it as written, so it is rejected")
    elif "timeout" in header:
        message = (f"the Rego compiler did not finish within {header['timeout']:g} s on this policy "
                   "and was stopped; it is rejected")
    else:
        failure = str(header.get("error", header))[:300]
        raise errors.TemporaryError(f"the Rego compile worker failed: {failure}")
    raise errors.SpecInvalid(bundler.problems_of(request, [message]))
