"""The one query shape every list route pages with: a tenant's rows, filtered, newest first by `seq`.

`before_seq` continues a page (the cursor), so pages stay stable while rows
are inserted; it is clamped to a signed 64-bit integer, which is what `seq`
is on every backend (out of range would overflow SQLite's binding).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

MAX_SEQ = 2**63 - 1


def newest_first(
    select: str,
    params: Iterable[Any],
    filters: Iterable[tuple[str, Any]] = (),
    *,
    limit: int | None = None,
    before_seq: int | None = None,
) -> tuple[str, list[Any]]:
    """`select` (ending in a WHERE clause) AND each filter whose value is not None, a page of it.

    Filter columns are written by the caller's code, never taken from a request.
    """
    sql, bound = select, list(params)
    for column, value in filters:
        if value is not None:
            sql += f" AND {column} = ?"
            bound.append(value)
    if before_seq is not None:
        sql += " AND seq < ?"
        bound.append(min(max(before_seq, 0), MAX_SEQ))
    sql += " ORDER BY seq DESC"
    if limit is not None:
        sql += " LIMIT ?"
        bound.append(limit)
    return sql, bound
