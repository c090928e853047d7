"""What uvicorn refuses before the app runs still reads as the reference's error, on the wire.

A header block over the limit, or bytes that are not HTTP at all, never
reach an ASGI app; fibric/api/protocol.py answers them in the same JSON shape
as every other error, with a Request-Id, and closes the connection.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any

import h11
import httpx
import pytest
from live_server import serving

from fibric import store
from fibric.api import error_responses, protocol

TIMEOUT = 20.0


@pytest.fixture
def server(app: Any) -> Iterator[str]:
    with serving(app) as url:
        yield url


@pytest.fixture
def key(state: store.StateStore, tenant: store.Tenant) -> str:
    _, secret = state.create_api_key(tenant.id, frozenset(store.SCOPES))
    return secret


def address(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").split(":")
    return host, int(port)


def read_response(sock: socket.socket, conn: h11.Connection) -> tuple[h11.Response, bytes]:
    """The next whole response on `sock`, parsed by h11 as a client would."""
    response: h11.Response | None = None
    body = b""
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(sock.recv(65536))
        elif isinstance(event, h11.Response):
            response = event
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            assert response is not None
            return response, body
        else:
            raise AssertionError(f"unexpected {event!r}")


def assert_reference_error(status: int, headers: httpx.Headers, body: bytes) -> dict[str, str]:
    """The body is errors.py's shape exactly, and its request id is the Request-Id header's."""
    assert headers["content-type"] == "application/json"
    assert headers["connection"] == "close"
    detail = json.loads(body)["error"]
    assert set(detail) == {"code", "message", "request_id", "docs"}
    assert detail["code"] == "invalid_request"
    assert detail["docs"] == error_responses.DOCS_URL + "invalid_request"
    assert detail["request_id"].startswith("req_")
    assert headers[error_responses.REQUEST_ID_HEADER] == detail["request_id"]
    return detail


def test_headers_over_the_limit_get_431_in_the_reference_shape(server: str) -> None:
    # httpx writes the whole megabyte before it reads: the server drains it to be heard.
    response = httpx.get(server + "/v1/operators", headers={"X-Padding": "a" * 1024 * 1024},
                         timeout=TIMEOUT)
    assert response.status_code == 431
    detail = assert_reference_error(response.status_code, response.headers, response.content)
    assert str(protocol.MAX_HEADER_BYTES) in detail["message"]


def test_an_oversized_header_closes_the_connection(server: str) -> None:
    with socket.create_connection(address(server), timeout=TIMEOUT) as sock:
        sock.sendall(b"GET /v1/operators HTTP/1.1\r\nHost: x\r\nX-Padding: "
                     + b"a" * (protocol.MAX_HEADER_BYTES + 1) + b"\r\n\r\n")
        conn = h11.Connection(h11.CLIENT)
        conn.send(h11.Request(method="GET", target="/", headers=[("Host", "x")]))
        response, body = read_response(sock, conn)
        assert response.status_code == 431
        assert_reference_error(431, httpx.Headers(response.headers), body)
        assert sock.recv(65536) == b""  # closed after the answer


def test_a_garbage_request_line_gets_400_in_the_reference_shape(server: str) -> None:
    with socket.create_connection(address(server), timeout=TIMEOUT) as sock:
        sock.sendall(b"THIS IS NOT HTTP\r\n\r\n")
        conn = h11.Connection(h11.CLIENT)
        conn.send(h11.Request(method="GET", target="/", headers=[("Host", "x")]))
        response, body = read_response(sock, conn)
        assert response.status_code == 400
        detail = assert_reference_error(400, httpx.Headers(response.headers), body)
        assert "not valid HTTP/1.1" in detail["message"]
        assert sock.recv(65536) == b""


def test_normal_requests_share_a_keep_alive_connection(server: str, key: str) -> None:
    ask = (f"GET /v1/operators HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
           f"X-Padding: {'a' * (protocol.MAX_HEADER_BYTES // 2)}\r\n\r\n").encode()
    with socket.create_connection(address(server), timeout=TIMEOUT) as sock:
        conn = h11.Connection(h11.CLIENT)
        for _ in range(2):  # one socket, two requests: the first left it open
            conn.send(h11.Request(method="GET", target="/v1/operators", headers=[("Host", "x")]))
            conn.send(h11.EndOfMessage())
            sock.sendall(ask)
            response, body = read_response(sock, conn)
            assert response.status_code == 200, body
            assert json.loads(body)["data"] == []
            assert dict(response.headers)[b"request-id"].startswith(b"req_")
            conn.start_next_cycle()
