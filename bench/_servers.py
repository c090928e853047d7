"""Start servers for benchmarks as real subprocesses on loopback, and read their memory."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def peak_rss_mib(pid: int) -> float:
    """VmHWM: the process's peak resident set size."""
    text = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"VmHWM:\s+(\d+) kB", text)
    return int(match.group(1)) / 1024 if match else float("nan")


@contextlib.contextmanager
def fibric_serve(data_dir: Path, *args: str) -> Iterator[tuple[subprocess.Popen[str], str, str]]:
    """`fibric serve` on a fresh data dir, with extra flags; yields (process, base URL, bootstrap key)."""
    port = free_port()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "fibric.cli", "serve", "--data-dir", str(data_dir), "--port", str(port),
         *args],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )
    key = None
    deadline = time.monotonic() + 30
    assert proc.stdout is not None
    while key is None and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        found = re.search(r"(sk_live_[0-9a-f]+)", line)
        key = found.group(1) if found else None
    if key is None:
        proc.kill()
        raise RuntimeError("fibric serve printed no bootstrap key")
    url = f"http://127.0.0.1:{port}"
    wait_until_up(url)
    try:
        yield proc, url, key
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@contextlib.contextmanager
def python_server(script: Path, *args: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(script), str(port), *args], text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(url)
        yield proc, url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def wait_until_up(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx.get(url + "/healthz", timeout=1.0)
            return
        except httpx.HTTPError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not come up")
