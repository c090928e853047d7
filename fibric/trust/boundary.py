"""The line between the installation and its tenants, drawn in one place.

The installation (whoever runs `fibric serve`, owns its settings, its local
spec folder and its data dir) is trusted. A tenant (an API key) is not:
nothing a tenant declares may start a process, reach a loopback, private or
link-local address, or read a server environment variable. Those powers
exist only as installation settings: the connector catalog, the egress
allowlist, and per-tenant secrets referenced by name (docs/security.md).

`Boundary.admit` checks documents when they are applied, so a refused spec
is a 400 naming the field and the setting that would allow it, never a
silent failure at run time. `Boundary.grant` decides again when a connector
runs, from the stored spec and who wrote it, so a row written before these
rules (or by hand) still cannot run what a tenant may not.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

from fibric import errors, settings, specs
from fibric.specs import models
from fibric.trust import catalog as catalogs
from fibric.trust import egress as egresses
from fibric.trust import resolver as resolvers

# How much of a connector's error text its tenant sees: all of it, a cut line, or nothing of the target's.
Disclosure = Literal["full", "cut", "withheld"]
CUT_ERROR_CHARS = 300
WITHHELD = "(the private target's own words are withheld; see the server log)"
# Where an error line stops being Fibric's words and starts being the target's, to its end: a
# JSON-RPC error's message, a result that broke its schema, a stdio server's stderr (the formats of
# fibric.connectors.session and .link). Everything after the first marker goes: the target's text
# may hold anything, a `;` or a marker of its own included.
_TARGET_WORDS = re.compile(r"(MCP error -?\d+|: invalid result|; stderr): .*$", re.DOTALL)


class Origin(enum.StrEnum):
    """Who wrote an object: the installation's own specs, or a tenant through the API."""

    INSTALLATION = "installation"
    TENANT = "tenant"


class NotPermitted(errors.PermanentError):
    """A stored object asks for a power its writer does not have; it does not run."""


@dataclass(frozen=True)
class Grant:
    """What one connector may use when it runs, decided by `Boundary.grant`."""

    transport: models.Transport  # what to open: a stdio command or an HTTP URL (never a catalog name)
    server_variables: bool  # may read the installation's environment (PATH, *_env)
    egress: egresses.Egress
    disclosure: Disclosure
    secret_fingerprint: str | None = None  # of its bearer_token_ref: a new token opens a new session

    def show_error(self, text: str | None) -> str | None:
        """The error text as its tenant may see it."""
        if text is None or self.disclosure == "full":
            return text
        if self.disclosure == "withheld":  # Fibric's own observations stay: status codes, timeouts, refusals
            text = _TARGET_WORDS.sub(lambda m: f"{m.group(1)} {WITHHELD}", text, count=1)
        return text if len(text) <= CUT_ERROR_CHARS else text[:CUT_ERROR_CHARS - 1] + "…"

    @classmethod
    def trusted(cls, transport: models.Transport) -> Grant:
        """Everything, as the installation's own specs get: for callers that are the installation."""
        return cls(transport, True, egresses.ANYWHERE, "full")


