"""The LLM proposer: ask an OpenAI-compatible chat-completions endpoint, trust nothing it says.

The answer must parse as JSON, fit the ExecutionPlan schema, name only the
operator's capabilities, and give each action args valid against its tool's
MCP input schema. Any failure is a ProposalError and no action at all: a plan
is all valid or it does not exist. An action's rationale only informs the
approver, so one too long is cut and one left out is None. Timeouts, connection
errors, 429 and 5xx are retried a bounded number of times with backoff (429
honours Retry-After); other 4xx are not retried, since sending the same request
again will not help.

The routes' requests go through one client the system shares (`Connections`),
whose connections resolve names with the installation's resolver
(fibric/trust/resolver.py: on the event loop, a deadline per lookup, answers
cached for their TTL), not the C resolver on a thread: a provider's name that
never resolves costs a run its DNS deadline, and holds no thread another part
of Fibric waits for (docs/operations.md#bulkheads). A client made per request
(no shared one given, as in tests) keeps httpx's own resolution.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import functools
import json
import logging
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import jsonschema

from fibric import timefmt, trust
from fibric.proposers import base, keys, prompt, routes, strict

log = logging.getLogger(__name__)

MAX_RETRY_AFTER_SECONDS = 60.0
MAX_RESPONSE_BYTES = 4 * 1_048_576
MASK = "***masked***"  # what records keep of a sensitive event field
_PLAN = jsonschema.Draft202012Validator(prompt.plan_schema(for_validation=True))


class LlmProposer:
    """One LLM route, for one run or many (it holds no per-run state)."""

    def __init__(
        self,
        route_name: str,
        route: routes.Route,
        *,
        api_key: str | None = None,
        http: httpx.AsyncClient | None = None,
        clock: Callable[[], datetime] = timefmt.now,
        on_call: Callable[[base.ModelCall], None] | None = None,
    ) -> None:
        """`on_call` gets the record of every request made (each attempt), after `propose` ends."""
        self.name = f"llm:{route_name}"
        self._on_call = on_call or (lambda call: None)
        self._route_name = route_name
        self._route = route
        self._api_key = api_key
        self._http = http
        self._clock = clock

    def request(self, situation: base.Situation) -> dict[str, Any]:
        """The chat-completions body for this situation (public so its shape is testable and documented).

        The route's `mode` says how the answer's shape is asked for: `json_schema`
        (response_format, what OpenAI and Azure OpenAI do best), `json_object` (JSON
        mode, the schema in the system message: servers without schema support) or
        `tools` (one forced call of the `propose_plan` function: servers whose
        structured output is function calling).
        """
        route = self._route
        answer = prompt.answer_schema(situation)
        strict_ok = route.strict and answer.strict
        if route.strict and not answer.strict and route.mode != "json_object":
            log.warning("operator %s: %s asks for its answer schema with strict: false, since %s",
                        situation.operator_name, self.name, "; ".join(answer.why_not_strict))
        messages = prompt.messages(situation, self._clock())
        body: dict[str, Any] = {"model": route.model, "messages": messages}
        if route.mode == "json_schema":
            body["response_format"] = {"type": "json_schema", "json_schema": {
                "name": "execution_plan", "strict": strict_ok, "schema": answer.schema}}
        elif route.mode == "json_object":
            messages[0]["content"] += prompt.SCHEMA_IN_PROMPT.format(
                schema=json.dumps(answer.schema, separators=(",", ":")))
            body["response_format"] = {"type": "json_object"}
        else:
            function: dict[str, Any] = {"name": prompt.PLAN_FUNCTION, "description": prompt.PLAN_FUNCTION_DOC,
                                        "parameters": answer.schema}
            if strict_ok:
                function["strict"] = True
            body["tools"] = [{"type": "function", "function": function}]
            body["tool_choice"] = {"type": "function", "function": {"name": prompt.PLAN_FUNCTION}}
        if route.temperature is not None:
            body["temperature"] = route.temperature
        if route.max_tokens is not None:
            body["max_tokens"] = route.max_tokens
        return body

    async def propose(self, situation: base.Situation) -> list[base.ProposedAction]:
        body = self.request(situation)
        calls = _Calls(self, masked(body, situation.spec.sensitive))
        try:
            answer = await self._complete(body, calls)
            try:
                return self._actions(situation, _answer_text(answer, self.name, self._route.mode))
            except base.ProposalError as e:
                calls.judge("refused" if isinstance(e, Refused) else "malformed", str(e))
                raise
        finally:
            for call in calls.made:
                self._on_call(call)

    async def _complete(self, body: dict[str, Any], calls: _Calls) -> Any:
        if self._http is not None:
            return await self._post_with_retries(self._http, body, calls)
        async with httpx.AsyncClient() as client:
            return await self._post_with_retries(client, body, calls)

    async def _post_with_retries(self, client: httpx.AsyncClient, body: dict[str, Any], calls: _Calls) -> Any:
        route = self._route
        url = route.base_url.rstrip("/") + "/chat/completions"
        headers = {"Accept": "application/json"}
        if self._api_key and route.api_key_header == "api-key":
            headers["api-key"] = self._api_key
        elif self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        attempts = route.max_retries + 1
        for attempt in range(1, attempts + 1):
            delay = route.retry_backoff_seconds * 2 ** (attempt - 1)
            calls.start(attempt)
            try:
                async with asyncio.timeout(route.timeout_seconds):
                    response = await client.post(url, json=body, headers=headers, params=route.query,
                                                  timeout=route.timeout_seconds)
            except (TimeoutError, httpx.TimeoutException):
                reason = f"no answer within {route.timeout_seconds:g}s"
                calls.end("timeout", reason)
            except httpx.TransportError as e:
                reason = f"connection failed ({type(e).__name__})"
                calls.end("connection_error", reason)
            else:
                status = response.status_code
                if 200 <= status < 300:
                    try:
                        answer = _json_body(response, self.name)
                    except base.ProposalError as e:
                        calls.end("malformed", str(e), status=status)
                        raise
                    calls.end("ok", None, status=status, answer=answer)
                    return answer
                reason = f"HTTP {status}: {_provider_message(response)}"
                calls.end("http_error", reason, status=status, answer=_json_or_none(response))
                if status == 429:
                    delay = _retry_after(response, delay)
                elif status < 500:
                    raise base.ProposalError(f"{self.name}: the provider refused the request, {reason}")
            if attempt == attempts:
                raise base.ProposalError(f"{self.name}: {reason} (gave up after {attempts} attempts)")
            await asyncio.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def _actions(self, situation: base.Situation, content: str) -> list[base.ProposedAction]:
        try:
            plan = json.loads(content)
        except (ValueError, RecursionError) as e:
            raise base.ProposalError(f"{self.name}: the answer is not JSON ({e})") from None
        error = jsonschema.exceptions.best_match(_PLAN.iter_errors(plan))
        if error is not None:
            raise base.ProposalError(
                f"{self.name}: the answer is not an ExecutionPlan: {_where(error)}{error.message}")
        tools = prompt.tools_of(situation)
        actions = []
        for n, item in enumerate(plan["actions"]):
            capability = item["capability"]
            tool = tools.get(capability)
            if tool is None:
                raise base.ProposalError(
                    f"{self.name}: actions[{n}] proposes '{capability}', which operator "
                    f"'{situation.operator_name}' does not have (capabilities: "
                    f"{', '.join(situation.spec.capabilities)})")
            if tool.input_schema:  # the nulls strict mode made the model send for optional args go
                item["args"] = strict.restore(item["args"], tool.input_schema)
            _check_args(item["args"], tool, f"{self.name}: actions[{n}].args")
            key = item["idempotency_key"] or keys.derive_idempotency_key(
                situation.operator_id, item["entity_key"], capability, item["args"])
            actions.append(base.ProposedAction(
                capability=capability, entity_key=item["entity_key"], args=item["args"], idempotency_key=key,
                rationale=_rationale(item.get("rationale"))))
        return keys.dedup(actions)


class Connections:
    """The LLM routes' shared HTTP client, as a controller service: idle connections close at its stop.

    The routes are the installation's (docs/operators.md#llm-routes), so any
    address is allowed (`trust.ANYWHERE`); the environment's proxy and CA
    variables (HTTPS_PROXY, SSL_CERT_FILE, ...) apply as httpx applies them,
    and a proxy's own name is resolved the same way.
    """

    def __init__(self, resolver: trust.Resolver) -> None:
        self.client = httpx.AsyncClient()
        backend = trust.GuardedBackend(trust.ANYWHERE, resolver)
        for transport in self._transports():
            # httpx has no argument for a network backend; its pools take one (delivery.py does the same).
            pool = getattr(transport, "_pool", None)
            if pool is None or not hasattr(pool, "_network_backend"):
                raise RuntimeError("this httpx cannot resolve LLM routes' names with the installation's "
                                   f"resolver ({type(transport).__name__} has no connection pool)")
            pool._network_backend = backend

    def _transports(self) -> list[httpx.AsyncBaseTransport]:
        mounted = [t for t in self.client._mounts.values() if t is not None]  # the environment's proxies
        return [self.client._transport, *mounted]

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        """Close the open connections; the client stays usable (a restarted controller uses it again)."""
        for transport in self._transports():
            await transport.aclose()


def _rationale(text: str | None) -> str | None:
    """The model's rationale as a plan keeps it: at most RATIONALE_MAX characters (a longer one is cut,
    since the plan is still useful), None when it gave none."""
    kept = (text or "").strip()[:base.RATIONALE_MAX]
    return kept or None


def _check_args(args: dict[str, Any], tool: base.Tool, where: str) -> None:
    """Args against the tool's MCP input schema; a schema that is itself broken fails closed."""
    if not tool.input_schema:
        return
    validator = _validator(json.dumps(tool.input_schema, sort_keys=True))
    if isinstance(validator, str):
        raise base.ProposalError(
            f"{where}: the input schema of '{tool.capability}' is invalid, so its args cannot be checked "
            f"({validator})")
    error = jsonschema.exceptions.best_match(validator.iter_errors(args))
    if error is not None:
        raise base.ProposalError(
            f"{where}: not valid for the input schema of '{tool.capability}': {_where(error)}{error.message}")


