"""Timestamps: the times the server sets itself (created, updated, state timestamps, start and end times, durations,
log times) fall within the request that set them, by the target's own clock, and follow the states they record.
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
    create_task_run,
    create_work_pool,
    create_work_queue,
)
from harness.checks.server_times import (
    TargetClock,
    TimeFindings,
    Window,
    clock_problem,
    during,
    order_problem,
    same_instant_problem,
    seconds_field,
    window_problem,
)
from harness.checks.timestamps import (
    describe_instant,
    future_instant,
    read_instant,
    utc_now,
)
from harness.errors import UnexpectedAnswer
from harness.reporting.results import MEASURED
from harness.target.api import ApiClient
from harness.waits import wait_until

pytestmark = pytest.mark.timestamps


# --- the times the server sets itself --------------------------------------------------------------------------


def test_target_clock_agrees_with_the_harness(target_clock: TargetClock, record_property: Callable[..., None]) -> None:
    """The target's clock, read from the created time of a flow it has just made and from its Date header, is
    within 3 s of the harness's.

    Every other check of a time the server sets reads it against the target's own clock, measured here, so a server
    on a wrong clock is told so once, by this check."""
    record_property(MEASURED, target_clock.describe())
    problem = clock_problem(target_clock)
    assert problem is None, problem


def _change(api: ApiClient, path: str, body: dict[str, Any]) -> Window:
    """PATCH ``path`` with ``body`` as Prefect's clients do (Prefect answers 204); the window it took."""
    return during(f"PATCH {path}", lambda: api.call("PATCH", path, body, expect=(200, 204)))[1]


def _flow_times(api: ApiClient, created: Created, names: Callable[..., str], found: TimeFindings) -> None:
    flow, window = during("POST /flows/", lambda: create_flow(api, created, names("flow")))
    found.set_during("POST /flows/", flow, ("created", "updated"), window)
    found.not_before("POST /flows/", flow, "created", "updated")
    path = f"/flows/{flow['id']}"
    window = _change(api, path, {"tags": ["pc-changed"]})
    found.moved(("POST /flows/", flow), (f"GET {path}", api.get(path)), "updated", window)


def _run_times(
    api: ApiClient, found: TimeFindings, kind: str, run: dict[str, Any], window: Window, change: dict[str, Any]
) -> None:
    """What a flow run or a task run (``kind``) must show: created, updated and its first state's timestamp set
    while it was created; updated moved by a PATCH and by every state it entered; each state's timestamp set while
    it was entered, start_time with RUNNING and end_time with COMPLETED."""
    source, path = f"POST /{kind}s/", f"/{kind}s/{run['id']}"
    found.set_during(source, run, ("created", "updated"), window)
    found.set_during(f"{source} state", run["state"] or {}, ("timestamp",), window)
    found.not_before(source, run, "created", "updated")
    window = _change(api, path, change)
    after = (f"GET {path}", api.get(path))
    found.moved((source, run), after, "updated", window)
    for state_type in ("PENDING", "RUNNING", "COMPLETED"):
        what = f"POST {path}/set_state {state_type}"
        answer, window = during(
            what, lambda: api.post(f"{path}/set_state", {"state": {"type": state_type}, "force": True})
        )
        found.set_during(f"{what} answered state", answer["state"] or {}, ("timestamp",), window)
        before, after = after, (f"GET {path} ({state_type})", api.get(path))
        found.moved(before, after, "updated", window)
        if state_type in ("RUNNING", "COMPLETED"):
            found.set_during(after[0], after[1], ("start_time" if state_type == "RUNNING" else "end_time",), window)


def _flow_run_times(api: ApiClient, created: Created, names: Callable[..., str], found: TimeFindings) -> None:
    flow = create_flow(api, created, names("flow"))
    run, window = during(
        "POST /flow_runs/", lambda: create_scheduled_run(api, flow["id"], names("run"), future_instant())
    )
    _run_times(api, found, "flow_run", run, window, {"tags": ["pc-changed"]})


def _task_run_times(api: ApiClient, created: Created, names: Callable[..., str], found: TimeFindings) -> None:
    flow = create_flow(api, created, names("flow"))
    flow_run = create_scheduled_run(api, flow["id"], names("run"), future_instant())
    task_run, window = during("POST /task_runs/", lambda: create_task_run(api, flow_run["id"], names("task")))
    _run_times(api, found, "task_run", task_run, window, {"name": names("renamed")})


