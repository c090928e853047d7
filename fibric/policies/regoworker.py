"""One evaluation worker process: a rego-cpp session serving decisions over a pipe.

rego-cpp cannot be interrupted and a thread cannot be killed, so the embedded
engine evaluates in long-lived worker processes that it can SIGKILL at the
deadline (workerpool.py). Each worker keeps its own `rego.Session`, with the
bundles it has been sent loaded once, by policy key.

The wire format, one message per `Connection.send_bytes` each way, JSON
because it is the cheapest codec in both directions for these small documents:

- request: a 4-byte big-endian header length, the header
  `[policy_key, pruned_input]`, then the policy's bundle when the parent
  believes this worker does not hold it yet (nothing otherwise); or, to load
  a bundle without evaluating it, the header `[policy_key]` and the bundle;
  or, to evaluate many inputs in one exchange (`fibric policy replay`), the
  header `[policy_key, [pruned_input, ...], "many"]`;
- reply: `{"value": v}`, `{"undefined": true}`, `{"loaded": true}`,
  `{"missing": true}` (the bundle was not sent and this worker does not hold
  it: send it again) or `{"failure": cause, "detail": text}` with a
  failures.* cause; for many inputs `{"many": [reply, ...]}`, one per input.

A worker exits when the parent closes its end, and dies with its parent
(`PR_SET_PDEATHSIG` on Linux), so a runaway evaluation never outlives Fibric.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import struct
import sys
from collections.abc import Mapping
from multiprocessing import connection
from typing import Any

from fibric.policies import failures, rego

READY = b"ready"
MANY = "many"  # marks a request that carries a list of inputs
HEADER = struct.Struct("!I")
_PR_SET_PDEATHSIG = 1


def request(key: str, input_json: bytes | None, bundle: bytes | None) -> bytes:
    """The request frame for `key` on an already JSON-encoded input (None: only load `bundle`)."""
    header = b"[" + json.dumps(key).encode() + (b"," + input_json if input_json is not None else b"") + b"]"
    return HEADER.pack(len(header)) + header + (bundle or b"")


def encode_many(encoded: list[bytes]) -> bytes:
    """The input part of a request for many already-encoded inputs (see the wire format above)."""
    return b"[" + b",".join(encoded) + b"]," + json.dumps(MANY).encode()


def encode_input(document: Any) -> bytes:
    """`document` as compact JSON (inputs.check_json has already vetted it)."""
    try:
        return json.dumps(document, separators=(",", ":"), allow_nan=False, default=_as_dict).encode()
    except (TypeError, ValueError) as e:
        raise failures.InputInvalid(f"input: {e}") from None


def start(fd: int, capacity: int, parent: int) -> None:
    """Entry point in the freshly forked worker: die with `parent`, then serve until EOF."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the engine's process; it stops us
    if sys.platform == "linux":
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before prctl took effect
        return
    serve(connection.Connection(fd), capacity)


def serve(conn: connection.Connection, capacity: int) -> None:
    """Answer requests on `conn` until the parent closes it."""
    session = rego.Session(capacity)
    conn.send_bytes(READY)
    while True:
        try:
            frame = conn.recv_bytes()
        except EOFError:
            return
        conn.send_bytes(answer(session, frame))


def answer(session: rego.Session, frame: bytes) -> bytes:
    """The reply to one request frame (never raises for a bad policy or input)."""
    try:
        (size,) = HEADER.unpack_from(frame)
        key, *document = json.loads(frame[HEADER.size:HEADER.size + size])
        bundle = frame[HEADER.size + size:]
        if not bundle and not session.holds(key):
            return b'{"missing":true}'
        if not document:  # load only
            session.prepare(key, bundle)
            return b'{"loaded":true}'
        if len(document) == 2 and document[1] == MANY:  # one bundle, many inputs: no round trip each
            session.prepare(key, bundle)
            return b'{"many":[' + b",".join(_evaluate(session, key, bundle, d) for d in document[0]) + b"]}"
    except failures.PolicyFailure as e:
        return _failure(e.cause, e.detail)
    except Exception as e:  # a bug or a rego-cpp surprise: still an answer, the parent BLOCKs
        return _failure(failures.EngineError.cause, f"{type(e).__name__}: {e}")
    return _evaluate(session, key, bundle, document[0])


def _evaluate(session: rego.Session, key: str, bundle: bytes, document: Any) -> bytes:
    """The reply for one input (never raises)."""
    try:
        outcome = session.evaluate(key, bundle, document)
    except failures.PolicyFailure as e:
        return _failure(e.cause, e.detail)
    except Exception as e:  # a bug or a rego-cpp surprise: still an answer, the parent BLOCKs
        return _failure(failures.EngineError.cause, f"{type(e).__name__}: {e}")
    if not outcome.defined:
        return b'{"undefined":true}'
    return json.dumps({"value": outcome.value}, separators=(",", ":")).encode()


def _failure(cause: str, detail: str) -> bytes:
    return json.dumps({"failure": cause, "detail": detail}).encode()


def _as_dict(value: Any) -> Any:
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"{type(value).__name__} is not a JSON value")
