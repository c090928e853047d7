"""A real HTTP server on 127.0.0.1 that speaks OPA's REST API (v1), evaluating with regopy.

The OPA binary cannot be installed here, so the OPA engine is tested against
this. It implements the parts of https://www.openpolicyagent.org/docs/rest-api
the engine uses, with OPA's status codes and bodies:

- `PUT /v1/policies/{id}` (raw Rego body): compiles every stored module with the
  new one; `200 {}`, or `400 {"code": "invalid_parameter", "message":
  "error(s) occurred while compiling module(s)", "errors": [{"code":
  "rego_parse_error"|"rego_compile_error", "message", "location": {"file",
  "row", "col"}}]}`.
- `GET /v1/policies`, `GET|DELETE /v1/policies/{id}` (`404 resource_not_found`).
- `POST /v1/data/{path}` `{"input": ...}`: `200 {"result": ...}`, or `200 {}`
  when undefined; `400 invalid_parameter` for a malformed body; evaluation
  errors `500 {"code": "internal_error", "message": "<eval_code>: <message>"}`.
  Built-in errors are errors only with `?strict-builtin-errors=true`, as in OPA.
- `GET /health`.

Switches simulate the failures the engine must survive: `fail_status` (every
request answers that status with an OPA error body, or `fail_body`),
`garbage` (200 with this body), `delay` (seconds before answering), `stop()`
(connection refused). Its own code never imports fibric, so a bug in the
embedded engine cannot hide the same bug here.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import re
import socket
import threading
import time
import urllib.parse
from typing import Any

import regopy
from regopy import rego_shared

_LIB = rego_shared.rego


class FakeOpa:
    def __init__(self) -> None:
        self.modules: dict[str, str] = {}
        self.requests: list[tuple[str, str]] = []  # (method, path with query)
        self.fail_status: int | None = None
        self.fail_body: bytes | None = None
        self.garbage: bytes | None = None
        self.delay = 0.0
        self._lock = threading.Lock()  # one interpreter at a time: regopy interpreters are not shared safely
        self._version = 0
        self._compiled: dict[tuple[int, str], tuple[regopy.Interpreter, regopy.Bundle]] = {}
        self._connections: set[socket.socket] = set()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FakeOpa:
        fake = self

        class Handler(_Handler):
            opa = fake

        self._server = _Server(("127.0.0.1", self.port), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Go down like a killed process: refuse new connections, drop open keep-alive ones."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        for connection in list(self._connections):
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
                connection.close()

    # --- the API ---------------------------------------------------------------

    def put_policy(self, policy_id: str, raw: str) -> tuple[int, dict[str, Any]]:
        with self._lock:
            candidate = {**self.modules, policy_id: raw}
            problems = _compile_problems(candidate)
            if problems:
                return 400, {"code": "invalid_parameter",
                             "message": "error(s) occurred while compiling module(s)", "errors": problems}
            self.modules = candidate
            self._version += 1
            self._compiled.clear()
        return 200, {}

    def delete_policy(self, policy_id: str) -> tuple[int, dict[str, Any]]:
        with self._lock:
            if policy_id not in self.modules:
                return 404, _not_found(policy_id)
            del self.modules[policy_id]
            self._version += 1
            self._compiled.clear()
        return 200, {}

    def data(self, path: str, input_doc: Any, has_input: bool, strict: bool) -> tuple[int, dict[str, Any]]:
        query = "data" + "".join(f".{p}" for p in path.split("/") if p)
        with self._lock:
            key = (self._version, query)
            if key not in self._compiled:
                interpreter = _interpreter()
                for policy_id, raw in self.modules.items():
                    interpreter.add_module(policy_id, raw)
                bundle = interpreter.build(query)
                if not bundle.ok():
                    return 500, {"code": "internal_error", "message": "compile error"}
                self._compiled[key] = (interpreter, bundle)
            interpreter, bundle = self._compiled[key]
            # OPA decodes the body as JSON; rego-cpp's term parser reading JSON text is the faithful
            # stand-in (regopy.Input would store raw strings that never equal escaped literals).
            interpreter.set_input_term(json.dumps(input_doc if has_input else {}, ensure_ascii=False))
            output = rego_shared.rego_bundle_query(interpreter._impl, bundle._impl)
            try:
                ok = _LIB.regoOutputOk(output)
                text = rego_shared.rego_output_string(output)
                errors = _runtime_errors(_LIB.regoOutputNode(output)) if not ok else []
            finally:
                _LIB.regoFreeOutput(output)
        if not ok:
            if not strict and all(code == "eval_builtin_error" for code, _ in errors):
                return 200, {}  # OPA without strict-builtin-errors: a failing built-in is undefined
            message = "; ".join(f"{code}: {msg}" for code, msg in errors) or "evaluation failed"
            return 500, {"code": "internal_error", "message": message}
        if text == "undefined":
            return 200, {}
        try:
            value = json.loads(text, strict=False)["expressions"][0]
        except (ValueError, KeyError, IndexError, TypeError):
            messages = re.findall(r"\(errormsg \d+:([^)\n]*)\)", text)
            return 500, {"code": "internal_error", "message": "; ".join(messages) or text[:200]}
        return 200, {"result": value}


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # a listen backlog like Go's, not socketserver's 5


class _Handler(http.server.BaseHTTPRequestHandler):
    opa: FakeOpa
    protocol_version = "HTTP/1.1"  # keep-alive, like OPA

    def log_message(self, format: str, *args: Any) -> None:  # quiet test output
        pass

    def setup(self) -> None:
        super().setup()
        # Like Go's net/http: no Nagle, or every keep-alive answer waits for a delayed ACK (40 ms).
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.opa._connections.add(self.connection)

    def finish(self) -> None:
        self.opa._connections.discard(self.connection)
        with contextlib.suppress(OSError):
            super().finish()

    def do_GET(self) -> None:
        self._handle("GET")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def _handle(self, method: str) -> None:
        opa = self.opa
        opa.requests.append((method, self.path))
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if opa.delay:
            time.sleep(opa.delay)
        if opa.fail_status is not None:
            fallback = {"code": "internal_error", "message": "simulated failure"}
            self._send(opa.fail_status, opa.fail_body or json.dumps(fallback).encode())
            return
        if opa.garbage is not None:
            self._send(200, opa.garbage, content_type="text/html")
            return
        status, payload = self._route(method, body)
        self._send(status, json.dumps(payload).encode())

    def _route(self, method: str, body: bytes) -> tuple[int, dict[str, Any]]:
        parts = urllib.parse.urlsplit(self.path)
        path = urllib.parse.unquote(parts.path)
        params = urllib.parse.parse_qs(parts.query, keep_blank_values=True)
        opa = self.opa
        if path == "/health" and method == "GET":
            return 200, {}
        if path.rstrip("/") == "/v1/policies" and method == "GET":
            return 200, {"result": [{"id": i, "raw": raw, "ast": {}} for i, raw in opa.modules.items()]}
        if path.startswith("/v1/policies/"):
            policy_id = path[len("/v1/policies/"):]
            if method == "PUT":
                return opa.put_policy(policy_id, body.decode("utf-8", "replace"))
            if method == "GET":
                if policy_id not in opa.modules:
                    return 404, _not_found(policy_id)
                return 200, {"result": {"id": policy_id, "raw": opa.modules[policy_id], "ast": {}}}
            if method == "DELETE":
                return opa.delete_policy(policy_id)
        if (path == "/v1/data" or path.startswith("/v1/data/")) and method == "POST":
            try:
                request = json.loads(body) if body else {}
                if not isinstance(request, dict):
                    raise ValueError("expected an object")
            except ValueError as e:
                return 400, {"code": "invalid_parameter",
                             "message": f"body contains malformed input document: {e}"}
            strict = any(v.lower() in ("", "true") for v in params.get("strict-builtin-errors", []))
            return opa.data(path[len("/v1/data"):], request.get("input"), "input" in request, strict)
        return 404, {"code": "resource_not_found", "message": f"{method} {path} not found"}

    def _send(self, status: int, payload: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self._headers_buffer.append(b"\r\n" + payload)  # headers and body in one write
        self.flush_headers()


def _not_found(policy_id: str) -> dict[str, Any]:
    return {"code": "resource_not_found", "message": f'storage_not_found_error: policy id "{policy_id}"'}


def _interpreter() -> regopy.Interpreter:
    interpreter = regopy.Interpreter()
    interpreter.log_level = regopy.LogLevel.NONE
    interpreter.strict_built_in_errors = True
    return interpreter


def _compile_problems(modules: dict[str, str]) -> list[dict[str, Any]]:
    """OPA-shaped errors for `modules`, or [] if they compile together."""
    interpreter = _interpreter()
    for policy_id, raw in modules.items():
        try:
            interpreter.add_module(policy_id, raw)
        except regopy.RegoError as e:
            return _parse_errors(str(e), modules)
    try:
        bundle = interpreter.build("data")
    except regopy.RegoError as e:
        return _parse_errors(str(e), modules)
    if not bundle.ok():
        return [{"code": "rego_compile_error", "message": msg}
                for _, msg in _runtime_errors(_LIB.regoBundleNode(bundle._impl))]
    return []


def _parse_errors(text: str, modules: dict[str, str]) -> list[dict[str, Any]]:
    found = []
    raw = text.encode()
    for match in re.finditer(rb"\(error (\d+):", raw):
        name_end = match.end() + int(match.group(1))
        name = raw[match.end():name_end].decode()
        offset = re.match(rb"\|(\d+)\|", raw[name_end:])
        message = re.search(rb"\(errormsg (\d+):", raw[name_end:])
        if not offset or not message:
            continue
        start = name_end + message.end()
        text_msg = raw[start:start + int(message.group(1))].decode()
        before = modules.get(name, "").encode()[: int(offset.group(1))]
        row = before.count(b"\n") + 1
        col = len(before[before.rfind(b"\n") + 1:].decode(errors="replace")) + 1
        found.append({"code": "rego_parse_error", "message": text_msg,
                      "location": {"file": name, "row": row, "col": col}})
    return found or [{"code": "rego_parse_error", "message": text.strip()}]


def _runtime_errors(node: Any) -> list[tuple[str, str]]:
    """(code, message) pairs from an ErrorSeq node (kinds from regopy's NodeKind)."""
    errors = []
    if node and _LIB.regoNodeType(node) == regopy.NodeKind.ErrorSeq:
        for i in range(_LIB.regoNodeSize(node)):
            error = _LIB.regoNodeGet(node, i)
            code = message = ""
            for j in range(_LIB.regoNodeSize(error)):
                part = _LIB.regoNodeGet(error, j)
                if _LIB.regoNodeType(part) == regopy.NodeKind.ErrorMessage:
                    message = rego_shared.rego_node_value(part)
                elif _LIB.regoNodeType(part) == regopy.NodeKind.ErrorCode:
                    code = rego_shared.rego_node_value(part)
            errors.append((code, message))
    return errors
