"""A fixed number of evaluation worker processes, each killable at a deadline.

Callers check a worker out (waiting at most until their wait bound), send it
one evaluation and wait for the answer until the decision's deadline. A
worker that misses the deadline is SIGKILLed on the spot, so its CPU stops at
the deadline, and one that dies mid-evaluation (a rego-cpp abort) is dropped;
either way the pool's supervisor thread forks a replacement from the zygote
in the background. A caller that crashed its worker gets its failure at
once; one whose deadline killed it gets its failure once the replacement is
up (at most REPLACEMENT_WAIT_SECONDS), so the tenant slot it holds meanwhile
keeps a runaway policy from taking the last live worker from other tenants.

The parent mirrors each worker's bundle LRU, so a bundle crosses the pipe only
the first time a worker evaluates that policy version (and again if the
worker says it no longer holds it). Loading a bundle is not evaluating it: it
is sent on its own first, with its own bound (LOAD_SECONDS), and the
decision's time budget starts once the worker holds it. So the first decision
after a start, a new policy version or a replaced worker is not refused because
the worker was still loading (on a busy 2-CPU machine that took more than the
default 100 ms), and a runaway evaluation is still stopped at its deadline.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
import os
import queue
import select
import signal
import threading
import time
from multiprocessing import connection
from typing import Any

from fibric.policies import engine, failures, fifo, regoworker, zygote

log = logging.getLogger(__name__)

_SPAWN, _STOP = "spawn", "stop"
REPLACEMENT_WAIT_SECONDS = 1.0  # the longest a caller that killed a worker waits for its replacement
LOAD_SECONDS = 2.0  # the longest a worker may take to load a bundle it is sent (then it is killed)


class WorkerLost(Exception):
    """The worker's pipe broke: the process died (crashed or was killed) mid-evaluation."""


class Crashed(failures.EngineError):
    """What a caller sees when its worker died mid-evaluation: an engine failure, so BLOCK."""


class Worker:
    """The engine's handle on one worker process; evaluations from one thread at a time."""

    def __init__(self, pid: int, conn: connection.Connection, capacity: int) -> None:
        self.pid = pid
        self._conn = conn
        self._capacity = capacity
        self._loaded: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._lock = threading.Lock()  # kill()/wait_gone() may come from close() on another thread
        try:  # a pidfd never signals a recycled pid; plain kill() where the kernel has none
            self._pidfd: int | None = os.pidfd_open(pid)
        except (AttributeError, OSError):
            self._pidfd = None

    def wait_ready(self, timeout: float) -> None:
        """Block until the worker has its interpreter; WorkerLost if it does not come up."""
        try:
            if self._conn.poll(timeout) and self._conn.recv_bytes() == regoworker.READY:
                return
        except (EOFError, OSError) as e:
            raise WorkerLost(f"policy worker {self.pid} exited while starting") from e
        raise WorkerLost(f"policy worker {self.pid} did not start within {timeout:.0f} s")

    def exchange(self, key: str, bundle: bytes, input_json: bytes, timeout: float) -> dict[str, Any]:
        """The worker's reply for one evaluation; failures.Timeout `timeout` after the worker holds the
        bundle (then kill it)."""
        for _ in range(2):  # a second time when the worker had evicted the bundle after all
            if key not in self._loaded:
                self._send(regoworker.request(key, None, bundle))
                loaded = self._receive(time.monotonic() + LOAD_SECONDS)
                if not loaded.get("loaded"):  # it did not load (a corrupt or empty bundle): the answer
                    return loaded
            self._remember(key)
            self._send(regoworker.request(key, input_json, None))
            reply = self._receive(time.monotonic() + timeout)
            if not reply.get("missing"):
                return reply
            self._loaded.pop(key, None)
        return {"failure": failures.EngineError.cause, "detail": "the worker does not keep the bundle"}

    def idle_and_alive(self) -> bool:
        """False if the worker died while idle (an idle worker never has anything to read but EOF)."""
        try:
            return not self._conn.poll(0)
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL the process now (nothing happens if it is already gone)."""
        with self._lock:
            try:
                if self._pidfd is not None:
                    signal.pidfd_send_signal(self._pidfd, signal.SIGKILL)
                else:
                    os.kill(self.pid, signal.SIGKILL)
            except OSError:  # ProcessLookupError included: it already exited
                pass

    def wait_gone(self, timeout: float) -> bool:
        """Whether the process has exited within `timeout` (only knowable with a pidfd)."""
        with self._lock:
            if self._pidfd is None:
                return False
            watched = os.dup(self._pidfd)
        try:
            readable, _, _ = select.select([watched], [], [], max(0.0, timeout))
        finally:
            os.close(watched)
        return bool(readable)

    def close(self) -> None:
        """Release the pipe and the pidfd (kill first if the process must stop)."""
        self._conn.close()
        with self._lock:
            if self._pidfd is not None:
                os.close(self._pidfd)
                self._pidfd = None

    def _send(self, frame: bytes) -> None:
        try:
            self._conn.send_bytes(frame)
        except OSError as e:
            raise WorkerLost(f"policy worker {self.pid} is gone: {e}") from e

    def _receive(self, deadline: float) -> dict[str, Any]:
        remaining = deadline - time.monotonic()
        try:
            if remaining <= 0 or not self._conn.poll(remaining):
                raise failures.Timeout(f"policy worker {self.pid} was killed to stop the evaluation")
            data = self._conn.recv_bytes()
        except (EOFError, OSError) as e:
            raise WorkerLost(f"policy worker {self.pid} died mid-evaluation (rego-cpp crashed or "
                             "the process was killed)") from e
        try:
            reply = json.loads(data)
        except ValueError:
            reply = None
        if not isinstance(reply, dict):
            raise WorkerLost(f"policy worker {self.pid} answered {data[:200]!r}")
        return reply

    def _remember(self, key: str) -> None:
        """Mirror the worker's LRU of loaded bundles (rego.Session evicts the same way)."""
        self._loaded[key] = None
        self._loaded.move_to_end(key)
        while len(self._loaded) > self._capacity:
            self._loaded.popitem(last=False)


