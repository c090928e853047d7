"""Times as the state store keeps them: RFC 3339 text in UTC with microseconds, on every backend.

Text rather than a native timestamp type so SQLite and PostgreSQL store and
compare them the same way (ISO strings in UTC sort as time does).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any


def stamp(value: datetime) -> str:
    # Fixed width, so comparing the text compares the times, on both backends.
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def parse(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def db_now(cur: Any, dialect: str) -> datetime:
    """The database's clock, which every process's lease, claim and expiry decisions share.

    Replicas' host clocks drift apart; one that ran 45 s fast would see a live
    holder's lease as expired and take it over. On PostgreSQL it is the
    database host's clock at the moment of the call (`clock_timestamp()`,
    not `now()`, which is when the transaction began: a claim that waited
    for another's row lock must be stamped after that one committed). A
    SQLite store lives on this host, so its clock is this host's.
    """
    if dialect == "postgresql":
        cur.execute("SELECT clock_timestamp()")
        return cur.fetchone()[0].astimezone(UTC)
    return datetime.now(UTC)
