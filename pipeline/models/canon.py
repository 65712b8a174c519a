"""The canon: the structured truth about the world (spec §5.2, §5.3, §6.1).

Only the structured canon is authoritative; the canon gate compares every script against it.
The canon changes only through a :class:`CanonDiff`, and only once that diff is approved.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, NonNegativeInt

from pipeline.models.base import Model, Versioned

Identifier = str
ID_PATTERN = r"^[a-z0-9][a-z0-9_\-]*$"
#: An espeak-ng voice name with an optional variant; anything else could reach its command line.
VOICE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_+\-/]*$"


class Character(Model):
    id: Identifier = Field(pattern=ID_PATTERN)
    name: str = Field(min_length=1)
    age: NonNegativeInt
    status: Literal["alive", "dead"]
    location_id: Identifier = Field(pattern=ID_PATTERN, description="Where the character is now.")
    voice: str = Field(
        default="en",
        pattern=VOICE_PATTERN,
        description="espeak-ng voice used for this character's lines, e.g. 'en-gb' or 'en-us+f3'.",
    )
    description: str = ""
    asset_id: Identifier | None = Field(
        default=None, pattern=ID_PATTERN, description="Portrait asset; defaults to 'char_<id>'."
    )

    @property
    def portrait_asset(self) -> str:
        return self.asset_id or f"char_{self.id}"


class Location(Model):
    id: Identifier = Field(pattern=ID_PATTERN)
    name: str = Field(min_length=1)
    description: str = ""
    asset_id: Identifier | None = Field(
        default=None, pattern=ID_PATTERN, description="Background asset; defaults to 'bg_<id>'."
    )

    @property
    def background_asset(self) -> str:
        return self.asset_id or f"bg_{self.id}"


class WorldRule(Model):
    id: Identifier = Field(pattern=ID_PATTERN)
    text: str


class Relationship(Model):
    source_id: Identifier
    target_id: Identifier
    kind: str


class TimelineEvent(Model):
    id: Identifier = Field(pattern=ID_PATTERN)
    order: int
    description: str


class PersistentState(Model):
    entity_id: Identifier
    key: str
    value: str | int | float | bool


class Canon(Versioned):
    """A canon snapshot: inline in the project file or a JSON file it points to."""

    characters: tuple[Character, ...] = Field(min_length=1)
    locations: tuple[Location, ...] = Field(min_length=1)
    world_rules: tuple[WorldRule, ...] = ()
    relationships: tuple[Relationship, ...] = ()
    timeline_events: tuple[TimelineEvent, ...] = ()
    persistent_states: tuple[PersistentState, ...] = ()

    def character(self, character_id: str) -> Character | None:
        return next((c for c in self.characters if c.id == character_id), None)

    def location(self, location_id: str) -> Location | None:
        return next((loc for loc in self.locations if loc.id == location_id), None)


CharacterField = Literal["name", "age", "status", "location_id", "voice", "description"]


class CharacterFact(Model):
    """One statement about a character: the unit the canon gate compares and a diff changes."""

    character_id: Identifier = Field(pattern=ID_PATTERN)
    field: CharacterField
    value: str | int


class CanonDiffValidation(Model):
    accepted: bool
    violations: tuple[str, ...] = ()


class CanonDiff(Versioned):
    """A proposed change to the canon (spec §5.3). Applied only when ``approved`` is true."""

    id: Identifier = Field(pattern=ID_PATTERN)
    added_characters: tuple[Character, ...] = ()
    added_locations: tuple[Location, ...] = ()
    modified_facts: tuple[CharacterFact, ...] = ()
    removed_characters: tuple[Identifier, ...] = ()
    justification: str = Field(min_length=1)
    provenance: str = Field(min_length=1, description="Who or what proposed the change.")
    approved: bool = False
    approver: str | None = None
    validation: CanonDiffValidation | None = None
