"""The OPA engine: the same Rego, evaluated by an OPA server over its REST API.

Policies are pushed with `PUT /v1/policies/{id}` and decisions asked with
`POST /v1/data/{path}` `{"input": ...}` and `?strict-builtin-errors=true`, through
opa-python-client. One OPA usually serves every tenant, so two tenants' policies
may share a package name; each policy version is therefore mounted under its
own prefix: `package fibric.ship_risk` is pushed as
`package fibric_policies.v<sha>.fibric.ship_risk` under the id
`fibric/<sha256>`, on the same line, so OPA's error lines match the source.
Identical sources share one module; other versions never collide.

Every way the server can fail maps to a failures.* class (see evaluate.py for
the BLOCK it becomes): connection refused → engine-unreachable, over budget →
timeout, OPA's `internal_error` naming an `eval_*` error → eval-error, any
other non-2xx → engine-error, a 2xx that is not OPA's response → bad-response.
"""

from __future__ import annotations

import re
import threading
import urllib.parse
from collections.abc import Iterable, Mapping
from typing import Any

import requests
from opa_client import OpaClient
from opa_client import errors as opa_errors

from fibric import errors
from fibric.policies import compiler, engine, failures, inputs, lint

MOUNT = "fibric_policies"
_PACKAGE = re.compile(r"(\A\s*package[ \t]+)([A-Za-z_][\w.]*)")


def mounted_package(policy: compiler.CompiledPolicy) -> str:
    """Where this version's package lives in OPA's data tree."""
    return f"{MOUNT}.v{policy.sha256[:32]}.{policy.package}"


def mounted_source(policy: compiler.CompiledPolicy) -> str:
    """The source as pushed: only the package name changes, on the same line."""
    match = _PACKAGE.match(lint.code_only(policy.source))
    if match is None:  # compile() guarantees a package; keep the failure loud if not
        raise errors.PermanentError(f"{policy.name}: no package clause")
    start, end = match.span(2)
    return policy.source[:start] + mounted_package(policy) + policy.source[end:]


def opa_policy_id(policy: compiler.CompiledPolicy) -> str:
    return f"fibric/{policy.sha256}"


