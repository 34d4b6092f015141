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
  cancellation-cleanup service (``cancel_subflow_run``, every ``PREFECT_SERVER_SERVICES_CANCELLATION_CLEANUP_LOOP_SECONDS``);
  the client that runs it then cancels it.
- A global concurrency limit (v2) or a tag's task-run limit (v1, a v2 limit named ``tag:<tag>`` since 3.4) grants
  no more slots than it has; the client waits and retries. A deployment's ``concurrency_limit`` makes the server
  answer a second run's PENDING with AwaitingConcurrencySlot (``SecureFlowConcurrencySlots``) while the slot is
  taken.
- Of several workers proposing PENDING for one run, one is accepted and the others are told the run is no longer
  SCHEDULED, so each run executes once.

Each check acts on runs of its own, through the Runner and the worker this module starts once; all the runs are
created together, so the clients run them side by side while the checks take turns.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pytest

from harness.checks.objects import Created, create_deployment, create_flow, create_work_pool
from harness.checks.polling import create_run
from harness.checks.timestamps import describe_instant, read_instant, utc_now
from harness.clients.actors import FAST_CLIENT_SETTINGS, Actor, start_worker
from harness.clients.lifecycle import (FLOW_KEYS, LEASE_SECONDS, PAUSE_TIMEOUT, RETRIES, RETRY_DELAY, SlotAsks,
                                       decided, entrypoint, lease_set_times, limit_asks, read_ledger,
                                       start_lifecycle_runner, write_lifecycle_flows)
from harness.target.api import ApiClient
from harness.target.errors import HarnessError, UnexpectedAnswer
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
#: How long past the repossessor's second loop after a lease's expiry its slot may still be taken: the repossessor
#: queues each revocation as a task of the server's docket worker (``revoke_expired_lease``, ten at a time beside every
#: perpetual service's loop), so it runs a little after the loop that found it; scaled by --timeout-scale.
REVOKE_GRACE = 30.0
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
    #: flow ("blocking", ...) -> its id; the pull steps of a worker's deployment of the flows file
    flows: dict[str, str]
    pull: list[dict[str, Any]]
    #: Notes the target's answers to the asks for the limits' slots (from the second wave on).
    asks: SlotAsks
    #: client -> purpose ("cancel", "early", "flaky", ...) -> the run created for it when the module began
    runs: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    #: client -> when the "early" run was due; the target's answer to cancelling it at once (or why there was none)
    early_due: dict[str, dt.datetime] = field(default_factory=dict)
    early_cancel: dict[str, dict[str, Any] | AssertionError] = field(default_factory=dict)
    #: client -> the run it cancelled while running (once seen CANCELLED), or why it was not
    cancelled: dict[str, str | AssertionError] = field(default_factory=dict)
    #: The global concurrency limit the "limited" runs share (its name), or why the target would not create it.
    limit: str | Exception = ""
    #: The global concurrency limit whose slot the "leasing" run takes and dies holding, or why the target would not
    #: create it.
    lease_limit: str | Exception = ""
    #: The tag whose task-run concurrency limit (v1) the "tagged" runs' tasks share, or why the target would not
    #: create it.
    tag: str | Exception = ""
    #: The worker's two runs of a deployment whose concurrency_limit is 1, or why the target would not create it.
    queued: list[dict[str, Any]] | Exception = field(default_factory=list)
    #: The crowd's pool and its runs (:func:`crowd`), once a check has needed them.
    crowd_pool: str = ""
    crowd_runs: list[dict[str, Any]] = field(default_factory=list)
    #: Makes the second wave of runs (:func:`second_wave`); nothing once it has.
    second_wave: Callable[[], None] = lambda: None

    def poll_path(self, client: str) -> str:
        return (f"/work_pools/{self.pool_name}/get_scheduled_flow_runs" if client == "worker"
                else "/deployments/get_scheduled_flow_runs")


#: How many workers share the crowd's pool, and how many runs are due there at once (the exactly-once check).
CROWD_WORKERS, CROWD_RUNS = 3, 6
#: How many runs each of the crowd's workers runs at once (``prefect worker start --limit``): every worker still
#: proposes PENDING for the same first runs of its poll, but at most six flow-run processes run at once. With ten
#: unlimited, Prefect's SQLite server answered 503 ("database is locked") beside another check's clients on two
#: cores; with ten runs, in a loaded `make test` one run CRASHED before its flow began; six runs still give three
#: workers the same first two to race for.
CROWD_WORKER_LIMIT = 2


