"""Reading documents from disk with errors an author can act on.

Every failure names the file, the field (as a JSON path), the offending value and what was
expected, and is raised as :class:`~pipeline.errors.InputError` before anything is written.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from pydantic import ValidationError

from pipeline.errors import InputError
from pipeline.models import DOCUMENTS, Canon, Project, Versioned

V = TypeVar("V", bound=Versioned)

#: File stems that name a document kind although they are not the class name.
STEM_ALIASES = {"project": "Project", "canon": "Canon", "library": "AssetLibrary", "run_summary": "RunSummary"}


def _field_path(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or "(document)"


def _show(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 80 else text[:77] + "..."


def describe_validation_error(path: Path, error: ValidationError) -> str:
    """One line per problem: file, field, value, expectation."""
    lines = []
    for item in error.errors(include_url=False):
        field = _field_path(tuple(p for p in item["loc"] if not _is_union_tag(p)))
        if item["type"] == "missing":
            lines.append(f"{path}: field '{field}': missing; expected a value (the field is required)")
        else:
            message = _expectation(item["msg"])
            lines.append(f"{path}: field '{field}': value {_show(item.get('input'))}: expected {message}")
    return "\n".join(dict.fromkeys(lines))


def _expectation(message: str) -> str:
    """Turn pydantic's sentence into the object of "expected ..."."""
    message = message.removeprefix("Value error, ")
    for prefix, replacement in (("Input should be ", ""), ("String should ", "a string that should ")):
        if message.startswith(prefix):
            return replacement + message.removeprefix(prefix)
    return message


def _is_union_tag(part: int | str) -> bool:
    # pydantic names the union branch it tried ("Canon", "str", "function-after[...]"); an
    # author never wrote those, so they are left out of the field path.
    return isinstance(part, str) and (part[:1].isupper() or part in {"str", "int"} or "[" in part)


def read_json(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{path}: no such file; expected a JSON document") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a folder; expected a JSON document") from None
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: byte {exc.start} is not UTF-8; expected UTF-8 JSON") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(
            f"{path}: line {exc.lineno} column {exc.colno}: malformed JSON ({exc.msg}); expected valid JSON"
        ) from None


def parse_document(path: Path, data: Any, cls: type[V]) -> V:
    if not isinstance(data, dict):
        raise InputError(f"{path}: field '(document)': value {_show(data)}: expected a JSON object ({cls.__name__})")
    if "schema_version" not in data:
        raise InputError(
            f"{path}: field 'schema_version': missing; expected a semantic version such as "
            f"{cls.SCHEMA_VERSION!r} (every {cls.__name__} carries one)"
        )
    try:
        # Another MAJOR is a different schema: its other "errors" would only be noise.
        cls.check_version(data["schema_version"])
    except (TypeError, ValueError) as exc:
        raise InputError(
            f"{path}: field 'schema_version': value {_show(data['schema_version'])}: expected {exc}"
        ) from None
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        raise InputError(describe_validation_error(path, exc)) from None


def load_document(path: Path, cls: type[V]) -> V:
    return parse_document(path, read_json(path), cls)


def kind_for(path: Path) -> str | None:
    stem = path.stem
    if stem in DOCUMENTS:
        return stem
    # "project-external-canon.json" is a project too: the first word names the kind, unless the
    # whole name is a kind ("canon_diff.json" is a CanonDiff, not a Canon).
    words = stem.lower().replace("-", "_")
    by_class = {name.lower(): name for name in DOCUMENTS}
    joined = words.replace("_", "")
    return by_class.get(joined) or STEM_ALIASES.get(words) or STEM_ALIASES.get(words.split("_")[0])


def load_any(path: Path, kind: str | None = None) -> Versioned:
    """Load a document whose kind comes from ``kind`` or the file name (``Script.json``)."""
    kind = kind or kind_for(path)
    if kind is None or kind not in DOCUMENTS:
        known = ", ".join(sorted(DOCUMENTS))
        raise InputError(f"{path}: cannot tell the document kind from the file name; pass --kind, one of: {known}")
    if kind == "Project":
        return load_project(path).project
    return load_document(path, DOCUMENTS[kind])


@dataclass(frozen=True)
class LoadedProject:
    """A validated project with its canon resolved and where it came from."""

    path: Path
    project: Project
    canon: Canon

    @property
    def folder(self) -> Path:
        return self.path.parent

    @property
    def library(self) -> Path:
        return self.folder / self.project.assets.library


def load_project(path: Path) -> LoadedProject:
    path = Path(path)
    project = load_document(path, Project)
    if isinstance(project.canon, Canon):
        canon = project.canon
    else:
        canon_path = path.parent / project.canon
        if not canon_path.is_file():
            raise InputError(
                f"{path}: field 'canon': value {_show(project.canon)}: expected an inline canon or the path "
                f"of a Canon JSON file relative to the project ({canon_path} does not exist)"
            )
        canon = load_document(canon_path, Canon)
    return LoadedProject(path=path.resolve(), project=project, canon=canon)
