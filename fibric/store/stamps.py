"""Times as the state store keeps them: RFC 3339 text in UTC with microseconds, on every backend.

Text rather than a native timestamp type so SQLite and PostgreSQL store and
compare them the same way (ISO strings in UTC sort as time does).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fibric.store import dialect


def stamp(value: datetime) -> str:
    # Fixed width, so comparing the text compares the times, on both backends.
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def parse(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def db_now(cur: Any, sql: dialect.Dialect) -> datetime:
    """The database's clock, which every process's lease, claim and expiry decisions share.

    Replicas' host clocks drift apart; one that ran 45 s fast would see a live
    holder's lease as expired and take it over. On PostgreSQL it is the
    database host's clock at the moment of the call (`sql.clock`). A SQLite
    store lives on this host, so its clock is this host's.
    """
    if sql.clock is not None:
        cur.execute(sql.clock)
        return cur.fetchone()[0].astimezone(UTC)
    return datetime.now(UTC)