#: The runs made when the module begins, by purpose, each for the checks named: a run is made only if one of its
#: checks was selected (``-k``), so a few checks run without the load of the others' flow-run processes.
PURPOSES = {
    "cancel": ("test_a_running_run_cancelled_ends_cancelled", "test_a_cancelled_runs_on_cancellation_hook_ran"),
    "crash": ("test_a_killed_flow_run_process_ends_crashed",),
    "flaky": ("test_a_failing_flow_retries_until_it_completes",),
    "pausing": ("test_a_paused_run_resumes_and_completes",),
    "asking": ("test_a_paused_run_resumes_with_the_input_it_waits_for",),
    "suspending": ("test_a_suspended_run_resumes_and_runs_again",),
    "early": ("test_a_scheduled_run_cancelled_before_it_starts_never_runs",),
    "limited": ("test_a_global_concurrency_limit_keeps_its_holders_apart",),
    "tagged": ("test_a_tag_concurrency_limit_keeps_its_tasks_apart",),
    "expiring": ("test_a_suspended_run_never_resumed_fails_when_its_pause_expires",),
    "nesting": ("test_a_cancelled_runs_subflow_is_cancelled_too",),
    "queued": ("test_a_deployment_concurrency_limit_queues_the_second_run",),
    "quick": ("test_a_tasks_retries_are_kept",),
    "lost": ("test_a_worker_that_dies_is_marked_offline",),
    "leasing": ("test_a_dead_holders_global_slot_is_freed_when_its_lease_expires",),
}


def wanted_purposes(request: pytest.FixtureRequest) -> set[str]:
    """The purposes of :data:`PURPOSES` whose checks this session runs (after ``-k`` and ``-m``)."""
    selected = {getattr(item, "originalname", item.name) for item in request.session.items
                if getattr(item, "module", None) is request.module}
    return {purpose for purpose, checks in PURPOSES.items() if selected & set(checks)}


@pytest.fixture(scope="module")
def lifecycle(request: pytest.FixtureRequest, api: ApiClient, actors: Callable[..., Actor],
              module_names: Callable[..., str], module_created: Created, scenario_dir: Path) -> Lifecycle:
    """The flows file, a Runner serving every flow, a process pool with a deployment of each and its worker, and the
    runs the selected checks act on, created together so the clients run them side by side."""
    wanted = wanted_purposes(request)
    flow_names = {key: module_names(key) for key in FLOW_KEYS}
    flows_dir = scenario_dir / "flows"
    flows_file = write_lifecycle_flows(flows_dir, flow_names)
    pool_name = module_names("pool")
    create_work_pool(api, module_created, pool_name)
    pull = [{"prefect.deployments.steps.set_working_directory": {"directory": str(flows_dir)}}]
    flows = {key: create_flow(api, module_created, flow_name)["id"] for key, flow_name in flow_names.items()}
    worker_deployments = {
        key: create_deployment(api, flows[key], module_names(f"worker-{key}"), work_pool_name=pool_name,
                               entrypoint=entrypoint(key), pull_steps=pull)["id"]
        for key in ("blocking", "flaky", "pausing", "suspending", "limited", "quick")
    }
    runner_names = {key: module_names(f"runner-{key}") for key in FLOW_KEYS}
    runner = actors(start_lifecycle_runner, flows_file=flows_file, deployment_names=runner_names)
    worker = actors(start_worker, pool_name=pool_name, worker_name=module_names("worker"))
    started = {"runner": runner, "worker": worker}
    # A second worker on a pool of its own, killed without a word by the lost-worker check.
    lost_pool, lost_worker = module_names("lost-pool"), module_names("lost-worker")
    if "lost" in wanted:
        create_work_pool(api, module_created, lost_pool)
        started["lost-worker"] = actors(start_worker, pool_name=lost_pool, worker_name=lost_worker, name="lost-worker")
    runner_deployments = {
        key: wait_for_deployment(api, flow_name, runner_names[key], actor=runner, timeout=RUN_TIMEOUT)["id"]
        for key, flow_name in flow_names.items()
    }
    lifecycle = Lifecycle(flows_dir, pool_name, started, {"runner": runner_deployments, "worker": worker_deployments},
                          (lost_pool, lost_worker), flows, pull, SlotAsks(flows_dir, [runner, worker]))
    request.addfinalizer(lifecycle.asks.stop)
    for client, deployments in lifecycle.deployments.items():
        now = utc_now()
        runs = lifecycle.runs[client] = {
            purpose: create_run(api, deployments[flow], module_names(client, purpose), now)
            for purpose, flow in (("cancel", "blocking"), ("crash", "blocking"), ("flaky", "flaky"),
                                  ("pausing", "pausing"), ("suspending", "suspending")) if purpose in wanted
        }
        if "early" in wanted:
            lifecycle.early_due[client] = due = now + EARLY_BY
            runs["early"] = create_run(api, deployments["blocking"], module_names(client, "early"), due)
            try:
                lifecycle.early_cancel[client] = cancel(api, runs["early"]["id"])
            except AssertionError as exc:  # the target's answer: the check that needs it fails with it
                lifecycle.early_cancel[client] = exc
    if "leasing" in wanted:  # with the first wave: the slot is freed a minute after it is taken, at the soonest
        try:
            lifecycle.lease_limit = create_global_limit(api, module_created, module_names("lease-limit"))
            lifecycle.runs["runner"]["leasing"] = create_run(api, runner_deployments["leasing"],
                                                             module_names("runner", "leasing"), utc_now(),
                                                             parameters={"limit": lifecycle.lease_limit})
        except (UnexpectedAnswer, AssertionError) as exc:  # the target's answer: the check says so
            lifecycle.lease_limit = exc
    if "expiring" in wanted:  # the server's doing alone: one client's run is enough
        lifecycle.runs["runner"]["expiring"] = create_run(api, runner_deployments["expiring"],
                                                          module_names("runner", "expiring"), utc_now())
    lifecycle.second_wave = lambda: make_second_wave(lifecycle, api, wanted, module_names, module_created,
                                                     flow_names, runner_names)
    return lifecycle


