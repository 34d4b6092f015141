"""The bad-input checks pass on the reference and fail on targets that answer Prefect's 422s with a server
error (quoting a ``curl`` line that reproduces it) or that store what Prefect rejects."""

from __future__ import annotations

import re
import subprocess

from harness.checks.bad_input import (
    PROBES,
    REFUSED_SCHEDULES,
    SCHEDULE_PROBES,
    BadRequest,
    first_error,
    refused_schedules,
)
from harness.reference.releases import pinned
from tests.deviations.bad_input import AnswersServerErrorsForBadInput, StoresUnknownStateTypes
from tests.deviations.scheduler import stores_refused_schedules

EVERY_ROUTE = {f"bad_input/rejected[{probe.key}]" for probe in PROBES}
SCHEDULE_ROUTES = {f"bad_input/schedule_refused[{probe.key}]" for probe in SCHEDULE_PROBES}
STATE_ROUTES = {f"bad_input/rejected[{route}]" for route in ("POST /flow_runs/", "POST /flow_runs/{id}/set_state")}


def test_a_server_error_for_bad_input_fails_every_route_with_a_curl_that_reproduces_it(deviating, suite) -> None:
    proxy = deviating(AnswersServerErrorsForBadInput())
    run = suite("--target", proxy.api_url, "-m", "bad_input")
    run.assert_deviation_caught(
        "500-instead-of-422",
        EVERY_ROUTE | SCHEDULE_ROUTES,
        set(),
        r"Prefect 3\.9\.1 (rejects|refuses) with 422 were not rejected .*the target answered a "
        r"server error: (POST|PATCH) \S+ -> 500 .*reproduce: curl -sS -X (POST|PATCH) .*Hint: "
        r"(answer|validate)",
    )
    message = run.message("bad_input/rejected[POST /flows/]")
    command = re.search(r"reproduce: (curl .*)", message).group(1)
    reproduced = subprocess.run(
        command + " -o /dev/null -w '%{http_code}'", shell=True, capture_output=True, text=True, timeout=30
    )
    assert reproduced.stdout == "500", f"{command!r} answered {reproduced.stdout!r} {reproduced.stderr!r}"


def test_a_target_that_stores_unknown_state_types_fails_the_routes_that_take_a_state(deviating, suite) -> None:
    proxy = deviating(StoresUnknownStateTypes())
    run = suite("--target", proxy.api_url, "-m", "bad_input")
    run.assert_deviation_caught(
        "stores-unknown-state-types",
        STATE_ROUTES,
        EVERY_ROUTE - STATE_ROUTES | SCHEDULE_ROUTES,
        r"invalid enum value \(Prefect: body\.state\.type: .*the target accepted it: POST \S+ -> 20[01]",
    )
    assert "the rejected requests were stored: before them the target held {'type': 'SCHEDULED'" in run.message(
        "bad_input/rejected[POST /flow_runs/{id}/set_state]"
    )


def test_a_request_binds_to_the_runs_own_objects_and_quotes_a_shell_safe_curl() -> None:
    request = BadRequest(
        "POST", "/flows/", "/flows/", {"limit": "x"}, {"name": "PLACE", "tags": "it's"}, "incorrect_type"
    )
    bound = request.bind({"PLACE": "run-1-flow"})
    assert bound.body == {"name": "run-1-flow", "tags": "it's"}
    assert bound.curl("http://h:1/api/") == (
        "curl -sS -X POST 'http://h:1/api/flows/?limit=x' -H 'content-type: application/json' "
        '-d \'{"name": "run-1-flow", "tags": "it\'"\'"\'s"}\''
    )
    assert first_error('{"detail": [{"loc": ["body", "state", "type"], "msg": "Input should be \'PENDING\'"}]}') == (
        "body.state.type: Input should be 'PENDING'"
    )


def test_a_target_that_stores_the_schedules_prefect_refuses_fails_each_route(deviating, suite) -> None:
    """A zero interval, an invalid cron string, an unknown time zone, ... stored instead of refused: each of the
    three routes a schedule reaches fails, quoting the schedule, Prefect's reason, the target's 2xx and what it
    stored; the schema-driven checks of the same routes still pass."""
    proxy = deviating(stores_refused_schedules())
    run = suite("--target", proxy.api_url, "-m", "bad_input")
    run.assert_deviation_caught(
        "stores-refused-schedules",
        SCHEDULE_ROUTES,
        EVERY_ROUTE,
        r"carrying a schedule Prefect 3\.9\.1 refuses with 422 were not rejected .*a zero "
        r"interval \(Prefect: Value error, interval must be positive\): the target accepted it: "
        r"(POST|PATCH) \S+ -> 20[014].*Hint: validate a schedule as Prefect does",
    )
    assert "the rejected requests were stored" in run.message(
        "bad_input/schedule_refused[POST /deployments/{id}/schedules]"
    )


def test_the_pinned_release_refuses_every_listed_schedule_on_every_route(tmp_path) -> None:
    """The list is Prefect's, not a guess: its own app answers each of them 422, on each route, with a reason."""
    release = pinned()
    refused = refused_schedules(release.version, release.python, cache=tmp_path)
    for probe in SCHEDULE_PROBES:
        assert [case.scenario for case in refused[probe.key]] == list(REFUSED_SCHEDULES), probe.key
        assert all(case.prefect_says for case in refused[probe.key]), [c.describe() for c in refused[probe.key]]
