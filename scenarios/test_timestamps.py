"""Timestamps: what real Prefect clients send must be accepted, and what the server returns must be readable.

Prefect (the reference) returns every datetime as ISO 8601 with ``T`` and a UTC designator
(``2026-11-26T03:47:45.681963Z``, no fraction when the microseconds are zero), stores instants with
microsecond precision, accepts any ISO 8601 offset, a space separator and 0-9 fraction digits on input (a
naive value means UTC), and answers 422 to input it cannot parse. Every check compares parsed instants,
never strings.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Callable

import pytest

from harness.checks.objects import (
    Created,
    create_deployment,
    create_flow,
    create_scheduled_run,
    create_work_pool,
    create_work_queue,
    scheduled_state,
    set_state,
)
from harness.checks.timestamps import (
    INPUT_FORMATS,
    INVALID_TIMESTAMPS,
    InputFormat,
    describe_instant,
    future_instant,
    has_non_utc_offset,
    read_instant,
    timestamp_problems,
)
from harness.target.api import ApiClient

pytestmark = pytest.mark.timestamps


def scheduled_time_of(run: Any) -> Any:
    """``state.state_details.scheduled_time`` of a run, or None when any level of it is missing."""
    return (((run or {}).get("state") or {}).get("state_details") or {}).get("scheduled_time")


def assert_conforming_timestamps(what: str, document: Any) -> None:
    problems = timestamp_problems(document)
    assert not problems, f"{what} returned timestamps a Prefect client mis-reads:\n" + "\n".join(
        f"  {p}" for p in problems
    )


def assert_same_instant(
    what: str, returned: Any, expected: dt.datetime, tolerance: dt.timedelta = dt.timedelta(0)
) -> None:
    """``returned`` names ``expected``, read as a Prefect client reads it (its format is output_format's to judge)."""
    assert isinstance(returned, str), f"{what} is {returned!r}, expected the instant {describe_instant(expected)}"
    instant = read_instant(returned, what)
    assert abs(instant - expected) <= tolerance, (
        f"{what} is {returned!r} = {describe_instant(instant)}, expected the instant {describe_instant(expected)} "
        f"(off by {(instant - expected).total_seconds() * 1e6:+.0f} µs)"
    )


# --- output format -------------------------------------------------------------------------------------------


def _flow_documents(api: ApiClient, created: Created, names: Callable[..., str]) -> list[tuple[str, Any]]:
    flow = create_flow(api, created, names("flow"))
    return [
        ("POST /flows/", flow),
        (f"GET /flows/{flow['id']}", api.get(f"/flows/{flow['id']}")),
        ("POST /flows/filter", api.post("/flows/filter", {"flows": {"id": {"any_": [flow["id"]]}}})),
    ]


def _flow_run_documents(api: ApiClient, created: Created, names: Callable[..., str]) -> list[tuple[str, Any]]:
    flow = create_flow(api, created, names("flow"))
    run = create_scheduled_run(api, flow["id"], names("run"), future_instant())
    path = f"/flow_runs/{run['id']}"
    documents = [("POST /flow_runs/", run), (f"GET {path}", api.get(path))]
    # Walk the run through its life so start_time, end_time and state timestamps are filled in too.
    for state_type in ("PENDING", "RUNNING", "COMPLETED"):
        documents.append((f"POST {path}/set_state {state_type}", set_state(api, run["id"], state_type)))
        documents.append((f"GET {path} ({state_type})", api.get(path)))
    documents.append(
        ("POST /flow_runs/filter", api.post("/flow_runs/filter", {"flow_runs": {"id": {"any_": [run["id"]]}}}))
    )
    documents.append(("GET /flow_run_states/", api.get(f"/flow_run_states/?flow_run_id={run['id']}")))
    return documents


def _deployment_documents(api: ApiClient, created: Created, names: Callable[..., str]) -> list[tuple[str, Any]]:
    flow = create_flow(api, created, names("flow"))
    schedule = {"interval": 3600, "anchor_date": "2026-01-01T00:00:00Z", "timezone": "UTC"}
    deployment = create_deployment(
        api, flow["id"], names("deployment"), schedules=[{"schedule": schedule, "active": False}], paused=True
    )
    path = f"/deployments/{deployment['id']}"
    return [
        ("POST /deployments/", deployment),
        (f"GET {path}", api.get(path)),
        (
            "POST /deployments/filter",
            api.post("/deployments/filter", {"deployments": {"id": {"any_": [deployment["id"]]}}}),
        ),
        (f"GET {path}/schedules", api.get(f"{path}/schedules")),
    ]


def _work_pool_documents(api: ApiClient, created: Created, names: Callable[..., str]) -> list[tuple[str, Any]]:
    pool = create_work_pool(api, created, names("pool"))
    queue = create_work_queue(api, pool["name"], names("queue"))
    return [
        ("POST /work_pools/", pool),
        (f"GET /work_pools/{pool['name']}", api.get(f"/work_pools/{pool['name']}")),
        ("POST /work_pools/{name}/queues", queue),
        ("GET /work_pools/{name}/queues/{queue}", api.get(f"/work_pools/{pool['name']}/queues/{queue['name']}")),
    ]


OBJECT_KINDS = {
    "flow": _flow_documents,
    "flow_run": _flow_run_documents,
    "deployment": _deployment_documents,
    "work_pool": _work_pool_documents,
}


@pytest.mark.parametrize("kind", OBJECT_KINDS)
def test_output_format(kind: str, api: ApiClient, created: Created, names: Callable[..., str]) -> None:
    """Every datetime in every response about a {kind} is RFC 3339 with 'T', an offset, and in UTC.

    The inputs are all UTC here, so a conforming server has no reason to answer any other offset.
    """
    for what, document in OBJECT_KINDS[kind](api, created, names):
        assert_conforming_timestamps(what, document)


@pytest.mark.parametrize("microsecond", [1, 123456, 999999])
def test_microsecond_round_trip(microsecond: int, api: ApiClient, created: Created, names: Callable[..., str]) -> None:
    """A scheduled time with microseconds comes back as the same instant: not truncated, not rounded."""
    flow = create_flow(api, created, names("flow"))
    instant = future_instant(microsecond)
    run = create_scheduled_run(api, flow["id"], names("run"), instant)
    for source, document in (("POST /flow_runs/", run), ("GET /flow_runs/{id}", api.get(f"/flow_runs/{run['id']}"))):
        for field in ("expected_start_time", "next_scheduled_start_time"):
            assert_same_instant(f"{source} {field}", document.get(field), instant)
        assert_same_instant(f"{source} state.state_details.scheduled_time", scheduled_time_of(document), instant)


@pytest.mark.parametrize("fmt", INPUT_FORMATS, ids=lambda f: f.id)
def test_input_format(fmt: InputFormat, api: ApiClient, created: Created, names: Callable[..., str]) -> None:
    """A scheduled time sent as {fmt.description} is stored as the instant it names, and read back in UTC."""
    flow = create_flow(api, created, names("flow"))
    instant = future_instant()
    sent = fmt.render(instant)
    expected = fmt.expected(instant)
    echoed = api.post(
        "/flow_runs/",
        {"flow_id": flow["id"], "name": names("run"), "state": scheduled_state(sent)},
        expect=201,
        what=f"POST /flow_runs/ with scheduled_time {sent!r} was rejected",
    )
    read_back = api.get(f"/flow_runs/{echoed['id']}")
    for source, document in (("POST /flow_runs/", echoed), ("GET /flow_runs/{id}", read_back)):
        for field in ("expected_start_time", "next_scheduled_start_time"):
            assert_same_instant(f"sent {sent!r}; {source} {field}", document.get(field), expected, fmt.tolerance)
        assert_same_instant(
            f"sent {sent!r}; {source} state.state_details.scheduled_time",
            scheduled_time_of(document),
            expected,
            fmt.tolerance,
        )
    for field in ("expected_start_time", "next_scheduled_start_time"):
        assert not has_non_utc_offset(read_back[field]), (
            f"sent {sent!r}; GET /flow_runs/{{id}} {field} is {read_back[field]!r}, not UTC; "
            "Prefect stores the instant and reads it back with 'Z'"
        )


@pytest.mark.parametrize("fmt", [f for f in INPUT_FORMATS if not f.tolerance], ids=lambda f: f.id)
def test_input_format_in_filter(fmt: InputFormat, api: ApiClient, created: Created, names: Callable[..., str]) -> None:
    """A filter bound sent as {fmt.description} means the same instant as the stored one.

    ``expected_start_time`` between two bounds both equal to the run's instant (inclusive) must find the run;
    a server that compares strings instead of instants misses it whenever the two are written differently.
    """
    flow = create_flow(api, created, names("flow"))
    instant = fmt.expected(future_instant())
    run = create_scheduled_run(api, flow["id"], names("run"), instant)
    bound = fmt.render(instant)
    body = {
        "flow_runs": {"id": {"any_": [run["id"]]}, "expected_start_time": {"after_": bound, "before_": bound}},
    }
    found = [
        r["id"]
        for r in api.post(
            "/flow_runs/filter", body, expect=200, what=f"POST /flow_runs/filter with bound {bound!r} was rejected"
        )
    ]
    assert found == [run["id"]], (
        f"POST /flow_runs/filter with expected_start_time after_ = before_ = {bound!r} "
        f"(the instant {describe_instant(instant)}) should return the run scheduled at exactly that instant "
        f"(stored as {run['expected_start_time']!r}); it returned {len(found)} runs. "
        "Hint: compare parsed instants, not timestamp strings"
    )


@pytest.mark.parametrize("case, value", INVALID_TIMESTAMPS, ids=[c for c, _ in INVALID_TIMESTAMPS])
def test_invalid_input_rejected(
    case: str, value: str, api: ApiClient, created: Created, names: Callable[..., str]
) -> None:
    """A scheduled time that is not a timestamp ({case}) is a client error (Prefect: 422), never 2xx or 5xx."""
    flow = create_flow(api, created, names("flow"))
    api.reject(
        "POST",
        "/flow_runs/",
        {"flow_id": flow["id"], "name": names("run"), "state": scheduled_state(value)},
        what=f"POST /flow_runs/ with scheduled_time {value!r}",
    )
