"""Examples are tests: every spec under examples/ validates as `fibric validate` would.

The connector catalog (examples/catalog.yaml) is the installation's file, not a spec: it loads as
`fibric serve --connector-catalog` would, and the example Connector names an entry of it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from fibric import specs, trust

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
CATALOG = EXAMPLES / "catalog.yaml"
YAML_FILES = sorted(p for p in EXAMPLES.rglob("*") if p.suffix in (".yaml", ".yml") and p != CATALOG)


def test_there_are_example_specs() -> None:
    assert EXAMPLES / "specs" / "operators.yaml" in YAML_FILES


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: str(p.relative_to(EXAMPLES)))
def test_every_yaml_file_loads(path: Path) -> None:
    assert specs.load_paths([path])


def test_the_example_set_is_complete() -> None:
    loaded = specs.load_paths(YAML_FILES)

    report = specs.check_set(loaded)

    assert [str(p) for p in report.problems] == []
    assert [str(w) for w in report.warnings] == []
    assert {i.document.kind for i in loaded} == set(specs.KINDS)  # type: ignore[attr-defined]


def test_every_referenced_file_exists() -> None:
    for item in specs.load_paths(YAML_FILES):
        resolved = specs.resolve(item)
        if isinstance(resolved.document, specs.Policy):
            assert resolved.document.spec.resolved
            assert resolved.document.spec.rego
            assert all(resolved.document.spec.test_rego)


def test_the_example_connector_names_an_entry_of_the_example_catalog() -> None:
    catalog = trust.Catalog.load(CATALOG)
    connectors = [i for i in specs.load_paths(YAML_FILES) if isinstance(i.document, specs.Connector)]
    assert connectors
    boundary = trust.Boundary(catalog=catalog)
    assert boundary.admit(connectors, trust.Origin.TENANT, {}) == []  # a tenant may apply the examples
    for item in connectors:
        assert item.document.spec.transport.catalog in catalog.entries  # type: ignore[attr-defined]
