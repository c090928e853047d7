"""Inside the compile worker process: compile in a forked child, survive it, say how it ended.

compileworker.py starts this process and sends it policies to compile (see
there for why). This process never runs rego-cpp itself: it forks a compile
child that does (bundler.build) and relays each request to it. When the child
crashes the worker reaps it and reports the signal and rego-cpp's last words
on stderr; when a compile runs past the budget it SIGKILLs the child and
reports that. Either way it forks a fresh child (a few ms) for the next
request. A healthy child is kept across compiles, because a compile in a
freshly forked process costs about twice as much (new memory to fault in).

The wire, one `Connection.send_bytes` message each way on both hops: the
request is the bundler.Request as JSON; the reply is a 4-byte big-endian
header length, a JSON header, then the bundle when the header is
`{"package", "query"}`. Other headers: `{"problems": [SpecProblem...]}` (the
policy does not compile), `{"crashed": why, "detail": text}`, `{"timeout":
seconds}`, `{"error": text}` (the worker's own failure, not the policy's).

The worker exits when its parent closes the socket (also when the parent
dies); the compile child dies with the worker (PR_SET_PDEATHSIG on Linux).
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import json
import os
import signal
import socket
import struct
import sys
import tempfile
import traceback
from multiprocessing import connection
from typing import Any

from fibric import errors
from fibric.policies import bundler

READY = b"ready"
HEADER = struct.Struct("!I")
_STDERR_TAIL = 4096
_PR_SET_PDEATHSIG = 1


def encode_request(request: bundler.Request) -> bytes:
    return json.dumps(dataclasses.asdict(request)).encode()


def decode_request(frame: bytes) -> bundler.Request:
    fields = json.loads(frame)
    return bundler.Request(**{**fields, "tests": tuple((n, s) for n, s in fields["tests"])})


def encode_reply(header: dict[str, Any], bundle: bytes = b"") -> bytes:
    encoded = json.dumps(header).encode()
    return HEADER.pack(len(encoded)) + encoded + bundle


def decode_reply(data: bytes) -> tuple[dict[str, Any], bytes]:
    """(header, bundle) of a reply; ValueError if it is not one."""
    try:
        (size,) = HEADER.unpack_from(data)
    except struct.error as e:
        raise ValueError(str(e)) from None
    header = json.loads(data[HEADER.size:HEADER.size + size])
    if not isinstance(header, dict):
        raise ValueError(f"reply header {str(header)[:200]}")
    return header, data[HEADER.size + size:]


class Child:
    """The worker's compile child: a forked process compiling one request at a time."""

    def __init__(self, stderr_fd: int, parent_fd: int) -> None:
        ours, theirs = socket.socketpair()
        worker = os.getpid()
        try:
            pid = os.fork()
        except BaseException:
            ours.close()
            theirs.close()
            raise
        if pid == 0:
            ours.close()
            _child_main(theirs, worker, stderr_fd, parent_fd)
        theirs.close()
        self.pid = pid
        self.conn = connection.Connection(ours.detach())
        self.missed_budget = False

    def alive_and_idle(self) -> bool:
        """An idle child never has anything to read but EOF."""
        try:
            return not self.conn.poll(0)
        except OSError:
            return False

    def compile(self, frame: bytes, budget: float) -> bytes | None:
        """The child's reply, or None when it died or missed the budget (then reap() it)."""
        try:
            self.conn.send_bytes(frame)
            if self.conn.poll(budget):
                return self.conn.recv_bytes()
        except (EOFError, OSError):
            return None
        self.missed_budget = True
        return None

    def reap(self) -> int:
        """SIGKILL the child (if it still runs) and return its wait status."""
        with contextlib.suppress(ProcessLookupError):  # a zombie until waitpid, so never really
            os.kill(self.pid, signal.SIGKILL)
        self.conn.close()
        _, status = os.waitpid(self.pid, 0)
        return status


