"""The approver page, /ui/: sign in with an API key, list plans, open one, approve or reject it.

Server-rendered HTML (templates/), plain forms, no script. Each screen is a
thin adapter over the calls the JSON API makes: `plan_store.list_plans` with the
API's cursors (pagination.py), `views.plan` for what a plan shows, and
`approvals.approve` / `approvals.reject`, which POST /v1/plans/{id}/approve
and /reject call too, so a decision made here is the API's decision.

The key comes from the cookie (keycookie.py) and is checked by auth.py as it
is for the API. Each screen needs the scope its API route needs: plans
`plans:read`, deciding `plans:approve`, a receipt `receipts:read`, the data
of a plan's events `events:read` (without it the page says so and shows
their ids only). The tenant comes from the key alone, so another tenant's
plan reads as not found. Every POST passes csrf.py first. Errors become
pages with the API's statuses (400, 401, 403, 404, 409, 413, 500).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from starlette.responses import RedirectResponse, Response

from fibric import errors, store, timefmt
from fibric.api import approvals, auth, context, error_responses, objects, pagination, routing, workers
from fibric.api.ui import csrf, forms, keycookie, templating
from fibric.store import event_store, plan_store, views

log = logging.getLogger("fibric.api.ui")

PATH = keycookie.PATH
PAGE_SIZE = pagination.DEFAULT_LIMIT
MAX_EVENTS_SHOWN = 20  # a run may coalesce many events; the rest are counted, not shown
MAX_NOTE = 255  # as the API's `approver`
MAX_REASON = 1000  # as the API's reject `reason`
_OPERATOR_REF = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,199}")  # as the API's operator_id filter
_DONE = {"approved": "Approved: the approved actions were disposed of against the policy.",
         "rejected": "Rejected: no action runs, and each has a declined receipt."}

router = APIRouter(prefix=PATH, include_in_schema=False, route_class=routing.Route)


class SignedOut(Exception):
    """The request carries no key: the screen sends the browser to sign in."""


class Forged(Exception):
    """A POST that did not come from this page (csrf.py): refused, nothing changes."""


@dataclass(frozen=True)
class Session:
    """Who is signed in, and the token their forms post (csrf.py)."""

    principal: store.Principal | None
    csrf_token: str

    def may(self, scope: str) -> bool:
        return self.principal is not None and scope in self.principal.scopes


Endpoint = Callable[..., Awaitable[Response]]


def screen(endpoint: Endpoint) -> Endpoint:
    """Turn what a screen raises into the page that says so, with the API's status."""

    @functools.wraps(endpoint)
    async def run(request: Request, *args: Any, **kwargs: Any) -> Response:
        try:
            return await endpoint(request, *args, **kwargs)
        except SignedOut:
            return RedirectResponse(f"{PATH}/signin", status_code=303)
        except Forged as e:
            return _problem(request, 403, "Refused", f"This request was refused: {e}. Nothing changed. "
                            "Open the page again and use its own forms.")
        except errors.FibricError as e:
            return _failure(request, e)
        except Exception as e:  # a page, not the API's JSON; the traceback goes to the log only
            rid = error_responses.request_id(request)
            log.error("request %s failed", rid, exc_info=e)
            return _problem(request, 500, "Something failed",
                            f"Something failed on our side; quote {rid} when reporting it.")

    return run


async def signed_in(request: Request, scope: str) -> Session:
    """The session of the request's cookie, whose key must carry `scope` (else InsufficientScope)."""
    key = keycookie.key_of(request)
    if key is None:
        raise SignedOut
    principal = await auth.authorized(request, scope)  # the key still valid (auth.py), before anything else
    return Session(principal, csrf.token(key))


def digest_of(form: forms.Form) -> str:
    """The plan's digest as the page showed it, which a decision is bound to (required)."""
    digest = form.one("digest")
    if not digest:
        raise errors.SpecInvalid(errors.SpecProblem("the plan's digest as shown is required", path="digest"))
    return digest


