"""Opening a connector's transport: stdio (a child process) or streamable HTTP.

This is the plug point for transports: everything above it sees a `Link`,
so a connector's spec chooses the transport and nothing else changes.
What a transport may use comes from its `trust.Grant`: whether it may read
server variables (a stdio PATH, a `bearer_token_env`), and where its HTTP may
connect (every connection is checked on the address it connects to). A
bearer token from a tenant secret (`bearer_token_ref`) arrives as `token`,
opened by the caller; tokens are never stored or reported.
"""

from __future__ import annotations

import http
import ssl
from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import certifi
import httpcore2
import httpx2
from mcp.client.streamable_http import streamable_http_client

from fibric import errors, specs, trust
from fibric.connectors import link as links
from fibric.connectors import stdio

HTTP_TIMEOUT = httpx2.Timeout(30.0, read=300.0)  # the SDK's defaults: a response stream may idle


def open_transport(
    grant: trust.Grant, environ: Mapping[str, str], token: str | None = None,
    resolver: trust.Resolver | None = None,
) -> AbstractAsyncContextManager[links.Link]:
    """The link for the transport a grant allows; entering it starts or reaches the server.

    `environ` is the installation's environment; it is read only when the
    grant allows server variables.
    """
    variables = environ if grant.server_variables else {}
    transport = grant.transport
    if transport.stdio is not None:
        return stdio.open_stdio(transport.stdio, variables)
    if transport.http is not None:
        return open_http(transport.http, variables, grant.egress, token, resolver)
    raise errors.SpecInvalid("transport: set exactly one of 'stdio' or 'http'")


def describe(transport: specs.models.Transport) -> str:
    if transport.catalog is not None:
        return f"catalog: {transport.catalog}"
    if transport.stdio is not None:
        return stdio.describe(transport.stdio)
    return f"http: {transport.http.url}" if transport.http is not None else "no transport"


def http_headers(
    spec: specs.models.HttpTransport, environ: Mapping[str, str], token: str | None = None
) -> dict[str, str]:
    """The spec's headers, plus `Authorization: Bearer` from the tenant secret or the variable it names."""
    headers = dict(spec.headers)
    if spec.bearer_token_ref is not None:
        if not token:
            raise errors.TemporaryError(
                f"bearer_token_ref: the tenant secret {spec.bearer_token_ref} is not set", delay=30.0)
        headers["Authorization"] = f"Bearer {token}"
    elif spec.bearer_token_env is not None:
        value = environ.get(spec.bearer_token_env)
        if not value:
            raise errors.TemporaryError(
                f"bearer_token_env: environment variable {spec.bearer_token_env} is not set", delay=30.0
            )
        headers["Authorization"] = f"Bearer {value}"
    return headers


def guarded_client(
    egress: trust.Egress, resolver: trust.Resolver, **options: Any
) -> httpx2.AsyncClient:
    """An httpx2 client whose every connection is checked against `egress`, ignoring proxy variables."""
    transport = httpx2.AsyncHTTPTransport(trust_env=False)
    # httpx2 builds its pool without a way to pass a network backend; swap in one that has it.
    transport._pool = httpcore2.AsyncConnectionPool(
        ssl_context=ssl.create_default_context(cafile=certifi.where()),
        max_connections=100, max_keepalive_connections=20, keepalive_expiry=5.0,  # httpx2's defaults
        network_backend=trust.GuardedBackend2(egress, resolver),
    )
    return httpx2.AsyncClient(transport=transport, trust_env=False, follow_redirects=False, **options)


@asynccontextmanager
async def open_http(
    spec: specs.models.HttpTransport, environ: Mapping[str, str], egress: trust.Egress = trust.ANYWHERE,
    token: str | None = None, resolver: trust.Resolver | None = None,
) -> AsyncIterator[links.Link]:
    headers = http_headers(spec, environ, token)
    egress.check_url(spec.url)  # Refused before any connection; the backend checks again
    seen: list[str] = []

    async def note_http_errors(response: httpx2.Response) -> None:
        # The SDK reports any 4xx/5xx as "Server returned an error response"; keep the status.
        if response.status_code >= 400:
            # The standard phrase, not the server's: a reason phrase is text the target chose.
            seen.append(f"HTTP {response.status_code} {_phrase(response.status_code)} from {spec.url}")

    async with (
        guarded_client(
            egress, resolver or trust.Resolver(), headers=headers, timeout=HTTP_TIMEOUT,
            event_hooks={"response": [note_http_errors]},
        ) as client,
        streamable_http_client(spec.url, http_client=client) as (read, write),
    ):
        link = links.Link(read, write, f"http: {spec.url}", http_errors=seen)
        yield link


def _phrase(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "(nonstandard status)"
