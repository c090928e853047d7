"""Compile a policy once per version, at validate/apply time, and keep the bundle.

A policy version is its exact source plus its query. Compiling it checks the
Rego (with the error's line), resolves the default query
`data.<package>.decision`, hashes the source (what receipts record as the
policy that decided) and serializes a rego-cpp bundle that every engine worker
loads instead of compiling again.

The steps that reach rego-cpp (bundler.py) run in a compile worker process
(compileworker.py), because rego-cpp aborts the process on some policies and
any tenant can send one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

from fibric import errors, specs
from fibric.policies import bundler, compileworker, lint


@dataclass(frozen=True)
class Module:
    """A Rego module and the name errors use for it (a file path, or a label for inline Rego)."""

    name: str
    source: str


@dataclass(frozen=True)
class CompiledPolicy:
    """One policy version, ready for any engine."""

    source: str
    sha256: str  # hex sha256 of `source` as UTF-8: the exact text that decides
    package: str
    query: str  # data.<package>[.<rule>...]
    bundle: bytes = field(repr=False)
    name: str = "policy.rego"
    policy_id: str = ""
    tests: tuple[Module, ...] = ()
    # The parts of the input document the policy can read (None: all of it); see lint.input_paths.
    input_paths: tuple[tuple[str, ...], ...] | None = None

    @property
    def key(self) -> str:
        """Identity of this version for caches: the same source and query compile the same."""
        return f"{self.sha256}:{self.query}"

    def with_id(self, policy_id: str) -> CompiledPolicy:
        """The same version labelled with the stored object's id (decisions carry it)."""
        return dataclasses.replace(self, policy_id=policy_id)


def source_sha256(source: str) -> str:
    """What `policy_sha256` means everywhere: sha256 over the UTF-8 bytes of the Rego source."""
    return hashlib.sha256(source.encode("utf-8")).hexdigest()


def compile(
    source: str,
    *,
    query: str | None = None,
    name: str = "policy.rego",
    policy_id: str = "",
    tests: Sequence[Module] = (),
    field_path: str = "spec.rego",
) -> CompiledPolicy:
    """Compile one policy version; SpecInvalid names the module, line and column of each problem.

    rego-cpp runs in a compile worker process (compileworker.py), never here:
    a policy that crashes it or compiles for too long is SpecInvalid too.
    """
    built = compileworker.build(bundler.Request(
        source=source, query=query, name=name, tests=tuple((t.name, t.source) for t in tests),
        field_path=field_path,
    ))
    return CompiledPolicy(
        source=source, sha256=source_sha256(source), package=built.package, query=built.query,
        bundle=built.bundle, name=name, policy_id=policy_id, tests=tuple(tests),
        input_paths=lint.input_paths(source),
    )


def compile_spec(item: specs.Loaded, *, policy_id: str = "") -> CompiledPolicy:
    """Compile a Policy document (inlining rego_file and tests); problems point at the spec too."""
    doc = item.document
    if not isinstance(doc, specs.Policy):
        raise TypeError(f"expected a Policy, got {type(doc).__name__}")
    base = Path(item.source.file).parent
    name = os.path.normpath(base / doc.spec.rego_file) if doc.spec.rego_file else f"{doc.name}.rego"
    test_names = [f"{doc.name}.test_rego[{i}]" for i in range(len(doc.spec.test_rego))]
    test_names += [os.path.normpath(base / t) for t in doc.spec.tests]
    spec = cast(specs.Policy, specs.resolve(item).document).spec  # resolve() keeps the kind
    try:
        return compile(
            spec.rego or "",
            query=spec.query,
            name=name,
            policy_id=policy_id,
            tests=[Module(n, s) for n, s in zip(test_names, spec.test_rego, strict=True)],
            field_path="spec.rego_file" if doc.spec.rego_file else "spec.rego",
        )
    except errors.SpecInvalid as e:
        raise errors.SpecInvalid([
            dataclasses.replace(item.source.problem(p.message, _path_parts(p.path)), path=p.path)
            for p in e.problems
        ]) from e


def compile_shadow_spec(item: specs.Loaded) -> CompiledPolicy | None:
    """Compile a Policy document's shadow candidate (None when it names none), as `compile_spec`.

    Apply stores a shadow that does not compile (its ShadowCompiled condition
    says so and the live policy keeps deciding); `fibric validate` reports it.
    """
    doc = item.document
    if not isinstance(doc, specs.Policy):
        raise TypeError(f"expected a Policy, got {type(doc).__name__}")
    if doc.spec.shadow is None:
        return None
    base = Path(item.source.file).parent
    from_file = doc.spec.shadow.rego_file
    name = os.path.normpath(base / from_file) if from_file else f"{doc.name}.shadow.rego"
    shadow = cast(specs.Policy, specs.resolve(item).document).spec.shadow
    if shadow is None:  # resolve() keeps it; this only narrows the type
        return None
    try:
        return compile(shadow.rego or "", query=shadow.query, name=name,
                       field_path="spec.shadow.rego_file" if from_file else "spec.shadow.rego")
    except errors.SpecInvalid as e:
        raise errors.SpecInvalid([
            dataclasses.replace(item.source.problem(p.message, _path_parts(p.path)), path=p.path)
            for p in e.problems
        ]) from e


def _path_parts(path: str) -> tuple[str | int, ...]:
    parts: list[str | int] = []
    for piece in path.split("."):
        name, _, index = piece.partition("[")
        parts.append(name)
        if index:
            parts.append(int(index.rstrip("]")))
    return tuple(parts)