async def posted(request: Request) -> tuple[forms.Form, str]:
    """The form of a POST this page sent, and the session key it was sent with (csrf.py)."""
    why = csrf.same_origin(request)
    if why is not None:
        raise Forged(why)
    form = await forms.read(request)
    key = keycookie.key_of(request)
    if key is None:
        raise SignedOut
    if not csrf.valid(key, form.one(csrf.FIELD)):
        raise Forged("the form's token is not this session's")
    return form, key


# --- signing in and out ----------------------------------------------------


@router.get("/")
@screen
async def home(request: Request) -> Response:
    if keycookie.key_of(request) is None:
        raise SignedOut
    return RedirectResponse(f"{PATH}/plans", status_code=303)


@router.get("/signin")
@screen
async def signin_form(request: Request) -> Response:
    return templating.page("signin.html", session=None, message=None)


@router.post("/signin")
@screen
async def signin(request: Request) -> Response:
    why = csrf.same_origin(request)
    if why is not None:
        raise Forged(why)
    form = await forms.read(request)
    key = keycookie.plausible((form.one("key") or "").strip())
    if key is None:
        return _signin_again(request, "That is not an API key. Paste a key of your tenant (sk_live_...).")
    ctx: context.Context = request.app.state.fibric
    try:
        await workers.run(auth.principal_from_header, ctx.state, f"Bearer {key}")
    except errors.Unauthenticated as e:
        return _signin_again(request, f"That key is not accepted: {e}.")
    response = RedirectResponse(f"{PATH}/plans", status_code=303)
    keycookie.keep(response, request, key)
    return response


@router.post("/signout")
@screen
async def signout(request: Request) -> Response:
    with contextlib.suppress(SignedOut):  # signed out already: nothing to clear, but say so all the same
        await posted(request)
    response = RedirectResponse(f"{PATH}/signin", status_code=303)
    keycookie.forget(response, request)
    return response


# --- plans -----------------------------------------------------------------


@dataclass(frozen=True)
class Filters:
    status: str | None  # None: any status
    operator_id: str | None
    before_seq: int | None

    def query(self, **more: str) -> str:
        values = {"status": self.status or "", **({"operator": self.operator_id} if self.operator_id else {})}
        return urlencode({**values, **more})


def filters_of(request: Request) -> Filters:
    """The list's filters from the query; SpecInvalid naming the parameter for a bad one."""
    query = request.query_params
    status = query.get("status", "proposed") or None  # the pending plans unless asked otherwise
    if status is not None and status not in plan_store.STATUSES:
        raise errors.SpecInvalid(errors.SpecProblem(f"must be one of {', '.join(plan_store.STATUSES)}",
                                                    path="status"))
    operator_id = query.get("operator") or None
    if operator_id is not None and not _OPERATOR_REF.fullmatch(operator_id):
        raise errors.SpecInvalid(errors.SpecProblem("not an operator id", path="operator"))
    cursor = query.get("cursor")
    return Filters(status, operator_id, pagination.decode_cursor(cursor) if cursor else None)


@router.get("/plans")
@screen
async def plan_list(request: Request) -> Response:
    session = await signed_in(request, "plans:read")
    filters = filters_of(request)
    return await workers.run(_plan_list_page, request.app.state.fibric, session, filters)


def _plan_list_page(ctx: context.Context, session: Session, filters: Filters) -> Response:
    principal = _principal(session)

    def fetch(before_seq: int | None, limit: int) -> list[plan_store.Plan]:
        return plan_store.list_plans(ctx.state, principal.tenant_id, status=filters.status,
                                     operator_id=filters.operator_id, limit=limit, before_seq=before_seq)

    page = pagination.paginate(fetch, pagination.PageParams(PAGE_SIZE, filters.before_seq))
    operators = None
    if session.may("operators:read"):  # names for the filter; without the scope, an id field
        operators = [{"id": o.id, "name": o.name} for o in
                     ctx.state.list_objects(principal.tenant_id, "Operator", limit=pagination.MAX_LIMIT)]
    return templating.page(
        "plans.html", session=session, plans=[views.plan_summary(p) for p in page.items],
        statuses=plan_store.STATUSES, status=filters.status, operator_id=filters.operator_id,
        operators=operators,
        next_url=f"{PATH}/plans?{filters.query(cursor=page.next_cursor)}" if page.next_cursor else None,
        first_url=f"{PATH}/plans?{filters.query()}" if filters.before_seq is not None else None,
    )


