"""The response-schema checks pass on the reference and fail, naming path, expectation and value, on targets
whose answers break Prefect's OpenAPI document; fields Prefect does not list never fail them."""

from __future__ import annotations

from harness.checks.schema import Violation, violations
from scenarios.test_schema import ROUTES
from tests.deviations.framework import RewritesObjects
from tests.deviations.schema import without_flow_id_with_an_extra_field, wrong_types

EVERY_ROUTE = {f"schema/response[{route}]" for route in ROUTES}
FLOW_RUN_ROUTES = {
    f"schema/response[{route}]"
    for route in (
        "POST /flow_runs/",
        "GET /flow_runs/{id}",
        "POST /flow_runs/filter",
        "POST /deployments/get_scheduled_flow_runs",
        "POST /deployments/{id}/create_flow_run",
        "POST /work_pools/{name}/get_scheduled_flow_runs",
    )
}


def test_every_schema_check_fails_on_answers_of_the_wrong_types(deviating, suite) -> None:
    """Each route's answer made wrong where the harness does not read it: a number for a datetime, an unknown
    orchestration status."""
    proxy = deviating(RewritesObjects(wrong_types))
    run = suite("--target", proxy.api_url, "-m", "schema")
    run.assert_deviation_caught(
        "wrong-types",
        EVERY_ROUTE,
        set(),
        r"breaks Prefect 3\.9\.1's schema for .*: \$\S*: "
        r"expected (type|one of) .*, got .*Hint: real clients parse",
    )
    assert "$.created: expected type string, got 1764316800" in run.message("schema/response[GET /flows/{id}]")
    assert "$.status: expected one of" in run.message("schema/response[POST /flow_runs/{id}/set_state]")


def test_a_missing_required_field_fails_exactly_the_routes_that_answer_it(deviating, suite) -> None:
    """Flow runs without ``flow_id`` fail the six routes that answer flow runs, at the run's own path; a field
    Prefect does not list, added to every object, fails nothing."""
    proxy = deviating(RewritesObjects(without_flow_id_with_an_extra_field))
    run = suite("--target", proxy.api_url, "-m", "schema or differential")
    assert not [check for check in run.checks if check.startswith("differential/")], (
        "the differential checks ran without --differential"
    )
    run.assert_deviation_caught(
        "flow-runs-without-flow-id",
        FLOW_RUN_ROUTES,
        EVERY_ROUTE - FLOW_RUN_ROUTES,
        r"expected the required field 'flow_id'",
    )
    assert "$[0].flow_run: expected the required field 'flow_id'" in run.message(
        "schema/response[POST /work_pools/{name}/get_scheduled_flow_runs]"
    )


def test_violations_name_path_expectation_and_value_and_ignore_extra_fields() -> None:
    document = {
        "components": {
            "schemas": {
                "Run": {
                    "type": "object",
                    "required": ["id"],
                    "additionalProperties": False,
                    "properties": {
                        "id": {"type": "string"},
                        "state_type": {"anyOf": [{"enum": ["SCHEDULED", "RUNNING"]}, {"type": "null"}]},
                        "when": {"type": "string", "format": "date-time"},
                    },
                }
            }
        }
    }
    schema = {"type": "array", "items": {"$ref": "#/components/schemas/Run"}}
    body = [{"id": "a", "extra": 1, "when": "not a date"}, {"state_type": "WAITING"}, {"id": 7}]
    assert violations(document, schema, body) == [
        Violation("$[1]", "the required field 'id'", '{"state_type": "WAITING"}'),
        Violation("$[1].state_type", 'one of ["SCHEDULED", "RUNNING"]', '"WAITING"'),
        Violation("$[2].id", "type string", "7"),
    ]


def test_an_empty_success_is_the_targets_failure_not_a_harness_error() -> None:
    import pytest

    from harness.checks.schema import assert_answer_matches
    from harness.target.api import Answer

    document = {
        "paths": {
            "/flows/{id}": {
                "get": {"responses": {"200": {"content": {"application/json": {"schema": {"type": "object"}}}}}}
            }
        }
    }
    with pytest.raises(AssertionError, match=r"GET /flows/abc answered 200 with no body, where Prefect's schema"):
        assert_answer_matches(
            Answer("GET", "/flows/abc", 200, "", "application/json"), document, "3.9.1", "/flows/{id}"
        )
