"""Keeping webhook deliveries from being turned against our own network (SSRF).

A webhook URL is chosen by a tenant, and the dispatcher POSTs to it from
inside our network, so a URL naming 127.0.0.1, 10.0.0.5 or the cloud metadata
service at 169.254.169.254 would make Fibric attack what it can reach. The
rules (docs/webhooks.md#ssrf):

- only https, unless the explicit development setting allows http;
- no address that is unspecified, loopback, private, carrier-grade NAT
  (100.64/10), link-local, multicast, reserved or otherwise not global, in
  IPv4 or IPv6, including IPv4 embedded in IPv6 (mapped ::ffff:a.b.c.d,
  6to4, NAT64, Teredo) and the decimal, octal and hex spellings the C
  resolver accepts (2130706433, 0177.0.0.1, 0x7f000001, 127.1);
- checked when a webhook is created (`check_url`, names resolved if they
  resolve) and again at every delivery on the address actually connected to:
  `GuardedBackend` resolves the name once, checks every address, and connects
  to the checked address itself, so DNS rebinding between check and connect
  cannot switch it. TLS still verifies the certificate for the URL's name
  (SNI and Host come from the URL).
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
import typing
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from concurrent.futures import TimeoutError as FuturesTimeout
from urllib.parse import urlsplit

import httpcore

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
RESOLVE_BUDGET_SECONDS = 3.0  # for resolving webhook hosts at creation, all of them together
_NUMERIC_HOST = re.compile(r"^(0x[0-9a-f]*|[0-9]+)(\.(0x[0-9a-f]*|[0-9]+)){0,3}\.?$", re.IGNORECASE)


class Refused(httpcore.ConnectError):
    """A URL or address webhooks must not reach; the message says which rule refused it."""


def classify(address: Address) -> str | None:
    """The class of address a webhook may not reach ("loopback", "private", ...), or None if public."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            found = classify(embedded)
            return f"{found} (IPv4 embedded in IPv6)" if found else None
    checks = (
        ("unspecified", address.is_unspecified),
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("carrier-grade NAT", address in _CGNAT),
        ("multicast", address.is_multicast),
        ("reserved", address.is_reserved),
        ("private", address.is_private),
        ("not globally routable", not address.is_global),
    )
    return next((name for name, hit in checks if hit), None)


def parse_host(host: str) -> Address | None:
    """The address a URL's host spells, in any spelling the resolver accepts; None for a name."""
    text = host.strip("[]")
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        pass
    if _NUMERIC_HOST.fullmatch(text):
        try:  # inet_aton reads decimal, octal (leading 0) and hex parts, and short forms like 127.1
            return ipaddress.IPv4Address(socket.inet_aton(text.rstrip(".")))
        except OSError as e:
            raise Refused(f"'{host}' is neither a host name nor a valid IP address") from e
    return None


def check_url(url: str, *, allow_http_and_private: bool, resolve: bool = True) -> str:
    """Refuse (Refused) a URL webhooks may not use; returns its host.

    With `resolve`, a name that resolves to a forbidden address is refused
    too; a name that does not resolve (yet) passes, since every delivery
    checks again.
    """
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port out of range
    except ValueError as e:
        raise Refused(f"not a valid URL: {e}") from e
    allowed = ("https", "http") if allow_http_and_private else ("https",)
    if parts.scheme.lower() not in allowed:
        raise Refused("must be an https:// URL" if not allow_http_and_private else "must be http(s)://")
    host = (parts.hostname or "").lower()
    if not host:
        raise Refused("has no host")
    if parts.username is not None or parts.password is not None:
        raise Refused("must not carry credentials (user:password@)")
    if allow_http_and_private:
        return host
    literal = parse_host(host)
    if literal is not None:
        _refuse_if_forbidden(host, literal)
    elif host.rstrip(".") == "localhost" or host.rstrip(".").endswith(".localhost"):
        raise Refused(f"host '{host}' is loopback")
    elif resolve and (reason := _check_name(host)) is not None:
        raise Refused(reason)
    return host


def refused_names(hosts: Iterable[str], *, timeout: float = RESOLVE_BUDGET_SECONDS) -> dict[str, str]:
    """Resolve host names concurrently; the reason for each one resolving to a forbidden address.

    Names that do not resolve, or not within `timeout` altogether, pass: every
    delivery checks again on the address it connects to.
    """
    names = sorted({h for h in hosts if parse_host(h) is None})
    if not names:
        return {}
    refused: dict[str, str] = {}
    pool = ThreadPoolExecutor(max_workers=min(8, len(names)), thread_name_prefix="fibric-ssrf")
    futures = {pool.submit(_check_name, name): name for name in names}
    try:
        for future in as_completed(futures, timeout=timeout):
            if (reason := future.result()) is not None:
                refused[futures[future]] = reason
    except FuturesTimeout:
        pass
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    return refused


def _check_name(host: str) -> str | None:
    try:
        infos = socket.getaddrinfo(host, 443, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return None
    try:
        for info in infos:
            _refuse_if_forbidden(host, ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]))
    except Refused as e:
        return str(e)
    return None


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend with the SSRF check on the address it actually connects to."""

    def __init__(self, *, allow_http_and_private: bool, inner: httpcore.AsyncNetworkBackend | None = None
                 ) -> None:
        self.allow_http_and_private = allow_http_and_private
        self._inner = inner or httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = await self._resolve(host, port, timeout)
        last: Exception | None = None
        for address in addresses:  # every one of them has passed the check
            try:
                return await self._inner.connect_tcp(address, port, timeout=timeout,
                                                      local_address=local_address,
                                                      socket_options=socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as e:
                last = e
        raise last or httpcore.ConnectError(f"no address for {host}")

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise Refused("webhooks are delivered over TCP only")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)

    async def _resolve(self, host: str, port: int, timeout: float | None) -> list[str]:
        literal = parse_host(host)
        if literal is not None:
            found = [literal]
        else:
            loop = asyncio.get_running_loop()
            try:
                infos = await asyncio.wait_for(
                    loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), timeout)
            except (OSError, UnicodeError, TimeoutError) as e:
                raise httpcore.ConnectError(f"cannot resolve {host}: {e}") from e
            found = [ipaddress.ip_address(str(i[4][0]).split("%", 1)[0]) for i in infos]
        if not self.allow_http_and_private:
            for address in found:
                _refuse_if_forbidden(host, address)
        return list(dict.fromkeys(str(a) for a in found))


def _refuse_if_forbidden(host: str, address: Address) -> None:
    found = classify(address)
    if found is not None:
        shown = host if host.strip("[]") == str(address) else f"{host} ({address})"
        raise Refused(f"host {shown} is a {found} address")


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if int(address) >> 32 == 0 and int(address) > 1:  # deprecated IPv4-compatible ::a.b.c.d
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None
