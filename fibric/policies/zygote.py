"""The fork source of one engine's evaluation workers.

Replacing a worker must be cheap, because the pool replaces one every time it
kills a runaway evaluation. A fresh interpreter spends about a second
importing DuckDB, regopy and fibric.policies. multiprocessing's forkserver
imports them once (`set_forkserver_preload`), but every process it starts
then re-runs the parent's main script (pytest, or the `fibric` console script
with the whole CLI) before doing anything. So each engine starts ONE process
through the forkserver, the zygote, which pays that once; the zygote then
forks workers with `os.fork()` in a few milliseconds (it is single-threaded,
so forking it is safe).

The engine asks over a control socket: it sends one end of a fresh socket
pair (SCM_RIGHTS) and the bundle capacity; the zygote forks a worker serving
that socket and answers its pid. The kernel reaps the workers (the zygote
ignores SIGCHLD) and kills them when the zygote exits (regoworker sets
PR_SET_PDEATHSIG). The zygote exits when the engine closes the control socket,
which also happens when the engine's process dies. A process about to exit
without closing its engine (`fibric serve` past its shutdown bound) kills
them instead (`kill_now`): left to notice on their own, a zygote and a
forkserver that imported DuckDB and regopy can take seconds to wind down on
a loaded machine, outliving the server.

Workers run tenants' Rego, and rego-cpp's `opa.runtime()` returns the process
environment. The lint refuses it at apply (lint.py); as a second wall, the
zygote empties its environment before it forks any worker, so a policy that
reaches the environment anyway finds nothing of the server's (FIBRIC_SECRET_KEY,
database URLs, tokens).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import socket
import tempfile
import threading
import traceback
from collections.abc import Iterable
from multiprocessing import connection
from pathlib import Path

from fibric.policies import regoworker


class Zygote:
    """The engine's handle on its zygote process."""

    def __init__(self, *, reply_timeout: float = 30.0) -> None:
        context = multiprocessing.get_context("forkserver")
        # Process-wide: the forkserver (started once per process) imports this module, and so
        # rego.py (DuckDB before regopy) and regopy, before it forks the zygote.
        context.set_forkserver_preload([__name__])
        self._control, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self._process = context.Process(
                target=serve, args=(theirs,), name="fibric-rego-zygote", daemon=True)
            self._process.start()
        except BaseException:
            self._control.close()
            raise
        finally:
            theirs.close()
        self._control.settimeout(reply_timeout)
        self._lock = threading.Lock()
        self._closed = False

    @property
    def pid(self) -> int | None:
        return self._process.pid

    def spawn(self, capacity: int) -> tuple[int, connection.Connection]:
        """Fork a worker: its pid and the engine's end of its pipe. OSError when the zygote is gone."""
        ours, theirs = socket.socketpair()
        try:
            with self._lock:
                socket.send_fds(self._control, [str(capacity).encode()], [theirs.fileno()])
                reply = self._control.recv(32)
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        if not reply:
            ours.close()
            raise OSError("the rego zygote exited")
        return int(reply), connection.Connection(ours.detach())

    def close(self, timeout: float = 5.0) -> None:
        """Stop the zygote (its workers die with it) and reap it; a second call does nothing."""
        if self._closed:
            return
        self._closed = True
        self._control.close()
        self._process.join(timeout)
        if self._process.is_alive():
            self._process.kill()
            self._process.join(timeout)
        if not self._process.is_alive():
            self._process.close()


def kill_now(pids: Iterable[int]) -> list[int]:
    """SIGKILL an engine's zygote and workers (`pids`, EmbeddedEngine.processes()) and the forkserver
    the zygote came from, now, without waiting for any of them; the pids signalled.

    The forkserver is killed only when it is this process's child (/proc says so, on Linux). A
    pid that has already gone is skipped.
    """
    targets = list(dict.fromkeys(pids))
    me = os.getpid()
    for pid in list(targets):
        parent = _parent_of(pid)
        if parent not in (None, me) and _parent_of(parent) == me:  # the forkserver, our child
            targets.append(parent)
    killed = []
    for pid in dict.fromkeys(targets):
        with contextlib.suppress(OSError):  # ProcessLookupError: it exited meanwhile
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
    return killed


def _parent_of(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()  # the name, in parentheses, may hold spaces
    return int(fields[1]) if len(fields) > 1 and fields[1].isdigit() else None


def serve(control: socket.socket) -> None:
    """The zygote's loop: fork a worker per request until the engine closes `control`."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernel reaps exited workers: no zombies
    forget_environment()
    me = os.getpid()
    with control:
        while True:
            message, fds, _, _ = socket.recv_fds(control, 32, 1)
            if not message or not fds:
                for fd in fds:
                    os.close(fd)
                return
            pid = os.fork()
            if pid == 0:
                _worker(control, fds[0], int(message), me)
            os.close(fds[0])
            control.send(str(pid).encode())


def forget_environment() -> None:
    """Empty this process's environment (C's `environ` too, which rego-cpp reads), keeping what it needs.

    The one thing a worker takes from the environment is its temporary directory
    (TMPDIR, for the bundle files it loads), so it is resolved first and kept.
    """
    tempfile.tempdir = tempfile.gettempdir()
    os.environ.clear()  # unsetenv() for each variable, so the C library's view empties too


def _worker(control: socket.socket, fd: int, capacity: int, zygote: int) -> None:
    """Run in the forked child; never returns into the zygote's loop."""
    code = 0
    try:
        control.close()
        regoworker.start(fd, capacity, zygote)
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        os._exit(code)