def make_second_wave(lifecycle: Lifecycle, api: ApiClient, wanted: set[str], module_names: Callable[..., str],
                     module_created: Created, flow_names: dict[str, str], runner_names: dict[str, str]) -> None:
    """The runs of the subflow, input, concurrency and task-retry checks, made together once the first of those
    checks begins: by then the first wave's runs have started. Made with the first wave, some twenty flow-run
    processes started at once, and the SQLite reference answered a worker 503 ("database is locked") in a loaded
    make test, so the worker reported a run CRASHED before it started."""
    deployments = lifecycle.deployments
    if "limited" in wanted:
        try:
            lifecycle.limit = create_global_limit(api, module_created, module_names("limit"))
            lifecycle.asks.watch(lifecycle.limit)
        except (UnexpectedAnswer, AssertionError) as exc:  # the target's answer: the check that needs it says so
            lifecycle.limit = exc
    if "tagged" in wanted:
        try:
            lifecycle.tag = create_tag_limit(api, module_created, module_names("tag"))
            lifecycle.asks.watch(lifecycle.tag)
        except (UnexpectedAnswer, AssertionError) as exc:
            lifecycle.tag = exc
    if "queued" in wanted:
        try:
            queued = create_deployment(api, lifecycle.flows["holding"], module_names("worker-holding"),
                                       work_pool_name=lifecycle.pool_name, entrypoint=entrypoint("holding"),
                                       pull_steps=lifecycle.pull, concurrency_limit=1)
            lifecycle.queued = [create_run(api, queued["id"], module_names("worker", "queued", str(n)), utc_now())
                                for n in (1, 2)]
        except (UnexpectedAnswer, AssertionError) as exc:
            lifecycle.queued = exc
    for client in CLIENTS:
        runs, now = lifecycle.runs[client], utc_now()
        if isinstance(lifecycle.limit, str) and lifecycle.limit:  # one run of each client holds the slot in turn
            runs["limited"] = create_run(api, deployments[client]["limited"], module_names(client, "limited"), now,
                                         parameters={"limit": lifecycle.limit, "peers": 2})
        if isinstance(lifecycle.tag, str) and lifecycle.tag:  # one task of each client's run holds the slot in turn
            runs["tagged"] = create_run(api, deployments[client]["limited"], module_names(client, "tagged"), now,
                                        parameters={"limit": lifecycle.tag, "peers": 2, "tag": True})
    # One client's run is enough where the behaviour is the server's (or one client's as much as the other's).
    if "asking" in wanted:
        lifecycle.runs["runner"]["asking"] = create_run(api, deployments["runner"]["asking"],
                                                        module_names("runner", "asking"), utc_now())
    if "nesting" in wanted:
        lifecycle.runs["runner"]["nesting"] = create_run(
            api, deployments["runner"]["nesting"], module_names("runner", "nesting"), utc_now(),
            parameters={"child": f"{flow_names['blocking']}/{runner_names['blocking']}"})
    if "quick" in wanted:
        lifecycle.runs["worker"]["quick"] = create_run(api, deployments["worker"]["quick"],
                                                       module_names("worker", "quick"), utc_now())


def second_wave(lifecycle: Lifecycle) -> Lifecycle:
    """The lifecycle, its second wave of runs made (once, by whichever of its checks comes first)."""
    make, lifecycle.second_wave = lifecycle.second_wave, lambda: None
    make()
    return lifecycle


def create_limit(api: ApiClient, created: Created, path: str, body: dict[str, Any], size_key: str,
                 delete_path: str) -> None:
    """A concurrency limit of one slot, ``POST {path}`` with ``body``, checked to say so under ``size_key``; deleted
    with the module's objects."""
    answer = api.post(path, body, expect=(200, 201))
    if not isinstance(answer, dict) or answer.get(size_key) != 1:
        raise UnexpectedAnswer(f"POST {path} answered {str(answer)[:300]}, not the limit of 1 it created")
    created.add(delete_path)