@router.get("/plans/{plan_id}")
@screen
async def plan_detail(request: Request, plan_id: str) -> Response:
    session = await signed_in(request, "plans:read")
    objects.check_ref("plan", plan_id)
    done = request.query_params.get("done")
    return await workers.run(_plan_page, request.app.state.fibric, session, plan_id,
                             _DONE.get(done or ""))


def _plan_page(ctx: context.Context, session: Session, plan_id: str, done: str | None) -> Response:
    principal = _principal(session)
    plan = views.plan(plan_store.get(ctx.state, principal.tenant_id, plan_id))
    event_ids: list[str] = list(plan.get("event_ids") or [])
    shown: list[dict[str, Any]] | None = None
    if session.may("events:read"):
        shown = [_evidence(ctx, principal, event_id) for event_id in event_ids[:MAX_EVENTS_SHOWN]]
    expires_at = plan.get("expires_at")
    # Shown only: approving an expired plan is refused by the store, on the database's clock.
    expired = expires_at is not None and timefmt.parse(expires_at) <= timefmt.now()
    actions = {a.get("idempotency_key"): a for a in plan["actions"]}
    return templating.page(
        "plan.html", session=session, plan=plan, done=done, events=shown, event_ids=event_ids,
        events_not_shown=max(0, len(event_ids) - MAX_EVENTS_SHOWN), expired=expired,
        can_decide=plan["status"] == "proposed" and not expired and session.may("plans:approve"),
        may_approve=session.may("plans:approve"), may_read_receipts=session.may("receipts:read"),
        results=[{**r, "action": actions.get(r.get("idempotency_key"), {})} for r in plan["results"] or []],
    )


def _evidence(ctx: context.Context, principal: store.Principal, event_id: str) -> dict[str, Any]:
    try:
        event = event_store.get(ctx.state, principal.tenant_id, event_id)
    except errors.NotFound:
        return {"id": event_id, "missing": True}
    return {"id": event.id, "missing": False, "type": event.type, "entity_key": event.entity_key,
            "occurred_at": timefmt.rfc3339(event.occurred_at),
            "received_at": timefmt.rfc3339(event.received_at), "data": event.data}


@router.post("/plans/{plan_id}/approve")
@screen
async def approve(request: Request, plan_id: str) -> Response:
    form, _ = await posted(request)
    session = await signed_in(request, "plans:approve")
    objects.check_ref("plan", plan_id)
    chosen = form.all("action")
    if not chosen:
        raise errors.SpecInvalid("Choose at least one action to approve, or reject the plan.")
    note = (form.one("note") or "").strip() or None
    if note is not None and len(note) > MAX_NOTE:
        raise errors.SpecInvalid(errors.SpecProblem(f"at most {MAX_NOTE} characters", path="note"))
    ctx: context.Context = request.app.state.fibric
    # The actions checked, as `only_actions`: all of them approve the whole plan; the digest posted
    # is the plan's as this page showed it, so a plan that differs runs nothing (409).
    await approvals.approve(ctx, context.executor_of(request), _principal(session), plan_id,
                            approver=note, only=list(dict.fromkeys(chosen)), digest=digest_of(form))
    return RedirectResponse(f"{PATH}/plans/{plan_id}?done=approved#results", status_code=303)


@router.post("/plans/{plan_id}/reject")
@screen
async def reject(request: Request, plan_id: str) -> Response:
    form, _ = await posted(request)
    session = await signed_in(request, "plans:approve")
    objects.check_ref("plan", plan_id)
    reason = (form.one("reason") or "").strip()
    if not reason or len(reason) > MAX_REASON:
        raise errors.SpecInvalid(errors.SpecProblem(f"say why, in 1 to {MAX_REASON} characters",
                                                    path="reason"))
    ctx: context.Context = request.app.state.fibric
    await approvals.reject(ctx, _principal(session), plan_id, reason=reason, digest=digest_of(form))
    return RedirectResponse(f"{PATH}/plans/{plan_id}?done=rejected#results", status_code=303)


