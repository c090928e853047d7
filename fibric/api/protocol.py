"""Requests that are not valid HTTP get the reference's error body too, not uvicorn's plain text.

uvicorn answers what h11 cannot parse (a garbage request line, a header
block over the size limit, a bad Content-Length) itself, before any ASGI
app runs, with a text/plain 400 and no request id. `FibricH11Protocol`
answers in the API's one error shape instead (error_responses.error_response, the
same renderer the app uses), with a fresh `Request-Id`:

- a request line plus headers over `MAX_HEADER_BYTES` (64 KiB), however
  the bytes arrive, is 431 Request Header Fields Too Large, code
  `invalid_request`, naming the limit;
- anything else h11 refuses is 400 `invalid_request`, with h11's reason.

The connection is then closed, but gently ("lingering close"): we stop
sending, then read and discard what the client is still sending (up to
`LINGER_BYTES`, for up to `LINGER_SECONDS`) before closing. Closing a socket
with unread data resets it, and a client still writing its oversized request
would then see the reset instead of our answer.

Pass both to uvicorn where it is configured: `uvicorn.Config(app,
http=protocol.FibricH11Protocol, h11_max_incomplete_event_size=protocol.MAX_HEADER_BYTES)`.
h11 is the only HTTP implementation Fibric installs (httptools is not).
"""

from __future__ import annotations

import asyncio
import logging
import re
import sys

import h11
from h11._connection import DEFAULT_MAX_INCOMPLETE_EVENT_SIZE
from uvicorn.protocols.http.h11_impl import STATUS_PHRASES, H11Protocol

from fibric import ids
from fibric.api import error_responses

# The request line and headers together: far above what any client of the API sends
# (a key, an Idempotency-Key, a few standard headers), and small enough that a
# connection cannot make the server buffer much before it is refused.
MAX_HEADER_BYTES = 64 * 1024
LINGER_SECONDS = 5.0
LINGER_BYTES = 4 * 1024 * 1024
END_OF_HEAD = re.compile(rb"\n\r?\n")  # the blank line after the headers, as h11 finds it
REASON_CHARS = 200  # of h11's reason, which may quote the offending bytes

log = logging.getLogger("fibric.api")


class FibricH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, answering protocol errors with the reference's error body."""

    _lingering = False
    _lingered = 0
    _linger_timer: asyncio.TimerHandle | None = None

    def send_400_response(self, msg: str) -> None:
        # uvicorn calls this from inside its `except h11.RemoteProtocolError`, so the
        # error being handled is the one h11 raised, with its status hint (431 for size).
        error = sys.exception()
        if isinstance(error, h11.RemoteProtocolError) and error.error_status_hint == 431:
            self._refuse_oversized_head(error)
            return
        reason = str(error)[:REASON_CHARS] if error is not None else msg
        self._refuse(400, f"The request is not valid HTTP/1.1: {reason}.", error or msg)

    def data_received(self, data: bytes) -> None:
        if self._lingering:
            self._lingered += len(data)
            if self._lingered > LINGER_BYTES:
                self.transport.close()
            return
        if self.conn.their_state is h11.IDLE and self._head_over_limit(data):
            self._unset_keepalive_if_required()
            self._refuse_oversized_head("request head over the limit")
            return
        super().data_received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._linger_timer is not None:
            self._linger_timer.cancel()
        super().connection_lost(exc)

    def _head_over_limit(self, data: bytes) -> bool:
        """Whether the request head being received does not end within the limit.

        h11 checks its limit only while the head is incomplete, so a head that
        arrives whole in one read (up to 256 KiB) would pass; this holds it to
        the limit whatever the reads.
        """
        limit = self._max_header_bytes()
        buffered, _ = self.conn.trailing_data
        if len(buffered) + len(data) <= limit:
            return False
        return END_OF_HEAD.search((buffered + data)[:limit]) is None

    def _refuse_oversized_head(self, cause: object) -> None:
        self._refuse(431, f"The request line and headers are larger than the limit of "
                          f"{self._max_header_bytes()} bytes.", cause)

    def _refuse(self, status: int, message: str, cause: object) -> None:
        """Send the error response if the connection still can, then close it (lingering)."""
        rid = ids.new_id("request")
        log.info("request %s refused before routing: %s %s", rid, status, cause)
        if self.cycle is not None and not self.cycle.response_complete:
            # An app is running on this request: it is told the client left, and its sends are dropped.
            self.cycle.disconnected = True
            self.cycle.message_event.set()
        if self.conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):  # a response is already under way
            self.transport.close()
            return
        response = error_responses.error_response(rid, status, "invalid_request", message,
                                                  headers={"Connection": "close"})
        headers = self.server_state.default_headers + response.raw_headers
        for event in (h11.Response(status_code=status, headers=headers, reason=STATUS_PHRASES[status]),
                      h11.Data(data=bytes(response.body)), h11.EndOfMessage()):
            self.transport.write(self.conn.send(event))
        self._linger()

    def _linger(self) -> None:
        if not self.transport.can_write_eof():  # TLS: no half-close
            self.transport.close()
            return
        self._lingering = True
        self.transport.write_eof()  # sent once the response has been written
        self.flow.resume_reading()
        self._linger_timer = self.loop.call_later(LINGER_SECONDS, self.transport.close)

    def _max_header_bytes(self) -> int:
        configured = self.config.h11_max_incomplete_event_size
        return configured if configured is not None else DEFAULT_MAX_INCOMPLETE_EVENT_SIZE