def _deployment_times(api: ApiClient, created: Created, names: Callable[..., str], found: TimeFindings) -> None:
    """Prefect takes a new deployment's updated a few milliseconds before its created, so only their windows are
    checked at creation; a PATCH moves updated. A schedule change moves the schedule's own updated (not the
    deployment's, in Prefect). A poll sets last_polled, after it answers."""
    flow = create_flow(api, created, names("flow"))
    deployment, window = during(
        "POST /deployments/", lambda: create_deployment(api, flow["id"], names("deployment"), paused=True)
    )
    found.set_during("POST /deployments/", deployment, ("created", "updated"), window)
    path = f"/deployments/{deployment['id']}"
    window = _change(api, path, {"description": "changed by prefect-conformance"})
    found.moved(("POST /deployments/", deployment), (f"GET {path}", api.get(path)), "updated", window)
    schedule = {
        "schedule": {"interval": 3600, "anchor_date": "2026-01-01T00:00:00Z", "timezone": "UTC"},
        "active": False,
    }
    added, window = during(f"POST {path}/schedules", lambda: api.post(f"{path}/schedules", [schedule]))
    source = f"POST {path}/schedules"
    found.set_during(source, added[0], ("created", "updated"), window)
    found.not_before(source, added[0], "created", "updated")
    window = _change(api, f"{path}/schedules/{added[0]['id']}", {"schedule": {"interval": 1800}})
    changed = next((s for s in api.get(f"{path}/schedules") if s.get("id") == added[0]["id"]), {})
    found.moved((source, added[0]), (f"GET {path}/schedules", changed), "updated", window)
    polled, window = during(
        "POST /deployments/get_scheduled_flow_runs",
        lambda: (
            api.post("/deployments/get_scheduled_flow_runs", {"deployment_ids": [deployment["id"]]}),
            wait_for_field(api, path, "last_polled", "the deployment's last_polled to be set by its poll"),
        ),
    )
    found.set_during(f"GET {path} after the poll", polled[1], ("last_polled",), window)


def _work_pool_times(api: ApiClient, created: Created, names: Callable[..., str], found: TimeFindings) -> None:
    """A pool, a queue of it and a worker's heartbeats; a poll naming the queue sets its last_polled, after it
    answers."""
    pool, window = during("POST /work_pools/", lambda: create_work_pool(api, created, names("pool")))
    path = f"/work_pools/{pool['name']}"
    found.set_during("POST /work_pools/", pool, ("created", "updated"), window)
    found.not_before("POST /work_pools/", pool, "created", "updated")
    window = _change(api, path, {"description": "changed by prefect-conformance"})
    found.moved(("POST /work_pools/", pool), (f"GET {path}", api.get(path)), "updated", window)
    queue, window = during(f"POST {path}/queues", lambda: create_work_queue(api, pool["name"], names("queue")))
    queue_path = f"{path}/queues/{queue['name']}"
    found.set_during(f"POST {path}/queues", queue, ("created", "updated"), window)
    found.not_before(f"POST {path}/queues", queue, "created", "updated")
    window = _change(api, queue_path, {"description": "changed by prefect-conformance"})
    found.moved((f"POST {path}/queues", queue), (f"GET {queue_path}", api.get(queue_path)), "updated", window)
    polled, window = during(
        f"POST {path}/get_scheduled_flow_runs",
        lambda: (
            api.post(f"{path}/get_scheduled_flow_runs", {"work_queue_names": [queue["name"]]}),
            wait_for_field(api, queue_path, "last_polled", "the queue's last_polled to be set by a poll naming it"),
        ),
    )
    found.set_during(f"GET {queue_path} after the poll", polled[1], ("last_polled",), window)
    worker_name = names("worker")
    heartbeats = []
    for beat in ("first", "second"):
        what = f"POST {path}/workers/heartbeat ({beat})"
        worker, window = during(
            what,
            lambda: (
                api.call(
                    "POST",
                    f"{path}/workers/heartbeat",
                    {"name": worker_name, "heartbeat_interval_seconds": 30},
                    expect=(200, 204),
                ),
                next((w for w in api.post(f"{path}/workers/filter", {}) if w.get("name") == worker_name), None),
            )[1],
        )
        assert worker is not None, f"after {what}, POST {path}/workers/filter does not list the worker {worker_name!r}"
        heartbeats.append((f"POST {path}/workers/filter after the {beat} heartbeat", worker))
        if beat == "first":
            found.set_during(heartbeats[0][0], worker, ("created", "last_heartbeat_time"), window)
    found.moved(heartbeats[0], heartbeats[1], "last_heartbeat_time", window)


