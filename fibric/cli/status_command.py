"""`fibric status` and `fibric describe`: is the desired state applied, and what is one object doing.

`status` answers what the server log alone used to: which revision of each
apply set is live, whether the last attempt failed (and at which file:line),
and what has drifted since. `describe` gathers one object's spec, conditions,
its apply set's last error and, for an operator, its latest runs and plans,
from the API endpoints `get` and `plans` already use.
"""

from __future__ import annotations

import json
from typing import Any

import click

from fibric import client, errors
from fibric.cli import options, tables

RECENT = 5  # runs and plans `describe` shows


@click.command("status")
@click.argument("apply_set", required=False)
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.pass_context
def status(ctx: click.Context, apply_set: str | None, output: str) -> None:
    """Show each apply set's sync status: revision, applied at, result, last error and drift."""
    api = options.session(ctx).client()
    found = [api.get_sync(apply_set)] if apply_set else api.list_sync()
    if output == "json":
        click.echo(json.dumps(found if apply_set is None else found[0], indent=2))
        return
    if not found:
        click.echo("No apply sets found: nothing has been applied with an apply set.", err=True)
        return
    rows = [{"APPLY SET": s["apply_set"], "REVISION": _short(s.get("revision")),
             "APPLIED": _ago(s.get("applied_at")), "RESULT": s["result"],
             "DRIFT": str(len(s.get("drift") or []))} for s in found]
    click.echo(tables.render(rows))
    for item in found:
        if item.get("error"):
            click.echo(f"\n{item['apply_set']}: last attempt ({_short(item.get('attempted_revision'))}, "
                       f"{_ago(item.get('attempted_at'))} ago) failed; revision "
                       f"{_short(item.get('revision'))} stays live:")
            click.echo(_indent(item["error"]))
        for drift in item.get("drift") or []:
            click.echo(f"{item['apply_set']}: drift: {drift['kind'].lower()}/{drift['name']} "
                       f"{drift['change']}")


@click.command("describe")
@click.argument("kind", type=options.KIND)
@click.argument("name")
@click.pass_context
def describe(ctx: click.Context, kind: str, name: str) -> None:
    """Show one object: its spec, conditions, its apply set's last error, and an operator's recent runs."""
    api = options.session(ctx).client()
    item = _spec_of(api, kind, name)
    metadata = item.get("metadata") or {}
    labels = dict(metadata.get("labels") or {})
    apply_set = labels.pop("fibric.io/apply-set", None)
    lines = [f"Name:        {metadata.get('name')}", f"Kind:        {kind}", f"ID:          {item.get('id')}",
             f"Generation:  {item.get('generation')}", f"Created:     {item.get('created_at')}",
             f"Apply set:   {apply_set or '<none: created through the API>'}"]
    if labels:
        lines.append("Labels:      " + ", ".join(f"{k}={v}" for k, v in sorted(labels.items())))
    lines += ["Spec:", *_summary(item.get("spec") or {})]
    conditions = (item.get("status") or {}).get("conditions") or []
    lines.append("Conditions:")
    if conditions:
        lines.append(_indent(tables.render([
            {"TYPE": c.get("type", ""), "STATUS": c.get("status", ""), "REASON": c.get("reason", ""),
             "SINCE": _ago(c.get("last_transition_time")),
             "MESSAGE": str(c.get("message") or "").splitlines()[0] if c.get("message") else ""}
            for c in conditions])))
    else:
        lines.append("  none yet: the controller has not reported on it")
    if apply_set:
        lines += _sync_lines(api, apply_set)
    if kind == "Operator":
        lines += _operator_lines(api, str(item.get("id")))
    click.echo("\n".join(lines))


def _spec_of(api: client.Client, kind: str, name: str) -> dict[str, Any]:
    """The object as a spec document with its status; the server's 404 for an unknown name or id."""
    wanted = api.get_object(kind, name)["id"]
    for item in api.specs(kind):
        if item.get("id") == wanted:
            return item
    raise errors.NotFound(f"No such {kind.lower()}: '{name}'")  # deleted between the two reads


def _sync_lines(api: client.Client, apply_set: str) -> list[str]:
    try:
        sync = api.get_sync(apply_set)
    except client.ApiError as e:
        if e.status in (403, 404):  # a key without every read scope, or a set never recorded
            return []
        raise
    lines = [f"Sync:        {sync['result']}, revision {_short(sync.get('revision'))}"
             f" applied {_ago(sync.get('applied_at'))} ago"]
    if sync.get("error"):
        lines += ["Last error:", _indent(sync["error"])]
    for drift in sync.get("drift") or []:
        lines.append(f"Drift:       {drift['kind'].lower()}/{drift['name']} {drift['change']}")
    return lines


def _operator_lines(api: client.Client, operator_id: str) -> list[str]:
    # One page each, newest first: the whole history of a busy operator is not needed here.
    runs = api.request("GET", "/v1/runs", params={"operator_id": operator_id, "limit": RECENT})["data"]
    lines = ["Recent runs:"]
    lines.append(_indent(tables.render([
        {"RUN": r.get("id", ""), "STATUS": r.get("status", ""), "STARTED": _ago(r.get("started_at")),
         "ERROR": str(r.get("error") or "")} for r in runs])) if runs else "  none")
    plans = api.request("GET", "/v1/plans", params={"operator_id": operator_id, "limit": RECENT})["data"]
    lines.append("Recent plans:")
    lines.append(_indent(tables.render([
        {"PLAN": p.get("id", ""), "STATUS": p.get("status", ""), "PROPOSED": _ago(p.get("proposed_at"))}
        for p in plans])) if plans else "  none")
    return lines


def _summary(spec: dict[str, Any]) -> list[str]:
    """The spec's fields that say something (no nulls, empty lists or maps), one per line."""
    shown = [f"  {key}: {json.dumps(value)}" for key, value in spec.items()
             if value not in (None, [], {}, "")]
    return shown or ["  (all defaults)"]


def _short(revision: str | None) -> str:
    if not revision:
        return "<none>"
    if revision.startswith("sha256:"):
        return revision
    commit, _, dirty = revision.partition("-")
    return commit[:12] + (f"-{dirty}" if dirty else "")


def _ago(stamp: str | None) -> str:
    return tables.age(stamp) if stamp else "never"


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())
