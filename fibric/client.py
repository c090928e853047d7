"""A typed client of the v1 REST API: what the CLI (and any Python script) talks through.

It speaks the wire contract (the reference plus docs/api.md) and nothing
else; it never imports the server. Three behaviours a caller relies on:

- Every error body becomes an `ApiError` carrying the reference's code,
  message and request id (and `fields` for spec problems); a server that
  cannot be reached is `Unreachable`, naming the URL.
- Requests are retried with backoff when retrying cannot do harm: a 429
  (after its Retry-After), a refused connection, and for idempotent requests
  a 5xx, a dropped response, or a 409 with Retry-After (the server is still
  running the first request under this Idempotency-Key). Every POST carries an `Idempotency-Key` that
  stays the same across its retries, so a retried create is replayed, not
  repeated.
- The API key is sent and never shown: not in `repr`, not in any error.

Most methods return the JSON as sent; `Client.plans` returns plans as frozen
types (fibric/plantypes.py) and approves a plan bound to the digest it read.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar
from urllib.parse import quote

import httpx

from fibric import errors, plantypes

# Path segment of each kind: "Policy" -> /v1/policies. Aliases are accepted too.
RESOURCES = {"Operator": "operators", "Connector": "connectors", "Policy": "policies",
             "Webhook": "webhooks"}
_ALIASES = {alias: kind for kind, resource in RESOURCES.items()
            for alias in (kind, kind.lower(), resource)}
PAGE_SIZE = 100
REPLAY_TIMEOUT = 600.0  # seconds: a replay of many recorded decisions outlasts an ordinary call
MAX_RETRY_AFTER = 60.0  # a longer Retry-After fails now rather than hanging a CLI for minutes
_IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
T = TypeVar("T")


class ApiError(errors.FibricError):
    """The server answered with the reference's error body."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        request_id: str | None = None,
        fields: list[dict[str, str]] | None = None,
    ) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.request_id = request_id
        self.fields = list(fields or [])
        where = f" (request {request_id})" if request_id else ""
        super().__init__(f"{message} [{status} {code}]{where}")


class Unreachable(errors.TemporaryError):
    """No answer from the server at all: not running, wrong URL, or the network."""


def kind_of(alias: str) -> str:
    """'Operator', 'operator' or 'operators' -> 'Operator'; ValueError names the choices."""
    try:
        return _ALIASES[alias]
    except KeyError:
        raise ValueError(
            f"unknown kind '{alias}'; expected one of: {', '.join(RESOURCES.values())}"
        ) from None


def resource_of(kind: str) -> str:
    """'Operator', 'operator' or 'operators' -> 'operators'."""
    return RESOURCES[kind_of(kind)]