class OpaEngine:
    name = "opa"

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 0.1,
        token: str | None = None,
        push_timeout: float = 5.0,
    ) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"OPA url must be http(s)://host[:port], got {url!r}")
        if parts.path not in ("", "/") or parts.query:
            raise ValueError(f"OPA url must not have a path or query (the API lives at /v1), got {url!r}")
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self.url = url
        self.timeout = timeout
        self.stats = engine.Stats()
        self._ssl = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port or (443 if self._ssl else 80)
        self._token = token
        self._push_timeout = push_timeout
        self._local = threading.local()
        self._lock = threading.Lock()
        self._clients: list[OpaClient] = []
        self._pushed: set[str] = set()

    def load(self, policy: compiler.CompiledPolicy) -> None:
        """Push the policy version (always: an OPA restart loses pushed policies)."""
        try:
            self._push(policy, self._push_timeout)
        except opa_errors.RegoParseError as e:
            if e.expression == "invalid_parameter":
                raise errors.SpecInvalid(_problems(policy, e)) from e
            raise errors.TemporaryError(f"OPA at {self.url} refused the policy: {e}", delay=5.0) from e
        except (requests.RequestException, ValueError, AttributeError) as e:
            raise errors.TemporaryError(f"OPA at {self.url} is unavailable: {e}", delay=5.0) from e

    def query(
        self, policy: compiler.CompiledPolicy, input_doc: Mapping[str, Any], timeout: float
    ) -> engine.Outcome:
        inputs.check_json(input_doc)
        try:
            if policy.sha256 not in self._pushed:
                self._push(policy, timeout)
            client = self._client()
            client.timeout = timeout
            body = client.query_rule(
                dict(input_doc),
                package_path=mounted_package(policy) + policy.query[len(f"data.{policy.package}"):],
                query_params={"strict-builtin-errors": "true"},
            )
        except requests.Timeout as e:
            raise failures.Timeout(f"OPA did not answer within {timeout * 1000:.1f} ms") from e
        except requests.JSONDecodeError as e:
            raise failures.BadResponse(f"OPA answered with a body that is not JSON: {e}") from e
        except requests.HTTPError as e:
            raise _http_failure(e.response) from e
        except requests.ConnectionError as e:
            raise failures.Unreachable(f"cannot reach OPA at {self.url}: {_root(e)}") from e
        except requests.RequestException as e:
            raise failures.EngineError(f"OPA request failed: {e}") from e
        except opa_errors.RegoParseError as e:
            raise failures.EngineError(f"OPA refused the policy: {e}") from e
        if not isinstance(body, dict):
            raise failures.BadResponse(f"OPA answered {type(body).__name__}, not an object")
        if "result" not in body:
            return engine.UNDEFINED
        return engine.Outcome(defined=True, value=body["result"])

    def prune(self, keep: Iterable[compiler.CompiledPolicy]) -> list[str]:
        """Delete Fibric's modules in OPA that no live policy version uses; returns their ids."""
        wanted = {opa_policy_id(p) for p in keep}
        client = self._client()
        client.timeout = self._push_timeout
        stale = [i for i in client.get_policies_list() if i.startswith("fibric/") and i not in wanted]
        for policy_id in stale:
            client.delete_policy(policy_id)
        with self._lock:
            self._pushed -= {i.removeprefix("fibric/") for i in stale}
        return stale

    def close(self) -> None:
        with self._lock:
            clients, self._clients = self._clients, []
        for client in clients:
            client.close_connection()

    def _push(self, policy: compiler.CompiledPolicy, timeout: float) -> None:
        client = self._client()
        client.timeout = timeout
        client.update_policy_from_string(mounted_source(policy), opa_policy_id(policy), rego_compat=False)
        with self._lock:
            self._pushed.add(policy.sha256)

    def _client(self) -> OpaClient:
        """This thread's client: requests sessions are not documented as thread-safe."""
        client: OpaClient | None = getattr(self._local, "client", None)
        if client is None:
            client = OpaClient(
                host=self._host, port=self._port, ssl=self._ssl, token=self._token,
                retries=0, timeout=self.timeout,
            )
            self._local.client = client
            with self._lock:
                self._clients.append(client)
        return client


def _http_failure(response: requests.Response | None) -> failures.PolicyFailure:
    """OPA's error body tells an evaluation error (eval_*) from the server failing."""
    if response is None:
        return failures.EngineError("OPA answered with an HTTP error")
    try:
        body = response.json()
    except ValueError:
        return failures.EngineError(f"OPA answered {response.status_code}: {response.text[:200]!r}")
    if not isinstance(body, dict):
        return failures.EngineError(f"OPA answered {response.status_code}: {body!r:.200}")
    message = str(body.get("message", ""))
    details = [e for e in body.get("errors") or [] if isinstance(e, dict)]
    codes = [str(e.get("code", "")) for e in details]
    detail = "; ".join([message] + [f"{e.get('code')}: {e.get('message')}" for e in details])
    if body.get("code") == "internal_error" and (
        "eval_" in message or any(c.startswith("eval_") for c in codes)
    ):
        return failures.EvalError(detail)
    return failures.EngineError(f"OPA answered {response.status_code} {body.get('code')}: {detail}")


def _problems(policy: compiler.CompiledPolicy, e: opa_errors.RegoParseError) -> list[errors.SpecProblem]:
    problems = []
    for item in e.errors or [{"message": e.message}]:
        location = item.get("location") or {}
        where = policy.name
        if location.get("row"):
            where += f":{location['row']}"
            if location.get("col"):
                where += f":{location['col']}"
        code = f"{item['code']}: " if item.get("code") else ""
        problems.append(errors.SpecProblem(f"{where}: {code}{item.get('message', '')}", path="spec.rego"))
    return problems


def _root(e: BaseException) -> str:
    """The innermost cause, e.g. 'Connection refused', not urllib3's retry wrapper."""
    for _ in range(10):
        inner = e.__cause__ or getattr(e, "reason", None) or (e.args[0] if e.args else None)
        if not isinstance(inner, BaseException):
            break
        e = inner
    return str(e)
