"""`fibric serve` as a real subprocess, for the crash matrix: start, read its URL and key, kill."""

from __future__ import annotations

import os
import queue
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

RUNNING = re.compile(r"Uvicorn running on (http://127\.0\.0\.1:\d+)")
KEY = re.compile(r"FIBRIC_KEY=(sk_live_[0-9a-f]+)")
START_TIMEOUT = 60.0


class Served:
    """A `fibric serve` process whose stderr is collected line by line in a thread."""

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

    def wait_for(self, pattern: re.Pattern[str], timeout: float = START_TIMEOUT) -> re.Match[str]:
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
                raise AssertionError(f"fibric serve exited before {pattern.pattern!r}:\n{self.text}")
            self.lines.append(line)
            if found := pattern.search(line):
                return found

    @property
    def text(self) -> str:
        while True:
            try:
                line = self._queue.get_nowait()
            except queue.Empty:
                break
            if line is not None:
                self.lines.append(line)
        return "".join(self.lines)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=20)
        self._reader.join(timeout=20)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.terminate()
        code = self.process.wait(timeout=30)
        self._reader.join(timeout=20)
        return code
