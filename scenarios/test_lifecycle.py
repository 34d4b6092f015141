"""Lifecycle: the life of a run beyond scheduling, with real clients: cancellation, crashes, pauses, retries,
concurrency limits and exactly-once execution.

Behaviour relied on (Prefect 3.9.1 server and clients):

- A user cancels a run by proposing ``CANCELLING`` (``POST /flow_runs/{id}/set_state``, unforced: what
  ``prefect flow-run cancel`` sends). The server accepts it for a RUNNING run; the client that runs it (a
  ``.serve()`` Runner or a process worker) hears of it from the ``prefect.flow-run.Cancelling`` event over ``WS
  /events/out``, or from its fallback poll of ``POST /flow_runs/filter``, kills the flow-run process, runs the flow's
  ``on_cancellation`` hooks and sets ``CANCELLED``.
- A run that no infrastructure holds yet (SCHEDULED, no ``infrastructure_pid``) is not left CANCELLING: the server
  answers the proposal with ``CANCELLED`` at once (``BypassCancellingFlowRunsWithNoInfra`` in
  ``server/orchestration/core_policy.py``), and no client starts it.
- A flow-run process that dies (SIGKILL) leaves its run RUNNING until the client that started it sees the exit code
  and proposes ``CRASHED``.
- A flow that pauses (``pause_flow_run``) proposes PAUSED/Paused with its ``pause_timeout`` and waits in its process,
  reading its run every second; ``POST /flow_runs/{id}/resume`` sets RUNNING and it carries on. One that suspends
  (``suspend_flow_run``) proposes PAUSED/Suspended with ``pause_reschedule`` and exits; the resume sets
  SCHEDULED/Resuming and the client runs it again from the top.
- A flow with ``retries=2, retry_delay_seconds=1`` that fails proposes ``FAILED``; the server rejects it with
  ``AwaitingRetry``, a SCHEDULED-type state whose ``scheduled_time`` is the retry delay after the failure
  (``RetryFailedFlows``); the flow's own process waits for it and proposes ``Retrying`` (RUNNING). The run ends
  COMPLETED with ``run_count`` 3. A task with ``retries=1`` that fails once is kept (by the task-run recorder, from
  the client's ``prefect.task-run.*`` events) COMPLETED with ``run_count`` 2.
- A flow paused with ``wait_for_input`` stores its input's schema (``POST /flow_runs/{id}/input``) and names it in
  ``run_input_keyset``; a resume validates ``run_input`` against it (REJECT when it does not fit) and stores it for
  the flow to read.
- A subflow run of a deployment (``run_deployment``) whose parent ends CANCELLED is proposed CANCELLING by the
  cancellation-cleanup service (``cancel_subflow_run``, every
  ``PREFECT_SERVER_SERVICES_CANCELLATION_CLEANUP_LOOP_SECONDS``);
  the client that runs it then cancels it.
- A global concurrency limit (v2) or a tag's task-run limit (v1, a v2 limit named ``tag:<tag>`` since 3.4) grants
  no more slots than it has; the client waits and retries. A deployment's ``concurrency_limit`` makes the server
  answer a second run's PENDING with AwaitingConcurrencySlot (``SecureFlowConcurrencySlots``) while the slot is
  taken.
- Of several workers proposing PENDING for one run, one is accepted and the others are told the run is no longer
  SCHEDULED, so each run executes once.

Each check acts on runs of its own (:mod:`harness.checks.lifecycle` builds them), through the Runner and the worker
its module starts once; a module's runs are created together, so the clients run them side by side while the checks
take turns. The feature's checks are in four modules (this one: cancellation, crashes, retries, lost workers;
``test_lifecycle__pauses.py``, ``test_lifecycle__limits.py`` and ``test_lifecycle__lease.py``), each with clients of
its own, so that pytest runs their waits side by side.
"""

from __future__ import annotations

import os
import signal
from typing import Any

import pytest

from harness.checks.lifecycle import (
    CANCEL_TIMEOUT,
    CLIENTS,
    RUN_TIMEOUT,
    Lifecycle,
    await_started,
    cancel_running_run,
    ledger_events,
    lifecycle,
    process_gone,
    second_wave,
)
from harness.checks.orchestration import (
    cancel,
    child_runs,
    describe_history,
    listed_worker,
    proposal_outcome,
    state_history,
)
from harness.checks.timestamps import describe_instant, read_instant
from harness.clients.actors import FAST_CLIENT_SETTINGS
from harness.clients.lifecycle import RETRIES, RETRY_DELAY, read_ledger
from harness.clients.progress import actor_can_still_act, describe_state, wait_for_final_state
from harness.target.api import ApiClient
from harness.waits import service_loop, wait_until

