"""Fuzz the REST API from its own OpenAPI schema (schemathesis): no input may cause a server error.

Runs against a real server whose job limits are tiny, so generated jobs finish at once."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from tests.live_server import LiveServer


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory):
    server = LiveServer(tmp_path_factory.mktemp("fuzz"), FOOLING_MAX_GENERATIONS="5", FOOLING_MAX_STEPS="5",
                        FOOLING_MAX_POPULATION="20", FOOLING_MAX_TARGETS="10", FOOLING_WORKERS="1",
                        FOOLING_QUEUE_SIZE="16", FOOLING_MAX_JOBS_PER_CLIENT="16").start()
    yield schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    log = server.log.read_text()
    server.stop()
    assert "Traceback" not in log, log[-3000:]  # nothing blew up inside the server either


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_never_answers_5xx(case):
    case.call_and_validate(checks=[not_a_server_error])
