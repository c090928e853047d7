"""Deciding plans in the browser: approve part of one, reject another, and read what became of them.

Every decision goes through the page's own forms in chromium, and every
claim is checked twice: on the page, and in the store (the plan's status,
the receipts of record, the order system's effects).
"""

from __future__ import annotations

import re

from playwright.sync_api import Page, expect
from ui_support import Fibric, hold_and_notify, propose, sign_in

from fibric import store
from fibric.store import plan_store

from executor_support import effects  # isort: skip  (ui_support put tests/executor on the path)


def row_of(page: Page, idempotency_key: str) -> dict[str, str]:
    """The Results table's cells for one action, by column header."""
    table = page.get_by_role("table", name="What became of each action")
    headers = [h.strip() for h in table.locator("thead th").all_inner_texts()]
    row = table.locator("tbody tr").filter(has_text=idempotency_key)
    cells = [c.strip() for c in row.locator("th, td").all_inner_texts()]
    return dict(zip(headers, cells, strict=True))


def test_sign_in_approve_part_of_a_plan_and_reject_another(page: Page, fibric: Fibric, key: str) -> None:
    event = fibric.ingest(idempotency_key="ui-decide-1", entity_key="order:SO-ui-1")
    partly = propose(fibric, event_id=event.id)
    refused = propose(fibric)
    hold, notify = hold_and_notify(partly)

    assert sign_in(page, fibric.url, key).status == 303
    expect(page.get_by_role("heading", name="Pending plans")).to_be_visible()
    listed = page.get_by_role("table").locator("tbody tr th a").all_inner_texts()
    assert listed.index(refused.id) < listed.index(partly.id)  # newest first

    page.get_by_role("link", name=partly.id).click()
    expect(page.get_by_role("heading", name=f"Plan {partly.id}")).to_be_visible()
    expect(page.locator("dl.facts").first).to_contain_text(partly.digest)
    expect(page.get_by_text("rule 1 matched: orders.hold for an order at risk").first).to_be_visible()
    expect(page.locator("article.event pre")).to_contain_text('"carrier_scanned": false')
    page.get_by_label(re.compile(r"Approve action 2: orders\.notify")).uncheck()
    page.get_by_label("Note (optional; recorded on every receipt)").fill("ops on call")
    page.get_by_role("button", name="Approve checked actions").click()

    expect(page.get_by_role("status")).to_contain_text("Approved")
    approved = plan_store.get(fibric.state, fibric.tenant.id, partly.id)
    assert approved.status == "executed"
    assert approved.decided_by is not None and approved.decided_by["key_name"] == "alice"
    shown = {k: row_of(page, k) for k in (hold, notify)}
    assert shown[hold]["Outcome"] == "applied" and shown[notify]["Outcome"] == "declined"
    stored = {r["idempotency_key"]: r for r in approved.results or []}
    for k in (hold, notify):
        assert shown[k]["Receipt"] == stored[k]["receipt_id"]
        receipt = fibric.ledger.get(fibric.tenant.id, stored[k]["receipt_id"])
        assert (receipt.plan_id, receipt.outcome, receipt.approver) == (
            partly.id, stored[k]["outcome"], "ops on call")
    assert effects(fibric.orders_db, hold) == 1 and effects(fibric.orders_db, notify) == 0

    page.get_by_role("link", name=stored[hold]["receipt_id"]).click()
    expect(page.get_by_role("heading", name=f"Receipt {stored[hold]['receipt_id']}")).to_be_visible()
    expect(page.locator("dl.facts")).to_contain_text("applied")
    expect(page.locator("dl.facts")).to_contain_text("alice")

    page.goto(f"{fibric.url}/ui/plans/{refused.id}")
    page.get_by_label("Reason (required)").fill("the customer already called")
    page.get_by_role("button", name="Reject the whole plan").click()

    expect(page.get_by_role("status")).to_contain_text("Rejected")
    rejected = plan_store.get(fibric.state, fibric.tenant.id, refused.id)
    assert (rejected.status, rejected.reason) == ("rejected", "the customer already called")
    for result in rejected.results or []:
        assert row_of(page, result["idempotency_key"])["Outcome"] == "declined"
        assert fibric.ledger.get(fibric.tenant.id, result["receipt_id"]).outcome == "declined"
    assert sum(effects(fibric.orders_db, k) for k in hold_and_notify(refused)) == 0


