"""The canon gate (spec §6.3, §19.0 workstream D): the canon changes only through valid diffs,
and no script that contradicts it is finalised.

The MVP gate detects hard contradictions only: name, age, death status and location, plus the
structural mistakes that would make those checks meaningless (an unknown character or location,
a duplicate id). It never repairs anything. Every violation names its rule, the character and
both facts, so an author can fix the project without reading code. Checks are simple look-ups
over a small canon: an episode's gate runs in milliseconds, far inside the spec's 10 s budget.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import groupby
from typing import Literal

from pydantic import ValidationError

from pipeline.errors import GateBlocked
from pipeline.models.canon import Canon, CanonDiff, CanonDiffValidation, Character, CharacterFact, Location
from pipeline.models.script import Scene, Script
from pipeline.stages.script import implied_facts, sort_facts

GATE = "canon"

#: The script rule each checked field maps to; ``voice`` and ``description`` are soft facts the
#: MVP gate does not judge.
SCRIPT_RULES = {"name": "name", "age": "age", "status": "death_status", "location_id": "location"}

_LABELS = {"location_id": "location"}


@dataclass(frozen=True)
class Violation:
    """One contradiction: the rule broken, the character concerned and a sentence with both facts.

    ``rule`` and ``facts`` map one-to-one onto a recorded gate result.
    """

    rule: str
    character_id: str | None
    facts: str

    def __str__(self) -> str:
        return f"{self.rule}: {self.facts}"


@dataclass(frozen=True)
class DiffOutcome:
    """What :func:`apply_diffs` did with one diff, and how it validated at that point."""

    diff_id: str
    outcome: Literal["applied", "pending"]
    validation: CanonDiffValidation


def validate_diff(canon: Canon, diff: CanonDiff) -> CanonDiffValidation:
    """Check a diff against the canon as it stands; the diff's ``approved`` flag is not consulted."""
    _, violations = _walk(canon, diff)
    return _validation(violations)


def apply_diffs(canon: Canon, diffs: Sequence[CanonDiff]) -> tuple[Canon, list[DiffOutcome]]:
    """Apply the approved diffs in order, each validated against the canon left by the ones before.

    An unapproved diff changes nothing (it stays pending, with its would-be validation for the
    reviewer). An approved diff that contradicts the canon blocks the run rather than being
    skipped: the author approved it, so silently dropping it would render the wrong story.
    """
    outcomes: list[DiffOutcome] = []
    for diff in diffs:
        updated, violations = _walk(canon, diff)
        if diff.approved and violations:
            raise _blocked(violations)
        if diff.approved:
            canon = updated
        outcomes.append(DiffOutcome(diff.id, "applied" if diff.approved else "pending", _validation(violations)))
    return canon, outcomes


def check_script(canon: Canon, script: Script) -> None:
    """Block the run on the script's first contradiction with the canon (deterministic order)."""
    violations = find_violations(canon, script)
    if violations:
        first = violations[0]
        raise GateBlocked(gate=GATE, rule=first.rule, facts=first.facts)


def find_violations(canon: Canon, script: Script) -> list[Violation]:
    """Every contradiction between the script and the canon, in scene order, then by fact order."""
    return [violation for scene in script.scenes for violation in _scene_violations(canon, scene)]


# --- script checks ---------------------------------------------------------------------------


def _scene_violations(canon: Canon, scene: Scene) -> Iterator[Violation]:
    where = f"scene '{scene.id}'"
    if canon.location(scene.location_id) is None:
        yield Violation(
            "unknown_location",
            None,
            f"{where}: script says location '{scene.location_id}', canon has no location '{scene.location_id}'",
        )
    for character_id, facts in groupby(_asserted_facts(scene), key=lambda fact: fact.character_id):
        yield from _character_violations(canon, where, character_id, list(facts))


def _character_violations(
    canon: Canon, where: str, character_id: str, facts: list[CharacterFact]
) -> Iterator[Violation]:
    """One scene's facts about one character against the canon; an unknown character is one violation."""
    character = canon.character(character_id)
    if character is None:
        yield Violation(
            "unknown_character",
            character_id,
            f"{where} character '{character_id}': script says {', '.join(_fact(f) for f in facts)}, "
            f"canon has no character '{character_id}'",
        )
        return
    for fact in facts:
        rule = SCRIPT_RULES.get(fact.field)
        truth = getattr(character, fact.field)
        if rule and str(fact.value) != str(truth):
            yield Violation(
                rule,
                character.id,
                f"{where} character '{character.id}' ({character.name}): script says {_fact(fact)}, "
                f"canon says {_show(truth)}",
            )


def _asserted_facts(scene: Scene) -> tuple[CharacterFact, ...]:
    """The scene's stated facts plus those its content implies, re-derived so a generator that
    forgot to state them cannot slip a dead or misplaced speaker past the gate."""
    present = dict.fromkeys([*scene.characters_present, *(line.speaker_id for line in scene.dialogue)])
    credited = ((line.speaker_id, line.speaker_name) for line in scene.dialogue)
    return sort_facts([*scene.facts, *implied_facts(scene.location_id, present, credited)])


# --- diff checks -----------------------------------------------------------------------------