pytestmark = pytest.mark.lifecycle
__all__ = ["lifecycle"]  # the module-scoped fixture these checks share, imported from harness.checks.lifecycle


@pytest.mark.parametrize("client", CLIENTS)
def test_a_running_run_cancelled_ends_cancelled(client: str, lifecycle: Lifecycle, api: ApiClient) -> None:
    """A {client}'s run, RUNNING in its flow-run process, cancelled as ``prefect flow-run cancel`` cancels it: the
    target accepts CANCELLING, the {client} kills the process and the run ends CANCELLED, its code never finished."""
    run_id = cancel_running_run(api, lifecycle, client)
    assert "finished" not in ledger_events(lifecycle, run_id), "the cancelled run's flow code ran to its end"


@pytest.mark.parametrize("client", CLIENTS)
def test_a_cancelled_runs_on_cancellation_hook_ran(client: str, lifecycle: Lifecycle, api: ApiClient) -> None:
    """A {client}'s run cancelled while running (as in the check before): the flow's ``on_cancellation`` hook ran,
    which the {client} runs from the flow it loads through the run and its deployment (``GET /flow_runs/{{id}}``,
    ``GET /deployments/{{id}}``)."""
    run_id = cancel_running_run(api, lifecycle, client)
    wait_until(
        lambda: "on_cancellation" in ledger_events(lifecycle, run_id),
        awaiting=f"the on_cancellation hook of the cancelled run {run_id} to run",
        timeout=CANCEL_TIMEOUT,
        interval=0.2,
        hint=f"the {client} runs the flow's on_cancellation hooks once it has killed the process; "
        "it loads the flow through the run and its deployment, so both must read back as they were created",
    )


@pytest.mark.parametrize("client", CLIENTS)
def test_a_killed_flow_run_process_ends_crashed(client: str, lifecycle: Lifecycle, api: ApiClient) -> None:
    """A {client}'s run whose flow-run process is killed (SIGKILL: no hook, no state of its own) while RUNNING: the
    {client} sees the process exit and reports the run CRASHED, which the target accepts."""
    run = lifecycle.runs[client]["crash"]
    started, _ = await_started(
        api,
        lifecycle,
        client,
        run["id"],
        "RUNNING",
        hint=f"the {client} starts the runs that {lifecycle.poll_path(client)} hands out",
    )
    os.kill(started["pid"], signal.SIGKILL)
    final = wait_for_final_state(
        api,
        run["id"],
        actor=lifecycle.actors[client],
        timeout=CANCEL_TIMEOUT,
        poll_path=lifecycle.poll_path(client),
        hint=f"the {client} proposes CRASHED for a run whose process exited with a non-zero code",
    )
    assert final["state"]["type"] == "CRASHED", (
        f"the run whose process was killed ended {describe_state(final)}, not CRASHED: the {client} reports a run "
        "whose process died as CRASHED, and Prefect keeps it"
    )


def test_a_worker_that_dies_is_marked_offline(lifecycle: Lifecycle, api: ApiClient) -> None:
    """A process worker, ONLINE in its pool, killed without a word (SIGKILL): once it has missed three heartbeats
    (``PREFECT_WORKER_HEARTBEAT_SECONDS``, 2 s here) the target lists it OFFLINE and its pool, with no worker online,
    NOT_READY (Prefect's foreman service, every ``--service-loops foreman`` seconds: 15 by default)."""
    pool_name, worker_name = lifecycle.lost
    actor = lifecycle.actors["lost-worker"]

    def online() -> dict[str, Any]:
        listed = listed_worker(api, pool_name, worker_name)
        if listed.get("status") == "ONLINE":
            return listed
        actor_can_still_act(actor, f"/work_pools/{pool_name}/get_scheduled_flow_runs")
        raise AssertionError(f"listed as {listed or 'nothing'}")

    wait_until(
        online,
        awaiting=f"worker {worker_name!r} to be listed ONLINE in pool {pool_name!r}",
        timeout=RUN_TIMEOUT,
        interval=0.25,
    )
    os.kill(actor.process.pid, signal.SIGKILL)
    heartbeat = float(FAST_CLIENT_SETTINGS["PREFECT_WORKER_HEARTBEAT_SECONDS"])
    loop = service_loop("foreman")

    def offline() -> tuple[dict[str, Any], dict[str, Any]]:
        listed, pool = listed_worker(api, pool_name, worker_name), api.get(f"/work_pools/{pool_name}")
        if listed.get("status") == "OFFLINE" and pool.get("status") == "NOT_READY":
            return listed, pool
        raise AssertionError(
            f"the worker is listed {listed.get('status')!r} (last_heartbeat_time "
            f"{listed.get('last_heartbeat_time')!r}), its pool {pool.get('status')!r}"
        )

    wait_until(
        offline,
        awaiting=f"the killed worker {worker_name!r} to be listed OFFLINE and pool {pool_name!r} NOT_READY",
        timeout=3 * heartbeat + 2 * loop + 10,
        interval=0.5,
        hint=f"Prefect's foreman marks a worker OFFLINE once it has missed three heartbeats, and a pool with no "
        f"worker online NOT_READY, every loop ({loop:g} s here: --service-loops foreman)",
    )


