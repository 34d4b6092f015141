"""Worker: a process work-pool worker polls its pool, registers, and runs the pool's runs in new processes.

Real-client behaviour relied on (Prefect 3.9.1, ``prefect worker start --type process``): the worker registers
with the pool (3.9 opens the websocket ``/work_pools/{name}/workers/connect`` with the ``prefect`` subprotocol;
older workers send ``POST /work_pools/{name}/workers/heartbeat``), polls ``POST
/work_pools/{name}/get_scheduled_flow_runs``
every ``PREFECT_WORKER_QUERY_SECONDS``, and submits each run it gets to the pool's infrastructure: for a
process pool, a new ``python -m prefect.engine`` process that loads the deployment's entrypoint from disk
(after its pull step sets the working directory) and reports RUNNING and COMPLETED. The worker labels the run
with its own and its pool's names. It never polls ``POST /deployments/get_scheduled_flow_runs``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import pytest

from harness.checks.logs import assert_run_logs_read_back, await_line
from harness.checks.objects import (
    Created,
    create_local_code_deployment,
    create_work_pool,
    scheduled_state,
    watch_heartbeats,
)
from harness.checks.proof import (
    assert_final_state,
    assert_never_used,
    assert_polled,
    assert_reported_states,
    quiet_degradation,
    registration_attempts,
    transcript_digest,
)
from harness.checks.schema import assert_traffic_matches
from harness.checks.timestamps import read_instant, utc_now
from harness.clients.actors import FAST_CLIENT_SETTINGS, FLOW_LOG_LINE, Actor, start_worker
from harness.clients.progress import wait_for_final_state
from harness.plugin.fixtures import ApiContract
from harness.reporting.results import MEASURED
from harness.target.api import ApiClient

pytestmark = pytest.mark.worker

RUN_TIMEOUT = 90.0
#: How long to watch for the worker's heartbeat to move: three of its intervals (PREFECT_WORKER_HEARTBEAT_SECONDS).
HEARTBEAT_WATCH = 3 * float(FAST_CLIENT_SETTINGS["PREFECT_WORKER_HEARTBEAT_SECONDS"])


@dataclass
class WorkerOutcome:
    worker: Actor
    worker_name: str
    pool_name: str
    run: dict[str, Any]
    final: dict[str, Any] | None
    registered: Any
    #: The worker's ``last_heartbeat_time`` values seen while it idled after the run (until one moved).
    heartbeats: list[str]
    #: The worker's ``status`` in each of those listings.
    statuses: list[str]
    failure: AssertionError | None = None


@pytest.fixture(scope="module")
def worked(
    api: ApiClient,
    actors: Callable[..., Actor],
    module_names: Callable[..., str],
    module_created: Created,
    scenario_dir,
) -> WorkerOutcome:
    """A process pool, a deployment of local flow code bound to it, a worker, and one run scheduled for now."""
    pool_name, worker_name, flow_name = module_names("pool"), module_names("worker"), module_names("flow")
    create_work_pool(api, module_created, pool_name)
    deployment = create_local_code_deployment(
        api,
        module_created,
        scenario_dir / "flow",
        pool_name=pool_name,
        flow_name=flow_name,
        deployment_name=module_names("deployment"),
    )
    worker = actors(start_worker, pool_name=pool_name, worker_name=worker_name)
    run = api.post(f"/deployments/{deployment['id']}/create_flow_run", {"state": scheduled_state(utc_now())})
    try:
        final = wait_for_final_state(
            api,
            run["id"],
            actor=worker,
            timeout=RUN_TIMEOUT,
            poll_path=f"/work_pools/{pool_name}/get_scheduled_flow_runs",
            hint=f"the worker only runs what POST /work_pools/{pool_name}/get_scheduled_flow_runs returns",
        )
        failure = None
    except AssertionError as exc:
        exc.args = (f"{exc}\nWorker transcript:\n{transcript_digest(worker)}",)
        final, failure = None, exc
    registered = api.request("POST", f"/work_pools/{pool_name}/workers/filter", json_body={})
    statuses: list[str] = []
    heartbeats = watch_heartbeats(api, pool_name, worker_name, timeout=HEARTBEAT_WATCH, statuses=statuses)
    if final is not None:
        await_line(worker, run["id"], FLOW_LOG_LINE)  # sent long since, as a rule: the worker idled meanwhile
    worker.stop()
    return WorkerOutcome(worker, worker_name, pool_name, run, final, registered, heartbeats, statuses, failure)


def test_worker_polls_work_pool_endpoint(worked: WorkerOutcome) -> None:
    """The worker asks ``POST /work_pools/{name}/get_scheduled_flow_runs`` for its pool and gets 200."""
    assert_polled(worked.worker, f"/work_pools/{worked.pool_name}/get_scheduled_flow_runs")


def test_worker_never_polls_deployments_endpoint(worked: WorkerOutcome) -> None:
    """A worker is not a Runner: it never asks for runs by deployment."""
    assert_never_used(
        worked.worker,
        "/deployments/get_scheduled_flow_runs",
        "a worker finds runs through its pool",
        own_poll=f"/work_pools/{worked.pool_name}/get_scheduled_flow_runs",
    )


def test_worker_registers_with_its_pool(worked: WorkerOutcome) -> None:
    """The worker appears in ``POST /work_pools/{name}/workers/filter`` with a heartbeat time."""
    how = registration_attempts(worked.worker, worked.pool_name)
    workers = {w.get("name"): w for w in worked.registered.expect(200, what="listing the pool's workers failed")}
    assert worked.worker_name in workers, (
        f"worker {worked.worker_name!r} is not registered with pool {worked.pool_name!r}: POST "
        f"/work_pools/{{name}}/workers/filter listed {sorted(workers) or 'no workers'}. The worker tried: {how}. "
        "Hint: 3.9 workers register through the websocket /work_pools/{name}/workers/connect (subprotocol 'prefect')"
    )
    heartbeat = workers[worked.worker_name].get("last_heartbeat_time")
    assert heartbeat, (
        f"worker {worked.worker_name!r} is listed without last_heartbeat_time: {workers[worked.worker_name]}"
    )
    read_instant(heartbeat, f"last_heartbeat_time of worker {worked.worker_name!r}")


def test_worker_stays_online_with_a_moving_heartbeat(worked: WorkerOutcome) -> None:
    """While the worker idles, the pool lists it ``ONLINE`` and its ``last_heartbeat_time`` moves forward."""
    workers = {w.get("name"): w for w in worked.registered.expect(200, what="listing the pool's workers failed")}
    listed = workers.get(worked.worker_name)
    assert listed, f"worker {worked.worker_name!r} is not listed by POST /work_pools/{{name}}/workers/filter"
    # A worker late with a heartbeat (a loaded machine, a slow target) is rightly OFFLINE until its next one: the
    # listings while its heartbeat is watched moving count too.
    statuses = [listed.get("status"), *worked.statuses]
    problems = []
    if "ONLINE" not in statuses:
        problems.append(
            f"worker {worked.worker_name!r} is listed with status {listed.get('status')!r} while it heartbeats (in all "
            f"{len(statuses)} listings over the next {HEARTBEAT_WATCH:.0f} s: {sorted(set(map(str, statuses)))}); "
            "Prefect lists a worker ONLINE until it misses its heartbeats"
        )
    seen = [read_instant(value, f"last_heartbeat_time of worker {worked.worker_name!r}") for value in worked.heartbeats]
    if not (len(seen) >= 2 and seen[-1] > seen[0]):
        problems.append(
            f"the worker's last_heartbeat_time did not move in {HEARTBEAT_WATCH:.0f} s (it heartbeats every "
            f"{FAST_CLIENT_SETTINGS['PREFECT_WORKER_HEARTBEAT_SECONDS']} s): seen {worked.heartbeats}. How it "
            f"registered: {registration_attempts(worked.worker, worked.pool_name)}"
        )
    assert not problems, "; and ".join(problems)


def test_worker_run_completes(worked: WorkerOutcome, record_property: Callable[[str, str], None]) -> None:
    """A run scheduled for now reaches COMPLETED; the worker and its flow-run process reported its states."""
    assert_final_state(worked.final, worked.failure, "COMPLETED")
    assert_reported_states(worked.worker, worked.run["id"], ("PENDING", "RUNNING", "COMPLETED"))
    if note := quiet_degradation(worked.worker, "ran its run to COMPLETED"):
        record_property(MEASURED, note)


def test_worker_runs_flow_in_a_new_process(worked: WorkerOutcome) -> None:
    """A process pool runs each flow run in a new process: the run records an ``infrastructure_pid`` that is not the
    worker's."""
    assert_final_state(worked.final, worked.failure, "COMPLETED")
    pid = worked.final.get("infrastructure_pid")
    assert pid, "the completed run has no infrastructure_pid: the server dropped what the worker reported"
    assert str(pid).rsplit(":", 1)[-1] != str(worked.worker.process.pid), (
        f"the run ran inside the worker process ({pid})"
    )


