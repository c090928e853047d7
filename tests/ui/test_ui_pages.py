"""What the screens show and how they are reached: the list's pages and filters, by keyboard, scriptless."""

from __future__ import annotations

import uuid

from playwright.sync_api import Browser, Page, expect
from ui_support import Fibric, propose, sign_in

from fibric.store import plan_store


def listed_ids(page: Page) -> list[str]:
    return page.get_by_role("table").locator("tbody tr th a").all_inner_texts()


def test_the_list_pages_newest_first_like_the_api_and_filters(page: Page, fibric: Fibric, key: str) -> None:
    operator_id = f"op_{uuid.uuid4().hex[:16]}"
    proposed = [plan_store.propose(fibric.state, fibric.tenant.id, operator_id=operator_id, policy_id=None,
                                   operator_name="pager",
                                   actions=[{"capability": "orders.hold", "entity_key": f"order:P-{n}",
                                             "idempotency_key": f"pager:{operator_id}:{n}", "args": {},
                                             "decision": "ALLOW"}])
                for n in range(23)]
    with fibric.client() as api:
        assert api.post(f"/v1/plans/{proposed[5].id}/reject", json={"reason": "no"}).status_code == 200
        first = api.get("/v1/plans", params={"status": "proposed", "operator_id": operator_id}).json()
        second = api.get("/v1/plans", params={"status": "proposed", "operator_id": operator_id,
                                              "cursor": first["next_cursor"]}).json()
    sign_in(page, fibric.url, key)

    page.goto(f"{fibric.url}/ui/plans?status=proposed&operator={operator_id}")
    assert listed_ids(page) == [p["id"] for p in first["data"]] == [p.id for p in reversed(proposed)
                                                                     if p is not proposed[5]][:20]
    page.get_by_role("link", name="Older plans").click()
    assert listed_ids(page) == [p["id"] for p in second["data"]]
    assert page.get_by_role("link", name="Older plans").count() == 0
    page.get_by_role("link", name="Newest plans").click()
    assert listed_ids(page) == [p["id"] for p in first["data"]]

    page.get_by_label("Status").select_option("rejected")
    page.get_by_role("button", name="Show").click()
    assert listed_ids(page) == [proposed[5].id]
    expect(page.get_by_role("table")).to_contain_text("pager")

    page.goto(f"{fibric.url}/ui/plans")
    page.get_by_label("Operator").select_option(label="ship-risk")  # names, for a key with operators:read
    page.get_by_label("Status").select_option("")
    page.get_by_role("button", name="Show").click()
    assert operator_id not in page.content()

    bad = page.goto(f"{fibric.url}/ui/plans?status=nope")
    assert bad is not None and bad.status == 400
    expect(page.get_by_role("alert")).to_contain_text("status: must be one of proposed")
    bad = page.goto(f"{fibric.url}/ui/plans?cursor=cur_forged")
    assert bad is not None and bad.status == 400


def test_without_operators_read_the_operator_filter_takes_an_id(page: Page, fibric: Fibric) -> None:
    _, reader = fibric.state.create_api_key(fibric.tenant.id, frozenset({"plans:read"}))
    sign_in(page, fibric.url, reader)
    field = page.get_by_label("Operator")
    expect(field).to_have_attribute("placeholder", "op_...")
    field.fill(fibric.operator_id())
    page.get_by_role("button", name="Show").click()
    assert f"operator={fibric.operator_id()}" in page.url


def test_every_control_is_labelled_and_the_flow_works_by_keyboard(
    page: Page, fibric: Fibric, key: str
) -> None:
    event = fibric.ingest(idempotency_key=f"ui-kbd-{uuid.uuid4().hex}", entity_key="order:SO-kbd")
    plan = propose(fibric, event_id=event.id)
    unlabelled = """() => [...document.querySelectorAll('input:not([type=hidden]), select, textarea')]
                          .filter(e => e.labels.length === 0).map(e => e.outerHTML)"""

    page.goto(f"{fibric.url}/ui/signin")
    assert page.evaluate(unlabelled) == []
    focus_on(page, "key")
    page.keyboard.type(key)
    page.keyboard.press("Enter")
    page.wait_for_url("**/ui/plans")
    assert page.evaluate(unlabelled) == []
    assert page.locator("th[scope=col]").count() == 6 and page.get_by_role("heading", level=1).count() == 1

    page.goto(f"{fibric.url}/ui/plans/{plan.id}")
    assert page.evaluate(unlabelled) == []
    focus_on(page, "action-2")
    assert page.evaluate("() => getComputedStyle(document.activeElement).outlineStyle") == "solid"
    page.keyboard.press("Space")  # leave the notify action out
    focus_on(page, "", text="Approve checked actions")
    page.keyboard.press("Enter")
    page.wait_for_url("**done=approved*")
    assert [r["outcome"] for r in plan_store.get(fibric.state, fibric.tenant.id, plan.id).results or []] == [
        "applied", "declined"]


def test_the_core_flow_needs_no_script(browser: Browser, fibric: Fibric, key: str) -> None:
    context = browser.new_context(java_script_enabled=False)
    try:
        page = context.new_page()
        plan = propose(fibric)
        sign_in(page, fibric.url, key)
        page.get_by_role("link", name=plan.id).click()
        page.get_by_role("button", name="Approve checked actions").click()
        expect(page.get_by_role("status")).to_contain_text("Approved")
        expect(page.get_by_role("table", name="What became of each action")).to_contain_text("applied")
    finally:
        context.close()
    assert plan_store.get(fibric.state, fibric.tenant.id, plan.id).status == "executed"


def focus_on(page: Page, element_id: str, *, text: str = "", presses: int = 60) -> None:
    """Press Tab until the element with this id (or, with `text`, the button saying it) has the focus."""
    probe = "(t) => t ? document.activeElement.textContent.trim() : document.activeElement.id"
    for _ in range(presses):
        page.keyboard.press("Tab")
        if page.evaluate(probe, text) == (text or element_id):
            return
    raise AssertionError(f"Tab never reached {element_id or text!r}")
