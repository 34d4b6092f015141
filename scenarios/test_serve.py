"""Serve: a flow's ``.serve()`` Runner runs its own deployment's scheduled runs, with no work pool.

Real-client behaviour relied on (Prefect 3.9.1, ``prefect.runner.Runner``): ``flow.serve(name=...)`` creates the
deployment itself (``POST /deployments/``, no work pool), then every ``PREFECT_RUNNER_POLL_FREQUENCY`` seconds
polls ``POST /deployments/get_scheduled_flow_runs`` with ``{"deployment_ids": [its deployment], "scheduled_before":
now + 10 s}`` (sent as ``"2026-11-26 03:50:12.441280+00:00"``), and runs each run it gets in a child process,
reporting PENDING, RUNNING and COMPLETED through ``POST /flow_runs/{id}/set_state``. It never polls a work pool.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest

from harness.checks.logs import assert_run_logs_read_back, await_line
from harness.checks.objects import Created, runs_of_deployment, scheduled_state
from harness.checks.proof import (
    assert_final_state,
    assert_never_used,
    assert_not_worker_run,
    assert_polled,
    assert_reported_states,
    quiet_degradation,
    runs_created_by,
)
from harness.checks.schema import assert_traffic_matches
from harness.checks.timestamps import utc_now
from harness.clients.actors import FLOW_LOG_LINE, SCHEDULE_INTERVAL, Actor, start_runner
from harness.clients.progress import actor_can_still_act, wait_for_deployment, wait_for_final_state
from harness.plugin.fixtures import ApiContract
from harness.reporting.results import MEASURED
from harness.target.api import ApiClient
from harness.waits import wait_until

pytestmark = pytest.mark.serve

POLL_PATH = "/deployments/get_scheduled_flow_runs"
DEPLOYMENT_TIMEOUT = 60.0
RUN_TIMEOUT = 60.0


@dataclass
class ServeOutcome:
    runner: Actor
    deployment: dict[str, Any]
    run: dict[str, Any]
    final: dict[str, Any] | None
    failure: AssertionError | None = None


@dataclass
class WaitingRunner:
    """The scheduled Runner's process, started with the module and held before ``.serve()`` until opened."""

    runner: Actor
    gate: Path
    flow_name: str
    deployment_name: str

    def open(self) -> Actor:
        self.gate.touch()
        return self.runner


@pytest.fixture(scope="module")
def scheduled_runner(
    actors: Callable[..., Actor], module_names: Callable[..., str], scenario_dir: Path
) -> WaitingRunner:
    """Start the scheduled Runner's process at once, held before ``.serve()``: it imports Prefect (2-3 s of CPU)
    while the on-demand Runner of :func:`served` works, and reaches the target only once that one has stopped."""
    flow_name, deployment_name = module_names("scheduled-flow"), module_names("scheduled-deployment")
    gate = scenario_dir / "scheduled-runner.gate"
    gate.unlink(missing_ok=True)
    runner = actors(
        start_runner,
        flow_name=flow_name,
        deployment_name=deployment_name,
        gate=gate,
        serve_kwargs={"interval": SCHEDULE_INTERVAL, "limit": 1},
        name="scheduled-runner",
    )
    return WaitingRunner(runner, gate, flow_name, deployment_name)


@pytest.fixture(scope="module")
def served(
    api: ApiClient,
    actors: Callable[..., Actor],
    module_names: Callable[..., str],
    module_created: Created,
    request: pytest.FixtureRequest,
) -> ServeOutcome:
    """Serve a flow, schedule one run of its deployment for now, and wait for the run to finish. (When the run
    holds checks of the scheduled Runner too, its process starts first, and waits.)"""
    if any("served_on_schedule" in item.fixturenames for item in request.session.items):
        request.getfixturevalue("scheduled_runner")
    flow_name, deployment_name = module_names("flow"), module_names("deployment")
    runner = actors(start_runner, flow_name=flow_name, deployment_name=deployment_name)
    deployment = wait_for_deployment(api, flow_name, deployment_name, actor=runner, timeout=DEPLOYMENT_TIMEOUT)
    module_created.add(f"/flows/{deployment['flow_id']}")
    run = api.post(f"/deployments/{deployment['id']}/create_flow_run", {"state": scheduled_state(utc_now())})
    try:
        final = wait_for_final_state(
            api,
            run["id"],
            actor=runner,
            timeout=RUN_TIMEOUT,
            poll_path=POLL_PATH,
            hint=f"the Runner only runs what POST {POLL_PATH} returns",
        )
        failure = None
        await_line(runner, run["id"], FLOW_LOG_LINE)  # its flow-run process sends its last lines as it exits
    except AssertionError as exc:
        final, failure = None, exc
    runner.stop()  # the transcript is complete once the Runner is gone
    return ServeOutcome(runner, deployment, run, final, failure)


def test_served_deployment_has_no_work_pool(served: ServeOutcome) -> None:
    """The deployment ``.serve()`` creates is not bound to a work pool."""
    assert served.deployment.get("work_pool_name") is None, (
        f"the deployment created by .serve() has work_pool_name {served.deployment.get('work_pool_name')!r}; "
        "Prefect leaves it null for served deployments"
    )


def test_runner_polls_deployments_endpoint(served: ServeOutcome) -> None:
    """The Runner asks ``POST /deployments/get_scheduled_flow_runs`` for its own deployment and gets 200."""
    assert_polled(served.runner, POLL_PATH, must_mention=served.deployment["id"])