def serve(fd: int, budget: float) -> None:
    """The worker's loop: relay requests to a compile child until the parent closes `fd`."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the parent; it stops us by closing
    conn = connection.Connection(fd)
    with tempfile.TemporaryFile() as stderr:  # the child's stderr: rego-cpp's last words
        child: Child | None = Child(stderr.fileno(), fd)
        conn.send_bytes(READY)
        while True:
            try:
                frame = conn.recv_bytes()
            except (EOFError, OSError):
                break
            try:
                if child is not None and not child.alive_and_idle():
                    child.reap()  # died while idle (the OOM killer, an operator): not this policy's doing
                    child = None
                if child is None:
                    child = Child(stderr.fileno(), fd)
                os.ftruncate(stderr.fileno(), 0)
                os.lseek(stderr.fileno(), 0, os.SEEK_SET)
                reply = child.compile(frame, budget)
                if reply is None:
                    ended, child = child, None
                    reply = _ending(ended, stderr.fileno(), budget)
            except Exception as e:  # cannot fork, a broken pipe: the worker's problem, not the policy's
                reply = encode_reply({"error": f"{type(e).__name__}: {e}"})
            try:
                conn.send_bytes(reply)
            except OSError:  # the parent is gone
                break
            if child is None:
                with contextlib.suppress(OSError):  # else the next request forks it, or reports why not
                    child = Child(stderr.fileno(), fd)  # ready before the next request
        if child is not None:
            child.reap()


def _ending(child: Child, stderr_fd: int, budget: float) -> bytes:
    """Reap a compile child that did not answer; the reply that says how it ended."""
    status = child.reap()
    if child.missed_budget:
        return encode_reply({"timeout": budget})
    size = os.fstat(stderr_fd).st_size
    detail = _last_words(os.pread(stderr_fd, _STDERR_TAIL, max(0, size - _STDERR_TAIL)))
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        try:
            why = f"signal {number}, {signal.Signals(number).name}"
        except ValueError:  # a real-time signal has no name
            why = f"signal {number}"
        return encode_reply({"crashed": why, "detail": detail})
    return encode_reply({"crashed": f"exit status {os.WEXITSTATUS(status)}", "detail": detail})


def _child_main(sock: socket.socket, worker: int, stderr_fd: int, parent_fd: int) -> None:
    """Run in the forked compile child: answer requests until EOF; never returns."""
    code = 0
    try:
        os.close(parent_fd)  # only the worker talks to the parent (no finalizer runs here: we _exit)
        os.dup2(stderr_fd, 2)  # rego-cpp's last words before an abort, for the report
        os.dup2(stderr_fd, 1)  # and anything it prints, away from the worker's stdout
        if sys.platform == "linux":  # a compile never outlives its worker
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != worker:
            os._exit(1)
        conn = connection.Connection(sock.detach())
        while True:
            try:
                frame = conn.recv_bytes()
            except EOFError:
                break
            conn.send_bytes(_compile(decode_request(frame)))
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        os._exit(code)


def _compile(request: bundler.Request) -> bytes:
    try:
        built = bundler.build(request)
    except errors.SpecInvalid as e:
        return encode_reply({"problems": [dataclasses.asdict(p) for p in e.problems]})
    except Exception as e:  # a rego-cpp surprise that did not crash: still this policy's problem
        problems = bundler.problems_of(request, [f"the Rego compiler failed on this policy: {e}"])
        return encode_reply({"problems": [dataclasses.asdict(p) for p in problems]})
    return encode_reply({"package": built.package, "query": built.query}, built.bundle)


def _last_words(stderr: bytes) -> str:
    """What rego-cpp said before dying: its exception's `what()`, else the last line."""
    lines = [line.strip() for line in stderr.decode("utf-8", "replace").splitlines() if line.strip()]
    for line in reversed(lines):
        if line.startswith("what():"):
            return line.removeprefix("what():").strip()[:300]
    return lines[-1][:300] if lines else ""