# --- receipts, the stylesheet, and everything else ---------------------------


@router.get("/receipts/{receipt_id}")
@screen
async def receipt_detail(request: Request, receipt_id: str) -> Response:
    session = await signed_in(request, "receipts:read")
    objects.check_ref("receipt", receipt_id)
    return await workers.run(_receipt_page, request.app.state.fibric, session, receipt_id)


def _receipt_page(ctx: context.Context, session: Session, receipt_id: str) -> Response:
    receipt = views.receipt(ctx.receipts.get(_principal(session).tenant_id, receipt_id))
    return templating.page("receipt.html", session=session, receipt=receipt)


@router.get(f"/static/{templating.STYLESHEET}")
async def stylesheet() -> Response:
    return templating.stylesheet()


@router.get("/{rest:path}")
@screen
async def unknown(request: Request, rest: str) -> Response:
    return _problem(request, 404, "Not found", "There is no such page.")


# --- errors as pages ---------------------------------------------------------


def _failure(request: Request, e: errors.FibricError) -> Response:
    if isinstance(e, errors.Unauthenticated):
        return _signin_again(request, f"Your key is no longer accepted ({e}). Sign in again.", forget=True)
    if isinstance(e, errors.InsufficientScope):
        return _problem(request, 403, "Not allowed",
                        f"Your API key lacks the '{e.scope}' scope, which this needs. Ask an admin for a "
                        "key that has it.")
    if isinstance(e, errors.NotFound):
        return _problem(request, 404, "Not found", str(e))
    if isinstance(e, plan_store.NotApprovable):
        return _problem(request, 409, "Cannot be decided", str(e))
    if isinstance(e, errors.Conflict):
        return _problem(request, 409, "Conflict", str(e))
    if isinstance(e, forms.TooLarge):
        return _problem(request, 413, "Too large", str(e))
    if isinstance(e, errors.SpecInvalid):
        entries = error_responses.field_entries(e.problems)
        message = "; ".join(f"{x['field']}: {x['message']}" if x["field"] else x["message"] for x in entries)
        return _problem(request, 400, "Not accepted", message)
    rid = error_responses.request_id(request)
    if isinstance(e, approvals.NoExecutor):  # says what is wrong (no executor) and that nothing changed
        return _problem(request, 500, "Cannot run", str(e))
    if isinstance(e, errors.TemporaryError):
        retry_after = max(1, math.ceil(e.delay))
        log.warning("request %s: temporary failure: %s", rid, e)
        return _problem(request, 500, "Try again shortly",
                        f"A dependency is temporarily unavailable; try again in {retry_after} s.",
                        headers={"Retry-After": str(retry_after)})
    log.error("request %s failed: %s", rid, e, exc_info=e)
    return _problem(request, 500, "Something failed",
                    f"Something failed on our side; quote {rid} when reporting it.")


def _problem(request: Request, status: int, title: str, message: str,
             headers: dict[str, str] | None = None) -> Response:
    key = keycookie.key_of(request)
    session = Session(None, csrf.token(key)) if key is not None else None
    return templating.page("problem.html", status_code=status, headers=headers, session=session, title=title,
                           message=message, back=_back(request))


def _signin_again(request: Request, message: str, *, forget: bool = False) -> Response:
    response = templating.page("signin.html", status_code=401, session=None, message=message)
    if forget:
        keycookie.forget(response, request)
    return response


def _back(request: Request) -> str:
    """Where a problem page links back to: the plan a decision was about, else the list."""
    match = re.fullmatch(rf"{PATH}/plans/([A-Za-z0-9][A-Za-z0-9_.-]{{0,199}})(/.*)?", request.url.path)
    return f"{PATH}/plans/{match.group(1)}" if match else f"{PATH}/plans"


def _principal(session: Session) -> store.Principal:
    if session.principal is None:  # signed_in always sets it; only problem pages have none
        raise errors.Unauthenticated("not signed in")
    return session.principal