@functools.lru_cache(maxsize=256)
def _validator(schema_json: str) -> Any:
    """A checked validator for a tool's input schema (its JSON text), or why the schema is invalid.

    Checking a schema against its meta-schema costs milliseconds; a tool's schema
    changes rarely, so each is checked once, not on every answer.
    """
    schema = json.loads(schema_json)
    validator_class = jsonschema.validators.validator_for(schema, jsonschema.Draft202012Validator)
    try:
        validator_class.check_schema(schema)
    except jsonschema.exceptions.SchemaError as e:
        return str(e.message)
    return validator_class(schema)


class Refused(base.ProposalError):
    """The model refused to answer (its message's `refusal`)."""


class _Calls:
    """The records of one `propose`: one per attempt, timed, judged once the answer is read."""

    def __init__(self, proposer: LlmProposer, request: dict[str, Any]) -> None:
        self.route = proposer._route
        self.route_name = proposer._route_name
        self.request = request
        self.clock = proposer._clock
        self.made: list[base.ModelCall] = []
        self._attempt, self._started, self._at = 0, 0.0, proposer._clock()

    def start(self, attempt: int) -> None:
        self._attempt, self._started, self._at = attempt, time.perf_counter(), self.clock()

    def end(self, outcome: str, error: str | None, *, status: int | None = None, answer: Any = None) -> None:
        usage = answer.get("usage") if isinstance(answer, dict) else None
        choices = answer.get("choices") if isinstance(answer, dict) else None
        first = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
        self.made.append(base.ModelCall(
            route=self.route_name, model=self.route.model, mode=self.route.mode, attempt=self._attempt,
            request=self.request, answer=answer, http_status=status,
            finish_reason=_text_or_none(first.get("finish_reason")),
            prompt_tokens=_count(usage, "prompt_tokens"),
            completion_tokens=_count(usage, "completion_tokens"), total_tokens=_count(usage, "total_tokens"),
            latency_ms=round((time.perf_counter() - self._started) * 1000, 3), outcome=outcome, error=error,
            started_at=self._at))

    def judge(self, outcome: str, error: str) -> None:
        """The last call answered, but not with a plan: say why on its record."""
        if self.made:
            self.made[-1] = dataclasses.replace(self.made[-1], outcome=outcome, error=error)