@dataclass(frozen=True)
class Boundary:
    catalog: catalogs.Catalog = field(default_factory=catalogs.Catalog)
    egress: egresses.Egress = egresses.PUBLIC  # for tenants' HTTP connectors and webhooks
    webhook_egress: egresses.Egress | None = None  # the development setting; None: `egress`
    # DNS for tenants' hosts, at apply and at every connection (deadlines, TTL cache).
    resolver: resolvers.Resolver = field(default_factory=resolvers.Resolver, compare=False)

    @classmethod
    def of(cls, config: settings.Settings) -> Boundary:
        """The installation's boundary from its settings; SpecInvalid or ValueError naming the setting."""
        allowed = egresses.Egress.parse(config.trust.egress_allow)
        dns = resolvers.Resolver(timeout=config.bulkheads.dns_timeout_ms / 1000,
                                 nameservers=config.bulkheads.dns_nameservers)
        return cls(catalogs.Catalog.load(config.trust.connector_catalog), allowed,
                   egresses.ANYWHERE if config.webhooks.allow_http_and_private else None, dns)

    def egress_for(self, origin: Origin, kind: Literal["Connector", "Webhook"]) -> egresses.Egress:
        """Where the HTTP of an object written by `origin` may go."""
        if origin is Origin.INSTALLATION:
            return egresses.ANYWHERE
        if kind == "Webhook" and self.webhook_egress is not None:
            return self.webhook_egress
        return self.egress

    # --- at apply -------------------------------------------------------------------

    def admit(
        self,
        loaded: Sequence[specs.Loaded],
        origin: Origin,
        live: Mapping[tuple[str, str], Mapping[str, Any]],
        *,
        offline: bool = False,
    ) -> list[errors.SpecProblem]:
        """What `origin` may not declare in these documents; unchanged specs are not checked again.

        `live` maps (kind, name) to the stored spec. Host names are resolved
        once each, concurrently and within a budget (every connection checks
        again on the address it connects to). `offline` (`fibric validate`)
        leaves out what needs the installation: its catalog's entries and DNS.
        """
        problems: list[errors.SpecProblem] = []
        urls: list[tuple[specs.Loaded, tuple[str, ...], str, egresses.Egress]] = []
        for item in loaded:
            doc = item.document
            if live.get((doc.kind, doc.name)) == doc.spec_dict():  # type: ignore[attr-defined]
                continue
            if isinstance(doc, specs.Connector):
                problems += self._connector(item, doc.spec, origin, urls, offline)
            elif isinstance(doc, specs.Webhook):
                if origin is Origin.TENANT and doc.spec.secret_env is not None:
                    problems.append(item.source.problem(
                        "reads a server environment variable, which only the installation's own specs may; "
                        "store the signing secret as a tenant secret (`fibric secret set NAME`) and name it "
                        "in secret_ref", ("spec", "secret_env")))
                urls.append((item, ("spec", "url"), doc.spec.url, self.egress_for(origin, "Webhook")))
        problems += _refused_urls(urls, None if offline else self.resolver)
        return problems

    def _connector(
        self,
        item: specs.Loaded,
        spec: models.ConnectorSpec,
        origin: Origin,
        urls: list[tuple[specs.Loaded, tuple[str, ...], str, egresses.Egress]],
        offline: bool,
    ) -> list[errors.SpecProblem]:
        transport = spec.transport
        if transport.catalog is not None:
            if not offline and self.catalog.get(transport.catalog) is None:
                return [item.source.problem(self.catalog.describe_missing(transport.catalog),
                                            ("spec", "transport", "catalog"))]
            return []
        if origin is Origin.INSTALLATION:
            return []
        if transport.stdio is not None:
            offered = ", ".join(sorted(self.catalog.entries)) or "none"
            return [item.source.problem(
                "a tenant's connector may not start a process; name an entry of the installation's "
                f"connector catalog in transport.catalog instead (entries: {offered}; setting "
                f"{catalogs.SETTING})", ("spec", "transport", "stdio"))]
        if transport.http is None:  # a transport this boundary does not know: refused, as grant() does
            return [item.source.problem("a tenant's connector may use transport.catalog or transport.http "
                                        "only", ("spec", "transport"))]
        problems = []
        if transport.http.bearer_token_env is not None:
            problems.append(item.source.problem(
                "reads a server environment variable, which only the installation's own specs may; "
                "store the token as a tenant secret (`fibric secret set NAME`) and name it in "
                "bearer_token_ref", ("spec", "transport", "http", "bearer_token_env")))
        urls.append((item, ("spec", "transport", "http", "url"), transport.http.url,
                     self.egress_for(origin, "Connector")))
        return problems

    # --- at run time --------------------------------------------------------------------

    def grant(self, spec: models.ConnectorSpec, origin: Origin) -> Grant:
        """What a stored connector written by `origin` may use; NotPermitted if it may not run at all."""
        transport = spec.transport
        if transport.catalog is not None:
            entry = self.catalog.get(transport.catalog)
            if entry is None:
                raise NotPermitted(self.catalog.describe_missing(transport.catalog))
            # A catalog URL is the installation's, and usually an internal service: its words are
            # withheld like any private target's. A catalog command's stderr is cut, as before.
            disclosure: Disclosure = "withheld" if entry.transport.http is not None else "cut"
            return Grant(entry.transport, True, egresses.ANYWHERE, disclosure)
        if origin is Origin.INSTALLATION:
            return Grant.trusted(transport)
        if transport.stdio is not None:
            raise NotPermitted("a tenant's connector may not start a process; name an entry of the "
                               f"installation's connector catalog in transport.catalog ({catalogs.SETTING})")
        http = transport.http
        if http is None:  # the model makes this unreachable; fail closed all the same
            raise NotPermitted("the connector has no transport")
        if http.bearer_token_env is not None:
            raise NotPermitted("bearer_token_env reads a server environment variable, which only the "
                               "installation's own specs may; use bearer_token_ref")
        egress = self.egress_for(origin, "Connector")
        host = urlsplit(http.url).hostname or ""
        private = egress.allows_host(host) or bool(egress.networks)
        return Grant(transport, False, egress, "withheld" if private else "cut")


def secret_refs(kind: str, spec: Mapping[str, Any]) -> set[str]:
    """The tenant secrets a stored spec names (by `*_ref`)."""
    if kind == "Connector":
        ref = ((spec.get("transport") or {}).get("http") or {}).get("bearer_token_ref")
        return {ref} if ref else set()
    if kind == "Webhook":
        return {spec["secret_ref"]} if spec.get("secret_ref") else set()
    return set()


def _refused_urls(
    urls: list[tuple[specs.Loaded, tuple[str, ...], str, egresses.Egress]],
    resolver: resolvers.Resolver | None,
) -> list[errors.SpecProblem]:
    problems: list[errors.SpecProblem] = []
    resolvable: list[tuple[specs.Loaded, tuple[str, ...], str, egresses.Egress]] = []
    for item, path, url, egress in urls:
        try:
            host = egress.check_url(url)
        except egresses.Refused as e:
            problems.append(item.source.problem(_refusal(str(e), egress), path))
            continue
        resolvable.append((item, path, host, egress))
    if resolver is None:  # offline: the URLs as written only
        return problems
    by_egress: dict[egresses.Egress, dict[str, str]] = {}
    for egress in {e for *_, e in resolvable}:
        by_egress[egress] = egress.refused_names((host for *_, host, e in resolvable if e == egress),
                                                 resolver)
    for item, path, host, egress in resolvable:
        if host in by_egress[egress]:
            problems.append(item.source.problem(_refusal(by_egress[egress][host], egress), path))
    return problems


def _refusal(reason: str, egress: egresses.Egress) -> str:
    return f"URL refused: {reason}; the installation's egress allowlist ({egresses.ALLOWLIST_SETTING}) " \
        "can allow a host or network"
