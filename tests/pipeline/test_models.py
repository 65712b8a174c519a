"""Every document round-trips, ignores unknown fields, and refuses what it must refuse."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
from pydantic import BaseModel

from pipeline.canonical import model_bytes
from pipeline.documents import load_any, parse_document
from pipeline.errors import InputError
from pipeline.models import DOCUMENTS
from pipeline.schema_export import schema_text, stale
from tests.pipeline.samples import DOCUMENTS as SAMPLES
from tests.pipeline.samples import sample

NAMES = sorted(DOCUMENTS)
SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"


def test_every_document_has_a_sample() -> None:
    assert sorted(SAMPLES) == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_round_trip_is_byte_stable(name: str) -> None:
    cls = DOCUMENTS[name]
    first = cls.model_validate(sample(name))
    again = cls.model_validate_json(model_bytes(first))
    assert again == first
    assert model_bytes(again) == model_bytes(first)


@pytest.mark.parametrize("name", NAMES)
def test_sample_is_valid_against_exported_schema(name: str) -> None:
    schema = json.loads(schema_text(name))
    jsonschema.validate(sample(name), schema)


@pytest.mark.parametrize("name", NAMES)
def test_unknown_fields_are_ignored(name: str) -> None:
    data = sample(name) | {"added_in_a_later_minor": {"anything": 1}}
    data["schema_version"] = "1.7.3"
    document = DOCUMENTS[name].model_validate(data)
    assert "added_in_a_later_minor" not in document.model_dump()
    assert document.schema_version == "1.7.3"


def _required_fields(cls: type[BaseModel]) -> list[str]:
    return [field for field, info in cls.model_fields.items() if info.is_required() and field != "schema_version"]


@pytest.mark.parametrize("name", NAMES)
def test_missing_required_field_names_the_field(name: str, tmp_path: Path) -> None:
    cls = DOCUMENTS[name]
    required = _required_fields(cls)
    assert required, f"{name} should have required fields"
    for field in required:
        data = sample(name)
        data.pop(field, None)
        with pytest.raises(InputError) as error:
            parse_document(tmp_path / f"{name}.json", data, cls)
        assert f"field '{field}': missing" in str(error.value)
        assert f"{name}.json" in str(error.value)


@pytest.mark.parametrize("name", NAMES)
def test_missing_schema_version_is_refused(name: str, tmp_path: Path) -> None:
    data = sample(name)
    del data["schema_version"]
    with pytest.raises(InputError, match="field 'schema_version': missing"):
        parse_document(tmp_path / "doc.json", data, DOCUMENTS[name])


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("version", ["2.0.0", "0.9.0"])
def test_other_major_is_refused_with_migration_hint(name: str, version: str, tmp_path: Path) -> None:
    data = sample(name) | {"schema_version": version}
    with pytest.raises(InputError) as error:
        parse_document(tmp_path / "doc.json", data, DOCUMENTS[name])
    message = str(error.value)
    assert f"value \"{version}\"" in message and "docs/migrations.md" in message
    assert message.count("\n") == 0, "another MAJOR is reported alone"


@pytest.mark.parametrize("version", ["1", "1.0", "v1.0.0", "1.0.0-beta", ""])
def test_malformed_versions_are_refused(version: str, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="semantic version"):
        parse_document(tmp_path / "doc.json", sample("Script") | {"schema_version": version}, DOCUMENTS["Script"])


def test_wrong_type_names_field_value_and_expectation(tmp_path: Path) -> None:
    data = sample("ShotList")
    data["shots"][0]["frames"] = "forty"
    with pytest.raises(InputError) as error:
        parse_document(tmp_path / "ShotList.json", data, DOCUMENTS["ShotList"])
    assert "field 'shots[0].frames': value \"forty\": expected a valid integer" in str(error.value)


def test_load_any_uses_the_file_name(tmp_path: Path) -> None:
    path = tmp_path / "ShotList.json"
    path.write_text(json.dumps(sample("ShotList")))
    assert type(load_any(path)).__name__ == "ShotList"
    odd = tmp_path / "thing.json"
    odd.write_text("{}")
    with pytest.raises(InputError, match="--kind"):
        load_any(odd)


def test_committed_schemas_are_current() -> None:
    assert stale(SCHEMAS) == []