@pytest.mark.parametrize("client", CLIENTS)
def test_a_failing_flow_retries_until_it_completes(client: str, lifecycle: Lifecycle, api: ApiClient) -> None:
    """A {client}'s run of a flow with ``retries=2, retry_delay_seconds=1`` that fails twice: each failure becomes
    ``AwaitingRetry`` (SCHEDULED-type, due one retry delay after it), then ``Retrying`` in the same process; the
    run ends COMPLETED with ``run_count`` 3, its flow code run three times."""
    run = lifecycle.runs[client]["flaky"]
    final = wait_for_final_state(
        api, run["id"], actor=lifecycle.actors[client], timeout=RUN_TIMEOUT, poll_path=lifecycle.poll_path(client)
    )
    history = state_history(api, run["id"])
    attempts = [e for e in read_ledger(lifecycle.flows_dir, run["id"]) if e["event"] == "attempt"]
    assert final["state"]["type"] == "COMPLETED" and final.get("run_count") == RETRIES + 1, (
        f"the run of a flow that fails {RETRIES} times with retries={RETRIES} ended {describe_state(final)} with "
        f"run_count {final.get('run_count')}, after {len(attempts)} attempts of its code; Prefect answers each FAILED "
        f"with AwaitingRetry and the run completes with run_count {RETRIES + 1}. States kept: "
        f"{describe_history(history)}"
    )
    assert len(attempts) == RETRIES + 1 and len({e["pid"] for e in attempts}) == 1, (
        f"the flow's code ran {len(attempts)} times in processes {sorted({e['pid'] for e in attempts})}; its retries "
        f"run in its own process, {RETRIES + 1} attempts in all"
    )
    # The names of the RUNNING states are the client's (3.9.1 proposes "Running" again, older clients "Retrying");
    # AwaitingRetry is the server's.
    running = next((i for i, s in enumerate(history) if s.get("type") == "RUNNING"), 0)
    kept = [
        s.get("type") + ("/" + str(s.get("name")) if s.get("type") == "SCHEDULED" else "") for s in history[running:]
    ]
    expected = ["RUNNING"] + ["SCHEDULED/AwaitingRetry", "RUNNING"] * RETRIES + ["COMPLETED"]
    assert kept == expected, (
        f"from its first RUNNING on, the run's states are {describe_history(history[running:])}; Prefect keeps "
        f"{', '.join(expected)}"
    )
    for state in (s for s in history if s.get("name") == "AwaitingRetry"):
        at = read_instant(state.get("timestamp"), "timestamp of an AwaitingRetry state")
        due = read_instant(
            (state.get("state_details") or {}).get("scheduled_time"), "scheduled_time of an AwaitingRetry state"
        )
        delay = (due - at).total_seconds()
        assert RETRY_DELAY - 0.5 <= delay <= RETRY_DELAY + 0.5, (
            f"an AwaitingRetry state at {describe_instant(at)} is due at {describe_instant(due)}, {delay:.3f} s later; "
            f"Prefect schedules the retry retry_delay_seconds ({RETRY_DELAY} s) after the failure"
        )


