"""Where outbound HTTP made on a tenant's behalf may go (SSRF), and the installation's allowlist.

A webhook URL and an HTTP connector's URL are chosen by a tenant, and Fibric
connects to them from inside our network, so a URL naming 127.0.0.1,
10.0.0.5 or the cloud metadata service at 169.254.169.254 would make Fibric
attack what it can reach. The rules (docs/security.md#egress):

- only https, unless the host is on the installation's egress allowlist (or
  the development setting for webhooks allows http everywhere);
- no address that is unspecified, loopback, private, carrier-grade NAT
  (100.64/10), link-local, multicast, reserved or otherwise not global, in
  IPv4 or IPv6, including IPv4 embedded in IPv6 (mapped ::ffff:a.b.c.d,
  6to4, NAT64, Teredo) and the decimal, octal and hex spellings the C
  resolver accepts (2130706433, 0177.0.0.1, 0x7f000001, 127.1), unless the
  allowlist names the host or a network holding the address;
- checked when the URL is applied (`Egress.check_url`, names resolved if
  they resolve) and again at every connection on the address actually
  connected to: the guarded network backends resolve the name once (with
  the deadline and TTL cache of fibric/trust/resolver.py), check every
  address, and connect to the checked address themselves, so DNS rebinding
  between check and connect cannot switch it. TLS still verifies the
  certificate for the URL's name (SNI and Host come from the URL).
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
import typing
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpcore
import httpcore2

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
# Resolves (host, port, timeout) to the addresses to connect to; raises OSError or TimeoutError.
Resolver = Callable[[str, int, float | None], Awaitable[list[Address]]]

_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
RESOLVE_BUDGET_SECONDS = 3.0  # for resolving hosts at apply time, all of them together
_NUMERIC_HOST = re.compile(r"^(0x[0-9a-f]*|[0-9]+)(\.(0x[0-9a-f]*|[0-9]+)){0,3}\.?$", re.IGNORECASE)
_HOST_ENTRY = re.compile(r"^(\*\.)?[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*\.?$")
ALLOWLIST_SETTING = "trust.egress_allow (FIBRIC_EGRESS_ALLOW, --egress-allow)"


class Refused(Exception):
    """A URL or address this egress may not reach; the message says which rule refused it."""


@dataclass(frozen=True)
class Egress:
    """The hosts and networks outbound HTTP may reach beyond the public internet over https.

    `anywhere` lifts every rule (http, any address): what the installation's
    own specs get, and webhooks under the development setting.
    """

    hosts: frozenset[str] = frozenset()  # exact names, or "*.example.com" for its subdomains
    networks: tuple[Network, ...] = ()
    anywhere: bool = False

    @classmethod
    def parse(cls, entries: Iterable[str]) -> Egress:
        """The allowlist from its setting's entries (host names, `*.suffix`, IPs, CIDRs)."""
        hosts: set[str] = set()
        networks: list[Network] = []
        for raw in entries:
            entry = raw.strip().lower()
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
                continue
            except ValueError:
                pass
            if not _HOST_ENTRY.fullmatch(entry):
                raise ValueError(f"{ALLOWLIST_SETTING}: '{raw}' is neither a host name, '*.domain', "
                                 "an IP address nor a CIDR")
            hosts.add(entry.rstrip("."))
        return cls(hosts=frozenset(hosts), networks=tuple(networks))

    def allows_host(self, host: str) -> bool:
        """The allowlist names this host (a name, or a literal address inside a listed network)."""
        if self.anywhere:
            return True
        name = host.strip("[]").rstrip(".").lower()
        if name in self.hosts or any(e.startswith("*.") and name.endswith(e[1:]) for e in self.hosts):
            return True
        try:
            literal = parse_host(name)
        except Refused:
            return False
        return literal is not None and self.allows_address(literal)

    def allows_address(self, address: Address) -> bool:
        return self.anywhere or any(address in network for network in self.networks
                                    if network.version == address.version)

    def check_url(self, url: str) -> str:
        """Refuse (Refused) a URL this egress may not use, as written; returns its host.

        A name is not resolved here: `refused_names` resolves the names of
        many URLs at once, and every connection checks the address again.
        """
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 - raises ValueError for a port out of range
        except ValueError as e:
            raise Refused(f"not a valid URL: {e}") from e
        host = (parts.hostname or "").lower()
        if parts.scheme.lower() not in ("https", "http"):
            raise Refused("must be an https:// URL")
        if not host:
            raise Refused("has no host")
        if parts.username is not None or parts.password is not None:
            raise Refused("must not carry credentials (user:password@)")
        if self.allows_host(host):
            return host
        if parts.scheme.lower() != "https":
            raise Refused("must be an https:// URL (http:// only to hosts on the egress allowlist)")
        literal = parse_host(host)
        if literal is not None:
            self.check_address(host, literal)
        elif host.rstrip(".") == "localhost" or host.rstrip(".").endswith(".localhost"):
            raise Refused(f"host '{host}' is loopback")
        return host

    def check_address(self, host: str, address: Address) -> None:
        """Refuse an address that is not public, unless the allowlist names the host or its network."""
        if self.allows_host(host) or self.allows_address(address):
            return
        found = classify(address)
        if found is not None:
            shown = host if host.strip("[]") == str(address) else f"{host} ({address})"
            raise Refused(f"host {shown} is a {found} address")

    def refused_names(
        self, hosts: Iterable[str], resolver: Resolver, *, timeout: float = RESOLVE_BUDGET_SECONDS
    ) -> dict[str, str]:
        """Resolve host names concurrently; the reason for each one resolving to a forbidden address.

        Blocking (it runs its own event loop): for apply, in a worker thread.
        Names that do not resolve, or not within `timeout` altogether, pass:
        every connection checks again on the address it connects to.
        """
        names = sorted({h for h in hosts if parse_host(h) is None and not self.allows_host(h)})
        if not names or self.anywhere:
            return {}

        async def check(name: str) -> str | None:
            try:
                found = await resolver(name, 443, timeout)
            except (OSError, UnicodeError, TimeoutError):
                return None
            try:
                for address in found:
                    self.check_address(name, address)
            except Refused as e:
                return str(e)
            return None

        async def check_all() -> list[str | None]:
            try:
                async with asyncio.timeout(timeout):
                    return list(await asyncio.gather(*(check(n) for n in names)))
            except TimeoutError:
                return [None] * len(names)

        reasons = asyncio.run(check_all())
        return {name: reason for name, reason in zip(names, reasons, strict=True) if reason is not None}


