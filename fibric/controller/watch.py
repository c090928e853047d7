"""Serve a specs folder: apply it, and re-apply it whenever a file in it changes.

`fibric serve --specs DIR [--watch]` makes a folder the desired state of one
tenant, exactly like `fibric apply --prune DIR` run on every save. The apply
is all or nothing, so a bad edit (invalid YAML, a dangling policy) is logged
with its file:line errors and the last good state stays live until the
folder is fixed. Every attempt is also recorded as the apply set's sync status
(`fibric status`, GET /v1/sync; fibric/controller/syncing.py), and idle checks
look for drift (docs/sync.md).

Policies usually name Rego files outside the specs folder
(`rego_file: ../policies/x.rego`); those files are watched too, so editing a
policy reloads it like editing a spec does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import watchfiles

from fibric import errors, specs, store, threads, trust
from fibric.controller import applier, syncing

log = logging.getLogger(__name__)


def apply_folder(
    state: store.StateStore, tenant_id: str, folder: str | Path, apply_set: str,
    *, options: applier.Options | None = None,
) -> applier.ApplyResult:
    """Apply every spec under `folder` as `apply_set`, pruning what left it; all or nothing.

    The folder is the installation's own, so its specs may use what a tenant's
    may not (a stdio command, a server variable; docs/security.md). Each
    attempt, good or bad, is recorded as the set's sync status.
    """
    return _apply_and_declare(state, tenant_id, Path(folder), apply_set, options)[0]


def _apply_and_declare(
    state: store.StateStore, tenant_id: str, folder: Path, apply_set: str, options: applier.Options | None,
) -> tuple[applier.ApplyResult, syncing.Declared]:
    """Apply the folder and record the attempt; what it declares, for the drift check."""
    revision = syncing.folder_revision(folder, _referenced_files(folder))
    try:
        loaded = _resolve_all(specs.load_paths([folder]))
        result = applier.apply(state, tenant_id, loaded, apply_set=apply_set, prune=True,
                               origin=trust.Origin.INSTALLATION, options=options)
    except Exception as e:
        text = str(e) if isinstance(e, errors.FibricError) else f"{type(e).__name__}: {e}"
        try:
            syncing.record(state, tenant_id, apply_set, revision, error=text)
        except Exception:  # the apply's own error is the one to raise
            log.exception("could not record the failed apply of %s", folder)
        raise
    syncing.record(state, tenant_id, apply_set, revision)
    return result, syncing.declared(loaded)


async def watch_folder(
    state: store.StateStore,
    tenant_id: str,
    folder: str | Path,
    apply_set: str,
    on_applied: Callable[[applier.ApplyResult], Any],
    stop_event: asyncio.Event,
    *,
    debounce_ms: int = 1600,
    idle_check_ms: int = 2000,
    options: applier.Options | None = None,
    pool: threads.Pool | None = None,
    self_heal: bool = False,
) -> None:
    """Re-apply `folder` after every change until `stop_event` is set.

    The caller applies the folder once at start-up (and reports a bad folder
    loudly); this only follows changes. `on_applied` runs after each apply
    that succeeded, on the event loop.

    Each idle check also compares the live objects of the set to what the
    folder last applied declared: drift (an object deleted or changed through
    the API) is recorded in the set's sync status or, with `self_heal`,
    undone by applying the folder again.
    """
    folder = Path(folder).resolve()
    run = (pool or threads.standalone("controller")).run
    applied_fingerprint: object = None  # unknown: the first idle check applies once
    wanted: syncing.Declared | None = None  # what the last good apply declared
    broken = False  # the folder's last apply failed
    while not stop_event.is_set():
        referenced = await run(_referenced_files, folder)
        roots = sorted({folder, *(p.parent for p in referenced)})
        roots = [r for r in roots if not any(r != o and r.is_relative_to(o) for o in roots)]

        def relevant(change: watchfiles.Change, path: str, referenced: set[Path] = referenced) -> bool:
            target = Path(path)
            in_folder = target.is_relative_to(folder) and target.suffix in specs.loader.YAML_SUFFIXES
            return in_folder or target in referenced

        # yield_on_timeout wakes us even without events: an edit made before the
        # watcher was running (start-up, or a re-created watcher) is then caught
        # by comparing fingerprints, so no save is ever missed.
        watcher = watchfiles.awatch(
            *roots, watch_filter=relevant, stop_event=stop_event, debounce=debounce_ms,
            yield_on_timeout=True, rust_timeout=idle_check_ms,
        )
        async with contextlib.aclosing(watcher):
            async for changes in watcher:
                seen = await run(_fingerprint, folder, referenced)
                if not changes and seen == applied_fingerprint:
                    if wanted is None or not await _drifted(state, tenant_id, apply_set, wanted, run):
                        continue
                    if not self_heal or broken:  # a folder that failed would only fail again
                        continue
                    log.info("self-heal: applying %s again to undo the drift", folder)
                applied_fingerprint = seen
                declared = await _apply_once(state, tenant_id, folder, apply_set, on_applied, options, run)
                broken = declared is None
                if declared is None:
                    continue
                wanted = declared
                if await run(_referenced_files, folder) != referenced:
                    break  # policies now name other Rego files: watch those instead


async def _apply_once(
    state: store.StateStore,
    tenant_id: str,
    folder: Path,
    apply_set: str,
    on_applied: Callable[[applier.ApplyResult], Any],
    options: applier.Options | None,
    run: Callable[..., Awaitable[Any]],
) -> syncing.Declared | None:
    """Apply the folder once; what it declares, or None if it was not applied (logged)."""
    try:
        result, declared = await run(_apply_and_declare, state, tenant_id, folder, apply_set, options)
    except errors.SpecInvalid as e:
        log.error("specs in %s not applied; the last good state stays live:\n%s", folder, e)
        return None
    except errors.FibricError as e:
        log.error("specs in %s not applied (%s); the last good state stays live: %s",
                  folder, type(e).__name__, e)
        return None
    except Exception:  # keep watching whatever went wrong; the next save tries again
        log.exception("specs in %s not applied; the last good state stays live", folder)
        return None
    _log_changes(folder, result)
    try:
        on_applied(result)
    except Exception:
        log.exception("after applying %s", folder)
    return declared


async def _drifted(
    state: store.StateStore, tenant_id: str, apply_set: str, wanted: syncing.Declared,
    run: Callable[..., Awaitable[Any]],
) -> bool:
    """True if live objects of the set differ from what it declares (recorded either way)."""
    try:
        return bool(await run(syncing.check, state, tenant_id, apply_set, wanted))
    except Exception:  # a store hiccup: the next idle check looks again
        log.exception("checking %s for drift", apply_set)
        return False


def _resolve_all(loaded: list[specs.Loaded]) -> list[specs.Loaded]:
    """Inline every policy's files, reporting every unreadable file at once."""
    resolved: list[specs.Loaded] = []
    problems: list[errors.SpecProblem] = []
    for item in loaded:
        try:
            resolved.append(specs.resolve(item))
        except errors.SpecInvalid as e:
            problems.extend(e.problems)
    if problems:
        raise errors.SpecInvalid(problems)
    return resolved


