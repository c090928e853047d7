"""`fibric serve` as a real subprocess, for the tests that start, stop or kill one.

Its stderr is read line by line in a thread, so a test can wait for a line
(the URL, the bootstrap key) while the server keeps running.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

RUNNING = re.compile(r"Uvicorn running on (http://127\.0\.0\.1:\d+)")
START_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0


class Served:
    """A `fibric serve --port 0` process, with no FIBRIC_* variables but those in `env`."""

    def __init__(self, args: list[str], cwd: Path, env: dict[str, str] | None = None) -> None:
        base = {k: v for k, v in os.environ.items() if not k.startswith("FIBRIC_")}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "fibric.cli", "serve", "--port", "0", *args],
            cwd=cwd, env={**base, **(env or {})}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        stream = self.process.stderr
        if stream is None:
            return
        with stream:
            for line in stream:
                self._queue.put(line)
        self._queue.put(None)

    def wait_for(self, pattern: re.Pattern[str], timeout: float = START_TIMEOUT) -> re.Match[str] | None:
        """The first stderr match of `pattern`; None if the process ends first."""
        deadline = time.monotonic() + timeout
        for line in self.lines:
            if found := pattern.search(line):
                return found
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no {pattern.pattern!r} on stderr within {timeout}s:\n{self.text}")
            try:
                line = self._queue.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                self._queue.put(None)  # the end stays visible to later waits
                return None
            self.lines.append(line)
            if found := pattern.search(line):
                return found

    @property
    def text(self) -> str:
        """Everything on stderr so far."""
        self._collect()
        return "".join(self.lines)

    def _collect(self) -> None:
        while True:
            try:
                line = self._queue.get_nowait()
            except queue.Empty:
                return
            if line is None:
                self._queue.put(None)
                return
            self.lines.append(line)

    def finish(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM, then the exit code; the whole stderr is collected."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=timeout)
        self._reader.join(timeout=timeout)
        self._collect()
        return code

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=STOP_TIMEOUT)
        self._reader.join(timeout=STOP_TIMEOUT)  # EOF follows exit; the reader closes the pipe
