"""What is stored, counted for a Prometheus scrape: plans by status, and the webhook backlog.

Three COUNTs in one read transaction, each over an index (plans_tenant_status_seq,
outbox_pending, webhook_deliveries_due), run only when /metrics is scraped
(fibric/metrics.py), never on a request's or the executor's path.
"""

from __future__ import annotations

from fibric import metrics
from fibric.store import state as state_module


def read(state: state_module.StateStore, per_tenant: bool) -> metrics.Tallies:
    """The counts, keyed by tenant id when `per_tenant`, else all under ""."""
    tenant, by = ("tenant_id", "tenant_id, ") if per_tenant else ("''", "")
    group = "GROUP BY tenant_id" if per_tenant else ""
    with state.backend.transaction(write=False) as cur:
        cur.execute(f"SELECT {tenant}, status, COUNT(*) FROM plans GROUP BY {by}status")
        plans = {(str(r[0]), str(r[1])): int(r[2]) for r in cur.fetchall()}
        cur.execute(f"SELECT {tenant}, COUNT(*) FROM outbox WHERE dispatched_at IS NULL {group}")
        outbox = {str(r[0]): int(r[1]) for r in cur.fetchall()}
        cur.execute(f"SELECT {tenant}, COUNT(*) FROM webhook_deliveries WHERE status = 'pending' {group}")
        deliveries = {str(r[0]): int(r[1]) for r in cur.fetchall()}
    return metrics.Tallies(plans=plans, outbox=outbox, deliveries=deliveries)
