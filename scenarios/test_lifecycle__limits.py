"""Lifecycle, concurrency: global and tag concurrency limits keep their holders apart, a deployment's limit queues
its second run, three workers run each of six runs once, a task's retries are kept (the ``lifecycle`` feature;
what Prefect does is told in ``test_lifecycle.py``).

A module of its own, with its own Runner and worker, so that pytest runs it beside the rest of the feature.
"""

from __future__ import annotations

from typing import Any, Callable

import pytest

from harness.checks.crowd import crowd, settled_runs
from harness.checks.holders import assert_holders_apart, ledger_span
from harness.checks.lifecycle import CANCEL_TIMEOUT, RUN_TIMEOUT, Lifecycle, lifecycle, second_wave
from harness.checks.objects import Created
from harness.checks.orchestration import active_slots, describe_history, state_history, task_runs_of
from harness.clients.actors import Actor
from harness.clients.lifecycle import read_ledger
from harness.clients.progress import describe_state, wait_for_final_state
from harness.target.api import ApiClient
from harness.waits import service_loop, wait_until

pytestmark = pytest.mark.lifecycle
__all__ = ["lifecycle"]  # the module-scoped fixture these checks share, imported from harness.checks.lifecycle


def test_a_global_concurrency_limit_keeps_its_holders_apart(lifecycle: Lifecycle, api: ApiClient) -> None:
    """Two runs, one served and one the worker's, each take the same one-slot global concurrency limit with
    Prefect's ``concurrency(name, occupy=1)`` (``POST /v2/concurrency_limits/increment``, or
    ``.../increment-with-lease``
    since 3.4) and hold it until the target has answered the other's ask: the target granted the slot once while it
    was held (its answers, from the clients' traffic), they never hold it at the same time (the flows' own times),
    and the slot is free again once both have ended."""
    second_wave(lifecycle)
    if isinstance(lifecycle.limit, Exception):
        raise lifecycle.limit
    assert_holders_apart(lifecycle, api, "limited", lifecycle.limit, "the one-slot limit")
    slots = active_slots(api, lifecycle.limit)
    assert slots == 0, (
        f"after both holders ended, GET /v2/concurrency_limits/{{name}} answered active_slots {slots}; each holder "
        "released its slot (POST /v2/concurrency_limits/decrement, or the lease's release)"
    )


def test_a_tag_concurrency_limit_keeps_its_tasks_apart(lifecycle: Lifecycle, api: ApiClient) -> None:
    """Two runs, one served and one the worker's, each run a task tagged with a tag whose task-run concurrency limit
    (v1, ``POST /concurrency_limits/``) is 1, and the task holds its slot until the target has answered the other's
    ask: the target granted it once while it was held, and the two tasks never run at the same time. A target without
    task-run concurrency limits is ``unsupported`` here."""
    second_wave(lifecycle)
    if isinstance(lifecycle.tag, Exception):
        raise lifecycle.tag
    assert_holders_apart(lifecycle, api, "tagged", lifecycle.tag, "the task-run concurrency limit on tag")


def test_a_deployment_concurrency_limit_queues_the_second_run(lifecycle: Lifecycle, api: ApiClient) -> None:
    """A deployment created with ``concurrency_limit: 1`` and two runs due at once, both handed to the worker: the
    target refuses the second run's PENDING with AwaitingConcurrencySlot (a SCHEDULED state, due ``--service-loops
    concurrency_slot_wait`` seconds later: 30 by default) until the first has ended, so their flow code never
    overlaps, and both complete."""
    second_wave(lifecycle)
    if isinstance(lifecycle.queued, Exception):
        raise lifecycle.queued
    wait = service_loop("concurrency_slot_wait")
    actor = lifecycle.actors["worker"]
    finals = [
        wait_for_final_state(
            api,
            run["id"],
            actor=actor,
            timeout=2 * RUN_TIMEOUT + 2 * wait,
            poll_path=lifecycle.poll_path("worker"),
            hint="the worker runs the queued run once the target hands it out again",
        )
        for run in lifecycle.queued
    ]
    histories = [state_history(api, run["id"]) for run in lifecycle.queued]
    assert all(final["state"]["type"] == "COMPLETED" for final in finals), (
        f"the two runs of the deployment with concurrency_limit 1 ended {[describe_state(f) for f in finals]}; "
        f"their states: {' | '.join(describe_history(h) for h in histories)}"
    )
    spans = sorted(filter(None, (ledger_span(lifecycle, run["id"], "started", "finished") for run in lifecycle.queued)))
    assert len(spans) == 2 and spans[0][1] <= spans[1][0], (
        f"the flow code of the two runs ran from {[round(b - spans[0][0], 2) for b, _ in spans]} s to "
        f"{[round(e - spans[0][0], 2) for _, e in spans]} s: side by side, though their deployment's concurrency_limit "
        f"is 1. Their states: {' | '.join(describe_history(h) for h in histories)}. Prefect refuses the second run's "
        "PENDING with AwaitingConcurrencySlot while the first holds the slot"
    )
    assert any(
        s.get("name") == "AwaitingConcurrencySlot" and s.get("type") == "SCHEDULED" for h in histories for s in h
    ), (
        f"neither run was ever AwaitingConcurrencySlot (their states: "
        f"{' | '.join(describe_history(h) for h in histories)}); Prefect answers the second run's PENDING with it"
    )


