"""Apply desired state: the one function behind `fibric apply`, the apply route and object creation.

Apply is declarative and idempotent. The whole set is checked against itself
and the live state first, then written in one tenant transaction, so an apply
lands completely or not at all. An unchanged spec is not written and its
generation does not move. `prune` deletes only objects an earlier apply of the
same set created (the `apply_set` column, shown as the `fibric.io/apply-set`
label), never objects created through the API.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from fibric import errors, policies, settings, specs, store, webhooks
from fibric.controller import ssrf
from fibric.store import secretbox

APPLY_SET_LABEL = "fibric.io/apply-set"
SECRET_PREFIX = webhooks.SECRET_PREFIX

Action = Literal["created", "configured", "unchanged", "pruned", "deleted"]


@dataclass(frozen=True)
class Change:
    action: Action
    kind: str
    name: str
    id: str | None  # None for an object a dry run would create
    generation: int | None
    signing_secret: str | None = field(default=None, repr=False)  # a new webhook's, shown once


@dataclass(frozen=True)
class WebhookOptions:
    """How apply treats Webhook specs: which URLs pass the SSRF check, and the box sealing secrets.

    Without one (`None` to `apply`), URLs are held to production rules and
    secrets are sealed with the key file beside a SQLite store.
    """

    allow_http_and_private: bool = False
    box: secretbox.SecretBox | None = None

    @classmethod
    def of(cls, state: store.StateStore, config: settings.Settings) -> WebhookOptions:
        return cls(config.webhooks.allow_http_and_private, secretbox.for_store(state, config))

    def sealer(self, state: store.StateStore) -> secretbox.SecretBox:
        return self.box if self.box is not None else secretbox.for_store(state, settings.Settings())


@dataclass(frozen=True)
class ApplyResult:
    changes: list[Change]
    warnings: list[errors.SpecProblem]
    dry_run: bool

    @property
    def changed(self) -> bool:
        return any(c.action != "unchanged" for c in self.changes)


def apply(
    state: store.StateStore,
    tenant_id: str,
    loaded: Sequence[specs.Loaded],
    *,
    apply_set: str | None = None,
    prune: bool = False,
    dry_run: bool = False,
    create_only: bool = False,
    webhook_options: WebhookOptions | None = None,
) -> ApplyResult:
    """Make the tenant's stored specs match `loaded`; all or nothing.

    `create_only` refuses to touch an existing object (the API's POST create).
    """
    if prune and not apply_set:
        raise errors.SpecInvalid(errors.SpecProblem("prune needs an apply set", path="apply_set"))
    _require_resolved(loaded)
    hooks = webhook_options or WebhookOptions()
    # Outside the transaction: compiling takes milliseconds, resolving a webhook's host may take longer.
    rego_problems = _compile_policies(loaded) + _check_webhook_urls(state, tenant_id, loaded, hooks)
    with state.tenant_transaction(tenant_id) as tx:
        live = tx.list()
        by_name = {(o.kind, o.name): o for o in live}  # one read serves every document
        wanted = {(i.document.kind, i.document.name) for i in loaded}  # type: ignore[attr-defined]
        doomed = [
            o for o in live
            if prune and o.apply_set == apply_set and (o.kind, o.name) not in wanted
        ]
        report = _check(loaded, live, wanted, doomed)
        report.problems.extend(rego_problems)
        report.raise_for_problems()

        changes: list[Change] = []
        box: list[secretbox.SecretBox] = []  # made once, when the first webhook secret is sealed

        def sealer() -> secretbox.SecretBox:
            if not box:
                box.append(hooks.sealer(state))
            return box[0]

        for item in loaded:
            doc = item.document
            existing = by_name.get((doc.kind, doc.name))  # type: ignore[attr-defined]
            if existing is not None and create_only:
                raise errors.Conflict(f"{doc.kind} '{doc.name}' already exists")  # type: ignore[attr-defined]
            changes.append(_write(tx, doc, existing, apply_set, dry_run, sealer))
        for obj in doomed:
            if not dry_run:
                tx.delete(obj)
            changes.append(Change("pruned", obj.kind, obj.name, obj.id, obj.generation))
    return ApplyResult(changes=changes, warnings=report.warnings, dry_run=dry_run)


def delete(state: store.StateStore, tenant_id: str, kind: str, ref: str) -> Change:
    """Delete one object by id or name; a policy still bound to an operator is kept (Conflict)."""
    with state.tenant_transaction(tenant_id) as tx:
        obj = tx.get(kind, ref)
        if obj is None:
            raise errors.NotFound(f"No such {kind.lower()}: '{ref}'")
        if kind == "Policy":
            users = [o.name for o in tx.list("Operator") if o.spec.get("policy") == obj.name]
            if users:
                raise errors.Conflict(
                    f"policy '{obj.name}' is bound to operator(s) {', '.join(sorted(users))}"
                )
        tx.delete(obj)
    return Change("deleted", obj.kind, obj.name, obj.id, obj.generation)


def document_of(obj: store.StoredObject) -> specs.Document:
    """The stored object as a spec document (what export prints)."""
    return specs.build(obj.kind, obj.name, obj.spec, obj.labels)


def _require_resolved(loaded: Sequence[specs.Loaded]) -> None:
    problems = []
    for item in loaded:
        doc = item.document
        if isinstance(doc, specs.Policy) and not doc.spec.resolved:
            field_name = "rego_file" if doc.spec.rego_file else "tests"
            problems.append(
                item.source.problem(
                    "file references must be inlined before apply (the CLI does this): "
                    "send 'rego' and 'test_rego'",
                    ("spec", field_name),
                )
            )
    if problems:
        raise errors.SpecInvalid(problems)


def _compile_policies(loaded: Sequence[specs.Loaded]) -> list[errors.SpecProblem]:
    """Rego that does not compile, as problems on its document with the Rego's own line.

    rego-cpp's crashes are in evaluation (tests run in a child process for
    that reason); compiling only parses and builds the bundle, in-process.
    """
    problems: list[errors.SpecProblem] = []
    for item in loaded:
        if isinstance(item.document, specs.Policy):
            try:
                policies.compile_spec(item)
            except errors.SpecInvalid as e:
                problems.extend(e.problems)
    return problems


def _check_webhook_urls(
    state: store.StateStore, tenant_id: str, loaded: Sequence[specs.Loaded], hooks: WebhookOptions
) -> list[errors.SpecProblem]:
    """A new or changed webhook URL that would reach an internal address (SSRF).

    Host names are resolved once each, concurrently and within a budget; an
    unchanged URL is not resolved again on every apply (deliveries check it).
    """
    live = {o.name: o.spec.get("url") for o in state.list_objects(tenant_id, "Webhook")}
    checked: list[tuple[specs.Loaded, str]] = []
    problems: list[errors.SpecProblem] = []
    for item in loaded:
        doc = item.document
        if not isinstance(doc, specs.Webhook) or live.get(doc.name) == doc.spec.url:
            continue
        try:
            host = ssrf.check_url(doc.spec.url, allow_http_and_private=hooks.allow_http_and_private,
                                  resolve=False)
        except ssrf.Refused as e:
            problems.append(item.source.problem(f"webhook URL refused: {e}", ("spec", "url")))
            continue
        checked.append((item, host))
    if checked and not hooks.allow_http_and_private:
        refused = ssrf.refused_names(host for _, host in checked)
        problems.extend(item.source.problem(f"webhook URL refused: {refused[host]}", ("spec", "url"))
                        for item, host in checked if host in refused)
    return problems


def _check(
    loaded: Sequence[specs.Loaded],
    live: list[store.StoredObject],
    wanted: set[tuple[str, str]],
    doomed: list[store.StoredObject],
) -> specs.Report:
    remaining = [o for o in live if (o.kind, o.name) not in wanted and o not in doomed]
    report = specs.check_set(
        loaded,
        live_policies=[o.name for o in remaining if o.kind == "Policy"],
        live_capabilities=[
            c for o in remaining if o.kind == "Connector" for c in o.spec.get("capabilities", {})
        ],
    )
    doomed_policies = {o.name for o in doomed if o.kind == "Policy"}
    for o in remaining:
        if o.kind == "Operator" and o.spec.get("policy") in doomed_policies:
            report.problems.append(
                errors.SpecProblem(
                    f"prune would delete policy '{o.spec['policy']}', still bound to operator "
                    f"'{o.name}'",
                    path="spec.policy",
                )
            )
    return report


def _write(
    tx: store.ObjectTransaction,
    doc: specs.Document,
    existing: store.StoredObject | None,
    apply_set: str | None,
    dry_run: bool,
    sealer: Callable[[], secretbox.SecretBox],
) -> Change:
    kind, name = doc.kind, doc.name  # type: ignore[attr-defined]
    spec = doc.spec_dict()
    labels = dict(doc.metadata.labels)
    # A webhook signs with its secret_env or, failing that, a secret we generate and
    # show once: at creation, or when a webhook that had secret_env drops it. Only
    # its sealed form is stored (fibric/store/secretbox.py).
    needs_secret = kind == "Webhook" and not spec.get("secret_env")
    if existing is None:
        secret = webhooks.new_secret() if needs_secret else None
        if dry_run:
            return Change("created", kind, name, None, 1)
        sealed = sealer().seal(secret, tx.tenant_id) if secret else None
        obj = tx.insert(kind, name, spec, labels, apply_set=apply_set, secret=sealed)
        return Change("created", kind, name, obj.id, obj.generation, signing_secret=secret)
    if existing.spec == spec and existing.labels == labels:
        return Change("unchanged", kind, name, existing.id, existing.generation)
    if dry_run:
        bumped = existing.generation + (1 if existing.spec != spec else 0)
        return Change("configured", kind, name, existing.id, bumped)
    secret = webhooks.new_secret() if needs_secret and existing.secret is None else None
    sealed = sealer().seal(secret, tx.tenant_id) if secret else None
    obj = tx.update(existing, spec, labels, secret=sealed)
    return Change("configured", kind, name, obj.id, obj.generation, signing_secret=secret)
