"""Documents back to YAML: what `fibric export` and `fibric get -o yaml` print."""

from __future__ import annotations

import io
from collections.abc import Iterable
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.scalarstring import LiteralScalarString

from fibric.specs import models


def document_data(doc: models.Document) -> dict[str, Any]:
    """apiVersion, kind, metadata, spec, with defaults left out for readability."""
    metadata: dict[str, Any] = {"name": doc.metadata.name}
    if doc.metadata.labels:
        metadata["labels"] = dict(doc.metadata.labels)
    return {
        "apiVersion": models.API_VERSION,
        "kind": doc.kind,  # type: ignore[attr-defined]
        "metadata": metadata,
        "spec": doc.spec.model_dump(mode="json", exclude_defaults=True),  # type: ignore[attr-defined]
    }


def to_yaml(docs: Iterable[dict[str, Any] | models.Document]) -> str:
    """A multi-document YAML stream; multi-line strings (Rego) as literal blocks."""
    yaml = YAML()
    yaml.default_flow_style = False
    yaml.width = 4096
    out = io.StringIO()
    data = [_literal(d if isinstance(d, dict) else document_data(d)) for d in docs]
    yaml.dump_all(data, out)
    return out.getvalue()


def _literal(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _literal(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_literal(v) for v in value]
    if isinstance(value, str) and "\n" in value:
        return LiteralScalarString(value)
    return value
