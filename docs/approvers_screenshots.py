"""Take the screenshots of docs/approvers.md ("The web page") from the real system: docs/img/approvers-*.png.

Runs what `fibric serve` runs (tests/executor/executor_support.py `running`,
with event routing on): the example specs, the example order system over MCP
stdio, the ship-risk operator's rules. Three events about orders at risk are
posted to the API; the operator's runs propose three plans; Debian's
chromium (/usr/bin/chromium, driven by Playwright) signs in, lists them,
opens one, approves part of it and opens a receipt, taking a picture at
each step.

Run: python docs/approvers_screenshots.py [--out docs/img]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for folder in ("tests", "tests/executor", "tests/ui"):
    sys.path.insert(0, str(ROOT / folder))

import orders_system  # noqa: E402
from executor_support import Fibric, running  # noqa: E402
from playwright.sync_api import Page, sync_playwright  # noqa: E402
from ui_support import launch_options  # noqa: E402

from fibric import store  # noqa: E402
from fibric.store import plan_store  # noqa: E402

ORDERS = ["SO-10887", "SO-10888", "SO-10889"]
APPROVER_SCOPES = frozenset({"plans:read", "plans:approve", "events:read", "receipts:read", "operators:read"})


def propose_by_events(fibric: Fibric) -> list[plan_store.Plan]:
    """One event per order at risk, through the API; the plans the operator's runs propose, oldest first."""
    orders_system.seed_orders(fibric.orders_db, ORDERS)
    with fibric.client() as api:
        for order in ORDERS:
            answer = api.post("/v1/events", json={
                "type": "order.updated", "entity_key": f"order:{order}",
                "idempotency_key": f"magento:{order}:v3", "occurred_at": "2026-06-14T08:58:00Z",
                "data": {"status": "open", "ship_by": "2026-06-15", "carrier_scanned": False}})
            answer.raise_for_status()
            time.sleep(1.1)  # a second apart, so the list's times differ
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        proposed = plan_store.list_plans(fibric.state, fibric.tenant.id, status="proposed")
        if len(proposed) == len(ORDERS):
            return list(reversed(proposed))
        time.sleep(0.1)
    raise SystemExit("the operator's runs proposed no plans within 60 s")


def shoot(page: Page, out: Path, name: str) -> None:
    page.screenshot(path=str(out / f"approvers-{name}.png"), full_page=True)
    print(f"wrote {out / f'approvers-{name}.png'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        state = store.open_store(Path(tmp) / "data")
        tenant = state.create_tenant("acme", "rs_fibric")
        with running(state, tenant, Path(tmp), routing=True) as fibric, sync_playwright() as pw:
            first, second, _ = propose_by_events(fibric)
            _, key = state.create_api_key(tenant.id, APPROVER_SCOPES, name="alice")
            browser = pw.chromium.launch(**launch_options())
            page = browser.new_page(viewport={"width": 1280, "height": 800})

            page.goto(f"{fibric.url}/ui/")
            page.get_by_label("API key").fill(key)
            shoot(page, args.out, "signin")
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_url("**/ui/plans")
            shoot(page, args.out, "plans")

            page.get_by_role("link", name=first.id).click()
            notify = next(n for n, a in enumerate(first.actions, 1) if a["capability"] == "orders.notify")
            page.locator(f"#action-{notify}").uncheck()
            page.get_by_label("Note (optional; recorded on every receipt)").fill("ops on call: hold only")
            shoot(page, args.out, "plan")
            page.get_by_role("button", name="Approve checked actions").click()
            page.wait_for_url("**done=approved*")
            shoot(page, args.out, "results")

            receipts = page.get_by_role("table", name="What became of each action").get_by_role("link")
            receipts.first.click()
            shoot(page, args.out, "receipt")

            page.goto(f"{fibric.url}/ui/plans/{second.id}")
            page.get_by_label("Reason (required)").fill("the customer picked the order up in store")
            page.get_by_role("button", name="Reject the whole plan").click()
            page.wait_for_url("**done=rejected*")
            shoot(page, args.out, "rejected")
            browser.close()
        state.close()


if __name__ == "__main__":
    main()
