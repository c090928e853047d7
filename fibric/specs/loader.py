"""Read specs from YAML files and folders, locating every problem at file:line:column.

YAML is parsed with ruamel's round-trip loader because it remembers where each
key and value came from; pydantic's error locations are then walked back to
those positions, so an error reads `specs/ops.yaml:12:5: spec.capabilities[1]: ...`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError

from fibric import errors
from fibric.specs import models, suggest

YAML_SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True)
class Source:
    """Where a document came from, so later checks can point back at it."""

    file: str
    line: int | None = None  # 1-based line of the document's first key
    node: Any = field(default=None, repr=False, compare=False)  # the parsed YAML mapping

    def locate(self, path: Sequence[str | int]) -> tuple[int | None, int | None]:
        """1-based (line, column) of `path` inside this document, as close as the YAML allows."""
        return _position(self.node, path) if self.node is not None else (self.line, None)

    def problem(self, message: str, path: Sequence[str | int] = ()) -> errors.SpecProblem:
        line, column = self.locate(path)
        return errors.SpecProblem(
            message=message, path=format_path(path), file=self.file, line=line, column=column
        )


@dataclass(frozen=True)
class Loaded:
    document: models.Document
    source: Source


def format_path(path: Sequence[str | int]) -> str:
    """('spec', 'capabilities', 1) -> 'spec.capabilities[1]'."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def expand_paths(paths: Iterable[str | Path]) -> list[Path]:
    """Files named directly, plus every *.yaml / *.yml under named folders, sorted."""
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files.extend(sorted(p for p in path.rglob("*") if p.suffix in YAML_SUFFIXES and p.is_file()))
        elif path.is_file():
            files.append(path)
        else:
            raise errors.SpecInvalid(errors.SpecProblem(f"no such file or folder: {path}"))
    return files


def load_paths(paths: Iterable[str | Path]) -> list[Loaded]:
    """Every document in the given files and folders; all problems are reported together."""
    loaded: list[Loaded] = []
    problems: list[errors.SpecProblem] = []
    for file in expand_paths(paths):
        try:
            loaded.extend(load_text(file.read_text(encoding="utf-8"), str(file)))
        except errors.SpecInvalid as e:
            problems.extend(e.problems)
        except (OSError, UnicodeDecodeError) as e:
            problems.append(errors.SpecProblem(f"cannot read: {e}", file=str(file)))
    if problems:
        raise errors.SpecInvalid(problems)
    return loaded


def load_text(text: str, filename: str = "<input>") -> list[Loaded]:
    """Parse and validate every document in one YAML text."""
    yaml = YAML(typ="rt")
    try:
        raw_docs = list(yaml.load_all(text))
    except MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (None, None)
        message = f"invalid YAML: {e.problem or e.context}"
        raise errors.SpecInvalid(
            errors.SpecProblem(message, file=filename, line=line, column=column)
        ) from e
    except Exception as e:  # ruamel raises a few unmarked errors (e.g. duplicate anchors)
        raise errors.SpecInvalid(errors.SpecProblem(f"invalid YAML: {e}", file=filename)) from e

    loaded: list[Loaded] = []
    problems: list[errors.SpecProblem] = []
    for raw in raw_docs:
        if raw is None:  # an empty document between '---' separators
            continue
        try:
            loaded.append(parse_document(raw, filename))
        except errors.SpecInvalid as e:
            problems.extend(e.problems)
    if problems:
        raise errors.SpecInvalid(problems)
    return loaded


def parse_document(raw: Any, filename: str) -> Loaded:
    """Validate one parsed YAML document into its kind's model."""
    if not isinstance(raw, CommentedMap):
        line = raw.lc.line + 1 if hasattr(raw, "lc") else None
        raise errors.SpecInvalid(
            errors.SpecProblem("a document must be a mapping with apiVersion, kind, metadata and spec",
                               file=filename, line=line, column=1)
        )
    source = Source(file=filename, line=raw.lc.line + 1, node=raw)
    kind = raw.get("kind")
    if not isinstance(kind, str) or kind not in models.KINDS:
        message = (
            "missing 'kind'" if kind is None
            else f"unknown kind '{kind}'; expected one of: {', '.join(models.KINDS)}"
        )
        raise errors.SpecInvalid(source.problem(message, ("kind",) if kind is not None else ()))
    try:
        document = models.KINDS[kind].model_validate(to_plain(raw))
    except ValidationError as e:
        raise errors.SpecInvalid(problems_from_validation(e, source, models.KINDS[kind])) from e
    return Loaded(document=document, source=source)


def validate_data(data: Any, source_name: str = "body") -> models.Document:
    """Validate one document given as plain data (an API body), errors naming the field."""
    if not isinstance(data, dict):
        raise errors.SpecInvalid(errors.SpecProblem("expected an object", file=None))
    kind = data.get("kind")
    if not isinstance(kind, str) or kind not in models.KINDS:
        message = "missing 'kind'" if kind is None else f"unknown kind '{kind}'"
        raise errors.SpecInvalid(errors.SpecProblem(message, path="kind"))
    try:
        return models.KINDS[kind].model_validate(data)
    except ValidationError as e:
        raise errors.SpecInvalid(problems_from_validation(e, None, models.KINDS[kind])) from e


def problems_from_validation(
    error: ValidationError, source: Source | None, model: type[BaseModel] | None = None
) -> list[errors.SpecProblem]:
    """Pydantic's errors located in `source`; an unknown field of `model` gets the closest known one."""
    problems = []
    for item in error.errors(include_url=False):
        path = [p for p in item["loc"] if not _is_union_tag(p)]
        message = _message(item)
        if item["type"] == "extra_forbidden" and model is not None and path and isinstance(path[-1], str):
            message += suggest.closest(path[-1], suggest.field_names(model, path[:-1]))
        cause = item.get("ctx", {}).get("error")
        if isinstance(cause, models.FieldError):  # a model-level check naming a nested field
            path.extend(cause.path)
            message = cause.message
        if source is None:
            problems.append(errors.SpecProblem(message, path=format_path(path)))
        else:
            problems.append(source.problem(message, path))
    return problems


def to_plain(node: Any) -> Any:
    """ruamel's commented containers -> plain dicts and lists (pydantic wants plain data)."""
    if isinstance(node, dict):
        return {str(k) if not isinstance(k, str) else k: to_plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [to_plain(v) for v in node]
    if isinstance(node, str):
        return str(node)  # drop ruamel's scalar string subclasses
    return node


def _message(item: Any) -> str:
    kind = item["type"]
    if kind == "extra_forbidden":
        return "unknown field"
    if kind == "missing":
        return "field required"
    message = str(item["msg"])
    return message.removeprefix("Value error, ")


def _is_union_tag(part: str | int) -> bool:
    # pydantic inserts type names for union members, e.g. 'str' or 'function-after[...]'
    return isinstance(part, str) and ("[" in part or part in {"str", "int", "float", "bool"})


def _position(node: Any, path: Sequence[str | int]) -> tuple[int, int]:
    """Walk `path` through ruamel nodes; stop at the deepest node that exists."""
    line, column = node.lc.line + 1, node.lc.col + 1
    current = node
    for part in path:
        if isinstance(current, CommentedMap) and part in current:
            key_line, key_col = current.lc.key(part)
            line, column = key_line + 1, key_col + 1
            current = current[part]
        elif isinstance(current, CommentedSeq) and isinstance(part, int) and part < len(current):
            item_line, item_col = current.lc.item(part)
            line, column = item_line + 1, item_col + 1
            current = current[part]
        else:
            break
    return line, column
