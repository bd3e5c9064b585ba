"""Fuzzing the real server's JSON API from its own OpenAPI schema (schemathesis): whatever the
body, the server answers without a 5xx. Slow (about 200 requests), so out of the default run:
`pytest -m slow tests/test_fuzz_server.py`."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from test_serve import Server, _start, _stop

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def live() -> Iterator[Server]:
    running = _start("--max-batch", "16", "--max-wait-ms", "5", "--max-new-tokens", "24")
    yield running
    _stop(running)


def test_no_input_makes_the_server_fail(live: Server) -> None:
    schema = schemathesis.openapi.from_url(f"{live.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/extract", "/v1/completions", "/v1/chat/completions"}
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
        def fuzz(case: Any) -> None:
            # a long completion on 2 CPU cores takes seconds: slowness is not the question here
            case.call_and_validate(checks=[not_a_server_error], timeout=180)

        fuzz()