def _referenced_files(folder: Path) -> set[Path]:
    """Files outside the YAML that policies under `folder` point at (best effort)."""
    try:
        loaded = specs.load_paths([folder])
    except errors.FibricError:
        return set()
    files: set[Path] = set()
    for item in loaded:
        doc = item.document
        if isinstance(doc, specs.Policy):
            base = Path(item.source.file).parent
            names = ([doc.spec.rego_file] if doc.spec.rego_file else []) + list(doc.spec.tests)
            files.update((base / name).resolve() for name in names)
    return {f for f in files if f.parent.is_dir()}


def _log_changes(folder: Path, result: applier.ApplyResult) -> None:
    changed = [c for c in result.changes if c.action != "unchanged"]
    for change in changed:
        log.info("%s: %s %s '%s'", folder, change.action, change.kind, change.name)
    for warning in result.warnings:
        log.warning("%s", warning)


def _fingerprint(folder: Path, referenced: set[Path]) -> frozenset[tuple[str, int, int]]:
    """(path, mtime, size) of every spec and referenced file: changes when any file does."""
    paths = {p for p in folder.rglob("*") if p.suffix in specs.loader.YAML_SUFFIXES} | referenced
    found = set()
    for path in paths:
        try:
            stat = path.stat()
        except OSError:
            continue
        found.add((str(path), stat.st_mtime_ns, stat.st_size))
    return frozenset(found)
