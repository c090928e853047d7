"""Timestamps as the reference writes them: RFC 3339, UTC, second precision, ending in Z."""

from __future__ import annotations

from datetime import UTC, datetime


def now() -> datetime:
    return datetime.now(UTC)


def rfc3339(value: datetime | None) -> str | None:
    if value is None:
        return None
    # isoformat rather than strftime: cheaper (list responses format two per object), and
    # its year always has four digits; [:19] drops the "+00:00".
    return value.astimezone(UTC).isoformat(timespec="seconds")[:19] + "Z"


def parse(value: str) -> datetime:
    """Parse an RFC 3339 timestamp; naive values are taken as UTC."""
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)
