"""DNS for the HTTP made on a tenant's behalf: a deadline on every lookup, answers cached for their TTL.

Why not `getaddrinfo` on a thread pool: the C resolver cannot be cancelled,
and a name whose server never answers holds its thread for the resolver's
own timeouts (seconds, times its attempts). Tenant A's webhooks to names that
never resolve would then fill whatever pool tenant B's lookups wait on. This
resolver speaks DNS itself on the event loop (dnspython's asyncio resolver),
so a hanging lookup holds nothing but a socket until its deadline, and a
caller that gives up costs nothing more. Answers are kept for their TTL
(clamped to [min_ttl, max_ttl]), failures for a short negative TTL, and
concurrent lookups of one name share one query. /etc/hosts is honoured
first (localhost, the machine's own names), as the C resolver would.

The egress guards (fibric/trust/egress.py) check every address this
returns before a connection is made to it.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import dns.asyncresolver
import dns.exception
import dns.resolver

from fibric.trust import egress

HOSTS_FILE = Path("/etc/hosts")
HOSTS_RECHECK_SECONDS = 2.0  # how often a changed /etc/hosts is noticed


@dataclass(frozen=True)
class _Entry:
    addresses: tuple[egress.Address, ...]  # empty: the name does not resolve
    error: str
    expires: float


class Resolver:
    """An async DNS resolver with deadlines and a TTL cache; callable as an `egress.Resolver`."""

    def __init__(
        self,
        *,
        timeout: float = 2.0,
        nameservers: Sequence[str] = (),
        min_ttl: float = 1.0,
        max_ttl: float = 300.0,
        negative_ttl: float = 5.0,
        hosts_file: Path | None = HOSTS_FILE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`nameservers` ("ip" or "ip:port") replace /etc/resolv.conf's; `timeout` bounds one lookup."""
        self.timeout = timeout
        self.min_ttl, self.max_ttl, self.negative_ttl = min_ttl, max_ttl, negative_ttl
        self._clock = clock
        self._nameservers = tuple(nameservers)
        self._dns: dns.asyncresolver.Resolver | None = None
        self._cache: dict[str, _Entry] = {}
        # One query per name in flight, per event loop (apply checks run their own loop in a thread).
        self._inflight: dict[tuple[int, str], asyncio.Future[_Entry]] = {}
        self._hosts_file = hosts_file
        self._hosts: dict[str, tuple[egress.Address, ...]] = {}
        self._hosts_seen: tuple[float, float] = (-1.0, -HOSTS_RECHECK_SECONDS)  # (mtime, checked at)

    async def __call__(self, host: str, port: int, timeout: float | None = None) -> list[egress.Address]:
        """The addresses of `host`; OSError if it does not resolve, TimeoutError past the deadline."""
        name = host.rstrip(".").lower()
        literal = egress.parse_host(name)
        if literal is not None:
            return [literal]
        listed = self._from_hosts_file(name)
        if listed:
            return list(listed)
        now = self._clock()
        entry = self._cache.get(name)
        if entry is None or entry.expires <= now:
            entry = await self._lookup(name, min(self.timeout, timeout) if timeout else self.timeout)
        if not entry.addresses:
            raise OSError(f"{host} does not resolve: {entry.error}")
        return list(entry.addresses)

    async def _lookup(self, name: str, deadline: float) -> _Entry:
        key = (id(asyncio.get_running_loop()), name)
        pending = self._inflight.get(key)
        if pending is None:
            pending = self._inflight[key] = asyncio.ensure_future(self._query(name, deadline))
            pending.add_done_callback(lambda _: self._inflight.pop(key, None))
        try:
            async with asyncio.timeout(deadline):
                return await asyncio.shield(pending)
        except TimeoutError:
            raise TimeoutError(f"no DNS answer for {name} within {deadline * 1000:.0f} ms") from None

    async def _query(self, name: str, deadline: float) -> _Entry:
        """A and AAAA together; the answer is cached for the shortest TTL among them."""
        resolver = self._resolver()
        answers = await asyncio.gather(
            *(resolver.resolve(name, kind, lifetime=deadline, search=False) for kind in ("A", "AAAA")),
            return_exceptions=True)
        addresses: list[egress.Address] = []
        ttls: list[float] = []
        errors: list[str] = []
        for answer in answers:
            if isinstance(answer, BaseException):
                errors.append(_describe(answer))
                continue
            ttls.append(float(answer.rrset.ttl) if answer.rrset is not None else self.negative_ttl)
            addresses.extend(ipaddress.ip_address(record.to_text()) for record in answer)
        now = self._clock()
        if addresses:
            ttl = min(self.max_ttl, max(self.min_ttl, min(ttls)))
            entry = _Entry(tuple(dict.fromkeys(addresses)), "", now + ttl)
        else:
            entry = _Entry((), "; ".join(dict.fromkeys(errors)) or "no address", now + self.negative_ttl)
        if len(self._cache) > 10_000:  # a bound on what tenants' names can make us hold
            self._cache.clear()
        self._cache[name] = entry
        return entry

    def _resolver(self) -> dns.asyncresolver.Resolver:
        if self._dns is None:
            resolver = dns.asyncresolver.Resolver(configure=not self._nameservers)
            if self._nameservers:
                resolver.nameservers = [ns.rsplit(":", 1)[0] if _has_port(ns) else ns
                                        for ns in self._nameservers]
                ports = {ns.rsplit(":", 1)[0]: int(ns.rsplit(":", 1)[1]) for ns in self._nameservers
                         if _has_port(ns)}
                if ports:
                    resolver.nameserver_ports = ports
            resolver.cache = None  # ours honours TTLs and negative answers the same way for every caller
            self._dns = resolver
        return self._dns

    def _from_hosts_file(self, name: str) -> tuple[egress.Address, ...]:
        if self._hosts_file is None:
            return ()
        now = self._clock()
        mtime, checked = self._hosts_seen
        if now - checked >= HOSTS_RECHECK_SECONDS:
            try:
                current = os.stat(self._hosts_file).st_mtime
            except OSError:
                current = -1.0
            if current != mtime:
                self._hosts = _read_hosts(self._hosts_file)
            self._hosts_seen = (current, now)
        return self._hosts.get(name, ())


def _has_port(nameserver: str) -> bool:
    return nameserver.count(":") == 1  # "ip:port"; a bare IPv6 address has several colons


def _describe(error: BaseException) -> str:
    if isinstance(error, dns.resolver.NXDOMAIN):
        return "no such name (NXDOMAIN)"
    if isinstance(error, dns.resolver.NoAnswer):
        return "no address of that family"
    if isinstance(error, dns.exception.Timeout):
        return "the DNS server did not answer in time"
    return f"{type(error).__name__}: {error}"


def _read_hosts(path: Path) -> dict[str, tuple[egress.Address, ...]]:
    found: dict[str, list[egress.Address]] = {}
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return {}
    for line in text.splitlines():
        fields = line.split("#", 1)[0].split()
        if len(fields) < 2:
            continue
        try:
            address = ipaddress.ip_address(fields[0].split("%", 1)[0])
        except ValueError:
            continue
        for name in fields[1:]:
            found.setdefault(name.lower().rstrip("."), []).append(address)
    return {name: tuple(dict.fromkeys(addresses)) for name, addresses in found.items()}