def _log_times(api: ApiClient, created: Created, names: Callable[..., str], found: TimeFindings) -> None:
    flow = create_flow(api, created, names("flow"))
    run = create_scheduled_run(api, flow["id"], names("run"), future_instant())
    log = {
        "name": "prefect.flow_runs",
        "level": 20,
        "message": names("log"),
        "timestamp": describe_instant(utc_now()),
        "flow_run_id": run["id"],
    }
    _, window = during("POST /logs/", lambda: api.call("POST", "/logs/", [log], expect=(200, 201)))
    stored = api.post("/logs/filter", {"logs": {"flow_run_id": {"any_": [run["id"]]}}})
    assert len(stored) == 1, (
        f"POST /logs/filter for the run's flow_run_id should return the 1 log it was sent; got {stored!r}"
    )
    found.set_during("POST /logs/filter", stored[0], ("created", "updated"), window)
    found.not_before("POST /logs/filter", stored[0], "created", "updated")


SERVER_SET_TIMES = {
    "flow": _flow_times,
    "flow_run": _flow_run_times,
    "task_run": _task_run_times,
    "deployment": _deployment_times,
    "work_pool": _work_pool_times,
    "log": _log_times,
}


@pytest.mark.parametrize("kind", SERVER_SET_TIMES)
def test_server_set_times(
    kind: str, api: ApiClient, created: Created, names: Callable[..., str], target_clock: TargetClock
) -> None:
    """Every time the server sets on a {kind} (created, updated, a state's timestamp, start_time, end_time,
    last_polled, a worker's last_heartbeat_time) lies within the request that set it, by the target's clock; updated
    is not before created and moves on to the time of every change.

    Clients, the UI and their filters sort and page by these (``UPDATED_DESC``, a state's timestamp, start_time)."""
    found = TimeFindings(target_clock)
    SERVER_SET_TIMES[kind](api, created, names, found)
    found.assert_none(f"the times the server set on a {kind}")


def wait_for_field(api: ApiClient, path: str, field: str, awaiting: str) -> Any:
    """``GET path`` until its ``field`` is set (Prefect sets last_polled in the background, after the poll answers)."""

    def probe() -> Any:
        document = api.get(path)
        assert document.get(field), f"GET {path} answered {field} = {document.get(field)!r}"
        return document

    return wait_until(
        probe,
        awaiting=awaiting,
        timeout=15,
        interval=0.1,
        hint=f"a poll must set {field}; Prefect does it right after answering the poll",
    )


#: How far ``total_run_time`` and ``estimated_start_time_delta`` (seconds, as JSON numbers) may be from the
#: difference of the instants they are made of: the float's last digits.
SECONDS_TOLERANCE = 2e-6


def _enter_states(api: ApiClient, kind: str, run_id: str) -> list[tuple[str, dict[str, Any]]]:
    """PENDING, RUNNING and COMPLETED, one right after the other (most often within one second): each answer's state."""
    path = f"/{kind}s/{run_id}/set_state"
    return [
        (state_type, api.post(path, {"state": {"type": state_type}, "force": True})["state"] or {})
        for state_type in ("PENDING", "RUNNING", "COMPLETED")
    ]


