"""An OpenAI-compatible chat-completions server on loopback that replays scripted answers.

It speaks real HTTP (http.server in a thread), records every request it gets,
refuses a strict `response_format` whose schema OpenAI would refuse (with
OpenAI's 400 body; tests/proposers/strict_rules.py), and answers each from a
script: a status, headers, a JSON body, optionally after a delay. The delay
waits on an event the fixture sets at teardown, so a "slow" answer never
outlives the test.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import strict_rules


@dataclass
class Reply:
    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: Any


def completion(content: str | None, refusal: str | None = None, model: str = "gpt-test") -> dict[str, Any]:
    """A chat.completion as OpenAI returns it (recorded shape, content varied per test)."""
    return {
        "id": "chatcmpl-9xYz",
        "object": "chat.completion",
        "created": 1781427729,
        "model": model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": content, "refusal": refusal},
            "logprobs": None,
            "finish_reason": "stop",
        }],
        "usage": {"prompt_tokens": 812, "completion_tokens": 64, "total_tokens": 876},
        "system_fingerprint": "fp_test",
    }


def plan_call(arguments: Any, finish_reason: str = "tool_calls", call_id: str = "call_Qm3x"
              ) -> dict[str, Any]:
    """A chat.completion whose message calls propose_plan (the `tools` mode's answer)."""
    answer = completion(None)
    answer["choices"][0]["message"]["tool_calls"] = [{
        "id": call_id, "type": "function", "function": {"name": "propose_plan", "arguments": arguments}}]
    answer["choices"][0]["finish_reason"] = finish_reason
    return answer


def plan_reply(actions: list[dict[str, Any]]) -> Reply:
    return Reply(body=completion(json.dumps({"actions": actions})))


def _refused_schema(body: Any) -> Reply | None:
    """OpenAI's 400 for a strict schema it does not accept (a response_format's or a strict
    function's parameters); None when it accepts the request."""
    if not isinstance(body, dict):
        return None
    schema_format = body.get("response_format") or {}
    wrapped = schema_format.get("json_schema") or {}
    in_format = schema_format.get("type") == "json_schema" and wrapped.get("strict") is True
    strict = [wrapped.get("schema")] if in_format else []
    strict += [tool["function"].get("parameters") for tool in body.get("tools") or []
               if tool.get("function", {}).get("strict") is True]
    for schema in strict:
        if strict_rules.problems(schema):
            return Reply(400, strict_rules.refusal(schema))
    return None


class Provider:
    def __init__(self) -> None:
        self.script: list[Reply] = []
        self.received: list[Received] = []
        self.released = threading.Event()
        self._lock = threading.Lock()
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # quiet
                return

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                with provider._lock:
                    provider.received.append(
                        Received(self.path, {k.lower(): v for k, v in self.headers.items()}, json.loads(raw)))
                    reply = provider.script.pop(0) if provider.script else Reply(
                        500, {"error": {"message": "script exhausted"}})
                    refused = _refused_schema(provider.received[-1].body)
                    if refused is not None:  # as a strict provider does, before any answer
                        provider.script.insert(0, reply)
                        reply = refused
                if reply.delay:
                    provider.released.wait(reply.delay)
                data = json.dumps(reply.body).encode() if not isinstance(reply.body, bytes) else reply.body
                try:
                    self.send_response(reply.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:  # the client gave up (timeout test): nothing to tell it
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True)

    def __enter__(self) -> Provider:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.released.set()
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)
