"""Timestamps as the reference writes them: RFC 3339, UTC, second precision, ending in Z."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

# Test-only: this process's clock runs this many seconds off, as a replica's host clock may
# (tests/replicas). Nothing another process relies on reads this clock: leases, claims and
# expiries read the database's (fibric.store.stamps.db_now).
CLOCK_OFFSET_ENV = "FIBRIC_TEST_CLOCK_OFFSET_SECONDS"
offset = timedelta(seconds=float(os.environ.get(CLOCK_OFFSET_ENV) or 0))


def now() -> datetime:
    """This process's wall clock (what it shows and stamps for itself)."""
    return datetime.now(UTC) + offset


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
