"""The lifecycle checks' world: a Runner serving every lifecycle flow and a process worker with a deployment of each,
the runs each check acts on (made together, so the clients run them side by side while the checks take turns), and
the requests a user makes of a running run (cancel, resume) with the target's answers read back.

The lifecycle checks are split across modules (``scenarios/test_lifecycle*.py``) so that pytest's processes run
their waits side by side; each module builds its own world with :func:`build_lifecycle`, for its own checks only
(:data:`PURPOSES`).
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from harness.checks.objects import Created, create_deployment, create_flow, create_work_pool
from harness.checks.orchestration import cancel, create_global_limit, create_tag_limit, proposal_outcome
from harness.checks.polling import create_run
from harness.checks.timestamps import utc_now
from harness.clients.actors import FAST_CLIENT_SETTINGS, Actor, start_worker
from harness.clients.lifecycle import (
    FLOW_KEYS,
    SlotAsks,
    entrypoint,
    read_ledger,
    start_lifecycle_runner,
    write_lifecycle_flows,
)
from harness.clients.progress import actor_can_still_act, describe_state, wait_for_deployment, wait_for_final_state
from harness.errors import UnexpectedAnswer
from harness.target.api import ApiClient
from harness.waits import wait_until

#: How long a run may take to be picked up and reach its flow code, or to end (a flow-run process starts in 1-2 s).
RUN_TIMEOUT = 90.0


#: How long a cancelled run may take to end CANCELLED: the client hears of it by an event at once, or by its
#: fallback poll (1 s for the Runner, 2 s for the worker here: ``FAST_CLIENT_SETTINGS``), then kills the process.
CANCEL_TIMEOUT = 30.0


CLIENTS = ("runner", "worker")


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
        return (
            f"/work_pools/{self.pool_name}/get_scheduled_flow_runs"
            if client == "worker"
            else "/deployments/get_scheduled_flow_runs"
        )


#: How many workers share the crowd's pool, and how many runs are due there at once (the exactly-once check).
CROWD_WORKERS, CROWD_RUNS = 3, 6


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
    """The purposes of :data:`PURPOSES` whose checks this session runs in the requesting module (after ``-k`` and
    ``-m``)."""
    selected = {
        getattr(item, "originalname", item.name)
        for item in request.session.items
        if getattr(item, "module", None) is request.module
    }
    return {purpose for purpose, checks in PURPOSES.items() if selected & set(checks)}


#: The purposes whose runs the worker runs (the others are the Runner's alone, or have workers of their own).
WORKER_PURPOSES = frozenset(
    {"cancel", "crash", "flaky", "pausing", "suspending", "early", "limited", "tagged", "queued", "quick"}
)
#: The flows the Runner must serve for each purpose (a Runner serving a flow no check runs only costs a deployment).
RUNNER_FLOWS = {
    "cancel": ("blocking",),
    "crash": ("blocking",),
    "early": ("blocking",),
    "flaky": ("flaky",),
    "pausing": ("pausing",),
    "suspending": ("suspending",),
    "asking": ("asking",),
    "expiring": ("expiring",),
    "nesting": ("nesting", "blocking"),
    "limited": ("limited",),
    "tagged": ("limited",),
    "leasing": ("leasing",),
}


def build_lifecycle(
    wanted: set[str],
    api: ApiClient,
    actors: Callable[..., Actor],
    module_names: Callable[..., str],
    module_created: Created,
    scenario_dir: Path,
) -> Lifecycle:
    """The flows file, a Runner serving the flows the ``wanted`` purposes run, and (where one needs it) a process
    pool with a deployment of each flow and its worker; then the first wave of the runs the purposes act on, created
    together so the clients run them side by side. Stop its :attr:`Lifecycle.asks` when the module ends."""
    flow_names = {key: module_names(key) for key in FLOW_KEYS}
    flows_dir = scenario_dir / "flows"
    flows_file = write_lifecycle_flows(flows_dir, flow_names)
    pool_name = module_names("pool")
    create_work_pool(api, module_created, pool_name)
    pull = [{"prefect.deployments.steps.set_working_directory": {"directory": str(flows_dir)}}]
    flows = {key: create_flow(api, module_created, flow_name)["id"] for key, flow_name in flow_names.items()}
    needs_worker = bool(wanted & WORKER_PURPOSES)
    worker_deployments = (
        {
            key: create_deployment(
                api,
                flows[key],
                module_names(f"worker-{key}"),
                work_pool_name=pool_name,
                entrypoint=entrypoint(key),
                pull_steps=pull,
            )["id"]
            for key in ("blocking", "flaky", "pausing", "suspending", "limited", "quick")
        }
        if needs_worker
        else {}
    )
    served = {key for purpose in wanted for key in RUNNER_FLOWS.get(purpose, ())}
    runner_names = {key: module_names(f"runner-{key}") for key in FLOW_KEYS if key in served}
    started: dict[str, Actor] = {}
    if runner_names:
        started["runner"] = actors(start_lifecycle_runner, flows_file=flows_file, deployment_names=runner_names)
    if needs_worker:
        started["worker"] = actors(start_worker, pool_name=pool_name, worker_name=module_names("worker"))
    # A second worker on a pool of its own, killed without a word by the lost-worker check.
    lost_pool, lost_worker = module_names("lost-pool"), module_names("lost-worker")
    if "lost" in wanted:
        create_work_pool(api, module_created, lost_pool)
        started["lost-worker"] = actors(start_worker, pool_name=lost_pool, worker_name=lost_worker, name="lost-worker")
    runner_deployments = {
        key: wait_for_deployment(api, flow_names[key], name, actor=started["runner"], timeout=RUN_TIMEOUT)["id"]
        for key, name in runner_names.items()
    }
    lifecycle = Lifecycle(
        flows_dir,
        pool_name,
        started,
        {"runner": runner_deployments, "worker": worker_deployments},
        (lost_pool, lost_worker),
        flows,
        pull,
        SlotAsks(flows_dir, [a for n, a in started.items() if n in ("runner", "worker")]),
    )
    for client, deployments in lifecycle.deployments.items():
        if client not in started:
            continue
        now = utc_now()
        runs = lifecycle.runs[client] = {
            purpose: create_run(api, deployments[flow], module_names(client, purpose), now)
            for purpose, flow in (
                ("cancel", "blocking"),
                ("crash", "blocking"),
                ("flaky", "flaky"),
                ("pausing", "pausing"),
                ("suspending", "suspending"),
            )
            if purpose in wanted
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
            lifecycle.runs["runner"]["leasing"] = create_run(
                api,
                runner_deployments["leasing"],
                module_names("runner", "leasing"),
                utc_now(),
                parameters={"limit": lifecycle.lease_limit},
            )
        except (UnexpectedAnswer, AssertionError) as exc:  # the target's answer: the check says so
            lifecycle.lease_limit = exc
    if "expiring" in wanted:  # the server's doing alone: one client's run is enough
        lifecycle.runs["runner"]["expiring"] = create_run(
            api, runner_deployments["expiring"], module_names("runner", "expiring"), utc_now()
        )
    lifecycle.second_wave = lambda: make_second_wave(
        lifecycle, api, wanted, module_names, module_created, flow_names, runner_names
    )
    return lifecycle


@pytest.fixture(scope="module")
def lifecycle(
    request: pytest.FixtureRequest,
    api: ApiClient,
    actors: Callable[..., Actor],
    module_names: Callable[..., str],
    module_created: Created,
    scenario_dir: Path,
) -> Iterator[Lifecycle]:
    """The requesting module's clients and the runs its selected checks act on (:func:`build_lifecycle`): each
    lifecycle module imports this one fixture."""
    world = build_lifecycle(wanted_purposes(request), api, actors, module_names, module_created, scenario_dir)
    yield world
    world.asks.stop()


def make_second_wave(
    lifecycle: Lifecycle,
    api: ApiClient,
    wanted: set[str],
    module_names: Callable[..., str],
    module_created: Created,
    flow_names: dict[str, str],
    runner_names: dict[str, str],
) -> None:
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
            queued = create_deployment(
                api,
                lifecycle.flows["holding"],
                module_names("worker-holding"),
                work_pool_name=lifecycle.pool_name,
                entrypoint=entrypoint("holding"),
                pull_steps=lifecycle.pull,
                concurrency_limit=1,
            )
            lifecycle.queued = [
                create_run(api, queued["id"], module_names("worker", "queued", str(n)), utc_now()) for n in (1, 2)
            ]
        except (UnexpectedAnswer, AssertionError) as exc:
            lifecycle.queued = exc
    for client in CLIENTS:
        runs, now = lifecycle.runs.setdefault(client, {}), utc_now()
        if isinstance(lifecycle.limit, str) and lifecycle.limit:  # one run of each client holds the slot in turn
            runs["limited"] = create_run(
                api,
                deployments[client]["limited"],
                module_names(client, "limited"),
                now,
                parameters={"limit": lifecycle.limit, "peers": 2},
            )
        if isinstance(lifecycle.tag, str) and lifecycle.tag:  # one task of each client's run holds the slot in turn
            runs["tagged"] = create_run(
                api,
                deployments[client]["limited"],
                module_names(client, "tagged"),
                now,
                parameters={"limit": lifecycle.tag, "peers": 2, "tag": True},
            )
    # One client's run is enough where the behaviour is the server's (or one client's as much as the other's).
    if "asking" in wanted:
        lifecycle.runs["runner"]["asking"] = create_run(
            api, deployments["runner"]["asking"], module_names("runner", "asking"), utc_now()
        )
    if "nesting" in wanted:
        lifecycle.runs["runner"]["nesting"] = create_run(
            api,
            deployments["runner"]["nesting"],
            module_names("runner", "nesting"),
            utc_now(),
            parameters={"child": f"{flow_names['blocking']}/{runner_names['blocking']}"},
        )
    if "quick" in wanted:
        lifecycle.runs["worker"]["quick"] = create_run(
            api, deployments["worker"]["quick"], module_names("worker", "quick"), utc_now()
        )


def second_wave(lifecycle: Lifecycle) -> Lifecycle:
    """The lifecycle, its second wave of runs made (once, by whichever of its checks comes first)."""
    make, lifecycle.second_wave = lifecycle.second_wave, lambda: None
    make()
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


def await_started(
    api: ApiClient,
    lifecycle: Lifecycle,
    client: str,
    run_id: str,
    state_type: str,
    state_name: str | None = None,
    *,
    hint: str,
) -> tuple[dict[str, Any], dict[str, Any]]:
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

    return wait_until(
        probe,
        awaiting=f"the {client} to start flow run {run_id} and the target to say {wanted}",
        timeout=RUN_TIMEOUT,
        interval=0.25,
        hint=hint,
    )


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
    started, _ = await_started(
        api,
        lifecycle,
        client,
        run["id"],
        "RUNNING",
        hint=f"the {client} starts the runs that {lifecycle.poll_path(client)} hands out",
    )
    result = cancel(api, run["id"])
    assert result.get("status") == "ACCEPT" and (result.get("state") or {}).get("type") == "CANCELLING", (
        f"proposing CANCELLING for RUNNING run {run['id']} got {proposal_outcome(result)}; Prefect accepts it "
        "(the client that runs it then kills its process)"
    )
    final = wait_for_final_state(
        api,
        run["id"],
        actor=lifecycle.actors[client],
        timeout=CANCEL_TIMEOUT,
        poll_path=lifecycle.poll_path(client),
        hint=f"the {client} learns of a cancellation from the prefect.flow-run.Cancelling event (WS /events/out) or "
        "its poll of POST /flow_runs/filter for CANCELLING runs, then kills the process and sets CANCELLED",
    )
    assert final["state"]["type"] == "CANCELLED", (
        f"the cancelled run ended {describe_state(final)}, not CANCELLED; its flow code wrote "
        f"{ledger_events(lifecycle, run['id'])}"
    )
    wait_until(
        lambda: process_gone(started["pid"]),
        awaiting=f"the cancelled run's process {started['pid']} to exit",
        timeout=CANCEL_TIMEOUT,
        interval=0.2,
        hint=f"the {client} kills the flow-run process it cancels",
    )
    return run["id"]
