"""Opening a connector's transport: stdio (a child process) or streamable HTTP.

This is the plug point for transports: everything above it sees a `Link`,
so a connector's spec chooses the transport and nothing else changes.
Secrets stay out of specs: an HTTP connector names the environment variable
that holds its bearer token, read here when the connection opens and never
stored or reported.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import httpx2
from mcp.client.streamable_http import streamable_http_client

from fibric import errors, specs
from fibric.connectors import link as links
from fibric.connectors import stdio

HTTP_TIMEOUT = httpx2.Timeout(30.0, read=300.0)  # the SDK's defaults: a response stream may idle


def open_transport(
    transport: specs.models.Transport, environ: Mapping[str, str]
) -> AbstractAsyncContextManager[links.Link]:
    """The link for a connector's transport spec; entering it starts or reaches the server."""
    if transport.stdio is not None:
        return stdio.open_stdio(transport.stdio, environ)
    if transport.http is not None:
        return open_http(transport.http, environ)
    raise errors.SpecInvalid("transport: set exactly one of 'stdio' or 'http'")


def describe(transport: specs.models.Transport) -> str:
    if transport.stdio is not None:
        return stdio.describe(transport.stdio)
    return f"http: {transport.http.url}" if transport.http is not None else "no transport"


def http_headers(spec: specs.models.HttpTransport, environ: Mapping[str, str]) -> dict[str, str]:
    """The spec's headers, plus `Authorization: Bearer` from the variable the spec names."""
    headers = dict(spec.headers)
    if spec.bearer_token_env is not None:
        token = environ.get(spec.bearer_token_env)
        if not token:
            raise errors.TemporaryError(
                f"bearer_token_env: environment variable {spec.bearer_token_env} is not set", delay=30.0
            )
        headers["Authorization"] = f"Bearer {token}"
    return headers


@asynccontextmanager
async def open_http(
    spec: specs.models.HttpTransport, environ: Mapping[str, str]
) -> AsyncIterator[links.Link]:
    headers = http_headers(spec, environ)
    seen: list[str] = []

    async def note_http_errors(response: httpx2.Response) -> None:
        # The SDK reports any 4xx/5xx as "Server returned an error response"; keep the status.
        if response.status_code >= 400:
            seen.append(f"HTTP {response.status_code} {response.reason_phrase} from {spec.url}")

    async with (
        httpx2.AsyncClient(
            headers=headers, timeout=HTTP_TIMEOUT, event_hooks={"response": [note_http_errors]}
        ) as client,
        streamable_http_client(spec.url, http_client=client) as (read, write),
    ):
        link = links.Link(read, write, f"http: {spec.url}", http_errors=seen)
        yield link
