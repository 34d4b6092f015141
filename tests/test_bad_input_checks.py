"""The bad-input checks pass on the reference and fail on targets that answer Prefect's 422s with a server
error (quoting a ``curl`` line that reproduces it) or that store what Prefect rejects."""

from __future__ import annotations

import re
import subprocess

from harness.checks.bad_input import PROBES, BadRequest, first_error
from tests.deviations import ServerErrorInsteadOf422, StoresUnknownStateTypes

EVERY_ROUTE = {f"bad_input/rejected[{probe.key}]" for probe in PROBES}
STATE_ROUTES = {f"bad_input/rejected[{route}]" for route in ("POST /flow_runs/", "POST /flow_runs/{id}/set_state")}


def test_a_server_error_for_bad_input_fails_every_route_with_a_curl_that_reproduces_it(deviating, suite) -> None:
    proxy = deviating(ServerErrorInsteadOf422())
    run = suite("--target", proxy.api_url, "-m", "bad_input")
    run.assert_deviation_caught("500-instead-of-422", EVERY_ROUTE, set(),
                                r"Prefect 3\.9\.1 rejects with 422 were not rejected .*the target answered a server "
                                r"error: (POST|PATCH) \S+ -> 500 .*reproduce: curl -sS -X (POST|PATCH) .*Hint: answer 422")
    message = run.message("bad_input/rejected[POST /flows/]")
    command = re.search(r"reproduce: (curl .*)", message).group(1)
    reproduced = subprocess.run(command + " -o /dev/null -w '%{http_code}'", shell=True, capture_output=True,
                                text=True, timeout=30)
    assert reproduced.stdout == "500", f"{command!r} answered {reproduced.stdout!r} {reproduced.stderr!r}"


def test_a_target_that_stores_unknown_state_types_fails_the_routes_that_take_a_state(deviating, suite) -> None:
    proxy = deviating(StoresUnknownStateTypes())
    run = suite("--target", proxy.api_url, "-m", "bad_input")
    run.assert_deviation_caught("stores-unknown-state-types", STATE_ROUTES, EVERY_ROUTE - STATE_ROUTES,
                                r"invalid enum value \(Prefect: body\.state\.type: .*the target accepted it: POST \S+ -> 20[01]")
    assert "the rejected requests were stored: before them the target held {'type': 'SCHEDULED'" in run.message(
        "bad_input/rejected[POST /flow_runs/{id}/set_state]")


def test_a_request_binds_to_the_runs_own_objects_and_quotes_a_shell_safe_curl() -> None:
    request = BadRequest("POST", "/flows/", "/flows/", {"limit": "x"}, {"name": "PLACE", "tags": "it's"}, "incorrect_type")
    bound = request.bind({"PLACE": "run-1-flow"})
    assert bound.body == {"name": "run-1-flow", "tags": "it's"}
    assert bound.curl("http://h:1/api/") == (
        "curl -sS -X POST 'http://h:1/api/flows/?limit=x' -H 'content-type: application/json' "
        "-d '{\"name\": \"run-1-flow\", \"tags\": \"it'\"'\"'s\"}'")
    assert first_error('{"detail": [{"loc": ["body", "state", "type"], "msg": "Input should be \'PENDING\'"}]}') == (
        "body.state.type: Input should be 'PENDING'")
