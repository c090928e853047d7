"""The page's security: forged posts refused, the key kept out of URLs and logs, the cookie's flags, headers.

A forged post comes from a real page of a second loopback server, in the
same chromium that is signed in: on 127.0.0.1 (another port: cross-origin
but same-site, so SameSite=Strict still lets the browser send the cookie,
and only the origin check and the token stand in the way) and on
localhost (cross-site). Raw posts then try each wall on its own.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from typing import Any

import httpx
import live_server
import pytest
from playwright.sync_api import BrowserContext, Page, expect
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route
from ui_support import Fibric, hold_and_notify, propose, sign_in

from fibric.api.ui import csrf, forms
from fibric.store import plan_store

from executor_support import effects  # isort: skip  (ui_support put tests/executor on the path)

HEADERS = {
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "x-content-type-options": "nosniff",
}


def attacker_app(target: str, plan: plan_store.Plan) -> Starlette:
    """Another site's page: two forms aimed at the plan, with a guessed token."""
    hidden = (f'<input type="hidden" name="csrf_token" value="{"A" * 43}">'
              f'<input type="hidden" name="digest" value="{plan.digest}">')
    keys = "".join(f'<input type="hidden" name="action" value="{k}">' for k in hold_and_notify(plan))
    html = (f'<!doctype html><title>Win a prize</title>'
            f'<form method="post" action="{target}/ui/plans/{plan.id}/approve">{hidden}{keys}'
            f'<button>Claim your prize</button></form>'
            f'<form method="post" action="{target}/ui/plans/{plan.id}/reject">{hidden}'
            f'<input type="hidden" name="reason" value="spam"><button>Unsubscribe</button></form>')

    async def index(request: Request) -> HTMLResponse:
        return HTMLResponse(html)

    return Starlette(routes=[Route("/", index)])


def untouched(fibric: Fibric, plan: plan_store.Plan) -> bool:
    """The plan is still proposed, and nothing of it ran or was recorded."""
    now = plan_store.get(fibric.state, fibric.tenant.id, plan.id)
    keys = hold_and_notify(plan)
    return (now.status == "proposed" and now.results is None
            and all(fibric.ledger.for_action(fibric.tenant.id, plan.id, k) is None for k in keys)
            and sum(effects(fibric.orders_db, k) for k in keys) == 0)


@pytest.fixture
def session(fibric: Fibric, key: str) -> Iterator[httpx.Client]:
    """A plain HTTP client signed in through the form (it holds the cookie)."""
    with httpx.Client(base_url=fibric.url, timeout=60.0) as client:
        signed = client.post("/ui/signin", data={"key": key}, headers={"Origin": fibric.url})
        assert signed.status_code == 303, signed.text
        yield client


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
@pytest.mark.parametrize("button", ["Claim your prize", "Unsubscribe"])
def test_a_forged_post_from_another_origin_is_refused_and_changes_nothing(
    page: Page, fibric: Fibric, key: str, host: str, button: str
) -> None:
    plan = propose(fibric)
    sign_in(page, fibric.url, key)
    with live_server.serving(attacker_app(fibric.url, plan)) as evil:
        page.goto(evil.replace("127.0.0.1", host) + "/")
        with page.expect_response(lambda r: r.url.startswith(fibric.url)) as answer:
            page.get_by_role("button", name=button).click()

    assert answer.value.status == 403
    expect(page.get_by_role("alert")).to_contain_text("Nothing changed")
    assert untouched(fibric, plan)
    assert [c["name"] for c in page.context.cookies()] == ["fibric_key"]  # still signed in: only refused


def test_raw_posts_without_the_pages_proof_are_refused(fibric: Fibric, session: httpx.Client) -> None:
    plan = propose(fibric)
    token = csrf.token(session.cookies["fibric_key"])
    other_token = csrf.token(fibric.state.create_api_key(fibric.tenant.id, frozenset({"plans:read"}))[1])
    form = {"action": [a["idempotency_key"] for a in plan.actions], "digest": plan.digest}
    own, evil = fibric.url, "http://evil.example"
    tries: list[tuple[dict[str, str], dict[str, Any]]] = [
        ({"Origin": evil}, form),  # a foreign origin and no token
        ({"Origin": evil}, {**form, "csrf_token": token}),  # the right token, but from another site
        ({"Origin": own, "Sec-Fetch-Site": "cross-site"}, {**form, "csrf_token": token}),
        ({"Origin": "null"}, {**form, "csrf_token": token}),  # null, and no browser says same-origin
        ({}, {**form, "csrf_token": token}),  # nothing says where it came from
        ({"Referer": f"{evil}/page"}, {**form, "csrf_token": token}),
        ({"Origin": own}, form),  # from here, but no token
        ({"Origin": own}, {**form, "csrf_token": other_token}),  # another session's token
        ({"Origin": own}, {**form, "csrf_token": token[:-1]}),
    ]
    for path in ("approve", "reject"):
        for headers, body in tries:
            answer = session.post(f"/ui/plans/{plan.id}/{path}", data={**body, "reason": "forged"},
                                  headers=headers)
            assert answer.status_code == 403, (path, headers, answer.text)
            assert "Nothing changed" in answer.text
    assert untouched(fibric, plan)

    # The same request with the page's proof is accepted: the refusals were the proof's doing.
    accepted = session.post(f"/ui/plans/{plan.id}/reject", data={"csrf_token": token, "reason": "genuine",
                                                                  "digest": plan.digest},
                            headers={"Origin": own, "Sec-Fetch-Site": "same-origin"})
    assert accepted.status_code == 303, accepted.text
    assert plan_store.get(fibric.state, fibric.tenant.id, plan.id).status == "rejected"