class Client:
    """The v1 API at `url`, authenticated with `key`; use as a context manager or call close()."""

    def __init__(
        self,
        url: str,
        key: str,
        *,
        timeout: float = 10.0,
        retries: int = 3,
        backoff: float = 0.5,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.url = url.rstrip("/")
        self.retries = max(0, retries)
        self._backoff = backoff
        self._sleep = sleep
        self._http = httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {key}", "Accept": "application/json"},
            timeout=timeout,
            transport=transport,
        )
        self.plans = PlanCalls(self)

    def __repr__(self) -> str:
        return f"Client({self.url!r})"  # never the key

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # --- desired state ------------------------------------------------------

    def apply(
        self,
        documents: list[dict[str, Any]],
        apply_set: str | None = None,
        prune: bool = False,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        """POST /v1/apply: the apply_result (changes, warnings)."""
        body: dict[str, Any] = {"documents": documents, "prune": prune, "dry_run": dry_run}
        if apply_set is not None:
            body["apply_set"] = apply_set
        return self.request("POST", "/v1/apply", json=body)

    def specs(self, kind: str | None = None) -> list[dict[str, Any]]:
        """Every live spec document (all pages), newest first; `kind` as 'Operator' or an alias."""
        params = {"kind": _ALIASES.get(kind, kind)} if kind else {}
        return list(self.paginate("/v1/specs", params))

    def delete(self, kind: str, ref: str) -> dict[str, Any]:
        """DELETE one object by id or name."""
        return self.request("DELETE", f"/v1/{resource_of(kind)}/{_segment(ref)}")

    # --- reference objects --------------------------------------------------

    def list_operators(self, status: str | None = None) -> list[dict[str, Any]]:
        return list(self.paginate("/v1/operators", {"status": status} if status else {}))

    def get_operator(self, ref: str) -> dict[str, Any]:
        return self.request("GET", f"/v1/operators/{_segment(ref)}")

    def create_operator(
        self, name: str, capabilities: list[str], policy_id: str, **optional: Any
    ) -> dict[str, Any]:
        """POST /v1/operators; `optional` takes model, schedule, subscribes, sense, rules, status, labels."""
        body = {"name": name, "capabilities": capabilities, "policy_id": policy_id, **optional}
        return self.request("POST", "/v1/operators", json=body)

    def list_connectors(
        self, capability: str | None = None, kind: str | None = None
    ) -> list[dict[str, Any]]:
        params = {k: v for k, v in (("capability", capability), ("kind", kind)) if v}
        return list(self.paginate("/v1/connectors", params))

    def get_connector(self, ref: str) -> dict[str, Any]:
        return self.request("GET", f"/v1/connectors/{_segment(ref)}")

    def ack_connector(self, ref: str) -> dict[str, Any]:
        """POST /v1/connectors/{id}/ack: accept its current tool definitions as the pins."""
        return self.request("POST", f"/v1/connectors/{_segment(ref)}/ack")

    def list_webhooks(self) -> list[dict[str, Any]]:
        return list(self.paginate("/v1/webhooks"))

    def get_webhook(self, ref: str) -> dict[str, Any]:
        return self.request("GET", f"/v1/webhooks/{_segment(ref)}")

    def create_webhook(
        self, url: str, events: list[str], description: str | None = None, **optional: Any
    ) -> dict[str, Any]:
        """POST /v1/webhooks; the response's signing_secret is shown this once."""
        body: dict[str, Any] = {"url": url, "events": events, **optional}
        if description is not None:
            body["description"] = description
        return self.request("POST", "/v1/webhooks", json=body)

    def list_policies(self) -> list[dict[str, Any]]:
        return list(self.paginate("/v1/policies"))

    def get_policy(self, ref: str) -> dict[str, Any]:
        return self.request("GET", f"/v1/policies/{_segment(ref)}")

    def replay_policy(self, ref: str, rego: str, *, query: str | None = None, since: str | None = None,
                      operator: str | None = None) -> dict[str, Any]:
        """POST /v1/policies/{ref}/replay: what the candidate `rego` would decide on the recorded inputs."""
        body = {"rego": rego, "query": query, "since": since, "operator": operator}
        return self.request("POST", f"/v1/policies/{_segment(ref)}/replay",
                            json={k: v for k, v in body.items() if v is not None}, timeout=REPLAY_TIMEOUT)

    def get_object(self, kind: str, ref: str) -> dict[str, Any]:
        """One API object of any desired-state kind, by id or name."""
        return self.request("GET", f"/v1/{resource_of(kind)}/{_segment(ref)}")

    def list_objects(self, kind: str) -> list[dict[str, Any]]:
        """Every API object of one desired-state kind (all pages)."""
        return list(self.paginate(f"/v1/{resource_of(kind)}"))

    # --- the loop: events, plans, receipts -------------------------------------

    def ingest_event(
        self,
        type: str,
        entity_key: str,
        idempotency_key: str,
        data: dict[str, Any],
        occurred_at: str | None = None,
    ) -> dict[str, Any]:
        """POST /v1/events: the stored envelope; `dedup` is true when the key was seen before."""
        body: dict[str, Any] = {"type": type, "entity_key": entity_key,
                                "idempotency_key": idempotency_key, "data": data}
        if occurred_at is not None:
            body["occurred_at"] = occurred_at
        # Retries reuse this call's Idempotency-Key; a new call with the same body key reads as dedup.
        return self.request("POST", "/v1/events", json=body)

    def list_plans(self, status: str | None = None, operator_id: str | None = None) -> list[dict[str, Any]]:
        params = {k: v for k, v in (("status", status), ("operator_id", operator_id)) if v}
        return list(self.paginate("/v1/plans", params))

    def get_plan(self, plan_id: str) -> dict[str, Any]:
        return self.request("GET", f"/v1/plans/{_segment(plan_id)}")

    def approve_plan(
        self,
        plan_id: str,
        approver: str | None = None,
        only_actions: list[str] | None = None,
        idempotency_key: str | None = None,
        *,
        digest: str | None = None,
    ) -> dict[str, Any]:
        """POST /v1/plans/{id}/approve: the disposed plan with one result per action.

        `approver` is a free-text note; `digest` (the plan's, as you reviewed it)
        makes the server refuse with 409 if the plan is not the one you saw.
        """
        body = _present(approver=approver, only_actions=only_actions, digest=digest)
        return self.request("POST", f"/v1/plans/{_segment(plan_id)}/approve", json=body,
                            idempotency_key=idempotency_key)

    def reject_plan(
        self, plan_id: str, reason: str, digest: str | None = None, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        """POST /v1/plans/{id}/reject: the plan, rejected, with a `declined` result per action."""
        return self.request("POST", f"/v1/plans/{_segment(plan_id)}/reject",
                            json=_present(reason=reason, digest=digest), idempotency_key=idempotency_key)

    def list_receipts(
        self,
        operator_id: str | None = None,
        entity_key: str | None = None,
        decision: str | None = None,
    ) -> list[dict[str, Any]]:
        filters = (("operator_id", operator_id), ("entity_key", entity_key), ("decision", decision))
        return list(self.paginate("/v1/receipts", {k: v for k, v in filters if v}))

    def get_receipt(self, receipt_id: str) -> dict[str, Any]:
        return self.request("GET", f"/v1/receipts/{_segment(receipt_id)}")

    # --- receipt ledger audit -------------------------------------------------

    def query_receipts(self, sql: str, max_rows: int = 1000) -> dict[str, Any]:
        """POST /v1/receipts/query: one read-only SELECT over the key's tenant's receipts."""
        return self.request("POST", "/v1/receipts/query", json={"sql": sql, "max_rows": max_rows})

    # --- webhooks --------------------------------------------------------------

    def delete_webhook(self, ref: str) -> dict[str, Any]:
        return self.request("DELETE", f"/v1/webhooks/{_segment(ref)}")

    def rotate_webhook_secret(self, ref: str, grace_period_seconds: int | None = None) -> dict[str, Any]:
        """POST /v1/webhooks/{id}/rotate_secret; the new signing_secret is shown this once."""
        body = {} if grace_period_seconds is None else {"grace_period_seconds": grace_period_seconds}
        return self.request("POST", f"/v1/webhooks/{_segment(ref)}/rotate_secret", json=body)

    def disable_webhook(self, ref: str) -> dict[str, Any]:
        return self.request("POST", f"/v1/webhooks/{_segment(ref)}/disable")

    def enable_webhook(self, ref: str) -> dict[str, Any]:
        """Enable it again, also after the dispatcher disabled it (410 Gone, 24 h of failures)."""
        return self.request("POST", f"/v1/webhooks/{_segment(ref)}/enable")

    def test_webhook(self, ref: str) -> dict[str, Any]:
        """POST /v1/webhooks/{id}/test: queue a webhook.test delivery; returns the delivery."""
        return self.request("POST", f"/v1/webhooks/{_segment(ref)}/test")

    def list_webhook_deliveries(self, ref: str, status: str | None = None) -> list[dict[str, Any]]:
        """Every delivery of the webhook (each with its attempts), newest first."""
        return list(self.paginate(f"/v1/webhooks/{_segment(ref)}/deliveries",
                                  {"status": status} if status else None))

    # --- runs ----------------------------------------------------------------

    def list_runs(self, operator_id: str | None = None, status: str | None = None) -> list[dict[str, Any]]:
        """GET /v1/runs (every page), newest first, optionally of one operator and one status."""
        params = {k: v for k, v in (("operator_id", operator_id), ("status", status)) if v}
        return list(self.paginate("/v1/runs", params))

    def get_run(self, run_id: str) -> dict[str, Any]:
        return self.request("GET", f"/v1/runs/{_segment(run_id)}")

    # --- secrets (docs/security.md#secrets) -----------------------------------------

    def set_secret(self, name: str, value: str) -> dict[str, Any]:
        """PUT /v1/secrets/{name}: store or replace a tenant secret; the answer never carries the value."""
        return self.request("PUT", f"/v1/secrets/{_segment(name)}", json={"value": value})

    def list_secrets(self) -> list[dict[str, Any]]:
        """Every secret's name and fingerprint (never a value), newest first."""
        return list(self.paginate("/v1/secrets"))

    def delete_secret(self, name: str) -> dict[str, Any]:
        return self.request("DELETE", f"/v1/secrets/{_segment(name)}")

    # --- sync status (docs/sync.md) -------------------------------------------

    def list_sync(self) -> list[dict[str, Any]]:
        """GET /v1/sync: every apply set's sync status (revision, last attempt, error, drift)."""
        return list(self.request("GET", "/v1/sync").get("data", []))

    def get_sync(self, apply_set: str) -> dict[str, Any]:
        """GET /v1/sync/{apply_set}; NotFound-like ApiError (404) for a set this tenant never applied."""
        return self.request("GET", f"/v1/sync/{_segment(apply_set)}")

    # --- plumbing -----------------------------------------------------------

    def paginate(self, path: str, params: dict[str, Any] | None = None) -> Iterator[dict[str, Any]]:
        """Items of a list route, page after page, following next_cursor until it is null."""
        query = {**(params or {}), "limit": PAGE_SIZE}
        while True:
            page = self.request("GET", path, params=query)
            yield from page.get("data", [])
            cursor = page.get("next_cursor")
            if not page.get("has_more") or not cursor:
                return
            query["cursor"] = cursor

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """One call, retried where that is safe; the decoded JSON body, or ApiError / Unreachable.

        `timeout` replaces the client's for a call known to take long (a replay)."""
        limit: dict[str, Any] = {"timeout": timeout} if timeout is not None else {}
        headers = {}
        if method == "POST":
            headers["Idempotency-Key"] = idempotency_key or f"fibric-cli-{uuid.uuid4().hex}"
        idempotent = method in _IDEMPOTENT or "Idempotency-Key" in headers
        attempt = 0
        while True:
            try:
                response = self._http.request(method, path, json=json, params=params, headers=headers,
                                              **limit)
            except httpx.TransportError as e:
                # A refused connection never reached the server; other failures may have.
                safe = idempotent or isinstance(e, httpx.ConnectError)
                if safe and attempt < self.retries:
                    self._sleep(self._delay(attempt))
                    attempt += 1
                    continue
                raise Unreachable(f"cannot reach the Fibric API at {self.url}: {_describe(e)}") from e
            retry_after = _retry_after(response)
            retryable = response.status_code == 429 or (idempotent and (
                response.status_code >= 500 or (response.status_code == 409 and retry_after is not None)))
            patient = retry_after is None or retry_after <= MAX_RETRY_AFTER
            if retryable and patient and attempt < self.retries:
                self._sleep(retry_after if retry_after is not None else self._delay(attempt))
                attempt += 1
                continue
            return _decode(response)

    def _delay(self, attempt: int) -> float:
        # Exponential with full jitter, so many clients retrying do not stampede together.
        return random.uniform(0, self._backoff * 2**attempt)


class PlanCalls:
    """The plan routes with typed answers (fibric.plantypes), as `Client.plans`.

    `api.plans.get(id)` reads a plan; `api.plans.approve(plan)` approves it as
    read, bound to its digest. The dict methods (`list_plans`, `get_plan`,
    `approve_plan`, `reject_plan`) stay for callers that want the JSON as sent.
    """

    def __init__(self, api: Client) -> None:
        self._api = api

    def summaries(
        self, status: str | None = None, operator_id: str | None = None
    ) -> list[plantypes.PlanSummary]:
        """GET /v1/plans (every page), newest first."""
        return [_typed(plantypes.plan_summary, item) for item in self._api.list_plans(status, operator_id)]

    def get(self, plan_id: str) -> plantypes.Plan:
        return _typed(plantypes.plan, self._api.get_plan(plan_id))

    def approve(
        self,
        plan: plantypes.Plan,
        *,
        only: Sequence[str] | None = None,
        note: str | None = None,
        idempotency_key: str | None = None,
    ) -> plantypes.Plan:
        """Approve `plan` as it was read: its digest is sent, so the server runs exactly that plan
        or answers 409. `only` limits it to those actions' idempotency keys (the others are
        declined); `note` is the free-text approver recorded on every receipt."""
        body = self._api.approve_plan(plan.id, note, list(only) if only is not None else None,
                                      idempotency_key, digest=plan.digest)
        return _typed(plantypes.plan, body)

    def reject(self, plan_id: str, reason: str, *, digest: str | None = None) -> plantypes.Plan:
        """Reject the plan, saying why; nothing runs and every action is declined."""
        return _typed(plantypes.plan, self._api.reject_plan(plan_id, reason, digest))


def _typed(parse: Callable[[dict[str, Any]], T], body: dict[str, Any]) -> T:
    """`parse(body)`, or ApiError `invalid_response` when the server sent something else."""
    try:
        return parse(body)
    except plantypes.Malformed as e:
        raise ApiError(200, "invalid_response", str(e)) from e


def audit_snapshot(
    url: str, token: str, tenant_id: str | None = None, *, timeout: float = 60.0
) -> dict[str, Any]:
    """POST /v1/audit/snapshot: the sealed ledger in one Parquet file, proven by the data dir's token.

    No API key: the token from the data dir is the credential, so this is a
    function rather than a Client method.
    """
    return _local_admin(url, "/v1/audit/snapshot", token, tenant_id, timeout)


def audit_files(url: str, token: str, tenant_id: str | None = None, *, table: str = "receipts",
                timeout: float = 60.0) -> list[str]:
    """POST /v1/audit/files: the sealed ledger's Parquet files now, for the local admin to read:
    the receipts' (`files`) or the model call records' (`model_call_files`)."""
    answer = _local_admin(url, "/v1/audit/files", token, tenant_id, timeout)
    files = answer["files"] if table == "receipts" else answer.get("model_call_files", [])
    return [str(f) for f in files]


def _local_admin(url: str, path: str, token: str, tenant_id: str | None, timeout: float) -> dict[str, Any]:
    body = {"tenant_id": tenant_id} if tenant_id is not None else {}
    headers = {"Fibric-Audit-Token": token, "Idempotency-Key": f"fibric-cli-{uuid.uuid4().hex}"}
    try:
        response = httpx.post(f"{url.rstrip('/')}{path}", json=body, headers=headers, timeout=timeout)
    except httpx.TransportError as e:
        raise Unreachable(f"cannot reach the Fibric API at {url}: {_describe(e)}") from e
    return _decode(response)


def _decode(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.is_success and isinstance(body, dict):
        return body
    if response.is_success:
        raise ApiError(response.status_code, "invalid_response",
                       f"expected a JSON object from {response.request.url.path}")
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):  # not our server (a proxy page, say)
        text = " ".join(response.text.split())[:200] or response.reason_phrase
        raise ApiError(response.status_code, f"http_{response.status_code}", text,
                       response.headers.get("Request-Id"))
    fields = error.get("fields")
    raise ApiError(
        response.status_code,
        str(error.get("code", f"http_{response.status_code}")),
        str(error.get("message", response.reason_phrase)),
        error.get("request_id") or response.headers.get("Request-Id"),
        [f for f in fields if isinstance(f, dict)] if isinstance(fields, list) else None,
    )


def _retry_after(response: httpx.Response) -> float | None:
    """Retry-After as seconds (delta-seconds or an HTTP date); None if absent or unreadable."""
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _present(**fields: Any) -> dict[str, Any]:
    """A request body of the fields given (None means: leave it out, let the server default it)."""
    return {name: value for name, value in fields.items() if value is not None}


def _segment(ref: str) -> str:
    """A path segment; refs with '/' or '?' would address another route, so they are escaped."""
    return quote(ref, safe="")


def _describe(error: httpx.TransportError) -> str:
    if isinstance(error, httpx.ConnectError):
        return f"connection failed ({error})" if str(error) else "connection failed"
    if isinstance(error, httpx.TimeoutException):
        return "timed out"
    return str(error) or type(error).__name__