class WorkerPool:
    """`size` worker processes from one zygote, replaced in the background when they die."""

    def __init__(self, size: int, *, bundles_per_worker: int = 64, start_timeout: float = 30.0) -> None:
        if size < 1:
            raise ValueError("a worker pool needs at least one worker")
        self.size = size
        self._capacity = bundles_per_worker
        self._start_timeout = start_timeout
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)  # start-up and replacements; callers queue in _waiters
        self._waiters: fifo.Waiters[Worker] = fifo.Waiters(self._lock)
        self._idle: collections.deque[Worker] = collections.deque()
        self._live: set[Worker] = set()
        self._closed = False
        self._zygote: zygote.Zygote | None = None
        self._requests: queue.SimpleQueue[str] = queue.SimpleQueue()
        self._stopping = threading.Event()
        self.counters: collections.Counter[str] = collections.Counter()
        self._thread = threading.Thread(target=self._supervise, name="fibric-policy-workers", daemon=True)
        self._thread.start()
        for _ in range(size):
            self._requests.put(_SPAWN)
        with self._cond:
            self._cond.wait_for(lambda: len(self._idle) >= size or self._closed, timeout=start_timeout)
            if len(self._idle) < size:
                log.warning("only %d of %d policy workers started within %.0f s; decisions wait or BLOCK "
                            "until the rest are up", len(self._idle), size, start_timeout)

    def evaluate(
        self, key: str, bundle: bytes, input_json: bytes, *, wait_until: float, timeout: float
    ) -> engine.Outcome:
        """The outcome from a free worker: Busy past `wait_until`, Timeout `timeout` after it has one."""
        reply, queued = self._exchange(key, bundle, input_json, wait_until=wait_until, timeout=timeout)
        return dataclasses.replace(_outcome(reply), queued=queued)

    def evaluate_many(
        self, key: str, bundle: bytes, inputs_json: bytes, *, wait_until: float, timeout: float
    ) -> list[engine.Outcome | failures.PolicyFailure]:
        """Each input's outcome (or failure) from one worker, in one exchange (regoworker.encode_many);
        `timeout` bounds the whole batch. A failure of the batch itself raises, as `evaluate`'s does."""
        reply, _ = self._exchange(key, bundle, inputs_json, wait_until=wait_until, timeout=timeout)
        if "many" not in reply:  # the bundle did not load, or the request was refused: every input fails
            _outcome(reply)
            raise failures.EngineError(f"unexpected reply to a batch: {str(reply)[:200]}")
        results: list[engine.Outcome | failures.PolicyFailure] = []
        for item in reply["many"]:
            try:
                results.append(_outcome(item))
            except failures.PolicyFailure as e:
                results.append(e)
        return results

    def _exchange(
        self, key: str, bundle: bytes, input_json: bytes, *, wait_until: float, timeout: float
    ) -> tuple[dict[str, Any], float]:
        """One request to a free worker: its reply and how long the caller waited for the worker."""
        asked = time.monotonic()
        worker = self._acquire(wait_until)
        acquired = time.monotonic()
        try:
            reply = worker.exchange(key, bundle, input_json, timeout)
        except failures.Timeout:
            self._discard(worker, "killed")  # kills it first: its CPU stops at the deadline
            self._await_replacement()  # meanwhile the caller's tenant slot stays taken: see below
            raise
        except WorkerLost as e:
            self._discard(worker, "died")
            raise Crashed(str(e)) from None
        except BaseException:
            self._discard(worker, "failed")  # its pipe may hold a half-read answer: never reuse it
            raise
        self._release(worker)
        return reply, acquired - asked

    def pids(self) -> list[int]:
        """The live workers' pids, and the zygote's first (for tests and metrics)."""
        with self._lock:
            workers = sorted(w.pid for w in self._live)
            zygote_pid = self._zygote.pid if self._zygote is not None else None
        return ([zygote_pid] if zygote_pid else []) + workers

    def close(self, timeout: float = 5.0) -> None:
        """Kill every worker and the zygote now; returns once they are gone (or `timeout`)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            workers, idle = list(self._live), list(self._idle)
            self._idle.clear()
            self._cond.notify_all()
            self._waiters.wake_all()
        self._stopping.set()
        self._requests.put(_STOP)
        for worker in workers:
            worker.kill()
        ends = time.monotonic() + timeout
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)
        for worker in workers:
            worker.wait_gone(ends - time.monotonic())
        for worker in idle:  # a checked-out worker is closed by the caller holding it
            worker.close()
        with self._lock:
            spawner, self._zygote = self._zygote, None
        if spawner is not None:
            spawner.close(max(0.1, ends - time.monotonic()))

    def _acquire(self, wait_until: float) -> Worker:
        while True:
            with self._lock:
                if self._closed:
                    raise failures.Busy("the policy engine is closed")
                if self._idle and not self._waiters:
                    worker: Worker | None = self._idle.popleft()
                else:
                    _, worker = self._waiters.wait(wait_until, lambda: self._closed)
                if worker is None:
                    raise failures.Busy(
                        "the policy engine is closed" if self._closed else
                        f"no policy worker was free within the wait bound ({len(self._live)} of "
                        f"{self.size} running, all busy); FIBRIC_POLICY_WORKERS sizes the pool")
            if worker.idle_and_alive():
                return worker
            self._discard(worker, "died")  # killed or crashed while idle: not this decision's problem

    def _await_replacement(self, timeout: float = REPLACEMENT_WAIT_SECONDS) -> None:
        """Return once the pool is back to full size (or `timeout`), after this caller killed a worker.

        Its caller still holds its tenant's slot (fairness.py), so a tenant whose policy keeps
        running to its deadline cannot take the last live worker while the one it cost is being
        replaced: its cap counts the workers it costs, not only the evaluations it has running.
        """
        with self._cond:
            self._cond.wait_for(lambda: len(self._live) >= self.size or self._closed, timeout=timeout)

    def _release(self, worker: Worker) -> None:
        with self._lock:
            if not self._closed:
                self._offer(worker)
                return
        worker.close()

    def _offer(self, worker: Worker) -> None:
        """Hand a ready worker to the oldest waiter, or park it (lock held)."""
        if not self._waiters.hand(worker):
            self._idle.append(worker)
            self._cond.notify()

    def _discard(self, worker: Worker, why: str) -> None:
        worker.kill()
        worker.close()
        with self._lock:
            self._live.discard(worker)
            self.counters[why] += 1
            if self._closed:
                return
        self._requests.put(_SPAWN)

    def _supervise(self) -> None:
        """Start workers on request, one at a time, restarting the zygote when it is gone."""
        delay = 0.1
        while self._requests.get() != _STOP and not self._stopping.is_set():
            try:
                worker = self._spawn()
            except Exception as e:
                log.warning("cannot start a policy worker (retrying in %.1f s): %s", delay, e)
                self._requests.put(_SPAWN)
                if self._stopping.wait(delay):
                    return
                delay = min(delay * 2, 5.0)
                continue
            delay = 0.1
            with self._lock:
                if not self._closed:
                    self._live.add(worker)
                    self.counters["started"] += 1
                    self._offer(worker)
                    self._cond.notify_all()  # callers waiting out a replacement (_await_replacement)
                    continue
            worker.kill()
            worker.close()

    def _spawn(self) -> Worker:
        with self._lock:
            spawner = self._zygote
        if spawner is None:
            spawner = zygote.Zygote(reply_timeout=self._start_timeout)
            with self._lock:
                closed = self._closed  # close() may have run while the zygote was starting
                if not closed:
                    self._zygote = spawner
            if closed:
                spawner.close()
                raise OSError("the pool closed while starting")
        try:
            pid, conn = spawner.spawn(self._capacity)
        except OSError:
            with self._lock:
                if self._zygote is spawner:
                    self._zygote = None
            spawner.close()
            raise
        worker = Worker(pid, conn, self._capacity)
        try:
            worker.wait_ready(self._start_timeout)
        except WorkerLost:
            worker.kill()
            worker.close()
            raise
        return worker


def _outcome(reply: dict[str, Any]) -> engine.Outcome:
    if "value" in reply:
        return engine.Outcome(defined=True, value=reply["value"])
    if reply.get("undefined"):
        return engine.UNDEFINED
    cause, detail = reply.get("failure"), str(reply.get("detail", ""))
    raise _FAILURES.get(str(cause), failures.EngineError)(detail)


_FAILURES: dict[str, type[failures.PolicyFailure]] = {
    kind.cause: kind for kind in (failures.EvalError, failures.InputInvalid, failures.EngineError)
}