def create_tag_limit(api: ApiClient, created: Created, tag: str) -> str:
    """A task-run concurrency limit (v1) of one slot on ``tag``, as ``prefect concurrency-limit create TAG 1`` makes
    it: the tag."""
    create_limit(api, created, "/concurrency_limits/", {"tag": tag, "concurrency_limit": 1}, "concurrency_limit",
                 f"/concurrency_limits/tag/{tag}")
    return tag


def create_global_limit(api: ApiClient, created: Created, name: str) -> str:
    """A global concurrency limit (v2) of one slot, as ``prefect gcl create NAME --limit 1`` makes it: its name."""
    create_limit(api, created, "/v2/concurrency_limits/", {"name": name, "limit": 1}, "limit",
                 f"/v2/concurrency_limits/{name}")
    return name


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


def test_a_paused_run_resumes_with_the_input_it_waits_for(lifecycle: Lifecycle, api: ApiClient) -> None:
    """A served flow calls ``pause_flow_run(wait_for_input=str)``: the Paused state names the run input it waits for
    (``run_input_keyset``); a resume without that input is refused (REJECT: Prefect validates ``run_input`` against
    the schema the flow stored), and one with ``{"run_input": {"value": ...}}`` is accepted and the flow receives
    exactly that value in its process and completes."""
    second_wave(lifecycle)
    run = lifecycle.runs["runner"]["asking"]
    started, paused = await_started(api, lifecycle, "runner", run["id"], "PAUSED", "Paused",
                                   hint="the flow's own process proposes PAUSED/Paused, which Prefect accepts")
    keyset = (paused["state"].get("state_details") or {}).get("run_input_keyset")
    assert isinstance(keyset, dict) and keyset.get("schema") and keyset.get("response"), (
        f"the Paused state of a flow waiting for input has run_input_keyset {keyset!r}; Prefect keeps the keys the "
        "flow gave (schema, response, description), which tell a resume what input to validate and where to store it")
    # The flow stores its input's schema only once its PAUSED was accepted; until then Prefect refuses every resume
    # ("Run input schema not found."), so a user's form, and this check, wait for it.
    schema_path = f"/flow_runs/{run['id']}/input/{keyset['schema']}"

    def schema_stored() -> bool:
        answer = api.request("GET", schema_path)
        if answer.status == 200:
            return True
        raise AssertionError(f"GET {schema_path} answers {answer.describe()}")

    wait_until(schema_stored, awaiting=f"the paused flow's input schema to be readable at GET {schema_path}",
               timeout=RUN_TIMEOUT, interval=0.25,
               hint="the paused flow's process stores its input's schema (POST /flow_runs/{id}/input) once the target "
               "accepted PAUSED; the UI reads it from there to show the form")
    refused = resume(api, run["id"])
    assert refused.get("status") == "REJECT", (
        f"POST /flow_runs/{{id}}/resume without the input the run waits for got {proposal_outcome(refused)}; Prefect "
        "rejects it (the input fails the schema the flow stored) and the run stays paused")
    answer = f"answer-{run['id'][:8]}"
    result = orchestration_result(api, f"/flow_runs/{run['id']}/resume", {"run_input": {"value": answer}})
    assert result.get("status") == "ACCEPT", (
        f"POST /flow_runs/{{id}}/resume with run_input {{'value': {answer!r}}} got {proposal_outcome(result)}; Prefect "
        "accepts an input that fits the schema and the run is RUNNING again")
    final = wait_for_final_state(api, run["id"], actor=lifecycle.actors["runner"], timeout=RUN_TIMEOUT,
                                 hint="the paused flow's process polls its run every second and, once RUNNING, reads "
                                 "its input (GET /flow_runs/{id}/input/{key})")
    resumed = [e for e in read_ledger(lifecycle.flows_dir, run["id"]) if e["event"] == "resumed"]
    assert final["state"]["type"] == "COMPLETED" and [e.get("answer") for e in resumed] == [answer], (
        f"the run resumed with {answer!r} ended {describe_state(final)} and its flow received "
        f"{[e.get('answer') for e in resumed]}; Prefect stores the input under the keyset's response key and the flow "
        "reads it back")
    assert [e["pid"] for e in resumed] == [started["pid"]], "the flow resumed in another process than the one that paused"


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