def test_a_forged_sign_in_is_refused(fibric: Fibric, key: str) -> None:
    with httpx.Client(base_url=fibric.url) as client:
        answer = client.post("/ui/signin", data={"key": key}, headers={"Origin": "http://evil.example"})
    assert answer.status_code == 403 and "set-cookie" not in answer.headers


def test_a_form_over_the_cap_is_refused(fibric: Fibric, session: httpx.Client) -> None:
    plan = propose(fibric)
    token = csrf.token(session.cookies["fibric_key"])
    body = f"csrf_token={token}&reason=" + "x" * forms.MAX_BYTES
    answer = session.post(f"/ui/plans/{plan.id}/reject", content=body,
                          headers={"Origin": fibric.url, "Content-Type": forms.MEDIA_TYPE})
    assert answer.status_code == 413
    assert untouched(fibric, plan)


def test_the_key_never_appears_in_a_url_or_a_log(
    page: Page, fibric: Fibric, key: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    plan = propose(fibric)
    urls: list[str] = []
    page.context.on("request", lambda r: urls.append(r.url))

    sign_in(page, fibric.url, key)
    page.get_by_role("link", name=plan.id).click()
    page.get_by_label("Reason (required)").fill("not needed")
    page.get_by_role("button", name="Reject the whole plan").click()
    page.goto(f"{fibric.url}/ui/plans?status=rejected")
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()

    assert len(urls) > 5 and not [u for u in urls if key in u]
    history = page.evaluate("() => [location.href, document.referrer]")
    assert key not in "".join(history)
    assert key not in caplog.text


def test_the_cookie_is_http_only_strict_and_scoped_to_the_page(
    page: Page, context: BrowserContext, fibric: Fibric, key: str
) -> None:
    signed = sign_in(page, fibric.url, key)

    [cookie] = context.cookies()
    assert (cookie["name"], cookie["value"], cookie["path"]) == ("fibric_key", key, "/ui")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert not cookie["secure"] and cookie["expires"] == -1  # over http; ends with the browser session
    assert page.evaluate("() => document.cookie") == ""  # no script of the page can read it
    header = signed.all_headers()["set-cookie"]
    assert re.search(r"; HttpOnly", header) and re.search(r"; SameSite=strict", header, re.I)

    # The JSON API never receives it: the browser sends it to /ui only.
    with page.expect_request(lambda r: r.url.endswith("/healthz")) as health:
        page.goto(f"{fibric.url}/healthz")
    assert "cookie" not in health.value.all_headers()

    page.goto(f"{fibric.url}/ui/plans")
    page.get_by_role("button", name="Sign out").click()
    assert context.cookies() == []
    assert page.goto(f"{fibric.url}/ui/plans") is not None and page.url.endswith("/ui/signin")


def test_the_cookie_is_secure_over_https(fibric: Fibric, key: str) -> None:
    """Behind a TLS proxy (X-Forwarded-Proto from a trusted address, as uvicorn reads it)."""
    https = fibric.url.replace("http://", "https://")
    with httpx.Client(base_url=fibric.url, headers={"X-Forwarded-Proto": "https"}) as client:
        signed = client.post("/ui/signin", data={"key": key}, headers={"Origin": https})
        assert signed.status_code == 303
        cookie = signed.headers["set-cookie"]
        assert "; Secure" in cookie and "; HttpOnly" in cookie and "Path=/ui" in cookie
        token = csrf.token(key)
        # (a Secure cookie goes back over https only: the proxy's side of it is plain http here)
        out = client.post("/ui/signout", data={"csrf_token": token},
                          headers={"Origin": https, "Cookie": f"fibric_key={key}"})
    cleared = out.headers["set-cookie"]
    assert out.status_code == 303 and 'fibric_key=""' in cleared and "Max-Age=0" in cleared
    assert "; Secure" in cleared and "Path=/ui" in cleared


def test_every_page_carries_the_security_headers(fibric: Fibric, session: httpx.Client) -> None:
    plan = propose(fibric)
    pages = ["/ui/signin", "/ui/plans", f"/ui/plans/{plan.id}", "/ui/plans/pl_nope", "/ui/nowhere",
             "/ui/static/approvers.css"]
    for path in pages:
        answer = session.get(path)
        policy = answer.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in policy and "default-src 'none'" in policy, path
        assert "script-src" not in policy and "unsafe-inline" not in policy, path
        assert {k: answer.headers.get(k) for k in HEADERS} == HEADERS, path
        if path.endswith(".css"):
            assert answer.headers["content-type"].startswith("text/css")
        else:
            assert answer.headers["cache-control"] == "no-store", path
            assert "<script" not in answer.text.lower(), path


def test_a_decision_must_name_what_it_decides(fibric: Fibric, session: httpx.Client) -> None:
    plan = propose(fibric)
    proof = {"csrf_token": csrf.token(session.cookies["fibric_key"])}
    keys = list(hold_and_notify(plan))
    tries = [("approve", {"action": keys}, "digest: the plan&#39;s digest as shown is required"),
             ("reject", {"reason": "no"}, "digest: the plan&#39;s digest as shown is required"),
             ("approve", {"digest": plan.digest}, "Choose at least one action"),
             ("reject", {"digest": plan.digest, "reason": "  "}, "reason: say why"),
             ("approve", {"digest": plan.digest, "action": ["ship-risk:elsewhere"]},
              "has no action with idempotency_key")]
    for path, body, said in tries:
        answer = session.post(f"/ui/plans/{plan.id}/{path}", data={**proof, **body},
                              headers={"Origin": fibric.url})
        assert answer.status_code == 400 and said in answer.text, (path, body, answer.text)
    assert untouched(fibric, plan)