ANYWHERE = Egress(anywhere=True)
PUBLIC = Egress()


def classify(address: Address) -> str | None:
    """The class of address a tenant may not reach ("loopback", "private", ...), or None if public."""
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
        # Deprecated IPv6 site-local (fec0::/10, RFC 3879): Python calls it global, networks still route it.
        ("private site-local", isinstance(address, ipaddress.IPv6Address) and address.is_site_local),
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


class _Guard:
    """The check on the address actually connected to, shared by the httpcore and httpcore2 backends."""

    _connect_error: type[Exception]

    def __init__(self, egress: Egress, inner: typing.Any, resolver: Resolver) -> None:
        self.egress = egress
        self._inner = inner
        self._resolver = resolver

    async def _addresses(self, host: str, port: int, timeout: float | None) -> list[str]:
        literal = parse_host(host)
        if literal is not None:
            found = [literal]
        else:
            try:
                found = await self._resolver(host, port, timeout)
            except (OSError, UnicodeError, TimeoutError) as e:
                raise self._connect_error(f"cannot resolve {host}: {e or type(e).__name__}") from e
        for address in found:
            try:
                self.egress.check_address(host, address)
            except Refused as e:
                raise self._connect_error(str(e)) from e
        return list(dict.fromkeys(str(a) for a in found))

    async def _connect(
        self, host: str, port: int, timeout: float | None, **options: typing.Any
    ) -> typing.Any:
        last: Exception | None = None
        for address in await self._addresses(host, port, timeout):  # each one has passed the check
            try:
                return await self._inner.connect_tcp(address, port, timeout=timeout, **options)
            except Exception as e:  # the library's ConnectError or ConnectTimeout: try the next one
                last = e
        raise last or self._connect_error(f"no address for {host}")


class GuardedBackend(_Guard, httpcore.AsyncNetworkBackend):
    """httpcore's network backend (webhook deliveries) with the check on the connected address."""

    _connect_error = httpcore.ConnectError

    def __init__(self, egress: Egress, resolver: Resolver, *,
                 inner: httpcore.AsyncNetworkBackend | None = None) -> None:
        super().__init__(egress, inner or httpcore.AnyIOBackend(), resolver)

    async def connect_tcp(
        self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        stream: httpcore.AsyncNetworkStream = await self._connect(
            host, port, timeout, local_address=local_address, socket_options=socket_options)
        return stream

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("only TCP connections are allowed")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class GuardedBackend2(_Guard, httpcore2.AsyncNetworkBackend):
    """The same guard for httpcore2, which the MCP SDK's HTTP client (httpx2) runs on."""

    _connect_error = httpcore2.ConnectError

    def __init__(self, egress: Egress, resolver: Resolver, *,
                 inner: httpcore2.AsyncNetworkBackend | None = None) -> None:
        super().__init__(egress, inner or httpcore2.AnyIOBackend(), resolver)

    async def connect_tcp(
        self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
        socket_options: typing.Iterable[httpcore2.SOCKET_OPTION] | None = None,
    ) -> httpcore2.AsyncNetworkStream:
        stream: httpcore2.AsyncNetworkStream = await self._connect(
            host, port, timeout, local_address=local_address, socket_options=socket_options)
        return stream

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None,
        socket_options: typing.Iterable[httpcore2.SOCKET_OPTION] | None = None,
    ) -> httpcore2.AsyncNetworkStream:
        raise httpcore2.ConnectError("only TCP connections are allowed")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


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