def child_runs(api: ApiClient, deployment_id: str, known: set[str]) -> list[dict[str, Any]]:
    """The runs of a deployment that this module did not create itself: those a flow created as its subflows."""
    runs = api.post("/flow_runs/filter", {"flow_runs": {"deployment_id": {"any_": [deployment_id]}}})
    if not isinstance(runs, list):
        raise UnexpectedAnswer(f"POST /flow_runs/filter answered {str(runs)[:300]}, not a list of flow runs")
    return [run for run in runs if isinstance(run, dict) and run.get("id") not in known]


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
        raise AssertionError(f"the parent run is {describe_state(parent_now)}; its "
                             f"subflow runs: {[describe_state(c) for c in children] or 'none'}")

    child, started = wait_until(
        child_started, awaiting=f"the served run {parent['id']} to start a subflow run of deployment {blocking} and "
        "that run's flow code to start", timeout=RUN_TIMEOUT, interval=0.25,
        hint="run_deployment creates the subflow run (POST /deployments/{id}/create_flow_run with parent_task_run_id) "
        "and the Runner runs it as it runs any due run")
    assert child.get("parent_task_run_id"), (
        f"the run {child['id']} that the parent created with run_deployment has parent_task_run_id "
        f"{child.get('parent_task_run_id')!r}; Prefect keeps the task run that links a subflow to its parent")
    result = cancel(api, parent["id"])
    assert result.get("status") == "ACCEPT", (
        f"proposing CANCELLING for the RUNNING parent run got {proposal_outcome(result)}; Prefect accepts it")
    final = wait_for_final_state(api, parent["id"], actor=actor, timeout=CANCEL_TIMEOUT,
                                 hint="the Runner kills the cancelled parent's process and sets CANCELLED")
    assert final["state"]["type"] == "CANCELLED", f"the cancelled parent run ended {describe_state(final)}, not CANCELLED"
    loop = service_loop("cancellation_cleanup")
    ended = wait_for_final_state(
        api, child["id"], actor=actor, timeout=2 * loop + 10 + CANCEL_TIMEOUT,
        hint=f"Prefect's cancellation-cleanup service proposes CANCELLING for a subflow run whose parent is CANCELLED, "
        f"within a loop ({loop:g} s here: --service-loops cancellation_cleanup); the Runner that holds it then kills "
        "it and sets CANCELLED")
    assert ended["state"]["type"] == "CANCELLED", (
        f"the subflow run of the cancelled parent ended {describe_state(ended)}, not CANCELLED; its states: "
        f"{describe_history(state_history(api, child['id']))}")
    wait_until(lambda: process_gone(started["pid"]), awaiting=f"the subflow run's process {started['pid']} to exit",
               timeout=CANCEL_TIMEOUT, interval=0.2, hint="the Runner kills the process of a run it cancels")


def ledger_span(lifecycle: Lifecycle, run_id: str, begin: str, end: str) -> tuple[float, float] | None:
    """When the run's flow code wrote ``begin`` and ``end`` (seconds since the epoch), or None if it did not."""
    entries = {e["event"]: e["time"] for e in read_ledger(lifecycle.flows_dir, run_id)}
    return (entries[begin], entries[end]) if begin in entries and end in entries else None


def assert_holders_apart(lifecycle: Lifecycle, api: ApiClient, purpose: str, name: str, what: str) -> None:
    """The two runs made for ``purpose`` (one per client) completed, and their flows' holds of ``what`` never
    overlapped."""
    runs = {client: lifecycle.runs[client][purpose] for client in CLIENTS}
    finals = {client: wait_for_final_state(api, run["id"], actor=lifecycle.actors[client], timeout=RUN_TIMEOUT,
                                           poll_path=lifecycle.poll_path(client)) for client, run in runs.items()}
    spans = {client: ledger_span(lifecycle, run["id"], "acquired", "releasing") for client, run in runs.items()}
    assert all(final["state"]["type"] == "COMPLETED" for final in finals.values()) and all(spans.values()), (
        f"the two runs holding {what} {name!r} ended "
        f"{', '.join(f'{c}: {describe_state(f)}' for c, f in finals.items())}; each takes its slot and completes")
    (first, first_span), (second, second_span) = sorted(spans.items(), key=lambda item: item[1][0])
    asks = limit_asks(lifecycle.flows_dir, name)
    # Decided (granted, or refused as taken) before the first holder let go; a busy server's 503 decides nothing.
    during = [ask for ask in asks if ask["answered"] <= first_span[1] and decided(ask)]
    granted = [ask for ask in during if 200 <= ask["status"] < 300]
    assert len(granted) <= 1, (
        f"the target granted {what} {name!r} {len(granted)} times while the {first}'s run held it: its answers to "
        f"the asks for a slot (POST .../increment) were {describe_asks(asks, first_span[0])}, and the {first}'s run "
        f"let the slot go at +{first_span[1] - first_span[0]:.2f} s. Prefect answers 423 (Locked) while the limit's one "
        "slot is taken (the client asks again after Retry-After)")
    if len(during) < len(runs):  # the holder's own ask and the other's, or the check proved nothing
        raise HarnessError(
            f"the {second}'s run asked for {what} {name!r} only after the {first}'s run had let it go (the answers: "
            f"{describe_asks(asks, first_span[0])}; let go at +{first_span[1] - first_span[0]:.2f} s): a holder keeps "
            "its slot up to a minute for the other's ask, so the machine was too loaded to test the limit")
    overlap = first_span[1] - second_span[0]
    assert overlap <= 0, (
        f"the {second}'s run took {what} {name!r} {overlap:.2f} s before the {first}'s run let it go (at "
        f"{describe_instant(dt.datetime.fromtimestamp(second_span[0], dt.timezone.utc))}): the target granted a slot "
        "it did not have. Prefect refuses a slot while the limit's one slot is taken (the client retries)")


