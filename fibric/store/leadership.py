"""Leadership: one replica does a singleton's work, elected with a PostgreSQL advisory lock.

Some work must have one owner among replicas sharing a PostgreSQL store: the
sealer appends each tenant's next receipts to the shared ledger, and two
appending at once would seal them twice. The owner is whoever holds a
session-level advisory lock (`pg_try_advisory_lock`) on a connection of its
own. PostgreSQL releases the lock when that session ends, so when the owner
dies (or its connection does) another replica takes over at its next try:
failover within one of the service's passes (the sealer's: 1 s) after
PostgreSQL notices the session is gone, at once for a killed process
(docs/receipts.md#replicas).
"""

from __future__ import annotations

import logging
from typing import Any

from fibric.store import backends

log = logging.getLogger(__name__)


class Leadership:
    """Whether this process owns `name` among the replicas of one PostgreSQL store; never blocks long."""

    def __init__(self, url: str, name: str, *, connect_timeout: float = 5.0) -> None:
        self.url = url
        self.name = name
        self.connect_timeout = connect_timeout
        self._conn: Any = None
        self._held = False

    def hold(self) -> tuple[bool, bool]:
        """(whether this process owns it now, whether it just became the owner); takes it if free.

        Called from one thread (the service's own). A lost session is a lost lock:
        the caller stops, and the next call tries to take it again.
        """
        import psycopg

        try:
            if self._conn is None or self._conn.closed:
                self._held = False
                self._conn = psycopg.connect(self.url, autocommit=True,
                                             connect_timeout=int(self.connect_timeout))
            if self._held:
                self._conn.execute("SELECT 1")  # the session, and with it the lock, is alive
                return True, False
            row = self._conn.execute("SELECT pg_try_advisory_lock(hashtext(%s))", (self.name,)).fetchone()
            self._held = bool(row[0])
            if self._held:
                log.info("this process now owns %s", self.name)
            return self._held, self._held
        except psycopg.Error as e:
            if self._held:
                log.warning("lost %s: %s", self.name, e)
            self.close()
            return False, False

    def close(self) -> None:
        """Give it up (ending the session releases the lock)."""
        conn, self._conn, self._held = self._conn, None, False
        if conn is not None:
            try:
                conn.close()
            except Exception:  # already broken
                log.debug("closing the %s session failed", self.name, exc_info=True)


def among_replicas(backend: backends.Backend, name: str) -> Leadership | None:
    """The election of `name` among the replicas sharing this store; None for one no replicas share
    (SQLite: its one process does the work alone). Named per schema, as advisory locks are per database."""
    if not isinstance(backend, backends.PostgresBackend):
        return None
    with backend.transaction(write=False) as cur:
        cur.execute("SELECT current_schema()")
        schema = cur.fetchone()[0]
    return Leadership(backend.url, f"{name}:{schema}")
