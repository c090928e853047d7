"""A minimal HTTP/1.1 receiver for bench_webhooks.py: answers 200 and logs (event id, arrival time).

Runs as its own process so it does not share the dispatcher's GIL. GET /log
returns the log as JSON and clears it. Usage: python webhook_receiver.py PORT
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

LOG: list[tuple[str, float]] = []


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method = lines[0].split(" ", 1)[0]
            length = 0
            for line in lines[1:]:
                name, _, value = line.partition(":")
                if name.lower() == "content-length":
                    length = int(value)
            body = await reader.readexactly(length) if length else b""
            if method == "GET":
                payload = json.dumps(LOG).encode()
                LOG.clear()
            else:
                try:
                    LOG.append((json.loads(body)["id"], time.time()))
                except (ValueError, KeyError):
                    LOG.append(("?", time.time()))
                payload = b"ok"
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(payload) + payload)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def main(port: int) -> None:
    server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=512)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