def _walk(canon: Canon, diff: CanonDiff) -> tuple[Canon, list[Violation]]:
    """Apply a diff to a draft of the canon, change by change, collecting what contradicts it.

    Order: added locations (so the diff's own facts may refer to them), added characters,
    modified facts, removals. A violating change is left out of the draft.
    """
    draft = _Draft(canon, diff.id)
    for location in diff.added_locations:
        draft.add_location(location)
    for character in diff.added_characters:
        draft.add_character(character)
    for fact in diff.modified_facts:
        draft.modify(fact)
    for character_id in diff.removed_characters:
        draft.remove(character_id)
    return draft.result(), draft.violations


class _Draft:
    """A working copy of the canon's characters and locations while one diff is walked."""

    def __init__(self, canon: Canon, diff_id: str) -> None:
        self.canon = canon
        self.where = f"diff '{diff_id}'"
        self.characters = {character.id: character for character in canon.characters}
        self.locations = {location.id: location for location in canon.locations}
        self.violations: list[Violation] = []

    def result(self) -> Canon:
        return self.canon.model_copy(
            update={"characters": tuple(self.characters.values()), "locations": tuple(self.locations.values())}
        )

    def add_location(self, location: Location) -> None:
        existing = self.locations.get(location.id)
        if existing is not None:
            self._violate(
                "duplicate_location",
                None,
                f"{self.where} adds location '{location.id}' ({location.name}), "
                f"canon already has location '{existing.id}' ({existing.name})",
            )
            return
        self.locations[location.id] = location

    def add_character(self, character: Character) -> None:
        existing = self.characters.get(character.id)
        if existing is not None:
            self._violate(
                "duplicate_character",
                character.id,
                f"{self.where} adds character '{character.id}' ({character.name}), "
                f"canon already has character '{existing.id}' ({existing.name})",
            )
        elif character.location_id not in self.locations:
            self._violate(
                "unknown_location",
                character.id,
                f"{self.where} adds character '{character.id}' ({character.name}) at location "
                f"'{character.location_id}', canon has no location '{character.location_id}'",
            )
        else:
            self.characters[character.id] = character

    def modify(self, fact: CharacterFact) -> None:
        current = self.characters.get(fact.character_id)
        if current is None:
            self._violate(
                "unknown_character",
                fact.character_id,
                f"{self.where} character '{fact.character_id}': diff says {_fact(fact)}, "
                f"canon has no character '{fact.character_id}'",
            )
            return
        subject = f"{self.where} character '{current.id}' ({current.name})"
        try:
            changed = Character.model_validate({**current.model_dump(), fact.field: fact.value})
        except ValidationError as error:
            reason = error.errors()[0]["msg"]
            self._violate(
                "invalid_value",
                current.id,
                f"{subject}: diff says {_fact(fact)}, canon says {_show(getattr(current, fact.field))}; {reason}",
            )
            return
        violation = self._contradiction(subject, current, changed, fact)
        if violation is None:
            self.characters[current.id] = changed
        else:
            self.violations.append(violation)

    def _contradiction(
        self, subject: str, current: Character, changed: Character, fact: CharacterFact
    ) -> Violation | None:
        """The hard rule a valid-looking change breaks: identity, death, time, or geography."""
        said = f"{subject}: diff says {_label(fact.field)} {_show(getattr(changed, fact.field))}"
        was = f"canon says {_show(getattr(current, fact.field))}"
        if changed.name != current.name:
            return Violation("name", current.id, f"{said}, {was} (a name is a character's identity)")
        if current.status == "dead" and changed.status == "alive":
            return Violation("death_status", current.id, f"{said}, {was} (the dead do not return)")
        if changed.age < current.age:
            return Violation("age", current.id, f"{said}, {was} (age never goes down)")
        if changed.location_id not in self.locations:
            return Violation(
                "unknown_location",
                current.id,
                f"{said}, {was} and has no location '{changed.location_id}'",
            )
        return None

    def remove(self, character_id: str) -> None:
        if character_id not in self.characters:
            self._violate(
                "unknown_character",
                character_id,
                f"{self.where} removes character '{character_id}', canon has no character '{character_id}'",
            )
        elif len(self.characters) == 1:
            self._violate(
                "last_character",
                character_id,
                f"{self.where} removes character '{character_id}' ({self.characters[character_id].name}), "
                "canon says it is the only character left and a canon needs at least one",
            )
        else:
            del self.characters[character_id]

    def _violate(self, rule: str, character_id: str | None, facts: str) -> None:
        self.violations.append(Violation(rule, character_id, facts))


# --- shared ----------------------------------------------------------------------------------


def _validation(violations: list[Violation]) -> CanonDiffValidation:
    return CanonDiffValidation(accepted=not violations, violations=tuple(str(v) for v in violations))


def _blocked(violations: list[Violation]) -> GateBlocked:
    """The first violation is the rule; the others ride along so one fix-up pass sees them all."""
    first, rest = violations[0], violations[1:]
    more = f"; also {'; '.join(str(v) for v in rest)}" if rest else ""
    return GateBlocked(gate=GATE, rule=first.rule, facts=first.facts + more)


def _fact(fact: CharacterFact) -> str:
    return f"{_label(fact.field)} {_show(fact.value)}"


def _label(field: str) -> str:
    return _LABELS.get(field, field)


def _show(value: object) -> str:
    return f"'{value}'" if isinstance(value, str) else str(value)