def test_every_run_is_executed_exactly_once_among_three_workers(
    lifecycle: Lifecycle,
    api: ApiClient,
    actors: Callable[..., Actor],
    module_names: Callable[..., str],
    module_created: Created,
) -> None:
    """Three process workers start together on one pool where six runs are already due: every run ends COMPLETED
    and its flow code ran exactly once (counted from the flows' own ledger, not from the server's word). Prefect
    lets one worker's PENDING win and rejects the others'."""
    runs = crowd(lifecycle, api, actors, module_names, module_created)
    crowd_actors = [a for name, a in lifecycle.actors.items() if name.startswith("crowd-worker-")]
    finals = settled_runs(api, runs, crowd_actors, f"/work_pools/{lifecycle.crowd_pool}/get_scheduled_flow_runs")
    starts = {
        run["id"]: [e["pid"] for e in read_ledger(lifecycle.flows_dir, run["id"]) if e["event"] == "started"]
        for run in runs
    }
    wrong = {
        final["id"]: (starts[final["id"]], final)
        for final in finals
        if len(starts[final["id"]]) != 1 or final["state"]["type"] != "COMPLETED"
    }
    assert not wrong, (
        f"of {len(runs)} runs due at once to three workers, {len(wrong)} did not run their flow code once and "
        "complete: "
        + "; ".join(
            f"{run_id} ran {len(pids)} times and ended {describe_state(final)}, its states: "
            f"{describe_history(state_history(api, run_id))}"
            for run_id, (pids, final) in wrong.items()
        )
        + ". Prefect accepts one PENDING per run and rejects a second worker's, and each run completes"
    )


def test_a_tasks_retries_are_kept(lifecycle: Lifecycle, api: ApiClient) -> None:
    """A worker's run of a flow whose task (``retries=1``) fails its first try and completes on its second, in the
    flow's process: the
    target keeps the task run (from the client's task-run events, or its API calls before 3.1) COMPLETED with
    ``run_count`` 2, and its states show two RUNNING states before COMPLETED."""
    second_wave(lifecycle)
    run = lifecycle.runs["worker"]["quick"]
    wait_for_final_state(
        api, run["id"], actor=lifecycle.actors["worker"], timeout=RUN_TIMEOUT, poll_path=lifecycle.poll_path("worker")
    )

    def kept() -> dict[str, Any]:
        tasks = task_runs_of(api, run["id"])
        done = [t for t in tasks if (t.get("state") or {}).get("type") == "COMPLETED"]
        if done:
            return done[0]
        raise AssertionError(f"its task runs: {[describe_state(t) for t in tasks] or 'none'}")

    task_run = wait_until(
        kept,
        awaiting=f"the target to keep the COMPLETED task run of flow run {run['id']}",
        timeout=CANCEL_TIMEOUT,
        interval=0.25,
        hint="Prefect records task runs from the prefect.task-run.* events its clients send "
        "(WS /events/in), in its task-run recorder service",
    )
    tries = [e for e in read_ledger(lifecycle.flows_dir, run["id"]) if e["event"] == "task-try"]
    states = api.get(f"/task_run_states/?task_run_id={task_run['id']}")
    states = sorted(states if isinstance(states, list) else [], key=lambda s: str(s.get("timestamp")))
    kinds = [s.get("type") for s in states]
    assert task_run.get("run_count") == 2 and kinds.count("RUNNING") >= 2 and kinds[-1:] == ["COMPLETED"], (
        f"the task that ran {len(tries)} times (failing once, retries=1) is kept with run_count "
        f"{task_run.get('run_count')!r} and states {describe_history(states)}; Prefect keeps run_count 2 and a "
        "RUNNING state for each try, then COMPLETED"
    )
