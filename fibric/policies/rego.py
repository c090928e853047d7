"""The one module that talks to regopy (Microsoft's rego-cpp), and its sharp edges.

What we learned about regopy 1.5.2 and rely on here (tests/policies pin each):

- An `Interpreter` holds the input document as state, so one interpreter shared
  by threads mixes inputs up and returns other callers' decisions. Each thread
  gets its own `Session`; compiled bundles are serialized once and loaded into
  each thread's interpreter.
- `build()` can return a bundle whose `ok()` is False (e.g. two `default`
  rules); querying such a bundle crashes the process, so it is a compile error.
- Entrypoint bundles abort the process on `with` (`rego-localref has no field
  rego-refhead`), so we only ever build bundles from a query. Query bundles
  abort too when a `with` replaces input by a reference (`true with input as
  data.x`, `... as some_rule`: "shape `rego-with` has no field `rego-ref`").
  Any tenant can send such a policy, so compiling never runs in Fibric's own
  process but in a compile worker (compileworker.py).
- Without strict built-in errors a failing built-in leaks an error s-expression
  into the JSON output; we always turn strict errors on.
- Error locations are byte offsets into the module, in the message text of
  `RegoError`; runtime errors come back as an ErrorSeq node.
- rego-cpp keeps a string as the escaped text between its quotes, the way it
  appears in a policy (`"a\\"b"` is stored as `a\\"b`), and prints strings into
  its JSON output without escaping them again. A raw `a"b` passed through the C
  API therefore never equals the policy literal `"a\\"b"` and breaks the output
  JSON. Input strings are passed in that escaped form (JSON escapes, non-ASCII
  as UTF-8), which also keeps NUL out of the C strings.
- `regopy.Input` makes three Python-level calls per value; building the input
  straight on the C API halves the cost of a decision.
"""

from __future__ import annotations

import json
import math
import re
import tempfile
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# DuckDB must be loaded before regopy: with librego_shared.so loaded first, the
# first duckdb.connect() in the same process aborts with "double free or
# corruption" (regopy 1.5.2, duckdb 1.5.5; tests/test_native_libraries.py).
import duckdb  # noqa: F401  (load order matters, see above)
import regopy
from regopy import rego_shared

from fibric.policies import engine, failures

_LIB = rego_shared.rego
_NEEDS_ESCAPE = re.compile(r'[\x00-\x1f"\\]')
_INT64 = (-(2**63), 2**63 - 1)

# Node kinds of rego-cpp's C API (rego_shared.NodeKind).
_ERROR_SEQ = 1804
_ERROR = 1800
_ERROR_MSG = 1801
_ERROR_CODE = 1803


@dataclass(frozen=True)
class Issue:
    """One compile problem, located in a module when rego-cpp tells us where."""

    message: str
    module: str | None = None
    line: int | None = None  # 1-based
    column: int | None = None  # 1-based, in characters


class CompileFailed(Exception):
    """rego-cpp rejected the modules or the query."""

    def __init__(self, issues: list[Issue]) -> None:
        super().__init__("; ".join(i.message for i in issues))
        self.issues = issues


def new_interpreter() -> regopy.Interpreter:
    """An interpreter that reports built-in errors as errors and logs nothing to stdout."""
    interpreter = regopy.Interpreter()
    interpreter.log_level = regopy.LogLevel.NONE
    interpreter.strict_built_in_errors = True
    return interpreter


def compile_bundle(modules: Sequence[tuple[str, str]], query: str) -> bytes:
    """Compile `modules` for `query` and return the bundle in rego-cpp's binary format."""
    interpreter = new_interpreter()
    add_modules(interpreter, modules)
    try:
        bundle = interpreter.build(query)
    except regopy.RegoError as e:
        raise CompileFailed(parse_errors(str(e), dict(modules))) from e
    if not bundle.ok():
        issues = [Issue(f"{code}: {msg}" if code else msg) for code, msg in _error_seq(
            _LIB.regoBundleNode(bundle._impl))]
        raise CompileFailed(issues or [Issue("the compiler rejected the policy")])
    with tempfile.TemporaryDirectory(prefix="fibric-rego-") as tmp:
        path = Path(tmp) / "bundle.rbb"
        interpreter.save_bundle(str(path), bundle, regopy.BundleFormat.Binary)
        return path.read_bytes()


def add_modules(interpreter: regopy.Interpreter, modules: Sequence[tuple[str, str]]) -> None:
    """Parse each (name, source) into `interpreter`; syntax errors become CompileFailed."""
    for name, source in modules:
        try:
            interpreter.add_module(name, source)
        except regopy.RegoError as e:
            raise CompileFailed(parse_errors(str(e), dict(modules))) from e


