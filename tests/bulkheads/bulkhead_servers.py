"""Real servers on loopback for the bulkhead tests: three that misbehave, and B's webhook receiver.

- `SilentDns` reads DNS queries over UDP and never answers one (the
  installation's FIBRIC_DNS_NAMESERVERS points at it, so a host of tenant A's
  never resolves: every lookup waits its whole FIBRIC_DNS_TIMEOUT_MS).
- `Blackhole` accepts TCP connections, reads, and never writes a byte (A's
  webhook receiver, and the MCP server of an A connector whose connect hangs).
- `StalledMcp` runs stalled_mcp_server.py: a real MCP server over
  streamable HTTP whose tool calls never answer.
- `Receiver` is tenant B's webhook endpoint: it verifies every delivery's
  signature and records it, keyed by `webhook-id`.
"""

from __future__ import annotations

import contextlib
import os
import re
import selectors
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

from fibric import webhooks

STALLED_SERVER = Path(__file__).resolve().parent / "stalled_mcp_server.py"




class SilentDns:
    """A real UDP DNS server on loopback that reads every query and never answers one."""

    def __init__(self) -> None:
        self.queries = 0
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.port = int(self.sock.getsockname()[1])
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="silent-dns", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                self.sock.recvfrom(4096)
            except OSError:
                continue
            self.queries += 1

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()


class Blackhole:
    """A TCP server on loopback that accepts every connection, reads what comes, and never answers."""

    def __init__(self) -> None:
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(512)
        self.listener.setblocking(False)
        self.port = int(self.listener.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self.accepted = 0
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._selector = selectors.DefaultSelector()
        self._selector.register(self.listener, selectors.EVENT_READ)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="blackhole", daemon=True)
        self._thread.start()

    @property
    def open_connections(self) -> int:
        with self._lock:
            return len(self._open)

    def _serve(self) -> None:
        while not self._stop.is_set():
            for key, _ in self._selector.select(timeout=0.1):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                if sock is self.listener:
                    with contextlib.suppress(BlockingIOError):
                        conn, _ = self.listener.accept()
                        conn.setblocking(False)
                        self._selector.register(conn, selectors.EVENT_READ)
                        with self._lock:
                            self._open.add(conn)
                            self.accepted += 1
                    continue
                try:
                    data = sock.recv(65536)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    data = b""
                if not data:  # the client gave up: forget the connection
                    self._selector.unregister(sock)
                    sock.close()
                    with self._lock:
                        self._open.discard(sock)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        with self._lock:
            for conn in self._open:
                conn.close()
            self._open.clear()
        self._selector.close()
        self.listener.close()


class StalledMcp:
    """stalled_mcp_server.py in a subprocess: lists its tool, never answers a call of it."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(STALLED_SERVER)], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
            text=True, env={"PATH": os.environ["PATH"]},
        )
        assert self.process.stderr is not None
        line = self.process.stderr.readline()
        found = re.search(r"(http://\S+)", line)
        if found is None:
            self.close()
            raise RuntimeError(f"the stalled MCP server did not start: {line!r}")
        self.url = found.group(1)

    def in_flight(self) -> int:
        """Calls the server is holding right now."""
        return int(httpx.get(self.url.removesuffix("/mcp") + "/inflight", timeout=5).text)

    def close(self) -> None:
        self.process.kill()
        self.process.wait(timeout=10)
        if self.process.stderr is not None:
            self.process.stderr.close()


@dataclass
class Delivery:
    webhook_id: str  # the `webhook-id` header: one per event, the same on every retry
    event: dict[str, Any]  # verified against the signing secret


class Receiver:
    """B's webhook receiver on loopback: verifies each delivery's signature and records it."""

    def __init__(self) -> None:
        self.secret = ""  # set once B's webhook is applied (shown once)
        self.deliveries: list[Delivery] = []
        self.rejected: list[str] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                receiver.record(body, dict(self.headers.items()))
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            request_queue_size = 256
            daemon_threads = True

        self.server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks"
        self._thread = threading.Thread(target=self.server.serve_forever, name="receiver", daemon=True)
        self._thread.start()

    def record(self, body: bytes, headers: dict[str, str]) -> None:
        lower = {k.lower(): v for k, v in headers.items()}
        try:
            event = webhooks.verify(body, lower.get("fibric-signature", ""), self.secret)
        except Exception as e:  # recorded, and the test fails on it
            with self._lock:
                self.rejected.append(f"{type(e).__name__}: {e}")
            return
        with self._lock:
            self.deliveries.append(Delivery(lower.get("webhook-id", ""), event))

    def receipts(self) -> dict[str, list[dict[str, Any]]]:
        """receipt.created deliveries, deduplicated by webhook-id: receipt id -> the events naming it."""
        with self._lock:
            seen: dict[str, Delivery] = {}
            for d in self.deliveries:
                seen.setdefault(d.webhook_id, d)
        found: dict[str, list[dict[str, Any]]] = {}
        for d in seen.values():
            if d.event.get("type") == "receipt.created":
                found.setdefault(d.event["data"]["id"], []).append(d.event)
        return found

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)


class RecordingExecutor(ThreadPoolExecutor):
    """A default executor that remembers what was submitted to it."""

    def __init__(self) -> None:
        super().__init__(1, thread_name_prefix="default-executor")
        self.submitted: list[str] = []

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        self.submitted.append(getattr(fn, "__qualname__", repr(fn)))
        return super().submit(fn, *args, **kwargs)


def start_stuck_write(url: str, key: str) -> threading.Thread:
    """A client posting one event in a thread of its own, which waits while the store's writes do."""

    def post() -> None:
        with contextlib.suppress(httpx.HTTPError), httpx.Client(
                base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as http:
            http.post("/v1/events", json={"type": "t.stuck", "entity_key": "e:2",
                                          "idempotency_key": "stuck", "data": {}})

    stuck = threading.Thread(target=post, daemon=True)
    stuck.start()
    return stuck


def alive(pid: int) -> bool:
    """Whether process `pid` still runs (a zombie does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")
