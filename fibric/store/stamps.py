"""Times as the state store keeps them: RFC 3339 text in UTC with microseconds, on every backend.

Text rather than a native timestamp type so SQLite and PostgreSQL store and
compare them the same way (ISO strings in UTC sort as time does).
"""

from __future__ import annotations

from datetime import UTC, datetime


def stamp(value: datetime) -> str:
    # Fixed width, so comparing the text compares the times, on both backends.
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def parse(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None
