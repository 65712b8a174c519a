"""What every versioned document shares: a semver ``schema_version`` and tolerant reading.

Readers ignore unknown fields (so a MINOR bump on the writer side never breaks an older
reader), reject missing required fields, and refuse another MAJOR with a pointer to the
migration notes, as section 30 of the spec requires.
"""

from __future__ import annotations

import re
from typing import ClassVar, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator

SEMVER = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)$")

#: Where an operator holding an artifact of another MAJOR finds how to move it forward.
MIGRATION_DOC = "docs/migrations.md"


class Model(BaseModel):
    """A nested, non-versioned part of a document."""

    model_config = ConfigDict(extra="ignore", frozen=True, str_strip_whitespace=False)


class Versioned(Model):
    """A top-level document: an artifact or an input file.

    ``SCHEMA_VERSION`` is the version this code writes; a document is readable when its MAJOR
    equals ours, whatever its MINOR and PATCH.
    """

    SCHEMA_VERSION: ClassVar[str] = "1.0.0"

    schema_version: str = Field(
        description="Semantic version of the schema this document follows (MAJOR.MINOR.PATCH).",
        examples=["1.0.0"],
    )

    @field_validator("schema_version")
    @classmethod
    def check_version(cls, value: str) -> str:
        """Accept any MINOR/PATCH of our MAJOR; explain anything else."""
        if not isinstance(value, str) or not SEMVER.match(value):
            raise ValueError(f"a semantic version MAJOR.MINOR.PATCH such as {cls.SCHEMA_VERSION!r}")
        ours = cls.SCHEMA_VERSION.split(".")[0]
        theirs = value.split(".")[0]
        if theirs != ours:
            raise ValueError(
                f"{cls.__name__} schema MAJOR {theirs} is not readable by this version, which reads "
                f"MAJOR {ours} ({cls.SCHEMA_VERSION}); migrate the document first (see {MIGRATION_DOC})"
            )
        return value

    @classmethod
    def create(cls, **fields: object) -> Self:
        """Build a document at the version this code writes."""
        return cls(schema_version=cls.SCHEMA_VERSION, **fields)