def test_runner_never_polls_a_work_pool(served: ServeOutcome) -> None:
    """Serving is not a worker: the Runner never touches a work pool's polling endpoint."""
    assert_never_used(served.runner, "/work_pools/", "a .serve() Runner has no work pool", own_poll=POLL_PATH)


def test_served_run_completes(served: ServeOutcome, record_property: Callable[[str, str], None]) -> None:
    """A run scheduled for now reaches COMPLETED, executed by the Runner."""
    assert_final_state(served.final, served.failure, "COMPLETED")
    assert_reported_states(served.runner, served.run["id"], ("RUNNING", "COMPLETED"))
    if note := quiet_degradation(served.runner, "ran its run to COMPLETED"):
        record_property(MEASURED, note)


def test_served_run_logs_are_read_back(api: ApiClient, served: ServeOutcome) -> None:
    """What the served run's flow-run process logged (the flow's own line, non-ASCII and two lines long, and the
    engine's) went through the Runner's recorder, was accepted, and is read back by the run's id complete, in
    time order and unchanged."""
    assert_final_state(served.final, served.failure, "COMPLETED")
    assert_run_logs_read_back(api, served.runner, served.run["id"], FLOW_LOG_LINE)


def test_served_run_is_not_a_worker_run(served: ServeOutcome) -> None:
    """The run has no work pool, no work queue and no worker labels."""
    assert_final_state(served.final, served.failure, "COMPLETED")
    assert_not_worker_run(served.final)


# --- serve with a schedule: the server's scheduler creates the runs, the Runner executes them -------------------


@dataclass
class ScheduledServeOutcome:
    runner: Actor
    deployment: dict[str, Any]
    schedules: Any
    completed: dict[str, Any] | None
    failure: AssertionError | None = None


@pytest.fixture(scope="module")
def served_on_schedule(
    api: ApiClient, scheduled_runner: WaitingRunner, module_created: Created
) -> ScheduledServeOutcome:
    """``flow.serve(interval=1, limit=1)``; wait until the Runner has completed a run the server scheduled.

    ``limit=1`` (the Runner's own concurrency limit) keeps it to one flow-run process at a time: a new run is
    due every second, and on a loaded machine unlimited start-ups would crowd each other out of completing.

    Serving begins after the on-demand Runner of :func:`served` has stopped, not beside it: the scheduler's inserts
    for this deployment (up to 100 runs) keep the bundled reference's SQLite database busy, and under load the other
    Runner's ``POST /deployments/`` can get Prefect's "database is locked" 503 until its client gives up. Only its
    process starts early.
    """
    flow_name, deployment_name = scheduled_runner.flow_name, scheduled_runner.deployment_name
    runner = scheduled_runner.open()
    deployment = wait_for_deployment(api, flow_name, deployment_name, actor=runner, timeout=DEPLOYMENT_TIMEOUT)
    module_created.add(f"/flows/{deployment['flow_id']}")
    schedules = api.request("GET", f"/deployments/{deployment['id']}/schedules")
    try:
        runs = wait_until(
            lambda: runs_of_deployment(api, deployment["id"], "COMPLETED") or actor_can_still_act(runner, POLL_PATH),
            awaiting=f"the Runner to complete a run that the server scheduled for its interval-{SCHEDULE_INTERVAL}s "
            "deployment",
            timeout=DEPLOYMENT_TIMEOUT,
            interval=0.5,
            hint=f"the server's scheduler must create the runs, and the Runner must find them through POST {POLL_PATH}",
        )
        completed, failure = runs[0], None
    except AssertionError as exc:
        completed, failure = None, exc
    runner.stop()
    return ScheduledServeOutcome(runner, deployment, schedules, completed, failure)


def test_served_deployment_has_its_schedule(served_on_schedule: ScheduledServeOutcome) -> None:
    """``serve(interval=1)`` attaches one active 1-second interval schedule to the deployment."""
    answer = served_on_schedule.schedules
    schedules = answer.expect(200, what="reading the served deployment's schedules failed")
    intervals = [(s.get("schedule") or {}).get("interval") for s in schedules if s.get("active")]
    assert intervals == [float(SCHEDULE_INTERVAL)], (
        f"the served deployment should have one active schedule with interval {SCHEDULE_INTERVAL}; "
        f"GET /deployments/{{id}}/schedules answered {answer.text[:300]}"
    )


def test_runner_executes_server_scheduled_runs(served_on_schedule: ScheduledServeOutcome) -> None:
    """A run the *server* created from the schedule is executed to COMPLETED by the Runner.

    Proof: the run is marked auto-scheduled, the Runner never created a run itself, and the Runner reported the
    run's RUNNING and COMPLETED states.
    """
    outcome = served_on_schedule
    if outcome.completed is None:
        raise outcome.failure or AssertionError("no run completed")
    run = outcome.completed
    assert run.get("auto_scheduled") is True, (
        f"the completed run {run['name']!r} is not marked auto_scheduled (got {run.get('auto_scheduled')!r}); "
        "runs created by the server's scheduler are"
    )
    created = runs_created_by(outcome.runner)
    assert not created, f"the Runner created runs itself: {created}"
    assert_reported_states(outcome.runner, run["id"], ("RUNNING", "COMPLETED"))


def test_answers_the_runner_got_match_prefects_schema(served: ServeOutcome, api_contract: ApiContract) -> None:
    """Every successful answer the Runner got (its polls, its flow-run process's calls) matches the schema
    Prefect's OpenAPI document gives its route."""
    assert_traffic_matches(served.runner.recorder.answers(), api_contract.document, api_contract.version, "the Runner")