def describe_asks(asks: list[dict[str, Any]], since: float) -> str:
    """The target's answers to the asks for a slot, each with when it came, relative to ``since`` (the first hold)."""
    return ", ".join(f"{ask['status']} at {ask['answered'] - since:+.2f} s" for ask in asks) or "none"


def active_slots(api: ApiClient, name: str) -> int:
    """``GET /v2/concurrency_limits/{name}``'s ``active_slots``."""
    limit = api.get(f"/v2/concurrency_limits/{name}")
    if not isinstance(limit, dict) or not isinstance(limit.get("active_slots"), int):
        raise UnexpectedAnswer(f"GET /v2/concurrency_limits/{name} answered {str(limit)[:300]}, not a limit with "
                               "its active_slots")
    return limit["active_slots"]


def test_a_global_concurrency_limit_keeps_its_holders_apart(lifecycle: Lifecycle, api: ApiClient) -> None:
    """Two runs, one served and one the worker's, each take the same one-slot global concurrency limit with
    Prefect's ``concurrency(name, occupy=1)`` (``POST /v2/concurrency_limits/increment``, or ``.../increment-with-lease``
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
        "released its slot (POST /v2/concurrency_limits/decrement, or the lease's release)")


def test_a_tag_concurrency_limit_keeps_its_tasks_apart(lifecycle: Lifecycle, api: ApiClient) -> None:
    """Two runs, one served and one the worker's, each run a task tagged with a tag whose task-run concurrency limit
    (v1, ``POST /concurrency_limits/``) is 1, and the task holds its slot until the target has answered the other's
    ask: the target granted it once while it was held, and the two tasks never run at the same time. A target without task-run concurrency limits is ``unsupported`` here."""
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
    finals = [wait_for_final_state(api, run["id"], actor=actor, timeout=2 * RUN_TIMEOUT + 2 * wait,
                                   poll_path=lifecycle.poll_path("worker"),
                                   hint="the worker runs the queued run once the target hands it out again")
              for run in lifecycle.queued]
    histories = [state_history(api, run["id"]) for run in lifecycle.queued]
    assert all(final["state"]["type"] == "COMPLETED" for final in finals), (
        f"the two runs of the deployment with concurrency_limit 1 ended {[describe_state(f) for f in finals]}; "
        f"their states: {' | '.join(describe_history(h) for h in histories)}")
    spans = sorted(filter(None, (ledger_span(lifecycle, run["id"], "started", "finished") for run in lifecycle.queued)))
    assert len(spans) == 2 and spans[0][1] <= spans[1][0], (
        f"the flow code of the two runs ran from {[round(b - spans[0][0], 2) for b, _ in spans]} s to "
        f"{[round(e - spans[0][0], 2) for _, e in spans]} s: side by side, though their deployment's concurrency_limit "
        f"is 1. Their states: {' | '.join(describe_history(h) for h in histories)}. Prefect refuses the second run's "
        "PENDING with AwaitingConcurrencySlot while the first holds the slot")
    assert any(s.get("name") == "AwaitingConcurrencySlot" and s.get("type") == "SCHEDULED" for h in histories for s in h), (
        f"neither run was ever AwaitingConcurrencySlot (their states: "
        f"{' | '.join(describe_history(h) for h in histories)}); Prefect answers the second run's PENDING with it")


def crowd(lifecycle: Lifecycle, api: ApiClient, actors: Callable[..., Actor], module_names: Callable[..., str],
          module_created: Created) -> list[dict[str, Any]]:
    """Six runs of the quick flow due at once on a pool of their own, then three process workers started on it
    together, so that each worker's first poll finds them all: the crowd's runs (made once, for whichever check
    needs them first).

    Made when a check needs it rather than with the module's other runs: six more flow-run processes at the start
    would more than double the load of the module's first seconds (on SQLite, the reference then answered a
    worker 503)."""
    if not lifecycle.crowd_runs:
        pool = module_names("crowd-pool")
        create_work_pool(api, module_created, pool)
        deployment = create_deployment(api, lifecycle.flows["quick"], module_names("crowd-quick"), work_pool_name=pool,
                                       entrypoint=entrypoint("quick"), pull_steps=lifecycle.pull)["id"]
        lifecycle.crowd_runs = [create_run(api, deployment, module_names("crowd", str(n)), utc_now())
                                for n in range(1, CROWD_RUNS + 1)]
        lifecycle.crowd_pool = pool
        for n in range(1, CROWD_WORKERS + 1):
            lifecycle.actors[f"crowd-worker-{n}"] = actors(start_worker, pool_name=pool, worker_name=module_names(
                f"crowd-{n}"), name=f"crowd-worker-{n}", limit=CROWD_WORKER_LIMIT)
    return lifecycle.crowd_runs


def settled_runs(api: ApiClient, runs: list[dict[str, Any]], workers: list[Actor], poll: str) -> list[dict[str, Any]]:
    """The runs once they are final and stay so: a second execution of a run may begin after its first has ended
    (a worker handed it again), so after all are final every worker polls once more, and if any run's state has
    changed meanwhile, its new execution is awaited to its end and the round repeats. Then the flows' ledger holds
    every execution there was."""
    deadline = time.monotonic() + 2 * RUN_TIMEOUT * timeout_scale()
    finals = [wait_for_final_state(api, run["id"], actor=workers[0], timeout=2 * RUN_TIMEOUT, poll_path=poll)
              for run in runs]
    while True:
        since = utc_now().timestamp()
        for actor in workers:
            wait_until(lambda: any(e.path.endswith(poll) and e.started > since + 1 for e in actor.recorder.transcript()),
                       awaiting=f"{actor.name} to poll {poll} once more after the runs ended", timeout=RUN_TIMEOUT,
                       interval=0.25)
        moved = any((api.get(f"/flow_runs/{run['id']}").get("state") or {}).get("id") != final["state"].get("id")
                    for run, final in zip(runs, finals))
        if not moved or time.monotonic() > deadline:
            return finals
        finals = [wait_for_final_state(api, run["id"], actor=workers[0], timeout=RUN_TIMEOUT, poll_path=poll)
                  for run in runs]


def test_every_run_is_executed_exactly_once_among_three_workers(
        lifecycle: Lifecycle, api: ApiClient, actors: Callable[..., Actor], module_names: Callable[..., str],
        module_created: Created) -> None:
    """Three process workers start together on one pool where six runs are already due: every run ends COMPLETED
    and its flow code ran exactly once (counted from the flows' own ledger, not from the server's word). Prefect
    lets one worker's PENDING win and rejects the others'."""
    runs = crowd(lifecycle, api, actors, module_names, module_created)
    crowd_actors = [a for name, a in lifecycle.actors.items() if name.startswith("crowd-worker-")]
    finals = settled_runs(api, runs, crowd_actors, f"/work_pools/{lifecycle.crowd_pool}/get_scheduled_flow_runs")
    starts = {run["id"]: [e["pid"] for e in read_ledger(lifecycle.flows_dir, run["id"]) if e["event"] == "started"]
              for run in runs}
    wrong = {final["id"]: (starts[final["id"]], final) for final in finals
             if len(starts[final["id"]]) != 1 or final["state"]["type"] != "COMPLETED"}
    assert not wrong, (
        f"of {len(runs)} runs due at once to three workers, {len(wrong)} did not run their flow code once and "
        "complete: " + "; ".join(f"{run_id} ran {len(pids)} times and ended {describe_state(final)}, its states: "
                                 f"{describe_history(state_history(api, run_id))}"
                                 for run_id, (pids, final) in wrong.items())
        + ". Prefect accepts one PENDING per run and rejects a second worker's, and each run completes")


def task_runs_of(api: ApiClient, flow_run_id: str) -> list[dict[str, Any]]:
    runs = api.post("/task_runs/filter", {"flow_runs": {"id": {"any_": [flow_run_id]}}})
    if not isinstance(runs, list):
        raise UnexpectedAnswer(f"POST /task_runs/filter answered {str(runs)[:300]}, not a list of task runs")
    return runs


def test_a_tasks_retries_are_kept(lifecycle: Lifecycle, api: ApiClient) -> None:
    """A worker's run of a flow whose task (``retries=1``) fails its first try and completes on its second, in the
    flow's process: the
    target keeps the task run (from the client's task-run events, or its API calls before 3.1) COMPLETED with
    ``run_count`` 2, and its states show two RUNNING states before COMPLETED."""
    second_wave(lifecycle)
    run = lifecycle.runs["worker"]["quick"]
    wait_for_final_state(api, run["id"], actor=lifecycle.actors["worker"], timeout=RUN_TIMEOUT,
                         poll_path=lifecycle.poll_path("worker"))

    def kept() -> dict[str, Any]:
        tasks = task_runs_of(api, run["id"])
        done = [t for t in tasks if (t.get("state") or {}).get("type") == "COMPLETED"]
        if done:
            return done[0]
        raise AssertionError(f"its task runs: {[describe_state(t) for t in tasks] or 'none'}")

    task_run = wait_until(kept, awaiting=f"the target to keep the COMPLETED task run of flow run {run['id']}",
                          timeout=CANCEL_TIMEOUT, interval=0.25,
                          hint="Prefect records task runs from the prefect.task-run.* events its clients send "
                          "(WS /events/in), in its task-run recorder service")
    tries = [e for e in read_ledger(lifecycle.flows_dir, run["id"]) if e["event"] == "task-try"]
    states = api.get(f"/task_run_states/?task_run_id={task_run['id']}")
    states = sorted(states if isinstance(states, list) else [], key=lambda s: str(s.get("timestamp")))
    kinds = [s.get("type") for s in states]
    assert task_run.get("run_count") == 2 and kinds.count("RUNNING") >= 2 and kinds[-1:] == ["COMPLETED"], (
        f"the task that ran {len(tries)} times (failing once, retries=1) is kept with run_count "
        f"{task_run.get('run_count')!r} and states {describe_history(states)}; Prefect keeps run_count 2 and a "
        "RUNNING state for each try, then COMPLETED")



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


def test_a_dead_holders_global_slot_is_freed_when_its_lease_expires(lifecycle: Lifecycle, api: ApiClient) -> None:
    """A served run takes the one slot of a global concurrency limit with ``concurrency(name, occupy=1,
    lease_duration=60)`` (``POST /v2/concurrency_limits/increment-with-lease``) and its process dies at once
    (SIGKILL, by its own hand), so no one releases the slot, and the lease is renewed at most once, as the client
    takes it (its renewal thread renews at once): the target frees the slot once the lease has expired, 60 s after
    the last answer that set it (Prefect's repossessor service, every ``--service-loops repossessor`` seconds: 15 by
    default), so the limit does not stay full for ever."""
    if isinstance(lifecycle.lease_limit, Exception):
        raise lifecycle.lease_limit
    name, run_id, actor = lifecycle.lease_limit, lifecycle.runs["runner"]["leasing"]["id"], lifecycle.actors["runner"]

    def acquired() -> dict[str, Any]:
        entries = [e for e in read_ledger(lifecycle.flows_dir, run_id) if e["event"] == "acquired"]
        if entries:
            return entries[0]
        actor_can_still_act(actor, lifecycle.poll_path("runner"))
        raise AssertionError(f"run is {describe_state(api.get(f'/flow_runs/{run_id}'))}, its flow code wrote "
                             f"{ledger_events(lifecycle, run_id)}")

    taken = wait_until(acquired, awaiting=f"served run {run_id} to take the slot of global concurrency limit {name!r}",
                       timeout=RUN_TIMEOUT, interval=0.25,
                       hint="the flow calls concurrency(name, occupy=1, lease_duration=60), which asks POST "
                       "/v2/concurrency_limits/increment-with-lease for a slot until it gets one")
    loop = service_loop("repossessor")

    def expiry() -> tuple[float, str]:
        """When the lease expires at the latest, and why: LEASE_SECONDS after the last answer that set it."""
        sets = lease_set_times(actor.recorder, name)
        what, when = max(sets, key=lambda s: s[1], default=("the flow's note that it held the slot", taken["time"]))
        return max(when, taken["time"]) + LEASE_SECONDS, what

    def freed() -> bool:
        slots = active_slots(api, name)
        if slots == 0:
            return True
        expires, why = expiry()
        raise AssertionError(f"GET /v2/concurrency_limits/{name} answers active_slots {slots}, "
                             f"{time.time() - expires:.0f} s after the dead holder's {LEASE_SECONDS}-s lease expired "
                             f"({LEASE_SECONDS} s after {why})")

    # The lease's own minute is the client's, not the target's: --timeout-scale leaves it whole. The repossessor
    # only finds the expired lease each loop and hands its revocation to the server's task queue (docket), which
    # runs it beside the other services' loops: REVOKE_GRACE allows for that queue.
    wait_until(freed, awaiting=f"the target to free the slot of limit {name!r} whose holder died",
               timeout=max(0.0, expiry()[0] - time.time()) / timeout_scale() + 2 * loop + REVOKE_GRACE, interval=0.5,
               hint=f"Prefect's repossessor service frees the slots of expired leases (a living holder renews its "
               f"lease) every loop ({loop:g} s here: --service-loops repossessor)")
