"""One webhook HTTP attempt: sign the stored body, POST it, observe the answer.

The client follows no redirects (a 3xx is a failed attempt), ignores proxy
environment variables, caps connect and read time and the whole attempt, and
reads at most `max_response_bytes` of the answer. Every connection goes
through `trust.GuardedBackend`, which checks the address it connects to
against the egress of the webhook's writer (a tenant's webhook, the
installation's own); each egress has its own connection pool, so a
connection one may open is never reused by another.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from dataclasses import dataclass

import certifi
import httpcore
import httpx

from fibric import settings, trust, webhooks

USER_AGENT = "Fibric-Webhooks/1"


@dataclass(frozen=True)
class Answer:
    """What one attempt observed: a status code, or the error that prevented one."""

    status_code: int | None
    error: str | None
    duration_ms: int

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def signed_headers(event_id: str, body: bytes, secrets: list[str], timestamp: int) -> dict[str, str]:
    """Fibric-Signature and the Standard Webhooks headers over the exact body bytes."""
    return {
        "Content-Type": "application/json",
        "Fibric-Signature": webhooks.fibric_signature(secrets, timestamp, body),
        "webhook-id": event_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": webhooks.standard_signature(secrets, event_id, timestamp, body),
    }


class Sender:
    """httpx clients for deliveries, one per egress, for one dispatcher."""

    def __init__(self, config: settings.WebhookSettings, resolver: trust.Resolver) -> None:
        self.config = config
        self.resolver = resolver
        self._clients: dict[trust.Egress, httpx.AsyncClient] = {}

    def _client(self, egress: trust.Egress) -> httpx.AsyncClient:
        client = self._clients.get(egress)
        if client is None:
            client = self._clients[egress] = self._new_client(egress)
        return client

    def _new_client(self, egress: trust.Egress) -> httpx.AsyncClient:
        config = self.config
        transport = httpx.AsyncHTTPTransport(trust_env=False, retries=0)
        # httpx builds its pool without a way to pass a network backend; swap in one that has it.
        transport._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl.create_default_context(cafile=certifi.where()),
            max_connections=max(1, config.concurrency),
            max_keepalive_connections=max(1, config.concurrency),
            keepalive_expiry=30.0,
            retries=0,
            network_backend=trust.GuardedBackend(egress, self.resolver),
        )
        return httpx.AsyncClient(
            transport=transport,
            follow_redirects=False,
            trust_env=False,
            headers={"User-Agent": USER_AGENT},
            timeout=httpx.Timeout(connect=config.connect_timeout_seconds, read=config.read_timeout_seconds,
                                  write=config.read_timeout_seconds, pool=config.connect_timeout_seconds),
        )

    @property
    def attempt_budget_seconds(self) -> float:
        """The longest one attempt can take, whatever the receiver does."""
        return self.config.connect_timeout_seconds + 2 * self.config.read_timeout_seconds

    async def post(self, url: str, body: bytes, headers: dict[str, str], egress: trust.Egress) -> Answer:
        """One attempt to `url`, connecting only where `egress` allows."""
        started = time.monotonic()
        try:
            egress.check_url(url)
            async with asyncio.timeout(self.attempt_budget_seconds):
                status = await self._exchange(self._client(egress), url, body, headers)
            return Answer(status, None, _ms(started))
        except trust.Refused as e:
            return Answer(None, f"refused (SSRF): {e}", _ms(started))
        except (TimeoutError, httpx.TimeoutException):
            return Answer(None, "timeout", _ms(started))
        except httpx.HTTPError as e:
            cause = e.__cause__
            if isinstance(cause, trust.Refused):
                return Answer(None, f"refused (SSRF): {cause}", _ms(started))
            return Answer(None, f"{type(e).__name__}: {e}"[:500], _ms(started))

    async def _exchange(
        self, client: httpx.AsyncClient, url: str, body: bytes, headers: dict[str, str]
    ) -> int:
        async with client.stream("POST", url, content=body, headers=headers) as response:
            received = 0
            async for chunk in response.aiter_raw():
                received += len(chunk)
                if received >= self.config.max_response_bytes:
                    break  # the rest is not read: a receiver cannot make us buffer an endless answer
            return response.status_code

    async def aclose(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.aclose()


def _ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)
