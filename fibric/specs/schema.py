"""JSON Schema of a spec document, for editors (yaml-language-server) and CI linting."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, TypeAdapter

from fibric.specs import models

AnyDocument = Annotated[
    models.Operator | models.Connector | models.Policy | models.Webhook,
    Field(discriminator="kind"),
]


def json_schema() -> dict[str, Any]:
    schema = TypeAdapter(AnyDocument).json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "Fibric spec document (fibric.io/v1)"
    return schema
