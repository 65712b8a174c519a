"""The API fuzzed from its own OpenAPI (schemathesis): no input, however malformed, gets a 5xx.

Every operation is called with generated paths, queries and bodies (valid and invalid by the
schema), as an unlimited admin so that the handlers run past authentication. The signer is not
running: a command that passes validation fails as SIGNER_UNAVAILABLE, which is an outcome, not a
server error.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok

from control_plane.api import PREFIX, create_app
from control_plane.commands import Commands
from control_plane.database import migrate, open_engine, sqlite_url
from control_plane.directory import FleetDirectory
from control_plane.people import People
from control_plane.signer import SignerClient


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory: pytest.TempPathFactory) -> Iterator[schemathesis.BaseSchema]:
    folder = tmp_path_factory.mktemp("fuzz")
    engine = open_engine(sqlite_url(folder / "fleet.db"))
    migrate(engine)
    people = People(engine)
    people.add_user("fuzzer", "admin")
    token = people.create_token("fuzzer").token
    commands = Commands(engine, FleetDirectory(engine), SignerClient(folder / "no-signer.sock"))
    app = create_app(engine, people, commands)
    schema = schemathesis.openapi.from_asgi(f"{PREFIX}/openapi.json", app)
    schema.config.headers = {"Authorization": f"Bearer {token}"}
    yield schema
    engine.dispose()


def test_no_input_gets_a_server_error(api_schema: schemathesis.BaseSchema) -> None:
    """Each operation in turn (schemathesis' pytest plugin does not run on this pytest; its engine does)."""
    results = list(api_schema.get_all_operations())
    operations = [result.ok() for result in results if isinstance(result, Ok)]
    assert len(operations) == len(results), "the published schema is valid for every operation"
    assert len(operations) >= 15, "every endpoint of the published API is fuzzed"
    for operation in operations:
        @given(case=operation.as_strategy())
        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def no_server_error(case: schemathesis.Case) -> None:
            case.call_and_validate(checks=[not_a_server_error])

        no_server_error()
