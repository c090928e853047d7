"""SSRF: URLs reaching internal addresses are refused at creation and at every delivery (setting off)."""

from __future__ import annotations

import socket
from typing import Any

import pytest
from webhook_support import Clock, Receiver, client_for, create_webhook, dispatcher

from fibric import settings, store
from fibric.controller import ssrf
from fibric.store import deliveries, plans

REFUSED = [
    ("http://a.example/h", "https"),                         # plain http in production
    ("https://127.0.0.1/h", "loopback"),
    ("https://2130706433/h", "loopback"),                    # decimal
    ("https://0177.0.0.1/h", "loopback"),                    # octal
    ("https://0x7f000001/h", "loopback"),                    # hex
    ("https://0x7f.1/h", "loopback"),                        # mixed short form
    ("https://127.1/h", "loopback"),
    ("https://localhost/h", "loopback"),
    ("https://LocalHost./h", "loopback"),
    ("https://api.localhost/h", "loopback"),
    ("https://[fe80::1%25eth0]/h", "link-local"),
    ("https://[::1]/h", "loopback"),
    ("https://10.1.2.3/h", "private"),
    ("https://172.16.0.1/h", "private"),
    ("https://192.168.1.1/h", "private"),
    ("https://[fc00::1]/h", "private"),
    ("https://100.64.0.1/h", "carrier-grade NAT"),
    ("https://100.127.255.254/h", "carrier-grade NAT"),
    ("https://169.254.169.254/latest/meta-data", "link-local"),
    ("https://[fe80::1]/h", "link-local"),
    ("https://224.0.0.1/h", "multicast"),
    ("https://[ff02::1]/h", "multicast"),
    ("https://0.0.0.0/h", "unspecified"),
    ("https://[::]/h", "unspecified"),
    ("https://240.0.0.1/h", "reserved"),
    ("https://[::ffff:127.0.0.1]/h", "loopback (IPv4 embedded"),
    ("https://[::ffff:a9fe:a9fe]/h", "link-local (IPv4 embedded"),  # ::ffff:169.254.169.254
    ("https://[64:ff9b::a00:1]/h", "private (IPv4 embedded"),       # NAT64 of 10.0.0.1
    ("https://[2002:c0a8:101::1]/h", "private (IPv4 embedded"),     # 6to4 of 192.168.1.1
    ("https://user:pw@a.example/h", "credentials"),
    ("https://999.1.1.1/h", "valid IP"),
]


@pytest.mark.parametrize(("url", "reason"), REFUSED)
def test_refused_urls(url: str, reason: str) -> None:
    with pytest.raises(ssrf.Refused, match=reason.replace("(", r"\(")):
        ssrf.check_url(url, allow_http_and_private=False)


def test_a_name_resolving_to_loopback_is_refused() -> None:
    name = socket.gethostname()  # resolves to 127.0.0.1 on this machine (/etc/hosts)
    if ssrf.classify(ssrf.parse_host(socket.gethostbyname(name)) or ssrf.parse_host("8.8.8.8")) is None:
        pytest.skip(f"{name} does not resolve to an internal address here")
    with pytest.raises(ssrf.Refused, match=f"{name} .* address"):
        ssrf.check_url(f"https://{name}/h", allow_http_and_private=False)


@pytest.mark.parametrize("url", ["https://8.8.8.8/h", "https://[2001:4860:4860::8888]/h",
                                 "https://hooks.unresolvable.example/h"])
def test_public_and_not_yet_resolvable_urls_pass(url: str) -> None:
    ssrf.check_url(url, allow_http_and_private=False)


def test_the_development_setting_allows_http_and_loopback() -> None:
    assert ssrf.check_url("http://127.0.0.1:8000/h", allow_http_and_private=True) == "127.0.0.1"
    with pytest.raises(ssrf.Refused):
        ssrf.check_url("ftp://127.0.0.1/h", allow_http_and_private=True)


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
    plans.propose(state, tenant.id, operator_id="op_1", actions=[], policy_id=None)
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
    backend = ssrf.GuardedBackend(allow_http_and_private=False)
    for host in ("localhost", socket.gethostname(), "2130706433"):
        with pytest.raises(ssrf.Refused, match="loopback"):
            await backend.connect_tcp(host, 80, timeout=2)
