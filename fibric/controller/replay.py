"""What a candidate policy would have decided on recorded decisions (`fibric policy replay`).

Receipts keep the input each decision was made on (`decision_input`,
fibric/policies/masking.py), so a candidate Rego can be judged against last
week's real traffic before it ships: the recorded inputs of one policy are
re-evaluated, a batch per worker exchange (policies.evaluate_many), by an
embedded engine of the replay's own, never the live one's workers, and the
differences are counted. A decision that would *loosen* (BLOCK to ALLOW or
ALERT, ALERT to ALLOW) is what CI fails on.

Receipts without a record (written before records were kept, or where no
policy ran) are skipped and counted; masked records are replayed as stored
and counted, since a rule on a masked field sees "**masked**".
"""

from __future__ import annotations

import collections
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from fibric import errors, policies, timefmt
from fibric.policies import masking
from fibric.store import receipt_store

RANK = {"BLOCK": 0, "ALERT": 1, "ALLOW": 2}  # a move up this order loosens the decision
BATCH = 500  # recorded inputs per worker exchange
CHANGED_CAP = 100  # changed receipts listed in the report (all are counted)
_ABANDON = frozenset({"timeout", "engine-busy"})  # a batch failing whole with these ends the replay
_SINCE = re.compile(r"^(\d+)([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def loosens(before: str, after: str) -> bool:
    """Whether `after` lets through what `before` held back (BLOCK->ALLOW/ALERT, ALERT->ALLOW)."""
    return before in RANK and after in RANK and RANK[after] > RANK[before]


def parse_since(text: str | None, now: datetime | None = None) -> datetime | None:
    """`7d`, `24h`, `30m`, `2w` back from now, or an RFC 3339 time; SpecInvalid names `since`."""
    if text is None or text == "":
        return None
    match = _SINCE.match(text)
    if match:
        return (now or timefmt.now()) - timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise errors.SpecInvalid(errors.SpecProblem(
            f"'{text}' is neither a duration (7d, 24h, 30m) nor an RFC 3339 time with a zone",
            path="since"))
    return moment


@dataclass
class Tally:
    replayed: int = 0
    changed: int = 0
    loosened: int = 0

    def to_dict(self) -> dict[str, int]:
        return {"replayed": self.replayed, "changed": self.changed, "loosened": self.loosened}


@dataclass
class Report:
    """What would change; `to_dict` is the API's (and `-o json`'s) shape."""

    policy_id: str
    candidate_sha256: str
    query: str
    since: datetime | None
    replayed: int = 0
    skipped: int = 0  # receipts of the policy without a decision record
    masked: int = 0  # replayed records that had masked fields
    changed: int = 0  # receipts whose decision or rule would change
    transitions: collections.Counter[tuple[str, str]] = field(default_factory=collections.Counter)
    rule_changes: collections.Counter[str] = field(default_factory=collections.Counter)
    by_operator: dict[str, Tally] = field(default_factory=lambda: collections.defaultdict(Tally))
    by_capability: dict[str, Tally] = field(default_factory=lambda: collections.defaultdict(Tally))
    changes: list[dict[str, Any]] = field(default_factory=list)

    @property
    def loosened(self) -> int:
        return sum(n for (before, after), n in self.transitions.items() if loosens(before, after))

    @property
    def decision_changes(self) -> int:
        return sum(n for (before, after), n in self.transitions.items() if before != after)

    def to_dict(self) -> dict[str, Any]:
        return {
            "object": "policy_replay",
            "policy_id": self.policy_id,
            "candidate_sha256": self.candidate_sha256,
            "query": self.query,
            "since": timefmt.rfc3339(self.since) if self.since is not None else None,
            "replayed": self.replayed,
            "skipped": self.skipped,
            "masked": self.masked,
            "decision_changes": self.decision_changes,
            "loosened": self.loosened,
            "changed": self.changed,
            "transitions": [{"from": before, "to": after, "count": n, "loosens": loosens(before, after)}
                            for (before, after), n in sorted(self.transitions.items())],
            "rule_changes": dict(sorted(self.rule_changes.items())),
            "by_operator": {k: v.to_dict() for k, v in sorted(self.by_operator.items())},
            "by_capability": {k: v.to_dict() for k, v in sorted(self.by_capability.items())},
            "changes": self.changes,
            "changes_truncated": len(self.changes) < self.changed,
        }


def replay(
    ledger: receipt_store.StoreLedger,
    engine: policies.EmbeddedEngine,
    tenant_id: str,
    policy_id: str,
    candidate: policies.CompiledPolicy,
    *,
    since: datetime | None = None,
    operator_id: str | None = None,
) -> Report:
    """Re-evaluate the recorded inputs of `policy_id`'s receipts against `candidate`. Blocking."""
    report = Report(policy_id, candidate.sha256, candidate.query, since)
    batch: list[receipt_store.Receipt] = []
    for receipt in ledger.of_policy(tenant_id, policy_id, since=since, operator_id=operator_id):
        if receipt.decision_input is None:
            report.skipped += 1
            continue
        batch.append(receipt)
        if len(batch) >= BATCH:
            _judge(report, engine, candidate, batch)
            batch = []
    _judge(report, engine, candidate, batch)
    return report


def _judge(report: Report, engine: policies.EmbeddedEngine, candidate: policies.CompiledPolicy,
           batch: list[receipt_store.Receipt]) -> None:
    records: list[Mapping[str, Any]] = [r.decision_input or {} for r in batch]
    decided = policies.evaluate_many(engine, candidate, records)
    if decided and all(d.failure in _ABANDON for d in decided):  # the batch as a whole: stop, do not grind on
        raise errors.SpecInvalid(errors.SpecProblem(
            f"the candidate did not decide {len(batch)} recorded inputs in time ({decided[0].reasons[0]}); "
            "live, it would BLOCK them fail-closed", path="rego"))
    for receipt, after in zip(batch, decided, strict=True):
        _count(report, receipt, after)


def _count(report: Report, receipt: receipt_store.Receipt, after: policies.Decision) -> None:
    before, before_rule = recorded(receipt)
    now, now_rule = after.decision.value, after.rule
    report.replayed += 1
    if masking.has_masked(receipt.decision_input):
        report.masked += 1
    report.transitions[before, now] += 1
    changed = before != now or before_rule != now_rule
    report.changed += changed
    if before_rule != now_rule:
        report.rule_changes[f"{before_rule}->{now_rule}"] += 1
    looser = loosens(before, now)
    for tally in (report.by_operator[receipt.operator], report.by_capability[receipt.capability]):
        tally.replayed += 1
        tally.changed += changed
        tally.loosened += looser
    if changed and len(report.changes) < CHANGED_CAP:
        report.changes.append({
            "receipt_id": receipt.id, "operator": receipt.operator, "capability": receipt.capability,
            "entity_key": receipt.entity_key, "at": timefmt.rfc3339(receipt.at),
            "from": {"decision": before, "rule": before_rule},
            "to": {"decision": now, "rule": now_rule, "reasons": list(after.reasons)},
            "loosened": looser,
        })


def recorded(receipt: receipt_store.Receipt) -> tuple[str, str]:
    """The decision and rule the policy itself made (an in-doubt receipt shows ALERT over it)."""
    answer = receipt.policy or {}
    return str(answer.get("decided") or answer.get("decision") or receipt.decision), \
        str(answer.get("rule") or receipt.rule)
