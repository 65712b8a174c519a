"""``schemas/<Name>.schema.json``: the JSON Schema of every document, generated from the models.

The files are committed so other tools (and other languages) can validate without Python; CI
regenerates them in memory and fails when the committed copies are stale.
"""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.models import DOCUMENTS

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def schema_text(name: str) -> str:
    cls = DOCUMENTS[name]
    schema = cls.model_json_schema(mode="validation")
    schema["$schema"] = SCHEMA_DIALECT
    schema["$id"] = f"https://cinefleet.dev/schemas/{name}-{cls.SCHEMA_VERSION}.schema.json"
    schema["x-schema-version"] = cls.SCHEMA_VERSION
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def export(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name in sorted(DOCUMENTS):
        path = folder / f"{name}.schema.json"
        path.write_text(schema_text(name), encoding="utf-8")
        written.append(path)
    return written


def stale(folder: Path) -> list[str]:
    """Names of schema files that are missing, differ from the models, or have no model."""
    problems = []
    for name in sorted(DOCUMENTS):
        path = folder / f"{name}.schema.json"
        if not path.is_file():
            problems.append(f"{path}: missing")
        elif path.read_text(encoding="utf-8") != schema_text(name):
            problems.append(f"{path}: differs from the model {name}")
    known = {f"{name}.schema.json" for name in DOCUMENTS}
    problems += [f"{path}: no model of that name" for path in sorted(folder.glob("*.schema.json"))
                 if path.name not in known]
    return problems
