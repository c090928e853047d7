"""Fixtures of the browser tests: one running Fibric and one chromium per module, a fresh context per test.

The system starts once a module (it connects the example order system over
MCP, which takes seconds); each test proposes plans about orders of its own,
so tests do not see each other's effects. Each test gets a new browser
context: no cookie carries over.

Module scope, not package scope: tests/ is no package, so a "package"
fixture here would live to the end of the session, and Playwright's sync API
keeps an event loop marked running on the main thread while it is open; every
later test that starts a loop of its own (asyncio.run, anyio) would then fail
with "Cannot run the event loop while another loop is running".
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, sync_playwright
from ui_support import CHROMIUM, Fibric, launch_options, running

from fibric import store


@pytest.fixture(scope="module")
def fibric(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fibric]:
    """The real system on loopback over a SQLite store, for every test of the folder."""
    folder = tmp_path_factory.mktemp("ui")
    state = store.open_store(str(folder / "data"))
    tenant = state.create_tenant("acme", "rs_fibric")
    try:
        with running(state, tenant, folder) as f:
            yield f
    finally:
        state.close()


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: the browser tests drive Debian's chromium "
                    "(apt-get install chromium, as .ci/run does), never a downloaded browser")
    browser = playwright.chromium.launch(**launch_options())
    try:
        yield browser
    finally:
        browser.close()


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    context = browser.new_context()
    try:
        yield context
    finally:
        context.close()


@pytest.fixture
def page(context: BrowserContext) -> Page:
    return context.new_page()


@pytest.fixture
def key(fibric: Fibric) -> str:
    """A key of the tenant with every scope, named as a person's would be."""
    return fibric.state.create_api_key(fibric.tenant.id, frozenset(store.SCOPES), name="alice")[1]

