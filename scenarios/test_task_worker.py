"""Task worker: background tasks submitted with ``task.delay()`` run on a task worker that subscribes over a websocket.

Real-client behaviour relied on (Prefect 3.9.1): ``prefect.task_worker.serve(task)`` opens the websocket
``/task_runs/subscriptions/scheduled`` naming the task keys it serves, and executes each task run the target
pushes to it, reporting the run's states as events over the websocket ``/events/in`` (the server records them on
the task run). A second client's ``task.delay(n)`` creates the task run in SCHEDULED (``POST /task_runs/``), with
its parameters in shared result storage, and its ``future.result()`` waits for the run's final state (events from
``/events/out`` and ``GET /task_runs/{id}``) and reads the result. A task worker is neither a Runner nor a
work-pool worker: it never asks for flow runs. On Prefect's own server a websocket route that does not exist is
refused with 403; a task worker refused that way exits at once.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from harness.checks.objects import Created, task_runs_named
from harness.checks.proof import assert_subscribed
from harness.checks.schema import assert_traffic_matches
from harness.clients.actors import (
    Actor,
    read_submission,
    read_task_ledger,
    start_task_submitter,
    start_task_worker,
    write_tasks_file,
)
from harness.clients.progress import actor_can_still_act, subscriber_can_still_act
from harness.plugin.fixtures import ApiContract
from harness.target.api import ApiClient
from harness.waits import timeout_scale, wait_until

pytestmark = pytest.mark.task_worker

SUBSCRIPTION = "/task_runs/subscriptions/scheduled"
TASK_RUNS = 3  # several runs, so "each exactly once" can fail by a run executed twice or never
RESULT_TIMEOUT = 60.0
#: Seconds the submitter may take to start (import Prefect, submit its runs) before its own deadline begins.
START_MARGIN = 60.0


@dataclass
class TaskWorkerOutcome:
    worker: Actor
    submitter: Actor
    #: What the submitter wrote: ``task_run_ids`` and, per run, ``{"result": ...}`` or ``{"error": ...}``.
    submitted: dict[str, Any] | None
    #: The task runs as the target returns them (``POST /task_runs/filter`` on this module's unique task name).
    task_runs: list[dict[str, Any]]
    #: One entry per execution of the task body, appended by the process that ran it.
    executions: list[dict[str, Any]]
    failure: AssertionError | None = None


@pytest.fixture(scope="module")
def task_storage() -> Iterator[Path]:
    """Result storage the task worker and its submitter share, outside the reports: Prefect pickles each
    background run's context into it, the target's credentials included."""
    with tempfile.TemporaryDirectory(prefix="prefect-conformance-task-storage-") as path:
        yield Path(path)


@pytest.fixture(scope="module")
def task_worked(
    api: ApiClient,
    actors: Callable[..., Actor],
    module_names: Callable[..., str],
    module_created: Created,
    scenario_dir: Path,
    task_storage: Path,
) -> TaskWorkerOutcome:
    """A task worker serving one task, and a second client that delays ``TASK_RUNS`` runs of it and waits for
    their results."""
    task_name = module_names("task")
    tasks_file = write_tasks_file(scenario_dir / "tasks", task_name=task_name, marker=task_name)
    worker = actors(start_task_worker, tasks_file=tasks_file, storage=task_storage)
    out = scenario_dir / "task-submitter.json"
    submitter = actors(
        start_task_submitter,
        tasks_file=tasks_file,
        storage=task_storage,
        count=TASK_RUNS,
        out=out,
        timeout=RESULT_TIMEOUT * timeout_scale(),
    )

    def submitted() -> dict[str, Any] | None:
        found = read_submission(out)
        if found is None:
            subscriber_can_still_act(worker, SUBSCRIPTION)
            actor_can_still_act(submitter)
        return found

    try:
        outcome, failure = (
            wait_until(
                submitted,
                awaiting=f"the task submitter to get the results of {TASK_RUNS} delayed task runs",
                # The submitter writes its results by its own deadline (RESULT_TIMEOUT after it starts waiting); this
                # wait only guards against one that hangs, so its margin covers a slow start on a loaded machine, and
                # does not shrink with --timeout-scale (the wait scales what it is given: the margin is divided first).
                timeout=RESULT_TIMEOUT + START_MARGIN / timeout_scale(),
                interval=0.25,
                hint=f"the task worker gets the runs it executes only through WS {SUBSCRIPTION}",
            ),
            None,
        )
    except AssertionError as exc:
        outcome, failure = None, exc
    submitter.stop()
    worker.stop()  # the transcripts are complete once both clients are gone
    task_runs = task_runs_named(api, task_name)
    for run in task_runs:
        module_created.add(f"/task_runs/{run['id']}")
    return TaskWorkerOutcome(worker, submitter, outcome, task_runs, read_task_ledger(scenario_dir, task_name), failure)


def test_task_worker_subscribes_over_the_websocket(task_worked: TaskWorkerOutcome) -> None:
    """The task worker opens ``WS /task_runs/subscriptions/scheduled`` and the target accepts it."""
    assert_subscribed(task_worked.worker, SUBSCRIPTION)


def test_task_worker_never_polls_for_flow_runs(task_worked: TaskWorkerOutcome) -> None:
    """A task worker is neither a Runner nor a work-pool worker: it never polls either ``get_scheduled_flow_runs``."""
    assert_subscribed(task_worked.worker, SUBSCRIPTION)
    polled = sorted(
        {
            f"{e.method} {e.path}"
            for e in task_worked.worker.recorder.transcript()
            if e.path.endswith("/get_scheduled_flow_runs")
        }
    )
    assert not polled, f"the task worker polled {', '.join(polled)}; a task worker only subscribes to task runs"


def test_delayed_task_runs_complete_with_results_for_the_submitter(task_worked: TaskWorkerOutcome) -> None:
    """Every run ``task.delay(n)`` created reaches COMPLETED, and ``future.result()`` gives the submitter ``n * n``."""
    if task_worked.submitted is None:
        raise task_worked.failure or AssertionError("the submitter wrote nothing")
    results = task_worked.submitted["results"]
    expected = [{"result": n * n} for n in range(TASK_RUNS)]
    assert results == expected, (
        f"the submitter's future.result() calls gave {results}, expected {expected}. Task runs on the target: "
        f"{[(r.get('name'), (r.get('state') or {}).get('type')) for r in task_worked.task_runs]}. Hint: the task "
        "worker "
        "reports each run's states as events over WS /events/in; the target must record them on the task run"
    )
    states = {run["id"]: (run.get("state") or {}).get("type") for run in task_worked.task_runs}
    ids = task_worked.submitted["task_run_ids"]
    not_completed = {
        i: states.get(i, "not listed by POST /task_runs/filter") for i in ids if states.get(i) != "COMPLETED"
    }
    assert not not_completed, f"delayed task runs the target does not show as COMPLETED: {not_completed}"


def test_each_delayed_task_run_executes_exactly_once(task_worked: TaskWorkerOutcome) -> None:
    """Each delayed run is executed once, by the task worker (not the submitter), and counts one run."""
    if task_worked.submitted is None:
        raise task_worked.failure or AssertionError("the submitter wrote nothing")
    executed = sorted(entry["n"] for entry in task_worked.executions)
    assert executed == list(range(TASK_RUNS)), (
        f"the task body ran for inputs {executed}; each of {list(range(TASK_RUNS))} should run exactly once. "
        "Hint: the target must hand each scheduled task run to one subscriber, once"
    )
    pids = {entry["pid"] for entry in task_worked.executions}
    assert pids == {task_worked.worker.process.pid}, (
        f"the task runs executed in processes {sorted(pids)}, not in the task worker ({task_worked.worker.process.pid})"
    )
    counts = {run["id"]: run.get("run_count") for run in task_worked.task_runs}
    assert all(count == 1 for count in counts.values()) and len(counts) == TASK_RUNS, (
        f"run_count of the delayed task runs as the target returns them: {counts}; expected {TASK_RUNS} runs of 1"
    )


def test_answers_the_task_clients_got_match_prefects_schema(
    task_worked: TaskWorkerOutcome, api_contract: ApiContract
) -> None:
    """Every successful answer the task worker and the submitter got matches the schema Prefect's OpenAPI
    document gives its route."""
    answers = task_worked.worker.recorder.answers() + task_worked.submitter.recorder.answers()
    assert_traffic_matches(answers, api_contract.document, api_contract.version, "the task worker and the submitter")
