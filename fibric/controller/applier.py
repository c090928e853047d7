"""Apply desired state: the one function behind `fibric apply`, the apply route and object creation.

Apply is declarative and idempotent. The whole set is checked against itself
and the live state first, then written in one tenant transaction, so an apply
lands completely or not at all. An unchanged spec is not written and its
generation does not move. `prune` deletes only objects an earlier apply of the
same set created (the `apply_set` column, shown as the `fibric.io/apply-set`
label), never objects created through the API.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from fibric import errors, policies, settings, specs, store, trust, webhooks
from fibric.policies import references
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
class Options:
    """What the installation decided for every apply: its trust boundary and the box sealing secrets.

    Without one (`None` to `apply`), there is no connector catalog, no egress
    allowlist, and secrets are sealed with the key file beside a SQLite store.
    """

    boundary: trust.Boundary = field(default_factory=trust.Boundary)
    box: secretbox.SecretBox | None = None

    @classmethod
    def of(cls, state: store.StateStore, config: settings.Settings, boundary: trust.Boundary | None = None
           ) -> Options:
        return cls(boundary or trust.Boundary.of(config), secretbox.for_store(state, config))

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
    origin: trust.Origin = trust.Origin.TENANT,
    options: Options | None = None,
) -> ApplyResult:
    """Make the tenant's stored specs match `loaded`; all or nothing.

    `create_only` refuses to touch an existing object (the API's POST create).
    `origin` is who applies: a tenant's key (the API, the default) may declare
    only what `options.boundary` admits; the installation's own spec folder
    may use everything (docs/security.md).
    """
    if prune and not apply_set:
        raise errors.SpecInvalid(errors.SpecProblem("prune needs an apply set", path="apply_set"))
    _require_resolved(loaded)
    hooks = options or Options()
    # Outside the transaction: compiling takes milliseconds, resolving a URL's host may take longer.
    guarded = sorted({i.document.kind for i in loaded} & {"Connector", "Webhook"})  # type: ignore[attr-defined]
    live_specs = {(o.kind, o.name): o.spec for kind in guarded for o in state.list_objects(tenant_id, kind)}
    rego_problems, rego_warnings = _compile_policies(loaded)
    rego_problems += hooks.boundary.admit(loaded, origin, live_specs)
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
        report.warnings.extend(rego_warnings)

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
            changes.append(_write(tx, doc, existing, apply_set, dry_run, sealer, origin))
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


def _as_applied(obj: store.StoredObject) -> dict[str, Any] | None:
    """The stored spec as this version would store it (defaults of later fields written out), or None
    when it no longer validates. A spec that differs from its document only there is unchanged."""
    try:
        return specs.build(obj.kind, obj.name, obj.spec).spec_dict()
    except (ValueError, errors.SpecInvalid):  # pydantic's ValidationError is a ValueError
        return None


def _require_resolved(loaded: Sequence[specs.Loaded]) -> None:
    problems = []
    for item in loaded:
        doc = item.document
        if isinstance(doc, specs.Policy) and not doc.spec.resolved:
            field: tuple[str, ...] = ("spec", "rego_file") if doc.spec.rego_file else (
                ("spec", "tests") if doc.spec.tests else ("spec", "shadow", "rego_file"))
            problems.append(
                item.source.problem(
                    "file references must be inlined before apply (the CLI does this): "
                    "send 'rego' and 'test_rego'",
                    field,
                )
            )
    if problems:
        raise errors.SpecInvalid(problems)


def _compile_policies(
    loaded: Sequence[specs.Loaded],
) -> tuple[list[errors.SpecProblem], list[errors.SpecProblem]]:
    """(problems, warnings) of the documents' Rego: what does not compile, located in the Rego.

    Compiling runs in the policies' compile worker, a child process
    (fibric/policies/compileworker.py): Rego that crashes rego-cpp is a
    problem on its document, never a crash of this process. What compiles
    but cannot be right (references.check_spec: a query naming no rule, an
    input field that does not exist, a decision of the wrong shape) is a
    warning, as is a shadow candidate that does not compile: neither is
    refused, because neither stops the live policy deciding (fail closed).
    """
    problems: list[errors.SpecProblem] = []
    warnings: list[errors.SpecProblem] = []
    for item in loaded:
        if not isinstance(item.document, specs.Policy):
            continue
        try:
            warnings += references.check_spec(item, policies.compile_spec(item))
        except errors.SpecInvalid as e:
            problems.extend(e.problems)
        try:
            shadow = policies.compile_shadow_spec(item)
        except errors.SpecInvalid as e:
            warnings += [dataclasses.replace(p, message=f"the shadow does not compile: {p.message}")
                         for p in e.problems]
        else:
            if shadow is not None:
                warnings += references.check_spec(item, shadow, shadow=True)
    return problems, warnings


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
    origin: trust.Origin,
) -> Change:
    kind, name = doc.kind, doc.name  # type: ignore[attr-defined]
    spec = doc.spec_dict()
    if existing is not None and existing.spec != spec and _as_applied(existing) == spec:
        spec = existing.spec  # stored by an older version, before a field's default was written out
    labels = dict(doc.metadata.labels)
    # A webhook signs with its secret_ref or secret_env or, failing those, a secret we
    # generate and show once: at creation, or when a webhook that had one drops it.
    # Only its sealed form is stored (fibric/store/secretbox.py).
    needs_secret = kind == "Webhook" and not spec.get("secret_env") and not spec.get("secret_ref")
    if existing is None:
        secret = webhooks.new_secret() if needs_secret else None
        if dry_run:
            return Change("created", kind, name, None, 1)
        sealed = sealer().seal(secret, tx.tenant_id) if secret else None
        obj = tx.insert(kind, name, spec, labels, apply_set=apply_set, secret=sealed, origin=origin.value)
        return Change("created", kind, name, obj.id, obj.generation, signing_secret=secret)
    if existing.spec == spec and existing.labels == labels:
        if origin is trust.Origin.INSTALLATION and existing.origin != origin and not dry_run:
            tx.update(existing, spec, labels, origin=origin.value)  # the installation adopts its spec
        return Change("unchanged", kind, name, existing.id, existing.generation)
    if dry_run:
        bumped = existing.generation + (1 if existing.spec != spec else 0)
        return Change("configured", kind, name, existing.id, bumped)
    secret = webhooks.new_secret() if needs_secret and existing.secret is None else None
    sealed = sealer().seal(secret, tx.tenant_id) if secret else None
    # Who wrote the spec decides what it may use; a change of labels alone keeps the writer.
    writer = origin.value if existing.spec != spec else None
    obj = tx.update(existing, spec, labels, secret=sealed, origin=writer)
    return Change("configured", kind, name, obj.id, obj.generation, signing_secret=secret)