@pytest.mark.parametrize("kind", ["flow_run", "task_run"])
def test_state_times_follow_the_states(
    kind: str, api: ApiClient, created: Created, names: Callable[..., str], target_clock: TargetClock
) -> None:
    """A {kind}'s states, entered one right after the other, read back with strictly increasing timestamps in the
    order they were entered (to the microsecond, as Prefect keeps them), and the run's start_time, end_time,
    total_run_time and estimated_start_time_delta agree with them.

    The run was due 30 s before it started, so its estimated_start_time_delta is the server's own lateness
    arithmetic: the time since it was due while it waits, start_time minus expected_start_time once it has run."""
    flow = create_flow(api, created, names("flow"))
    due = utc_now() - dt.timedelta(seconds=30)
    flow_run = create_scheduled_run(api, flow["id"], names("run"), due)
    run = flow_run if kind == "flow_run" else create_task_run(api, flow_run["id"], names("task"))
    path = f"/{kind}s/{run['id']}"
    found = TimeFindings(target_clock)
    if kind == "flow_run":  # a task run's expected_start_time is its creation: it is not late while it waits
        waiting, window = during(f"GET {path}", lambda: api.get(path))
        lateness = dt.timedelta(seconds=seconds_field(waiting, "estimated_start_time_delta", f"GET {path}"))
        found.add(
            window_problem(
                f"GET {path} expected_start_time + estimated_start_time_delta",
                describe_instant(read_instant(waiting["expected_start_time"], "expected_start_time") + lateness),
                window,
                target_clock,
            )
        )
    entered = [("first", run["state"] or {})] + _enter_states(api, kind, run["id"])
    states_path = f"/{kind}_states/?{kind}_id={run['id']}"
    listed = api.get(states_path)
    if not isinstance(listed, list) or not all(isinstance(state, dict) for state in listed):
        raise UnexpectedAnswer(f"GET {states_path} answered {str(listed)[:300]}; Prefect answers a list of states")
    stored = {state.get("id"): state for state in listed}
    final = api.get(path)
    missing = [
        f"the {state_type} state {state.get('id')}" for state_type, state in entered if state.get("id") not in stored
    ]
    if missing:
        raise UnexpectedAnswer(
            f"GET {states_path} does not list {', '.join(missing)}, which the run entered; it "
            f"listed {len(stored)} states. Hint: keep every state a run enters in its history"
        )
    for (earlier_type, earlier), (later_type, later) in zip(entered, entered[1:]):
        for source, first, second in (
            ("set_state answer", earlier, later),
            (f"GET {states_path}", stored.get(earlier["id"], {}), stored.get(later["id"], {})),
        ):
            found.add(
                order_problem(
                    (f"{source}: the {earlier_type} state's timestamp", first.get("timestamp")),
                    (f"the {later_type} state's timestamp", second.get("timestamp")),
                    strictly=True,
                    hint="keep state timestamps to the microsecond and never let a later state's be "
                    "earlier or equal: clients order a run's states by them",
                )
            )
    running, completed = entered[2][1], entered[3][1]
    found.add(
        same_instant_problem(
            f"GET {path} start_time",
            final.get("start_time"),
            "the RUNNING state's timestamp",
            running.get("timestamp"),
            reason="Prefect sets start_time to the first RUNNING state's timestamp",
        )
    )
    found.add(
        same_instant_problem(
            f"GET {path} end_time",
            final.get("end_time"),
            "the COMPLETED state's timestamp",
            completed.get("timestamp"),
            reason="Prefect sets end_time to the final state's timestamp",
        )
    )
    found.add(
        same_instant_problem(
            f"GET {path} state.timestamp",
            (final.get("state") or {}).get("timestamp"),
            "the COMPLETED state's timestamp",
            completed.get("timestamp"),
            reason="the run's state is the last one it entered",
        )
    )
    ran = read_instant(completed.get("timestamp"), "COMPLETED timestamp") - read_instant(
        running.get("timestamp"), "RUNNING timestamp"
    )
    if abs(seconds_field(final, "total_run_time", f"GET {path}") - ran.total_seconds()) > SECONDS_TOLERANCE:
        found.add(
            f"GET {path} total_run_time is {final.get('total_run_time')!r}, but the run was RUNNING for "
            f"{ran.total_seconds():.6f} s (from its RUNNING state's timestamp to its COMPLETED state's)"
        )
    late = read_instant(final.get("start_time"), "start_time") - read_instant(
        final.get("expected_start_time"), "expected_start_time"
    )
    if (
        abs(seconds_field(final, "estimated_start_time_delta", f"GET {path}") - max(0.0, late.total_seconds()))
        > SECONDS_TOLERANCE
    ):
        found.add(
            f"GET {path} estimated_start_time_delta is {final.get('estimated_start_time_delta')!r}, but it started "
            f"{late.total_seconds():.6f} s after its expected_start_time {final.get('expected_start_time')!r} "
            "(Prefect: start_time - expected_start_time, or 0 if it started early)"
        )
    found.assert_none(f"the state times of a {kind}")