def test_a_cancelled_runs_subflow_is_cancelled_too(lifecycle: Lifecycle, api: ApiClient) -> None:
    """A served flow that runs a deployment as its subflow (``run_deployment``), cancelled while that subflow runs
    in a process of its own: the parent ends CANCELLED, and the target then cancels the orphaned subflow
    (Prefect's cancellation-cleanup service proposes CANCELLING for it, every ``--service-loops
    cancellation_cleanup`` seconds: 20 by default), which the Runner kills, so it ends CANCELLED too."""
    second_wave(lifecycle)
    parent = lifecycle.runs["runner"]["nesting"]
    actor = lifecycle.actors["runner"]
    blocking = lifecycle.deployments["runner"]["blocking"]
    known = {run["id"] for runs in lifecycle.runs.values() for run in runs.values()}

    def child_started() -> tuple[dict[str, Any], dict[str, Any]]:
        children = child_runs(api, blocking, known)
        for child in children:
            started = [e for e in read_ledger(lifecycle.flows_dir, child["id"]) if e["event"] == "started"]
            if started and (child.get("state") or {}).get("type") == "RUNNING":
                return child, started[0]
        actor_can_still_act(actor, lifecycle.poll_path("runner"))
        parent_now = api.get(f"/flow_runs/{parent['id']}")
        raise AssertionError(
            f"the parent run is {describe_state(parent_now)}; its "
            f"subflow runs: {[describe_state(c) for c in children] or 'none'}"
        )

    child, started = wait_until(
        child_started,
        awaiting=f"the served run {parent['id']} to start a subflow run of deployment {blocking} and "
        "that run's flow code to start",
        timeout=RUN_TIMEOUT,
        interval=0.25,
        hint="run_deployment creates the subflow run (POST /deployments/{id}/create_flow_run with parent_task_run_id) "
        "and the Runner runs it as it runs any due run",
    )
    assert child.get("parent_task_run_id"), (
        f"the run {child['id']} that the parent created with run_deployment has parent_task_run_id "
        f"{child.get('parent_task_run_id')!r}; Prefect keeps the task run that links a subflow to its parent"
    )
    result = cancel(api, parent["id"])
    assert result.get("status") == "ACCEPT", (
        f"proposing CANCELLING for the RUNNING parent run got {proposal_outcome(result)}; Prefect accepts it"
    )
    final = wait_for_final_state(
        api,
        parent["id"],
        actor=actor,
        timeout=CANCEL_TIMEOUT,
        hint="the Runner kills the cancelled parent's process and sets CANCELLED",
    )
    assert final["state"]["type"] == "CANCELLED", (
        f"the cancelled parent run ended {describe_state(final)}, not CANCELLED"
    )
    loop = service_loop("cancellation_cleanup")
    ended = wait_for_final_state(
        api,
        child["id"],
        actor=actor,
        timeout=2 * loop + 10 + CANCEL_TIMEOUT,
        hint=f"Prefect's cancellation-cleanup service proposes CANCELLING for a subflow run whose parent is CANCELLED, "
        f"within a loop ({loop:g} s here: --service-loops cancellation_cleanup); the Runner that holds it then kills "
        "it and sets CANCELLED",
    )
    assert ended["state"]["type"] == "CANCELLED", (
        f"the subflow run of the cancelled parent ended {describe_state(ended)}, not CANCELLED; its states: "
        f"{describe_history(state_history(api, child['id']))}"
    )
    wait_until(
        lambda: process_gone(started["pid"]),
        awaiting=f"the subflow run's process {started['pid']} to exit",
        timeout=CANCEL_TIMEOUT,
        interval=0.2,
        hint="the Runner kills the process of a run it cancels",
    )


@pytest.mark.parametrize("client", CLIENTS)
def test_a_scheduled_run_cancelled_before_it_starts_never_runs(
    client: str, lifecycle: Lifecycle, api: ApiClient
) -> None:
    """A {client}'s run due in 20 s, cancelled at once: no infrastructure holds it, so the target makes it CANCELLED
    (Prefect answers the CANCELLING proposal with CANCELLED), and the {client}, polling past its due time, never
    starts it."""
    due, run, result = lifecycle.early_due[client], lifecycle.runs[client]["early"], lifecycle.early_cancel[client]
    if isinstance(result, AssertionError):
        raise result
    state = api.get(f"/flow_runs/{run['id']}").get("state") or {}
    assert state.get("type") == "CANCELLED", (
        f"proposing CANCELLING for a SCHEDULED run no client holds got {proposal_outcome(result)}, and the run is "
        f"{state.get('type')}/{state.get('name')}: Prefect makes it CANCELLED at once (no infrastructure to "
        "terminate), where a CANCELLING run would wait for a client that never comes"
    )
    actor, poll = lifecycle.actors[client], lifecycle.poll_path(client)

    def polls_after_due() -> int:
        actor_can_still_act(actor, poll)
        after = [e for e in actor.recorder.transcript() if e.path.endswith(poll) and e.started > due.timestamp() + 0.5]
        return len(after) >= 2

    wait_until(
        polls_after_due,
        awaiting=f"the {client} to poll {poll} twice after {describe_instant(due)}, when the cancelled run was due",
        timeout=RUN_TIMEOUT,
        interval=0.25,
    )
    state = api.get(f"/flow_runs/{run['id']}").get("state") or {}
    ran = ledger_events(lifecycle, run["id"])
    assert not ran and state.get("type") == "CANCELLED", (
        f"the run cancelled before it was due is {state.get('type')}/{state.get('name')} and its flow code wrote "
        f"{ran}: a cancelled run is never handed out"
    )
