"""SSRF: URLs reaching internal addresses are refused at creation and at every delivery (setting off)."""

from __future__ import annotations

import socket
from typing import Any

import httpcore
import pytest
from egress_matrix import REFUSED
from webhook_support import Clock, Receiver, client_for, create_webhook, dispatcher

from fibric import settings, store, trust
from fibric.store import deliveries, plan_store
from fibric.trust import egress, resolver


@pytest.mark.parametrize(("url", "reason"), REFUSED)
def test_refused_urls(url: str, reason: str) -> None:
    with pytest.raises(trust.Refused, match=reason.replace("(", r"\(")):
        trust.PUBLIC.check_url(url)


def test_a_name_resolving_to_loopback_is_refused() -> None:
    name = socket.gethostname()  # resolves to 127.0.0.1 on this machine (/etc/hosts)
    if egress.classify(egress.parse_host(socket.gethostbyname(name)) or egress.parse_host("8.8.8.8")) is None:
        pytest.skip(f"{name} does not resolve to an internal address here")
    refused = trust.PUBLIC.refused_names([name, "hooks.unresolvable.example"], resolver.Resolver(timeout=1))
    assert list(refused) == [name] and f"{name} (127.0.0.1) is a loopback address" in refused[name]


@pytest.mark.parametrize("url", ["https://8.8.8.8/h", "https://[2001:4860:4860::8888]/h",
                                 "https://hooks.unresolvable.example/h"])
def test_public_and_not_yet_resolvable_urls_pass(url: str) -> None:
    trust.PUBLIC.check_url(url)


def test_the_development_setting_allows_http_and_loopback() -> None:
    assert trust.ANYWHERE.check_url("http://127.0.0.1:8000/h") == "127.0.0.1"
    with pytest.raises(trust.Refused):
        trust.ANYWHERE.check_url("ftp://127.0.0.1/h")


@pytest.mark.parametrize("url", ["https://169.254.169.254/", "https://0x7f000001/h", "https://[::1]/h",
                                 "https://100.64.1.1/h", "http://hooks.example/h"])
def test_the_api_refuses_an_internal_url_with_400_naming_url(
    state: store.StateStore, tenant: store.Tenant, tmp_path: Any, url: str
) -> None:
    with client_for(state, tenant, tmp_path, settings.Settings()) as client:
        response = client.post("/v1/webhooks", json={"url": url, "events": ["plan.proposed"]})
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["code"] == "invalid_request"
        assert [f["field"] for f in error["fields"]] == ["url"]
        assert client.get("/v1/webhooks").json()["data"] == []


@pytest.mark.anyio
async def test_every_delivery_is_checked_again_on_the_address_connected_to(
    state: store.StateStore, tenant: store.Tenant, receiver: Receiver, clock: Clock
) -> None:
    # Created while the development setting was on; delivered by a server where it is off.
    for name, url in (("by-ip", receiver.url), ("by-name", receiver.url.replace("127.0.0.1",
                                                                                socket.gethostname()))):
        create_webhook(state, tenant, url, name=name)
    plan_store.propose(state, tenant.id, operator_id="op_1", actions=[], policy_id=None)
    strict = dispatcher(state, clock, allow_http_and_private=False)
    try:
        assert await strict.run_once() == 3
    finally:
        await strict.aclose()
    assert receiver.received == []
    for name in ("by-ip", "by-name"):
        webhook = state.get_object(tenant.id, "Webhook", name)
        [item] = deliveries.list_deliveries(state, tenant.id, webhook.id)
        assert item.status == "pending" and item.attempts == 1
        assert item.last_error is not None and item.last_error.startswith("refused (SSRF)")


@pytest.mark.anyio
async def test_the_guarded_backend_refuses_names_resolving_inside() -> None:
    backend = trust.GuardedBackend(trust.PUBLIC, resolver.Resolver(timeout=1))
    for host in ("localhost", socket.gethostname(), "2130706433"):
        with pytest.raises(httpcore.ConnectError, match="loopback"):
            await backend.connect_tcp(host, 80, timeout=2)
