"""Lifecycle: the life of a run beyond scheduling, with real clients: cancellation, crashes, pauses and retries.

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
  COMPLETED with ``run_count`` 3.

Each check acts on runs of its own, through the Runner and the worker this module starts once; all the runs are
created together, so the clients run them side by side while the checks take turns.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pytest

from harness.checks.objects import Created, create_deployment, create_flow, create_work_pool
from harness.checks.polling import create_run
from harness.checks.timestamps import describe_instant, read_instant, utc_now
from harness.clients.actors import FAST_CLIENT_SETTINGS, Actor, start_worker
from harness.clients.lifecycle import (FLOW_KEYS, PAUSE_TIMEOUT, RETRIES, RETRY_DELAY, entrypoint, read_ledger, start_lifecycle_runner,
                                       write_lifecycle_flows)
from harness.target.api import ApiClient
from harness.target.errors import UnexpectedAnswer
from harness.waits import (actor_can_still_act, describe_state, service_loop, timeout_scale, wait_for_deployment,
                           wait_for_final_state, wait_until)

pytestmark = pytest.mark.lifecycle

#: How long a run may take to be picked up and reach its flow code, or to end (a flow-run process starts in 1-2 s).
RUN_TIMEOUT = 90.0
#: How long a cancelled run may take to end CANCELLED: the client hears of it by an event at once, or by its
#: fallback poll (1 s for the Runner, 2 s for the worker here: ``FAST_CLIENT_SETTINGS``), then kills the process.
CANCEL_TIMEOUT = 30.0
CLIENTS = ("runner", "worker")
#: What ``prefect flow-run cancel`` proposes (``State(type=CANCELLING)``, unforced).
CANCEL_REQUEST = {"state": {"type": "CANCELLING", "name": "Cancelling"}, "force": False}
#: How far ahead the run cancelled before it starts is due: beyond what either client prefetches (a Runner's 10 s,
#: ``prefetch_seconds``; a worker's ``PREFECT_WORKER_PREFETCH_SECONDS``), and 10 s more for the harness to cancel it on
#: a loaded machine, so no client holds it when the cancellation comes. (At 2 s, a loaded make test saw a client take
#: it first: CANCELLING accepted, as Prefect accepts it for a run a client holds.)
EARLY_BY = dt.timedelta(seconds=max(10.0, float(FAST_CLIENT_SETTINGS["PREFECT_WORKER_PREFETCH_SECONDS"])) + 10.0)


@dataclass
class Lifecycle:
    flows_dir: Path
    pool_name: str
    #: client -> its actor
    actors: dict[str, Actor]
    #: client -> flow ("blocking", "flaky") -> deployment id
    deployments: dict[str, dict[str, str]]
    #: The pool and the name of the worker the lost-worker check kills.
    lost: tuple[str, str]
    #: client -> purpose ("cancel", "early", "flaky", ...) -> the run created for it when the module began
    runs: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    #: client -> when the "early" run was due; the target's answer to cancelling it at once (or why there was none)
    early_due: dict[str, dt.datetime] = field(default_factory=dict)
    early_cancel: dict[str, dict[str, Any] | AssertionError] = field(default_factory=dict)
    #: client -> the run it cancelled while running (once seen CANCELLED), or why it was not
    cancelled: dict[str, str | AssertionError] = field(default_factory=dict)

    def poll_path(self, client: str) -> str:
        return (f"/work_pools/{self.pool_name}/get_scheduled_flow_runs" if client == "worker"
                else "/deployments/get_scheduled_flow_runs")


@pytest.fixture(scope="module")
def lifecycle(api: ApiClient, actors: Callable[..., Actor], module_names: Callable[..., str], module_created: Created,
              scenario_dir: Path) -> Lifecycle:
    """The flows file, a Runner serving both flows, a process pool with a deployment of each and its worker."""
    flow_names = {key: module_names(key) for key in FLOW_KEYS}
    flows_dir = scenario_dir / "flows"
    flows_file = write_lifecycle_flows(flows_dir, flow_names)
    pool_name = module_names("pool")
    create_work_pool(api, module_created, pool_name)
    pull = [{"prefect.deployments.steps.set_working_directory": {"directory": str(flows_dir)}}]
    worker_deployments = {}
    for key, flow_name in flow_names.items():
        flow = create_flow(api, module_created, flow_name)
        worker_deployments[key] = create_deployment(api, flow["id"], module_names(f"worker-{key}"), work_pool_name=pool_name,
                                                    entrypoint=entrypoint(key), pull_steps=pull)["id"]
    runner_names = {key: module_names(f"runner-{key}") for key in FLOW_KEYS}
    runner = actors(start_lifecycle_runner, flows_file=flows_file, deployment_names=runner_names)
    worker = actors(start_worker, pool_name=pool_name, worker_name=module_names("worker"))
    # A second worker on a pool of its own, killed without a word by the lost-worker check.
    lost_pool, lost_worker = module_names("lost-pool"), module_names("lost-worker")
    create_work_pool(api, module_created, lost_pool)
    lost = actors(start_worker, pool_name=lost_pool, worker_name=lost_worker, name="lost-worker")
    runner_deployments = {
        key: wait_for_deployment(api, flow_name, runner_names[key], actor=runner, timeout=RUN_TIMEOUT)["id"]
        for key, flow_name in flow_names.items()
    }
    lifecycle = Lifecycle(flows_dir, pool_name, {"runner": runner, "worker": worker, "lost-worker": lost},
                          {"runner": runner_deployments, "worker": worker_deployments}, (lost_pool, lost_worker))
    for client, deployments in lifecycle.deployments.items():
        now = utc_now()
        due = now + EARLY_BY
        lifecycle.runs[client] = {
            "cancel": create_run(api, deployments["blocking"], module_names(client, "cancel"), now),
            "crash": create_run(api, deployments["blocking"], module_names(client, "crash"), now),
            "flaky": create_run(api, deployments["flaky"], module_names(client, "flaky"), now),
            "pausing": create_run(api, deployments["pausing"], module_names(client, "pausing"), now),
            "suspending": create_run(api, deployments["suspending"], module_names(client, "suspending"), now),
            **({"expiring": create_run(api, deployments["expiring"], module_names(client, "expiring"), now)}
               if client == "runner" else {}),  # the server's doing alone: one client's run is enough
            "early": create_run(api, deployments["blocking"], module_names(client, "early"), due),
        }
        lifecycle.early_due[client] = due
        try:
            lifecycle.early_cancel[client] = cancel(api, lifecycle.runs[client]["early"]["id"])
        except AssertionError as exc:  # the target's answer: the check that needs it fails with it
            lifecycle.early_cancel[client] = exc
    return lifecycle


def ledger_events(lifecycle: Lifecycle, run_id: str) -> list[str]:
    return [entry["event"] for entry in read_ledger(lifecycle.flows_dir, run_id)]


def process_gone(pid: int) -> bool:
    """The process has exited (a zombie not yet reaped by its parent counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False


def await_started(api: ApiClient, lifecycle: Lifecycle, client: str, run_id: str, state_type: str,
                  state_name: str | None = None, *, hint: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Until the run's flow code has started (its ledger entry) and the target says ``state_type`` (and
    ``state_name``, if given): (the entry, the run)."""
    actor = lifecycle.actors[client]
    wanted = f"{state_type}/{state_name}" if state_name else state_type

    def probe() -> tuple[dict[str, Any], dict[str, Any]]:
        entries = [e for e in read_ledger(lifecycle.flows_dir, run_id) if e["event"] == "started"]
        run = api.get(f"/flow_runs/{run_id}")
        state = run.get("state") or {}
        if entries and state.get("type") == state_type and state_name in (None, state.get("name")):
            return entries[0], run
        actor_can_still_act(actor, lifecycle.poll_path(client))
        raise AssertionError(f"run is {describe_state(run)}, its flow code {'started' if entries else 'not started'}")

    return wait_until(probe, awaiting=f"the {client} to start flow run {run_id} and the target to say {wanted}",
                      timeout=RUN_TIMEOUT, interval=0.25, hint=hint)


def orchestration_result(api: ApiClient, path: str, body: dict[str, Any]) -> dict[str, Any]:
    """``POST path`` (a set_state or a resume) answered with an orchestration result ``{status, state, details}``."""
    result = api.post(path, body, expect=(200, 201))
    if not isinstance(result, dict) or "status" not in result:
        raise UnexpectedAnswer(f"POST {path} answered {str(result)[:300]}, not an orchestration result "
                               "{status, state, details}")
    return result


def cancel(api: ApiClient, run_id: str) -> dict[str, Any]:
    """Propose CANCELLING as ``prefect flow-run cancel`` does; the orchestration result."""
    return orchestration_result(api, f"/flow_runs/{run_id}/set_state", CANCEL_REQUEST)


def proposal_outcome(result: dict[str, Any]) -> str:
    state = result.get("state") or {}
    reason = (result.get("details") or {}).get("reason")
    return f"{result.get('status')} with state {state.get('type')}/{state.get('name')}" + (f" ({reason})" if reason else "")


def cancel_running_run(api: ApiClient, lifecycle: Lifecycle, client: str) -> str:
    """Cancel a client's "cancel" run once it runs its flow code, as ``prefect flow-run cancel`` does, and see it
    through to CANCELLED with its process gone: the run's id. Done once per client, for the cancellation check and
    the hook check alike (whichever runs first, or alone); its failure is both checks' failure."""
    if client not in lifecycle.cancelled:
        try:
            lifecycle.cancelled[client] = _cancel_running_run(api, lifecycle, client)
        except AssertionError as exc:
            lifecycle.cancelled[client] = exc
    outcome = lifecycle.cancelled[client]
    if isinstance(outcome, AssertionError):
        raise outcome
    return outcome


def _cancel_running_run(api: ApiClient, lifecycle: Lifecycle, client: str) -> str:
    run = lifecycle.runs[client]["cancel"]
    started, _ = await_started(api, lifecycle, client, run["id"], "RUNNING",
                               hint=f"the {client} starts the runs that {lifecycle.poll_path(client)} hands out")
    result = cancel(api, run["id"])
    assert result.get("status") == "ACCEPT" and (result.get("state") or {}).get("type") == "CANCELLING", (
        f"proposing CANCELLING for RUNNING run {run['id']} got {proposal_outcome(result)}; Prefect accepts it "
        "(the client that runs it then kills its process)")
    final = wait_for_final_state(
        api, run["id"], actor=lifecycle.actors[client], timeout=CANCEL_TIMEOUT, poll_path=lifecycle.poll_path(client),
        hint=f"the {client} learns of a cancellation from the prefect.flow-run.Cancelling event (WS /events/out) or "
        "its poll of POST /flow_runs/filter for CANCELLING runs, then kills the process and sets CANCELLED")
    assert final["state"]["type"] == "CANCELLED", (
        f"the cancelled run ended {describe_state(final)}, not CANCELLED; its flow code wrote "
        f"{ledger_events(lifecycle, run['id'])}")
    wait_until(lambda: process_gone(started["pid"]), awaiting=f"the cancelled run's process {started['pid']} to exit",
               timeout=CANCEL_TIMEOUT, interval=0.2, hint=f"the {client} kills the flow-run process it cancels")
    return run["id"]


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
    wait_until(lambda: "on_cancellation" in ledger_events(lifecycle, run_id),
               awaiting=f"the on_cancellation hook of the cancelled run {run_id} to run", timeout=CANCEL_TIMEOUT,
               interval=0.2, hint=f"the {client} runs the flow's on_cancellation hooks once it has killed the process; "
               "it loads the flow through the run and its deployment, so both must read back as they were created")


@pytest.mark.parametrize("client", CLIENTS)
def test_a_killed_flow_run_process_ends_crashed(client: str, lifecycle: Lifecycle, api: ApiClient) -> None:
    """A {client}'s run whose flow-run process is killed (SIGKILL: no hook, no state of its own) while RUNNING: the
    {client} sees the process exit and reports the run CRASHED, which the target accepts."""
    run = lifecycle.runs[client]["crash"]
    started, _ = await_started(api, lifecycle, client, run["id"], "RUNNING",
                               hint=f"the {client} starts the runs that {lifecycle.poll_path(client)} hands out")
    os.kill(started["pid"], signal.SIGKILL)
    final = wait_for_final_state(
        api, run["id"], actor=lifecycle.actors[client], timeout=CANCEL_TIMEOUT, poll_path=lifecycle.poll_path(client),
        hint=f"the {client} proposes CRASHED for a run whose process exited with a non-zero code")
    assert final["state"]["type"] == "CRASHED", (
        f"the run whose process was killed ended {describe_state(final)}, not CRASHED: the {client} reports a run "
        "whose process died as CRASHED, and Prefect keeps it")


def resume(api: ApiClient, run_id: str) -> dict[str, Any]:
    """``POST /flow_runs/{id}/resume``, as ``prefect flow-run resume`` and the UI send it: the orchestration result."""
    return orchestration_result(api, f"/flow_runs/{run_id}/resume", {})


@pytest.mark.parametrize("client", CLIENTS)
def test_a_paused_run_resumes_and_completes(client: str, lifecycle: Lifecycle, api: ApiClient) -> None:
    """A {client}'s flow calls ``pause_flow_run(timeout=300)``: the run is PAUSED/Paused with its ``pause_timeout``
    300 s after the pause, its process waiting; ``POST /flow_runs/{{id}}/resume`` is accepted (RUNNING) and the same
    process carries on to COMPLETED."""
    run = lifecycle.runs[client]["pausing"]
    started, paused = await_started(api, lifecycle, client, run["id"], "PAUSED", "Paused",
                                   hint="the flow's own process proposes PAUSED/Paused, which Prefect accepts")
    state = paused["state"]
    details = state.get("state_details") or {}
    at = read_instant(state.get("timestamp"), "timestamp of the Paused state")
    until = read_instant(details.get("pause_timeout"), "state_details.pause_timeout of the Paused state") if details.get(
        "pause_timeout") else None
    assert until is not None and abs((until - at).total_seconds() - PAUSE_TIMEOUT) <= 30, (
        f"the Paused state at {describe_instant(at)} has pause_timeout {details.get('pause_timeout')!r}; the flow "
        f"paused with timeout={PAUSE_TIMEOUT}, and Prefect keeps the pause_timeout its client sets")
    result = resume(api, run["id"])
    assert result.get("status") == "ACCEPT", (
        f"POST /flow_runs/{{id}}/resume of the paused run got {proposal_outcome(result)}; Prefect accepts it and the "
        "run is RUNNING again")
    final = wait_for_final_state(api, run["id"], actor=lifecycle.actors[client], timeout=RUN_TIMEOUT,
                                 hint="the paused flow's process polls its run (GET /flow_runs/{id}) every second "
                                 "and carries on once it reads RUNNING")
    resumed = [e for e in read_ledger(lifecycle.flows_dir, run["id"]) if e["event"] == "resumed"]
    assert final["state"]["type"] == "COMPLETED" and [e["pid"] for e in resumed] == [started["pid"]], (
        f"the resumed run ended {describe_state(final)}; its flow code resumed in processes "
        f"{[e['pid'] for e in resumed]}, not once in the process that paused ({started['pid']})")


@pytest.mark.parametrize("client", CLIENTS)
def test_a_suspended_run_resumes_and_runs_again(client: str, lifecycle: Lifecycle, api: ApiClient) -> None:
    """A {client}'s flow calls ``suspend_flow_run(timeout=300)``: its process exits and the run is PAUSED/Suspended
    (``pause_reschedule``); resumed, it is rescheduled (SCHEDULED/Resuming) and the {client} runs it again, in a new
    process, to COMPLETED."""
    run = lifecycle.runs[client]["suspending"]
    started, suspended = await_started(api, lifecycle, client, run["id"], "PAUSED", "Suspended",
                                   hint="the flow's own process proposes PAUSED/Suspended, which Prefect accepts")
    details = suspended["state"].get("state_details") or {}
    assert details.get("pause_reschedule") is True, (
        f"the Suspended state has state_details {details}: Prefect keeps pause_reschedule true, which tells a resume "
        "to reschedule the run")
    wait_until(lambda: process_gone(started["pid"]), awaiting=f"the suspended run's process {started['pid']} to exit",
               timeout=CANCEL_TIMEOUT, interval=0.2, hint="a suspended flow's process exits")
    result = resume(api, run["id"])
    state = result.get("state") or {}
    assert result.get("status") == "ACCEPT" and (state.get("type"), state.get("name")) == ("SCHEDULED", "Resuming"), (
        f"POST /flow_runs/{{id}}/resume of the suspended run got {proposal_outcome(result)}; Prefect reschedules it "
        "(ACCEPT, SCHEDULED/Resuming) for its client to run again")
    final = wait_for_final_state(api, run["id"], actor=lifecycle.actors[client], timeout=RUN_TIMEOUT,
                                 poll_path=lifecycle.poll_path(client),
                                 hint=f"the {client} runs the rescheduled run as it runs any due one")
    entries = read_ledger(lifecycle.flows_dir, run["id"])
    starts = [e["pid"] for e in entries if e["event"] == "started"]
    assert final["state"]["type"] == "COMPLETED" and len(starts) == 2 and len(set(starts)) == 2, (
        f"the resumed run ended {describe_state(final)}; its flow code started in processes {starts} (Prefect: twice, "
        "the second time in a new process after the resume)")


def test_a_suspended_run_never_resumed_fails_when_its_pause_expires(lifecycle: Lifecycle, api: ApiClient) -> None:
    """A served flow calls ``suspend_flow_run(timeout=3)`` and nobody resumes it: its process exits, and the target
    fails the run once the pause has expired (Prefect's pause-expirations service, every
    ``--service-loops pause_expirations`` seconds: 5 by default), not before."""
    run = lifecycle.runs["runner"]["expiring"]
    actor = lifecycle.actors["runner"]

    def suspended() -> dict[str, Any]:
        found = [s for s in state_history(api, run["id"]) if (s.get("type"), s.get("name")) == ("PAUSED", "Suspended")]
        if found:
            return found[-1]
        actor_can_still_act(actor, lifecycle.poll_path("runner"))
        current = api.get(f"/flow_runs/{run['id']}")
        raise AssertionError(f"run is {describe_state(current)}")

    state = wait_until(suspended, awaiting=f"the served run {run['id']} to be suspended (PAUSED/Suspended)",
                       timeout=RUN_TIMEOUT, interval=0.25, hint="the flow's own process proposes PAUSED/Suspended")
    expired = read_instant((state.get("state_details") or {}).get("pause_timeout"),
                           "state_details.pause_timeout of the Suspended state")
    loop = service_loop("pause_expirations")
    allowed = (2 * loop + 10) * timeout_scale()  # after the expiry: two loops of the service, and a pass in flight
    remaining = (expired - utc_now()).total_seconds() + allowed
    final = wait_for_final_state(
        api, run["id"], actor=None, timeout=max(1.0, remaining) / timeout_scale(),
        hint=f"Prefect's pause-expirations service fails a PAUSED run past its pause_timeout within a loop ({loop:g} s "
        "here: --service-loops pause_expirations)")
    assert final["state"]["type"] == "FAILED", (
        f"the suspended run nobody resumed ended {describe_state(final)}, not FAILED; Prefect fails it once its pause "
        "expires (\"The flow was paused and never resumed.\")")
    failed = read_instant(final["state"].get("timestamp"), "timestamp of the FAILED state")
    late = (failed - expired).total_seconds()
    assert 0 <= late <= allowed, (
        f"the suspended run's pause expired at {describe_instant(expired)} and the target failed it at "
        f"{describe_instant(failed)}, {late:.1f} s later; Prefect fails it within a loop of its pause-expirations "
        f"service once expired ({loop:g} s here: --service-loops pause_expirations), and never before")


def listed_worker(api: ApiClient, pool_name: str, worker_name: str) -> dict[str, Any]:
    workers = api.post(f"/work_pools/{pool_name}/workers/filter", {})
    if not isinstance(workers, list):
        raise UnexpectedAnswer(f"POST /work_pools/{{name}}/workers/filter answered {str(workers)[:300]}, not a list")
    return next((w for w in workers if isinstance(w, dict) and w.get("name") == worker_name), {})


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

    wait_until(online, awaiting=f"worker {worker_name!r} to be listed ONLINE in pool {pool_name!r}", timeout=RUN_TIMEOUT,
               interval=0.25)
    os.kill(actor.process.pid, signal.SIGKILL)
    heartbeat = float(FAST_CLIENT_SETTINGS["PREFECT_WORKER_HEARTBEAT_SECONDS"])
    loop = service_loop("foreman")

    def offline() -> tuple[dict[str, Any], dict[str, Any]]:
        listed, pool = listed_worker(api, pool_name, worker_name), api.get(f"/work_pools/{pool_name}")
        if listed.get("status") == "OFFLINE" and pool.get("status") == "NOT_READY":
            return listed, pool
        raise AssertionError(f"the worker is listed {listed.get('status')!r} (last_heartbeat_time "
                             f"{listed.get('last_heartbeat_time')!r}), its pool {pool.get('status')!r}")

    wait_until(offline, awaiting=f"the killed worker {worker_name!r} to be listed OFFLINE and pool {pool_name!r} "
               "NOT_READY", timeout=3 * heartbeat + 2 * loop + 10, interval=0.5,
               hint=f"Prefect's foreman marks a worker OFFLINE once it has missed three heartbeats, and a pool with no "
               f"worker online NOT_READY, every loop ({loop:g} s here: --service-loops foreman)")


def state_history(api: ApiClient, run_id: str) -> list[dict[str, Any]]:
    states = api.get(f"/flow_run_states/?flow_run_id={run_id}")
    if not isinstance(states, list):
        raise UnexpectedAnswer(f"GET /flow_run_states/ answered {str(states)[:300]}, not a list of states")
    return sorted(states, key=lambda s: read_instant(s.get("timestamp"), "timestamp of a flow run state"))


def describe_history(states: list[dict[str, Any]]) -> str:
    return ", ".join(f"{s.get('type')}/{s.get('name')}" for s in states)


@pytest.mark.parametrize("client", CLIENTS)
def test_a_failing_flow_retries_until_it_completes(client: str, lifecycle: Lifecycle, api: ApiClient) -> None:
    """A {client}'s run of a flow with ``retries=2, retry_delay_seconds=1`` that fails twice: each failure becomes
    ``AwaitingRetry`` (SCHEDULED-type, due one retry delay after it), then ``Retrying`` in the same process; the
    run ends COMPLETED with ``run_count`` 3, its flow code run three times."""
    run = lifecycle.runs[client]["flaky"]
    final = wait_for_final_state(api, run["id"], actor=lifecycle.actors[client], timeout=RUN_TIMEOUT,
                                 poll_path=lifecycle.poll_path(client))
    history = state_history(api, run["id"])
    attempts = [e for e in read_ledger(lifecycle.flows_dir, run["id"]) if e["event"] == "attempt"]
    assert final["state"]["type"] == "COMPLETED" and final.get("run_count") == RETRIES + 1, (
        f"the run of a flow that fails {RETRIES} times with retries={RETRIES} ended {describe_state(final)} with "
        f"run_count {final.get('run_count')}, after {len(attempts)} attempts of its code; Prefect answers each FAILED "
        f"with AwaitingRetry and the run completes with run_count {RETRIES + 1}. States kept: {describe_history(history)}")
    assert len(attempts) == RETRIES + 1 and len({e["pid"] for e in attempts}) == 1, (
        f"the flow's code ran {len(attempts)} times in processes {sorted({e['pid'] for e in attempts})}; its retries "
        f"run in its own process, {RETRIES + 1} attempts in all")
    # The names of the RUNNING states are the client's (3.9.1 proposes "Running" again, older clients "Retrying");
    # AwaitingRetry is the server's.
    running = next((i for i, s in enumerate(history) if s.get("type") == "RUNNING"), 0)
    kept = [s.get("type") + ("/" + str(s.get("name")) if s.get("type") == "SCHEDULED" else "") for s in history[running:]]
    expected = ["RUNNING"] + ["SCHEDULED/AwaitingRetry", "RUNNING"] * RETRIES + ["COMPLETED"]
    assert kept == expected, (
        f"from its first RUNNING on, the run's states are {describe_history(history[running:])}; Prefect keeps "
        f"{', '.join(expected)}")
    for state in (s for s in history if s.get("name") == "AwaitingRetry"):
        at = read_instant(state.get("timestamp"), "timestamp of an AwaitingRetry state")
        due = read_instant((state.get("state_details") or {}).get("scheduled_time"), "scheduled_time of an AwaitingRetry state")
        delay = (due - at).total_seconds()
        assert RETRY_DELAY - 0.5 <= delay <= RETRY_DELAY + 0.5, (
            f"an AwaitingRetry state at {describe_instant(at)} is due at {describe_instant(due)}, {delay:.3f} s later; "
            f"Prefect schedules the retry retry_delay_seconds ({RETRY_DELAY} s) after the failure")


@pytest.mark.parametrize("client", CLIENTS)
def test_a_scheduled_run_cancelled_before_it_starts_never_runs(client: str, lifecycle: Lifecycle, api: ApiClient) -> None:
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
        "terminate), where a CANCELLING run would wait for a client that never comes")
    actor, poll = lifecycle.actors[client], lifecycle.poll_path(client)

    def polls_after_due() -> int:
        actor_can_still_act(actor, poll)
        after = [e for e in actor.recorder.transcript() if e.path.endswith(poll) and e.started > due.timestamp() + 0.5]
        return len(after) >= 2

    wait_until(polls_after_due, awaiting=f"the {client} to poll {poll} twice after {describe_instant(due)}, when the "
               "cancelled run was due", timeout=RUN_TIMEOUT, interval=0.25)
    state = api.get(f"/flow_runs/{run['id']}").get("state") or {}
    ran = ledger_events(lifecycle, run["id"])
    assert not ran and state.get("type") == "CANCELLED", (
        f"the run cancelled before it was due is {state.get('type')}/{state.get('name')} and its flow code wrote "
        f"{ran}: a cancelled run is never handed out")