class Session:
    """One thread's interpreter and the bundles loaded into it (never shared across threads).

    The embedded engine keeps one per worker process (see regoworker.py).
    """

    def __init__(self, capacity: int = 64) -> None:
        self._interpreter = new_interpreter()
        self._bundles: OrderedDict[str, regopy.Bundle] = OrderedDict()
        self._capacity = capacity

    def evaluate(self, key: str, bundle: bytes, input_doc: Mapping[str, Any]) -> engine.Outcome:
        """Run the bundle's query against `input_doc`."""
        loaded = self.prepare(key, bundle)
        set_input(self._interpreter, input_doc)
        try:
            output = rego_shared.rego_bundle_query(self._interpreter._impl, loaded._impl)
        except regopy.RegoError as e:
            raise failures.EngineError(f"rego-cpp: {e}") from e
        try:
            return read_output(output)
        finally:
            _LIB.regoFreeOutput(output)

    def holds(self, key: str) -> bool:
        """Whether the bundle of `key` is loaded (without touching its place in the LRU order)."""
        return key in self._bundles

    def prepare(self, key: str, bundle: bytes) -> regopy.Bundle:
        """The bundle loaded into this session's interpreter, loading it on first use."""
        loaded = self._bundles.get(key)
        if loaded is not None:
            self._bundles.move_to_end(key)
            return loaded
        with tempfile.TemporaryDirectory(prefix="fibric-rego-") as tmp:
            path = Path(tmp) / "bundle.rbb"
            path.write_bytes(bundle)
            loaded = self._interpreter.load_bundle(str(path), regopy.BundleFormat.Binary)
        if not loaded.ok():
            raise failures.EngineError("rego-cpp could not load the compiled bundle")
        self._bundles[key] = loaded
        while len(self._bundles) > self._capacity:
            self._bundles.popitem(last=False)
        return loaded


class ModuleSet:
    """Modules parsed into one interpreter for ad-hoc queries (the Rego unit-test runner)."""

    def __init__(self, modules: Sequence[tuple[str, str]]) -> None:
        self._modules = list(modules)
        self._interpreter = new_interpreter()
        add_modules(self._interpreter, self._modules)

    def check(self, query: str) -> None:
        """Raise CompileFailed unless the modules compile for `query` (catches semantic errors)."""
        compile_bundle(self._modules, query)

    def query(self, query: str) -> engine.Outcome:
        """Evaluate `query` (which may use `with`); evaluation errors raise failures.EvalError."""
        try:
            output = rego_shared.rego_query(self._interpreter._impl, query)
        except regopy.RegoError as e:
            raise failures.EngineError(f"rego-cpp: {e}") from e
        try:
            return read_output(output)
        finally:
            _LIB.regoFreeOutput(output)


def read_output(output: Any) -> engine.Outcome:
    """Turn a rego-cpp output handle into an Outcome or an EvalError."""
    if not _LIB.regoOutputOk(output):
        problems = _error_seq(_LIB.regoOutputNode(output))
        detail = "; ".join(f"{code}: {msg}" if code else msg for code, msg in problems)
        raise failures.EvalError(detail or "evaluation failed")
    text = rego_shared.rego_output_string(output)
    if text == "undefined":
        return engine.UNDEFINED
    try:
        parsed = json.loads(text, strict=False)
    except ValueError:
        messages = _ERRORMSG.findall(text)
        raise failures.EvalError("; ".join(messages) or "evaluation produced no JSON value") from None
    if isinstance(parsed, list):  # one result per solution; a plain ref has at most one
        if len(parsed) != 1:
            raise failures.EvalError(f"query produced {len(parsed)} results")
        parsed = parsed[0]
    expressions = parsed.get("expressions") if isinstance(parsed, dict) else None
    if not isinstance(expressions, list) or len(expressions) != 1:
        raise failures.EngineError(f"unexpected rego-cpp output: {text[:200]}")
    return engine.Outcome(defined=True, value=expressions[0])


def set_input(interpreter: regopy.Interpreter, value: Mapping[str, Any]) -> None:
    """Set the input document, building it directly on rego-cpp's C API."""
    handle = _LIB.regoNewInput()
    try:
        if _build(handle, value) != 0:
            raise failures.EngineError("rego-cpp refused the input document")
        if _LIB.regoSetInput(interpreter._impl, handle) != 0:
            raise failures.EngineError("rego-cpp refused the input document")
    finally:
        _LIB.regoFreeInput(handle)


