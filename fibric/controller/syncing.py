"""Keeping an apply set's sync status: its revision, each attempt's outcome, a Synced condition, drift.

A failed apply changes nothing live, so without this the failure shows only
in the server log while `get` still shows every object Ready. Every apply of
a set (the served folder, `POST /v1/apply` with an apply set) records its
outcome here (fibric/store/syncs.py), and each object of the set carries a
`Synced` condition saying whether the set's latest attempt applied.

The folder's revision is its Git commit when it sits in a Git work tree
(with `-dirty` when its files differ from that commit), else a fingerprint of
its files' contents. Git runs only on the installation's own folder, never
on anything a tenant sends, and with a timeout.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fibric import errors, specs, store
from fibric.controller import conditions
from fibric.store import syncs

log = logging.getLogger(__name__)

GIT_TIMEOUT_SECONDS = 5.0
MAX_ERROR_CHARS = 8000  # a folder with thousands of problems still fits in a row and a terminal
_COMMIT = re.compile(r"[0-9a-f]{40}([0-9a-f]{24})?")

# What the set declares, as the store keeps it: (kind, name) -> (spec, labels).
Declared = Mapping[tuple[str, str], tuple[dict[str, Any], dict[str, str]]]


def folder_revision(folder: Path, extra_files: Iterable[Path] = ()) -> str:
    """The Git commit of `folder` (`-dirty` if its files differ from it), else `sha256:` of its files."""
    commit = _git(folder, "rev-parse", "HEAD")
    if commit is not None and _COMMIT.fullmatch(commit):
        dirty = _git(folder, "status", "--porcelain", "--untracked-files=all", "--", ".")
        return commit if dirty == "" else f"{commit}-dirty"
    files = {p for p in folder.rglob("*") if p.suffix in specs.loader.YAML_SUFFIXES} | set(extra_files)
    digest = hashlib.sha256()
    for path in sorted(files):
        try:
            content = path.read_bytes()
        except OSError:
            continue
        digest.update(f"{path}\0{len(content)}\0".encode("utf-8", "surrogateescape"))
        digest.update(content)
    return "sha256:" + digest.hexdigest()[:16]


def documents_revision(documents: Sequence[Any]) -> str:
    """`sha256:` of documents sent through the API (their canonical JSON)."""
    text = json.dumps(list(documents), sort_keys=True, separators=(",", ":"), default=str)
    return "sha256:" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def declared(loaded: Sequence[specs.Loaded]) -> Declared:
    """What an applied set declares, compared the way apply compares it (spec and labels)."""
    return {
        (item.document.kind, item.document.name): (  # type: ignore[attr-defined]
            item.document.spec_dict(), dict(item.document.metadata.labels))
        for item in loaded
    }


def record(
    state: store.StateStore, tenant_id: str, apply_set: str, revision: str, *, error: str | None = None,
) -> None:
    """Record one attempt of the set, and set every object of the set's Synced condition to match.

    The objects first: whoever reads the attempt's result then finds the objects saying it too.
    """
    if error is not None and len(error) > MAX_ERROR_CHARS:
        error = error[:MAX_ERROR_CHARS] + "\n... (truncated)"
    mark(state, tenant_id, apply_set, synced(apply_set, "applied" if error is None else "failed", error))
    syncs.record(state, tenant_id, apply_set, revision, datetime.now(UTC), error=error)


def synced(apply_set: str, result: syncs.Result, error: str | None) -> tuple[str, str, str]:
    """The Synced condition (status, reason, message) of a set's objects after an attempt with `result`.

    The message names no revision, so a good apply rewrites only objects whose
    condition turns True (or is new), not every object of a large set.
    """
    if result == "applied":
        return conditions.TRUE, "Applied", f"apply set '{apply_set}' applied (fibric status)"
    return conditions.FALSE, "ApplyFailed", f"specs not applied: {error}"


def mark(state: store.StateStore, tenant_id: str, apply_set: str, wanted: tuple[str, str, str],
         live: Sequence[store.StoredObject] | None = None) -> None:
    """Set the Synced condition of each object of the set to `wanted`, writing only those it changes."""
    now = datetime.now(UTC)
    changes = []
    for obj in live if live is not None else members(state, tenant_id, apply_set):
        current = conditions.get_condition(conditions.of(obj.status), conditions.SYNCED)
        if current is not None and (current["status"], current["reason"], current["message"]) == wanted:
            continue
        conds = conditions.set_condition(conditions.of(obj.status), conditions.SYNCED, *wanted, now)
        changes.append((obj, {**obj.status, "conditions": conds}))
    state.set_statuses(changes)  # one transaction: a first apply of N objects is not N more commits


def members(state: store.StateStore, tenant_id: str, apply_set: str) -> list[store.StoredObject]:
    """The tenant's live objects that the apply set created."""
    found = (o for kind in specs.KINDS for o in state.list_objects(tenant_id, kind))
    return [o for o in found if o.apply_set == apply_set]


def check(state: store.StateStore, tenant_id: str, apply_set: str, wanted: Declared) -> list[syncs.Drift]:
    """Compare the live objects to what the set declares; record the drift and re-assert Synced.

    Drift is written only when it differs from what is recorded, so an idle
    check of a set in sync writes nothing.
    """
    live = {(o.kind, o.name): o for kind in specs.KINDS for o in state.list_objects(tenant_id, kind)}
    drift: list[syncs.Drift] = []
    for (kind, name), (spec, labels) in sorted(wanted.items()):
        obj = live.get((kind, name))
        if obj is None:
            drift.append(syncs.Drift(kind, name, "deleted"))
        elif obj.spec != spec or obj.labels != labels:
            drift.append(syncs.Drift(kind, name, "changed"))
    try:
        status = syncs.get(state, tenant_id, apply_set)
    except errors.NotFound:  # never recorded: nothing to report on
        return drift
    if status.drift != drift or status.drift_checked_at is None:
        syncs.record_drift(state, tenant_id, apply_set, drift, datetime.now(UTC))
        if drift:
            log.warning("apply set %s has drifted from its specs: %s", apply_set,
                        ", ".join(f"{d.kind} '{d.name}' {d.change}" for d in drift))
    members_live = [o for o in live.values() if o.apply_set == apply_set]
    mark(state, tenant_id, apply_set, synced(apply_set, status.result, status.error), members_live)
    return drift


def _git(folder: Path, *args: str) -> str | None:
    """Git's stdout in `folder`, stripped; None when it fails, is missing or exceeds the timeout."""
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_OPTIONAL_LOCKS": "0"}
    try:
        done = subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True,
                              timeout=GIT_TIMEOUT_SECONDS, env=env, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None
