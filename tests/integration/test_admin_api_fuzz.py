"""The management API under generated input (schemathesis, from /api/openapi.json): whatever
the body, path or query, the answer is never a server error. Bounded in examples and time."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from tests.processes import ROOT, service_tree, stdio_server

ADMIN = "fuzz-admin-token"
EXAMPLES = 12


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    servers = [stdio_server("fixture", ROOT / "tests" / "servers" / "fixture_server.py")]
    with service_tree(tmp_path_factory.mktemp("fuzz"), servers, env={"MCPGW_ADMIN_TOKEN": ADMIN}) as (base,):
        yield base


def test_no_input_makes_the_admin_api_fail(edge: str) -> None:
    # A server config is free-form JSON passed to registry; generated ones could name any
    # command to run, so adding and replacing servers is left to the written tests.
    schema = (
        schemathesis.openapi.from_url(f"{edge}/api/openapi.json")
        .exclude(path="/api/servers", method="POST")
        .exclude(path="/api/servers/{name}", method="PUT")
    )
    operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
    assert len(operations) >= 15, "the OpenAPI document lost operations"
    headers = {"authorization": f"Bearer {ADMIN}"}
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None
        )
        def survives(case: Any) -> None:
            case.call_and_validate(base_url=edge, headers=headers, checks=[not_a_server_error])

        survives()