def _build(handle: int, value: Any) -> int:
    """Push `value` onto the input builder; returns nonzero if any C call failed."""
    kind = type(value)
    if kind is str:
        return int(_LIB.regoInputString(handle, _c_string(value)))
    if kind is dict:
        status = 0
        for key, item in value.items():
            if type(key) is not str:
                raise failures.InputInvalid(f"object key {key!r} is not a string")
            status |= _LIB.regoInputString(handle, _c_string(key))
            status |= _build(handle, item)
            status |= _LIB.regoInputObjectItem(handle)
        return status | int(_LIB.regoInputObject(handle, len(value)))
    if kind is bool:
        return int(_LIB.regoInputBoolean(handle, value))
    if kind is int:
        if not _INT64[0] <= value <= _INT64[1]:
            raise failures.InputInvalid(f"integer {value} does not fit in 64 bits")
        return int(_LIB.regoInputInt(handle, value))
    if kind is float:
        if not math.isfinite(value):
            raise failures.InputInvalid(f"number {value} is not valid JSON")
        return int(_LIB.regoInputFloat(handle, value))
    if value is None:
        return int(_LIB.regoInputNull(handle))
    if kind is list or kind is tuple:
        status = 0
        for item in value:
            status |= _build(handle, item)
        return status | int(_LIB.regoInputArray(handle, len(value)))
    if isinstance(value, Mapping):
        return _build(handle, dict(value))
    raise failures.InputInvalid(f"{kind.__name__} is not a JSON value")


def _c_string(text: str) -> bytes:
    """`text` as rego-cpp stores a string literal: JSON-escaped, non-ASCII kept as UTF-8."""
    if _NEEDS_ESCAPE.search(text):
        text = json.dumps(text, ensure_ascii=False)[1:-1]
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise failures.InputInvalid("strings must be valid Unicode (no lone surrogates)") from None


def _error_seq(node: Any) -> list[tuple[str, str]]:
    """(code, message) of each error in an ErrorSeq node."""
    if not node or _LIB.regoNodeType(node) != _ERROR_SEQ:
        return []
    found = []
    for i in range(_LIB.regoNodeSize(node)):
        error = _LIB.regoNodeGet(node, i)
        if _LIB.regoNodeType(error) != _ERROR:
            continue
        code = message = ""
        for j in range(_LIB.regoNodeSize(error)):
            part = _LIB.regoNodeGet(error, j)
            kind = _LIB.regoNodeType(part)
            if kind == _ERROR_MSG:
                message = rego_shared.rego_node_value(part)
            elif kind == _ERROR_CODE:
                code = rego_shared.rego_node_value(part)
        found.append((code, message))
    return found


_ERRORMSG = re.compile(r"\(errormsg \d+:([^)\n]*)\)")
_ERROR_AT = re.compile(rb"\(error(?=[\s)])")
_NAME = re.compile(rb" (\d+):")
_OFFSET = re.compile(rb"\|(\d+)\|(\d+)")
_MESSAGE = re.compile(rb"\(errormsg (\d+):")


def parse_errors(text: str, sources: Mapping[str, str]) -> list[Issue]:
    """Issues from a RegoError's s-expression, with byte offsets turned into line:column."""
    raw = text.encode("utf-8")
    issues: list[Issue] = []
    pos = 0
    while (start := _ERROR_AT.search(raw, pos)) is not None:
        pos = start.end()
        module: str | None = None
        offset: int | None = None
        named = _NAME.match(raw, pos)
        if named:
            end = named.end() + int(named.group(1))
            module = raw[named.end():end].decode("utf-8", "replace")
            located = _OFFSET.match(raw, end)
            offset = int(located.group(1)) if located else None
        found = _MESSAGE.search(raw, pos)
        if found is None:
            break
        end = found.end() + int(found.group(1))
        message = raw[found.end():end].decode("utf-8", "replace")
        pos = end
        line = column = None
        if module is not None and module in sources and offset is not None:
            line, column = _line_column(sources[module], offset)
        issue = Issue(message, module, line, column)
        if issue not in issues:
            issues.append(issue)
    return issues or [Issue(text.strip() or "the compiler rejected the policy")]


def _line_column(source: str, offset: int) -> tuple[int, int]:
    before = source.encode("utf-8")[:offset]
    line_start = before.rfind(b"\n") + 1
    return before.count(b"\n") + 1, len(before[line_start:].decode("utf-8", "replace")) + 1
