"""`fibric plans`: what an approver needs at a terminal: list, show, approve, reject.

A thin adapter over `Client.plans` (typed plans, fibric/plantypes.py). Two
choices shape it. `approve` reads the plan and sends its digest, so what runs
is what `show` showed; a plan that changed is refused by the server, not
guessed at here. And every command is non-interactive (no prompt, no
--yes): scripts and chat-ops bots run it as a person would, and the exit
code says what happened (see `approve --help`).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from datetime import datetime

import click

from fibric import client, plantypes, timefmt
from fibric.cli import options, tables

# `approve`: the plan was disposed of, but some approved action was refused, failed or is in doubt.
NOT_ALL_RAN = 3
# What each final status says about the decision, for `show`.
DECIDED = {"approved": "approved", "executed": "approved", "blocked": "approved",
           "rejected": "rejected", "expired": "expired"}
OUTPUT = click.Choice(["table", "json"])


@click.group("plans")
def plans() -> None:
    """List, show, approve and reject the execution plans operators propose.

    \b
    A review, then a decision:
      fibric plans list --status proposed
      fibric plans show PLAN_ID
      fibric plans approve PLAN_ID [--only IDEMPOTENCY_KEY ...] [--note TEXT]
      fibric plans reject PLAN_ID --reason TEXT
    """


@plans.command("list")
@click.option("--status", type=click.Choice([s.value for s in plantypes.PlanStatus]), default=None,
              help="Only plans in this status (proposed: awaiting a decision).")
@click.option("--operator", "operator", default=None, metavar="NAME_OR_ID",
              help="Only plans proposed by this operator (a name is looked up, which needs the "
                   "operators:read scope; an id, op_..., is not).")
@click.option("-o", "--output", type=OUTPUT, default="table", show_default=True,
              help="table, or json: the API's plan summaries.")
@click.pass_context
def list_plans(ctx: click.Context, status: str | None, operator: str | None, output: str) -> None:
    """List execution plans, newest first."""
    echo_list(options.session(ctx).client(), output, status=status, operator=operator)


@plans.command("show")
@click.argument("plan_id")
@click.option("-o", "--output", type=click.Choice(["text", "json"]), default="text", show_default=True,
              help="text: for reading; json: the API's ExecutionPlan.")
@click.pass_context
def show(ctx: click.Context, plan_id: str, output: str) -> None:
    """Show plan PLAN_ID, its actions and what became of them.

    The header says who proposed it, on which run and events, its digest and
    expiry, and who decided and why; then each action with its arguments,
    the decision and rule evaluated when it was proposed, the model's
    rationale, and its result and receipt once disposed of. A plan that is no
    longer up for a decision (decided, or past its expiry) is marked stale
    on the second line.
    """
    echo_plan(options.session(ctx).client(), plan_id, output)


@plans.command("approve")
@click.argument("plan_id")
@click.option("--only", "only", multiple=True, metavar="IDEMPOTENCY_KEY",
              help="Run only this action (repeatable); the others are declined. Default: all.")
@click.option("--note", default=None, help="Free-text note recorded as the approver on every receipt "
                                           "(default: the API key's id).")
@click.pass_context
def approve(ctx: click.Context, plan_id: str, only: tuple[str, ...], note: str | None) -> None:
    """Approve plan PLAN_ID and print what became of each action.

    The plan is read first and approved bound to its digest, so what runs is
    exactly what `fibric plans show` showed; the server refuses a plan that
    is not. The executor still checks every action against the policy:
    approval never overrides a BLOCK. Never prompts.

    \b
    Exit codes:
      0  every approved action applied (or had been applied already)
      3  the plan was disposed of, but an action was refused, failed or is in
         doubt (the table says which; approving again will not rerun it)
      1  the approval failed: no such plan, not approvable (decided,
         expired), a digest or single-flight conflict, or no answer from the
         server (`fibric plans show` says whether it was approved)
      2  bad input, e.g. an --only key the plan does not have
    """
    api = options.session(ctx).client()
    plan = api.plans.get(plan_id)
    disposed = api.plans.approve(plan, only=only or None, note=note)
    click.echo(f"plan {disposed.id} {disposed.status}")
    click.echo(tables.render(result_rows(disposed), RESULT_HEADERS))
    unsuccessful = Counter(r.outcome.value for r in disposed.results if not r.succeeded)
    if unsuccessful:
        counts = ", ".join(f"{n} {outcome}" for outcome, n in unsuccessful.items())
        click.echo(f"Error: {unsuccessful.total()} of {len(disposed.results)} actions did not run as "
                   f"approved ({counts})", err=True)
        ctx.exit(NOT_ALL_RAN)


@plans.command("reject")
@click.argument("plan_id")
@click.option("--reason", required=True, help="Why (1-1000 characters); recorded on the plan.")
@click.pass_context
def reject(ctx: click.Context, plan_id: str, reason: str) -> None:
    """Reject plan PLAN_ID, saying why: nothing runs.

    Every action is declined, each with a receipt. Never prompts; exit 1 when
    the plan cannot be rejected (not found, decided, expired).
    """
    rejected = options.session(ctx).client().plans.reject(plan_id, reason)
    click.echo(f"plan {rejected.id} {rejected.status}: {rejected.reason or reason}")
    if rejected.results:
        click.echo(tables.render(result_rows(rejected), RESULT_HEADERS))


# --- shared with `fibric get plans` -------------------------------------------------------------

def echo_list(api: client.Client, output: str, *, status: str | None = None,
              operator: str | None = None) -> None:
    """The plans table (or JSON) on stdout; 'No plans found.' on stderr when there are none."""
    operator_id = operator
    if operator and not operator.startswith("op_"):  # a name (names have no "_"): 404 if unknown
        operator_id = api.get_operator(operator)["id"]
    if output == "json":
        click.echo(json.dumps(api.list_plans(status, operator_id), indent=2))
        return
    found = api.plans.summaries(status, operator_id)
    if found:
        click.echo(tables.render(summary_rows(found, timefmt.now()), SUMMARY_HEADERS))
    else:
        click.echo("No plans found.", err=True)


def echo_plan(api: client.Client, plan_id: str, output: str) -> None:
    """The plan as text for reading, or its JSON (output `json`)."""
    if output == "json":
        click.echo(json.dumps(api.get_plan(plan_id), indent=2))
    else:
        click.echo(describe(api.plans.get(plan_id), timefmt.now()))


# --- rendering -----------------------------------------------------------------------------------

SUMMARY_HEADERS = ["ID", "OPERATOR", "STATUS", "ACTIONS", "PROPOSED", "EXPIRES"]
RESULT_HEADERS = ["ACTION", "CAPABILITY", "DECISION", "OUTCOME", "RECEIPT", "NOTE"]


def summary_rows(found: Sequence[plantypes.PlanSummary], now: datetime) -> list[tables.Row]:
    return [{"ID": s.id, "OPERATOR": s.operator or s.operator_id, "STATUS": s.status.value,
             "ACTIONS": str(s.action_count), "PROPOSED": _ago(s.proposed_at, now),
             "EXPIRES": _expiry(s.status, s.expires_at, now)} for s in found]


def result_rows(plan: plantypes.Plan) -> list[tables.Row]:
    capability = {a.idempotency_key: a.capability for a in plan.actions}
    return [{"ACTION": r.idempotency_key, "CAPABILITY": capability.get(r.idempotency_key, ""),
             "DECISION": r.decision or "-", "OUTCOME": r.outcome.value, "RECEIPT": r.receipt_id or "-",
             "NOTE": _result_note(r)} for r in plan.results]


def describe(plan: plantypes.Plan, now: datetime) -> str:
    """`fibric plans show`: the header, what is stale, each action, and how to decide."""
    lines = [f"Plan {plan.id}   {plan.status.value.upper()}"]
    lines += [f"! {warning}" for warning in stale(plan, now)]  # first, where nobody misses it
    lines += [f"  {label:<10} {value}" for label, value in _header(plan, now)]
    lines += ["", f"Actions ({len(plan.actions)}); decision and rule as evaluated when proposed "
                  "(the executor evaluates each again when it runs):"]
    for number, action in enumerate(plan.actions, start=1):
        lines += ["", *_action(number, action, plan.result_of(action.idempotency_key))]
    if plan.status is plantypes.PlanStatus.PROPOSED and not plan.expired(now):
        lines += ["", f"Decide:  fibric plans approve {plan.id} [--only IDEMPOTENCY_KEY ...] [--note TEXT]",
                  f"         fibric plans reject {plan.id} --reason TEXT"]
    return "\n".join(lines)


def stale(plan: plantypes.Plan, now: datetime) -> list[str]:
    """Why what `show` prints is no longer up for a decision (empty while it is)."""
    if plan.expired(now):
        return [f"Stale: this plan expired at {timefmt.rfc3339(plan.expires_at)} "
                f"({_ago(plan.expires_at, now)}); approving or rejecting it will be refused."]
    if plan.status is not plantypes.PlanStatus.PROPOSED:
        return [f"Stale: this plan is {plan.status.value}, no longer proposed; it cannot be approved "
                "or rejected. The results below say what became of each action."]
    return []


def _header(plan: plantypes.Plan, now: datetime) -> list[tuple[str, str]]:
    operator = f"{plan.operator} ({plan.operator_id})" if plan.operator else plan.operator_id
    rows = [("operator", operator), ("run", plan.run_id or "-"),
            ("events", ", ".join(plan.event_ids) or "-"),
            ("proposed", f"{timefmt.rfc3339(plan.proposed_at)} ({_ago(plan.proposed_at, now)}) "
                         f"by {plan.proposed_by or 'unknown'}"),
            ("expires", _expiry_long(plan, now)), ("policy", plan.policy_id or "-"),
            ("digest", plan.digest or "-")]
    verb = DECIDED.get(plan.status.value)
    if verb is not None:
        by = f" by {plan.decided_by}" if plan.decided_by else ""
        at = f" at {timefmt.rfc3339(plan.decided_at)}" if plan.decided_at else ""
        rows.append(("decided", f"{verb}{by}{at}"))
    if plan.approver:
        rows.append(("note", plan.approver))
    if plan.reason:
        rows.append(("reason", plan.reason))
    if plan.executed_at:
        rows.append(("executed", timefmt.rfc3339(plan.executed_at) or ""))
    return rows


def _action(number: int, action: plantypes.PlanAction, result: plantypes.ActionResult | None) -> list[str]:
    decision = str(action.decision or "(none)")
    if action.rule:
        decision += f", rule {action.rule}"
    lines = [f"  {number}. {action.capability} on {action.entity_key}",
             f"     idempotency key  {action.idempotency_key}",
             f"     args             {json.dumps(action.args, separators=(',', ':'), ensure_ascii=False)}",
             f"     decision         {decision}"]
    if action.rationale:
        lines.append(f"     rationale        {action.rationale}")
    if result is not None:
        note = _result_note(result)
        lines.append(f"     result           {result.outcome.value} ({result.decision or '-'}), receipt "
                     f"{result.receipt_id or '-'}{'; ' + note if note else ''}")
    return lines


def _result_note(result: plantypes.ActionResult) -> str:
    notes = []
    if result.rule and result.outcome is not plantypes.Outcome.DECLINED:
        notes.append(f"rule {result.rule}")
    if result.flagged:
        notes.append("flagged for a person")
    return ", ".join(notes)


def _expiry(status: plantypes.PlanStatus, expires_at: datetime | None, now: datetime) -> str:
    """The EXPIRES column: when a decision is due, for plans that can still (or could) expire."""
    if expires_at is None or status not in (plantypes.PlanStatus.PROPOSED, plantypes.PlanStatus.EXPIRED):
        return "-"
    if expires_at > now:
        return f"in {tables.duration((expires_at - now).total_seconds())}"
    return _ago(expires_at, now)


def _expiry_long(plan: plantypes.Plan, now: datetime) -> str:
    if plan.expires_at is None:
        return "never"
    stamp, relative = timefmt.rfc3339(plan.expires_at), _expiry(plan.status, plan.expires_at, now)
    return f"{stamp}" if relative == "-" else f"{stamp} ({relative})"


def _ago(when: datetime | None, now: datetime) -> str:
    return "-" if when is None else f"{tables.duration((now - when).total_seconds())} ago"