def masked(body: dict[str, Any], sensitive: Sequence[str]) -> dict[str, Any]:
    """The request as records keep it: the operator's `sensitive` paths under each event's data masked."""
    if not sensitive:
        return body
    recorded = copy.deepcopy(body)
    user = recorded["messages"][1]
    document = json.loads(user["content"])
    for event in document.get("events") or []:
        for path in sensitive:
            node = event.get("data")
            *parents, last = path.split(".")
            for part in parents:
                node = node.get(part) if isinstance(node, dict) else None
            if isinstance(node, dict) and last in node:
                node[last] = MASK
    user["content"] = json.dumps(document, ensure_ascii=False, default=str)
    return recorded


def _count(usage: Any, name: str) -> int | None:
    value = usage.get(name) if isinstance(usage, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _text_or_none(value: Any) -> str | None:
    return value[:100] if isinstance(value, str) else None


def _json_or_none(response: httpx.Response) -> Any:
    try:
        return response.json() if len(response.content) <= MAX_RESPONSE_BYTES else None
    except ValueError:
        return None


def _answer_text(answer: Any, name: str, mode: str) -> str:
    """The plan's JSON text: choices[0].message.content, or in `tools` mode the arguments of its
    propose_plan call; a ProposalError saying what the provider sent instead."""
    try:
        choice = answer["choices"][0]
        message = choice["message"]
    except (KeyError, IndexError, TypeError):
        raise base.ProposalError(f"{name}: the provider's answer has no choices[0].message") from None
    if not isinstance(message, dict):
        raise base.ProposalError(f"{name}: the provider's answer has no choices[0].message")
    if message.get("refusal"):
        raise Refused(f"{name}: the model refused: {str(message['refusal'])[:300]}")
    if isinstance(choice, dict) and choice.get("finish_reason") == "length":
        raise base.ProposalError(f"{name}: the answer was cut off at the token limit (finish_reason length)")
    if mode == "tools":
        return _plan_call_arguments(message, name)
    content = message.get("content")
    if not isinstance(content, str) or not content.strip():
        raise base.ProposalError(f"{name}: the model's message has no content")
    return content


def _plan_call_arguments(message: dict[str, Any], name: str) -> str:
    calls = message.get("tool_calls")
    calls = calls if isinstance(calls, list) else []
    call = next((c for c in calls if isinstance(c, dict) and isinstance(c.get("function"), dict)
                 and c["function"].get("name") == prompt.PLAN_FUNCTION), None)
    if call is None:
        raise base.ProposalError(f"{name}: the model did not call {prompt.PLAN_FUNCTION}")
    arguments = call["function"].get("arguments")
    if isinstance(arguments, dict):  # some servers send the arguments as an object, not a JSON string
        return json.dumps(arguments)
    if not isinstance(arguments, str) or not arguments.strip():
        raise base.ProposalError(f"{name}: the model's {prompt.PLAN_FUNCTION} call has no arguments")
    return arguments


def _json_body(response: httpx.Response, name: str) -> Any:
    if len(response.content) > MAX_RESPONSE_BYTES:
        raise base.ProposalError(f"{name}: the provider's answer is over {MAX_RESPONSE_BYTES} bytes")
    try:
        return response.json()
    except ValueError:
        raise base.ProposalError(f"{name}: the provider's answer is not JSON") from None


def _provider_message(response: httpx.Response) -> str:
    """The provider's error message (OpenAI shape {"error": {"message"}}), short, else the reason phrase."""
    try:
        data = response.json()
        message = data["error"]["message"] if isinstance(data.get("error"), dict) else data["error"]
    except (ValueError, KeyError, TypeError, AttributeError):
        message = response.reason_phrase or "no message"
    return str(message)[:300]


def _retry_after(response: httpx.Response, default: float) -> float:
    """Seconds from Retry-After (seconds or an HTTP date), capped; the backoff when absent or odd."""
    value = response.headers.get("Retry-After")
    if not value:
        return default
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = (parsedate_to_datetime(value) - timefmt.now()).total_seconds()
        except (TypeError, ValueError):
            return default
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_SECONDS)


def _where(error: jsonschema.exceptions.ValidationError) -> str:
    path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path).lstrip(".")
    return f"{path}: " if path else ""