def test_worker_run_carries_pool_and_worker_labels(worked: WorkerOutcome) -> None:
    """The run names its pool and queue, and carries the worker's labels."""
    assert_final_state(worked.final, worked.failure, "COMPLETED")
    run, labels = worked.final, worked.final.get("labels") or {}
    expected = {
        "work_pool_name": worked.pool_name,
        "work_queue_name": "default",
        "labels.prefect.worker.name": worked.worker_name,
        "labels.prefect.worker.type": "process",
        "labels.prefect.work-pool.name": worked.pool_name,
    }
    actual = {
        key: labels.get(key.removeprefix("labels.")) if key.startswith("labels.") else run.get(key) for key in expected
    }
    wrong = {k: actual[k] for k in expected if actual[k] != expected[k]}
    assert not wrong, f"the worker's run should carry {expected}; the target returned {wrong}"
    assert run.get("work_queue_id"), "the worker's run has no work_queue_id"


def test_worker_run_logs_are_read_back(api: ApiClient, worked: WorkerOutcome) -> None:
    """What the worker's run logged in its flow-run process (the flow's own line, non-ASCII and two lines long, and
    the engine's) went through the worker's recorder, was accepted, and is read back by the run's id complete, in
    time order and unchanged."""
    assert_final_state(worked.final, worked.failure, "COMPLETED")
    assert_run_logs_read_back(api, worked.worker, worked.run["id"], FLOW_LOG_LINE)


def test_answers_the_worker_got_match_prefects_schema(worked: WorkerOutcome, api_contract: ApiContract) -> None:
    """Every successful answer the worker got (its polls, its pool and queue reads, its flow-run process's
    calls) matches the schema Prefect's OpenAPI document gives its route."""
    assert_traffic_matches(worked.worker.recorder.answers(), api_contract.document, api_contract.version, "the worker")
