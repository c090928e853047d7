"""An ASGI app under a real uvicorn on loopback, for tests that need real HTTP.

Shared by every test folder (tests/ is on the import path through its
conftest.py), so there is one way to start and stop a live server.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn

from fibric.api import protocol

START_TIMEOUT = 30.0


@contextmanager
def serving(app: Any) -> Iterator[str]:
    """`app` served by uvicorn on 127.0.0.1 and a free port, lifespan on, in a thread; yields the base URL."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None, lifespan="on",
                                           # as `fibric serve` configures it (fibric/cli/serve.py)
                                           http=protocol.FibricH11Protocol,
                                           h11_max_incomplete_event_size=protocol.MAX_HEADER_BYTES))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + START_TIMEOUT
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=START_TIMEOUT)
