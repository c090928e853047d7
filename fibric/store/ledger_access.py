"""The local-admin token: proof that an auditor can read the data dir of a running server.

DuckDB lets one process hold a database file for writing, and while it does
no other process may open the file at all, not even to read. So while
`fibric serve` holds the receipt ledger, the local admin reads it through
the server (POST /v1/audit/snapshot), and proves local access with this
token: written beside the ledger, readable by its owner only, by the process
that holds the ledger, for as long as it holds it. Whoever can read the token
could read the ledger file itself once the server stops; it grants nothing
more than that.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import os
import secrets
from pathlib import Path

SUFFIX = ".audit-token"
log = logging.getLogger("fibric.ledger")


def token_path(ledger_path: Path) -> Path:
    return ledger_path.with_name(ledger_path.name + SUFFIX)


def publish(ledger_path: Path) -> str | None:
    """Write a fresh token (mode 0600) for the process that now holds the ledger; the token.

    The holder keeps the token in memory and checks callers against that, so
    rewriting the file grants nothing.
    """
    if str(ledger_path) == ":memory:":
        return None
    token = secrets.token_urlsafe(32)
    path = token_path(ledger_path)
    try:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(token)
    except OSError as e:  # the ledger still works; the local admin just cannot get snapshots
        log.warning("cannot write the audit token %s: %s", path, e)
        return None
    return token


def withdraw(ledger_path: Path) -> None:
    """Remove the token: the ledger is no longer held, so there is no server to ask."""
    if str(ledger_path) != ":memory:":
        with contextlib.suppress(OSError):
            token_path(ledger_path).unlink()


def read(ledger_path: Path) -> str | None:
    """The token of the process holding the ledger, if there is one (and we may read it)."""
    try:
        return token_path(ledger_path).read_text().strip() or None
    except OSError:
        return None


def check(published: str | None, presented: str) -> bool:
    """Whether `presented` is the token this process published, compared in constant time."""
    return published is not None and hmac.compare_digest(published.encode(), presented.encode())
