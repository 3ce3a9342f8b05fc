"""Fuzz the REST API from its own OpenAPI schema (schemathesis): no input may cause a server error.

Runs against a real server whose job limits are tiny, so generated jobs finish at once. (Driven
through Hypothesis directly: schemathesis' pytest fixture loader does not support this pytest.)"""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from tests.live_server import LiveServer


def test_api_never_answers_5xx(tmp_path):
    server = LiveServer(tmp_path, FOOLING_MAX_GENERATIONS="5", FOOLING_MAX_STEPS="5",
                        FOOLING_MAX_POPULATION="20", FOOLING_MAX_TARGETS="10", FOOLING_WORKERS="1",
                        FOOLING_QUEUE_SIZE="16", FOOLING_MAX_JOBS_PER_CLIENT="16").start()
    try:
        schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
        operations = [result.ok() for result in schema.get_all_operations()]
        assert len(operations) >= 10  # models, score, jobs and their sub-resources, uploads, health
        for op in operations:
            @given(case=op.as_strategy())
            @settings(max_examples=25, deadline=None, database=None, suppress_health_check=list(HealthCheck))
            def check(case) -> None:
                case.call_and_validate(checks=[not_a_server_error])

            check()
        log = server.log.read_text()
        assert log.count(" HTTP/1.1\" ") > 10 * len(operations)  # the requests really reached the server
        assert " 500 " not in log and "Traceback" not in log, log[-3000:]  # nothing blew up inside the server either
    finally:
        server.stop()
