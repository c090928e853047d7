"""The approvers' page under a real browser: Debian's chromium driven by Playwright, and the real Fibric.

The system is the one `fibric serve` builds (tests/executor/executor_support.py
`running`): the API app with the page mounted, the controller, the executor,
the example order system over MCP stdio and the example ship-risk policy,
served by uvicorn on loopback. Plans are proposed straight into the store, as
an operator's run stores them. The browser is /usr/bin/chromium (the Debian
package .ci/run installs), never one Playwright downloads.
"""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "executor"))

import orders_system  # noqa: E402
from executor_support import Fibric, example_actions, running  # noqa: E402
from playwright.sync_api import Page, Response  # noqa: E402

from fibric.store import plan_store  # noqa: E402

CHROMIUM = Path("/usr/bin/chromium")


__all__ = ["CHROMIUM", "Fibric", "hold_and_notify", "launch_options", "propose", "running", "sign_in"]


def launch_options() -> dict[str, Any]:
    """How to start Debian's chromium: headless, and without its sandbox when running as root."""
    args = ["--no-sandbox"] if os.geteuid() == 0 else []
    return {"executable_path": str(CHROMIUM), "headless": True, "args": args}


def propose(fibric: Fibric, *, event_id: str | None = None, **extra: Any) -> plan_store.Plan:
    """A plan of the ship-risk operator about an open order of its own, which the order system now has
    (so its keys never collide with another test's)."""
    order = f"SO-{uuid.uuid4().hex[:10]}"
    orders_system.seed_orders(fibric.orders_db, [order])
    actions = [{**action, "rule": "orders.hold" if action["decision"] == "ALLOW" else "orders.notify",
                "rationale": f"rule 1 matched: {action['capability']} for an order at risk"}
               for action in example_actions(entity=f"order:{order}", prefix=f"ship-risk:{order}")]
    return plan_store.propose(fibric.state, fibric.tenant.id, operator_id=fibric.operator_id(),
                              actions=actions, policy_id=None, proposed_by="rules", operator_name="ship-risk",
                              event_ids=[event_id] if event_id else [], event_id=event_id, **extra)


def hold_and_notify(plan: plan_store.Plan) -> tuple[str, str]:
    """The idempotency keys of a `propose`d plan's two actions."""
    hold, notify = (a["idempotency_key"] for a in plan.actions)
    return hold, notify


def sign_in(page: Page, url: str, key: str) -> Response:
    """Sign in through the form, as a person does; the response to the form's POST."""
    page.goto(f"{url}/ui/")
    page.get_by_label("API key").fill(key)
    def is_post(response: Response) -> bool:
        return response.url.endswith("/ui/signin") and response.request.method == "POST"

    with page.expect_response(is_post) as posted:
        page.get_by_role("button", name="Sign in").click()
    page.wait_for_load_state()
    return posted.value
