"""DNS with a deadline and a TTL cache, against real DNS servers on loopback (one answers, one never does)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import dns.message
import dns.rdatatype
import dns.rrset
import pytest

from fibric.trust import resolver

pytestmark = pytest.mark.anyio


class DnsServer:
    """A real UDP DNS server on loopback: answers A queries from `records` with `ttl`, or never answers."""

    def __init__(self, records: dict[str, str], ttl: int = 60, silent: bool = False) -> None:
        self.records, self.ttl, self.silent = records, ttl, silent
        self.queries: list[str] = []
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, peer = self.sock.recvfrom(4096)
            except OSError:
                continue
            query = dns.message.from_wire(data)
            question = query.question[0]
            self.queries.append(f"{question.name.to_text()} {dns.rdatatype.to_text(question.rdtype)}")
            if self.silent:
                continue
            reply = dns.message.make_response(query)
            name = question.name.to_text().rstrip(".")
            if question.rdtype == dns.rdatatype.A and name in self.records:
                answer = dns.rrset.from_text(question.name, self.ttl, "IN", "A", self.records[name])
                reply.answer.append(answer)
            elif name not in self.records:
                reply.set_rcode(3)  # NXDOMAIN
            self.sock.sendto(reply.to_wire(), peer)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def answering() -> Iterator[DnsServer]:
    server = DnsServer({"orders.example.com": "93.184.215.14"}, ttl=60)
    yield server
    server.close()


@pytest.fixture
def silent() -> Iterator[DnsServer]:
    server = DnsServer({}, silent=True)
    yield server
    server.close()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_answers_are_cached_for_their_ttl(answering: DnsServer) -> None:
    clock = Clock()
    dns_ = resolver.Resolver(nameservers=[f"127.0.0.1:{answering.port}"], hosts_file=None, clock=clock)
    assert [str(a) for a in await dns_("orders.example.com", 443)] == ["93.184.215.14"]
    asked = len(answering.queries)
    clock.now += 59
    await dns_("orders.example.com", 443)
    assert len(answering.queries) == asked  # within the TTL: from the cache
    clock.now += 2
    await dns_("orders.example.com", 443)
    assert len(answering.queries) > asked  # expired: asked again


async def test_a_name_that_does_not_exist_is_cached_briefly(answering: DnsServer) -> None:
    clock = Clock()
    dns_ = resolver.Resolver(nameservers=[f"127.0.0.1:{answering.port}"], hosts_file=None, clock=clock,
                             negative_ttl=5)
    with pytest.raises(OSError, match="NXDOMAIN"):
        await dns_("nope.example.com", 443)
    asked = len(answering.queries)
    with pytest.raises(OSError):
        await dns_("nope.example.com", 443)
    assert len(answering.queries) == asked
    clock.now += 6
    with pytest.raises(OSError):
        await dns_("nope.example.com", 443)
    assert len(answering.queries) > asked


async def test_a_server_that_never_answers_costs_the_deadline_and_no_more(silent: DnsServer) -> None:
    dns_ = resolver.Resolver(nameservers=[f"127.0.0.1:{silent.port}"], hosts_file=None, timeout=0.3)
    started = time.monotonic()
    with pytest.raises((TimeoutError, OSError)):
        await dns_("hangs.example.com", 443)
    assert time.monotonic() - started < 1.5
    started = time.monotonic()
    with pytest.raises((TimeoutError, OSError)):
        await dns_("hangs.example.com", 443, 0.1)  # the caller's own, shorter deadline wins
    assert time.monotonic() - started < 0.8


async def test_the_hosts_file_comes_first_and_literals_need_no_lookup(
    tmp_path: Path, silent: DnsServer
) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 localhost me.internal\n::1 localhost\n# 10.0.0.1 x\n", encoding="utf-8")
    dns_ = resolver.Resolver(nameservers=[f"127.0.0.1:{silent.port}"], hosts_file=hosts, timeout=0.2)
    assert [str(a) for a in await dns_("ME.internal.", 443)] == ["127.0.0.1"]
    assert [str(a) for a in await dns_("localhost", 443)] == ["127.0.0.1", "::1"]
    assert [str(a) for a in await dns_("0x7f000001", 443)] == ["127.0.0.1"]
    assert silent.queries == []
