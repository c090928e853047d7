"""What `fibric diff` found, object by object, before it is printed as text, JSON or Markdown.

One comparison feeds every output format, so a pipeline reading `-o json`
and a reviewer reading the PR comment see the same verdicts as the text
diff. The objects compared are livestate's comparables (spec with defaults
and the user's labels), so server-owned fields never count as drift.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from fibric.cli import livestate


class Action(enum.Enum):
    """What `fibric apply` (with --prune for DELETE) would do to one object."""

    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"
    UNCHANGED = "unchanged"


@dataclass(frozen=True)
class Change:
    """One object's verdict: `live` is None for CREATE, `local` None for DELETE."""

    kind: str
    name: str
    action: Action
    live: dict[str, Any] | None
    local: dict[str, Any] | None

    @property
    def label(self) -> str:
        return f"{self.kind.lower()}/{self.name}"

    def changed_paths(self) -> list[str]:
        """The dotted paths that differ (`spec.capabilities`, `labels.team`); empty unless UPDATE."""
        if self.action is not Action.UPDATE or self.live is None or self.local is None:
            return []
        found: list[str] = []
        for part in ("spec", "labels"):
            _differences(self.live.get(part), self.local.get(part), part, found)
        return found


def compare(loaded: Iterable[dict[str, Any]], live: list[dict[str, Any]], apply_set: str) -> list[Change]:
    """Every local comparable against the live state, then the apply set's live objects no file has."""
    live_by_key = {livestate.key(item): livestate.of_live(item) for item in live}
    changes: list[Change] = []
    wanted: set[tuple[str, str]] = set()
    for mine in loaded:
        name = (mine["kind"], mine["name"])
        wanted.add(name)
        theirs = live_by_key.get(name)
        if theirs is not None and theirs != mine:  # stored before a field's default was written out?
            theirs = livestate.as_applied(theirs)  # then as apply compares it: those fields are no change
        action = Action.CREATE if theirs is None else Action.UNCHANGED if theirs == mine else Action.UPDATE
        changes.append(Change(name[0], name[1], action, theirs, mine))
    for item in live:
        name = livestate.key(item)
        labels = item["metadata"].get("labels") or {}
        if name not in wanted and labels.get(livestate.APPLY_SET_LABEL) == apply_set:
            changes.append(Change(name[0], name[1], Action.DELETE, live_by_key[name], None))
    return changes


def counts(changes: Iterable[Change]) -> dict[Action, int]:
    """How many objects each action touches, every action present (zero or not), in Action order."""
    found = dict.fromkeys(Action, 0)
    for change in changes:
        found[change.action] += 1
    return found


def _differences(before: Any, after: Any, path: str, found: list[str]) -> None:
    """Append to `found` the deepest paths where `before` and `after` differ.

    Mappings are followed key by key and lists of one length item by item
    (`spec.steps[2].args`); anything else that differs is reported whole.
    """
    if before == after:
        return
    if isinstance(before, dict) and isinstance(after, dict):
        for key in sorted(before.keys() | after.keys(), key=str):
            _differences(before.get(key), after.get(key), f"{path}.{key}", found)
    elif isinstance(before, list) and isinstance(after, list) and len(before) == len(after):
        for index, (old, new) in enumerate(zip(before, after, strict=True)):
            _differences(old, new, f"{path}[{index}]", found)
    else:
        found.append(path)