def test_a_plan_that_changed_since_it_was_shown_runs_nothing(page: Page, fibric: Fibric, key: str) -> None:
    plan = propose(fibric)
    sign_in(page, fibric.url, key)
    page.goto(f"{fibric.url}/ui/plans/{plan.id}")
    page.locator("form.decide input[name=digest]").evaluate("(e) => e.value = 'sha256:' + '0'.repeat(64)")

    with page.expect_response(lambda r: r.url.endswith("/approve")) as answer:
        page.get_by_role("button", name="Approve checked actions").click()

    assert answer.value.status == 409
    expect(page.get_by_role("alert")).to_contain_text("does not match the digest")
    assert plan_store.get(fibric.state, fibric.tenant.id, plan.id).status == "proposed"
    assert sum(effects(fibric.orders_db, k) for k in hold_and_notify(plan)) == 0


def test_another_tenants_plan_reads_as_not_found(page: Page, fibric: Fibric, key: str) -> None:
    other = fibric.state.create_tenant("globex-ui", "rs_fibric")
    theirs = plan_store.propose(fibric.state, other.id, operator_id="op_theirs", policy_id=None,
                                actions=[{"capability": "orders.hold", "entity_key": "order:G-1",
                                          "idempotency_key": "globex:G-1:hold", "args": {},
                                          "decision": "ALLOW"}])
    sign_in(page, fibric.url, key)

    shown = page.goto(f"{fibric.url}/ui/plans/{theirs.id}")
    assert shown is not None and shown.status == 404
    expect(page.get_by_role("heading", name="Not found")).to_be_visible()
    never = page.goto(f"{fibric.url}/ui/plans/pl_0000000000000000")
    assert never is not None and never.status == 404
    assert page.get_by_role("alert").inner_text().replace("pl_0000000000000000", theirs.id) == \
        f"No such plan: '{theirs.id}'"
    page.goto(f"{fibric.url}/ui/plans?status=")
    assert theirs.id not in page.content()
    token = page.locator("input[name=csrf_token]").first.get_attribute("value") or ""
    for path, body in (("approve", {"action": "globex:G-1:hold"}), ("reject", {"reason": "mine now"})):
        answer = page.request.post(f"{fibric.url}/ui/plans/{theirs.id}/{path}",
                                   headers={"Origin": fibric.url},
                                   form={"csrf_token": token, "digest": theirs.digest, **body})
        assert answer.status == 404, answer.text()
    assert plan_store.get(fibric.state, other.id, theirs.id).status == "proposed"


def test_missing_scopes_are_said_with_403(page: Page, fibric: Fibric) -> None:
    event = fibric.ingest(idempotency_key="ui-scopes-1", entity_key="order:SO-ui-2")
    plan = propose(fibric, event_id=event.id)
    _, reader = fibric.state.create_api_key(fibric.tenant.id, frozenset({"plans:read"}))
    _, other = fibric.state.create_api_key(fibric.tenant.id, frozenset({"events:write"}))

    sign_in(page, fibric.url, reader)
    page.goto(f"{fibric.url}/ui/plans/{plan.id}")
    expect(page.get_by_text("lacks the plans:approve scope")).to_be_visible()
    assert page.get_by_role("button", name="Approve checked actions").count() == 0
    expect(page.get_by_text("lacks the events:read scope")).to_be_visible()
    token = page.locator("input[name=csrf_token]").first.get_attribute("value")
    answer = page.request.post(f"{fibric.url}/ui/plans/{plan.id}/approve",
                               form={"csrf_token": token or "", "action": plan.actions[0]["idempotency_key"],
                                     "digest": plan.digest}, headers={"Origin": fibric.url})
    assert answer.status == 403 and "lacks the &#39;plans:approve&#39; scope" in answer.text()
    assert plan_store.get(fibric.state, fibric.tenant.id, plan.id).status == "proposed"

    page.context.clear_cookies()
    sign_in(page, fibric.url, other)
    listing = page.goto(f"{fibric.url}/ui/plans")
    assert listing is not None and listing.status == 403
    expect(page.get_by_role("alert")).to_contain_text("lacks the 'plans:read' scope")


def test_a_revoked_key_is_signed_out(page: Page, fibric: Fibric) -> None:
    key_record, secret = fibric.state.create_api_key(fibric.tenant.id, frozenset(store.SCOPES))
    sign_in(page, fibric.url, secret)
    fibric.state.revoke_api_key(key_record.id)

    answer = page.goto(f"{fibric.url}/ui/plans")

    assert answer is not None and answer.status == 401
    expect(page.get_by_role("alert")).to_contain_text("revoked")
    assert page.context.cookies() == []
