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
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from harness.checks.objects import Created, create_deployment, create_flow, create_work_pool
from harness.checks.polling import create_run
from harness.checks.timestamps import describe_instant, read_instant, utc_now
from harness.clients.actors import FAST_CLIENT_SETTINGS, Actor, start_worker
from harness.clients.lifecycle import (
    FLOW_KEYS,
    SlotAsks,
    decided,
    entrypoint,
    limit_asks,
    read_ledger,
    start_lifecycle_runner,
    write_lifecycle_flows,
)
from harness.clients.progress import actor_can_still_act, describe_state, wait_for_deployment, wait_for_final_state
from harness.errors import HarnessError, UnexpectedAnswer
from harness.target.api import ApiClient
from harness.waits import timeout_scale, wait_until

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
        return (
            f"/work_pools/{self.pool_name}/get_scheduled_flow_runs"
            if client == "worker"
            else "/deployments/get_scheduled_flow_runs"
        )


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


def create_limit(
    api: ApiClient, created: Created, path: str, body: dict[str, Any], size_key: str, delete_path: str
) -> None:
    """A concurrency limit of one slot, ``POST {path}`` with ``body``, checked to say so under ``size_key``; deleted
    with the module's objects."""
    answer = api.post(path, body, expect=(200, 201))
    if not isinstance(answer, dict) or answer.get(size_key) != 1:
        raise UnexpectedAnswer(f"POST {path} answered {str(answer)[:300]}, not the limit of 1 it created")
    created.add(delete_path)


def create_tag_limit(api: ApiClient, created: Created, tag: str) -> str:
    """A task-run concurrency limit (v1) of one slot on ``tag``, as ``prefect concurrency-limit create TAG 1`` makes
    it: the tag."""
    create_limit(
        api,
        created,
        "/concurrency_limits/",
        {"tag": tag, "concurrency_limit": 1},
        "concurrency_limit",
        f"/concurrency_limits/tag/{tag}",
    )
    return tag


def create_global_limit(api: ApiClient, created: Created, name: str) -> str:
    """A global concurrency limit (v2) of one slot, as ``prefect gcl create NAME --limit 1`` makes it: its name."""
    create_limit(
        api, created, "/v2/concurrency_limits/", {"name": name, "limit": 1}, "limit", f"/v2/concurrency_limits/{name}"
    )
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


def orchestration_result(api: ApiClient, path: str, body: dict[str, Any]) -> dict[str, Any]:
    """``POST path`` (a set_state or a resume) answered with an orchestration result ``{status, state, details}``."""
    result = api.post(path, body, expect=(200, 201))
    if not isinstance(result, dict) or "status" not in result:
        raise UnexpectedAnswer(
            f"POST {path} answered {str(result)[:300]}, not an orchestration result {{status, state, details}}"
        )
    return result


def cancel(api: ApiClient, run_id: str) -> dict[str, Any]:
    """Propose CANCELLING as ``prefect flow-run cancel`` does; the orchestration result."""
    return orchestration_result(api, f"/flow_runs/{run_id}/set_state", CANCEL_REQUEST)


def proposal_outcome(result: dict[str, Any]) -> str:
    state = result.get("state") or {}
    reason = (result.get("details") or {}).get("reason")
    return f"{result.get('status')} with state {state.get('type')}/{state.get('name')}" + (
        f" ({reason})" if reason else ""
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


def resume(api: ApiClient, run_id: str) -> dict[str, Any]:
    """``POST /flow_runs/{id}/resume``, as ``prefect flow-run resume`` and the UI send it: the orchestration result."""
    return orchestration_result(api, f"/flow_runs/{run_id}/resume", {})


def listed_worker(api: ApiClient, pool_name: str, worker_name: str) -> dict[str, Any]:
    workers = api.post(f"/work_pools/{pool_name}/workers/filter", {})
    if not isinstance(workers, list):
        raise UnexpectedAnswer(f"POST /work_pools/{{name}}/workers/filter answered {str(workers)[:300]}, not a list")
    return next((w for w in workers if isinstance(w, dict) and w.get("name") == worker_name), {})


def state_history(api: ApiClient, run_id: str) -> list[dict[str, Any]]:
    states = api.get(f"/flow_run_states/?flow_run_id={run_id}")
    if not isinstance(states, list):
        raise UnexpectedAnswer(f"GET /flow_run_states/ answered {str(states)[:300]}, not a list of states")
    return sorted(states, key=lambda s: read_instant(s.get("timestamp"), "timestamp of a flow run state"))


def describe_history(states: list[dict[str, Any]]) -> str:
    return ", ".join(f"{s.get('type')}/{s.get('name')}" for s in states)


def child_runs(api: ApiClient, deployment_id: str, known: set[str]) -> list[dict[str, Any]]:
    """The runs of a deployment that this module did not create itself: those a flow created as its subflows."""
    runs = api.post("/flow_runs/filter", {"flow_runs": {"deployment_id": {"any_": [deployment_id]}}})
    if not isinstance(runs, list):
        raise UnexpectedAnswer(f"POST /flow_runs/filter answered {str(runs)[:300]}, not a list of flow runs")
    return [run for run in runs if isinstance(run, dict) and run.get("id") not in known]


def ledger_span(lifecycle: Lifecycle, run_id: str, begin: str, end: str) -> tuple[float, float] | None:
    """When the run's flow code wrote ``begin`` and ``end`` (seconds since the epoch), or None if it did not."""
    entries = {e["event"]: e["time"] for e in read_ledger(lifecycle.flows_dir, run_id)}
    return (entries[begin], entries[end]) if begin in entries and end in entries else None


def assert_holders_apart(lifecycle: Lifecycle, api: ApiClient, purpose: str, name: str, what: str) -> None:
    """The two runs made for ``purpose`` (one per client) completed, and their flows' holds of ``what`` never
    overlapped."""
    runs = {client: lifecycle.runs[client][purpose] for client in CLIENTS}
    finals = {
        client: wait_for_final_state(
            api, run["id"], actor=lifecycle.actors[client], timeout=RUN_TIMEOUT, poll_path=lifecycle.poll_path(client)
        )
        for client, run in runs.items()
    }
    spans = {client: ledger_span(lifecycle, run["id"], "acquired", "releasing") for client, run in runs.items()}
    assert all(final["state"]["type"] == "COMPLETED" for final in finals.values()) and all(spans.values()), (
        f"the two runs holding {what} {name!r} ended "
        f"{', '.join(f'{c}: {describe_state(f)}' for c, f in finals.items())}; each takes its slot and completes"
    )
    (first, first_span), (second, second_span) = sorted(spans.items(), key=lambda item: item[1][0])
    asks = limit_asks(lifecycle.flows_dir, name)
    # Decided (granted, or refused as taken) before the first holder let go; a busy server's 503 decides nothing.
    during = [ask for ask in asks if ask["answered"] <= first_span[1] and decided(ask)]
    granted = [ask for ask in during if 200 <= ask["status"] < 300]
    assert len(granted) <= 1, (
        f"the target granted {what} {name!r} {len(granted)} times while the {first}'s run held it: its answers to "
        f"the asks for a slot (POST .../increment) were {describe_asks(asks, first_span[0])}, and the {first}'s run "
        f"let the slot go at +{first_span[1] - first_span[0]:.2f} s. Prefect answers 423 (Locked) while the limit's "
        "one "
        "slot is taken (the client asks again after Retry-After)"
    )
    if len(during) < len(runs):  # the holder's own ask and the other's, or the check proved nothing
        raise HarnessError(
            f"the {second}'s run asked for {what} {name!r} only after the {first}'s run had let it go (the answers: "
            f"{describe_asks(asks, first_span[0])}; let go at +{first_span[1] - first_span[0]:.2f} s): a holder keeps "
            "its slot up to a minute for the other's ask, so the machine was too loaded to test the limit"
        )
    overlap = first_span[1] - second_span[0]
    assert overlap <= 0, (
        f"the {second}'s run took {what} {name!r} {overlap:.2f} s before the {first}'s run let it go (at "
        f"{describe_instant(dt.datetime.fromtimestamp(second_span[0], dt.timezone.utc))}): the target granted a slot "
        "it did not have. Prefect refuses a slot while the limit's one slot is taken (the client retries)"
    )


def describe_asks(asks: list[dict[str, Any]], since: float) -> str:
    """The target's answers to the asks for a slot, each with when it came, relative to ``since`` (the first hold)."""
    return ", ".join(f"{ask['status']} at {ask['answered'] - since:+.2f} s" for ask in asks) or "none"


def active_slots(api: ApiClient, name: str) -> int:
    """``GET /v2/concurrency_limits/{name}``'s ``active_slots``."""
    limit = api.get(f"/v2/concurrency_limits/{name}")
    if not isinstance(limit, dict) or not isinstance(limit.get("active_slots"), int):
        raise UnexpectedAnswer(
            f"GET /v2/concurrency_limits/{name} answered {str(limit)[:300]}, not a limit with its active_slots"
        )
    return limit["active_slots"]


def crowd(
    lifecycle: Lifecycle,
    api: ApiClient,
    actors: Callable[..., Actor],
    module_names: Callable[..., str],
    module_created: Created,
) -> list[dict[str, Any]]:
    """Six runs of the quick flow due at once on a pool of their own, then three process workers started on it
    together, so that each worker's first poll finds them all: the crowd's runs (made once, for whichever check
    needs them first).

    Made when a check needs it rather than with the module's other runs: six more flow-run processes at the start
    would more than double the load of the module's first seconds (on SQLite, the reference then answered a
    worker 503)."""
    if not lifecycle.crowd_runs:
        pool = module_names("crowd-pool")
        create_work_pool(api, module_created, pool)
        deployment = create_deployment(
            api,
            lifecycle.flows["quick"],
            module_names("crowd-quick"),
            work_pool_name=pool,
            entrypoint=entrypoint("quick"),
            pull_steps=lifecycle.pull,
        )["id"]
        lifecycle.crowd_runs = [
            create_run(api, deployment, module_names("crowd", str(n)), utc_now()) for n in range(1, CROWD_RUNS + 1)
        ]
        lifecycle.crowd_pool = pool
        for n in range(1, CROWD_WORKERS + 1):
            lifecycle.actors[f"crowd-worker-{n}"] = actors(
                start_worker,
                pool_name=pool,
                worker_name=module_names(f"crowd-{n}"),
                name=f"crowd-worker-{n}",
                limit=CROWD_WORKER_LIMIT,
            )
    return lifecycle.crowd_runs


def settled_runs(api: ApiClient, runs: list[dict[str, Any]], workers: list[Actor], poll: str) -> list[dict[str, Any]]:
    """The runs once they are final and stay so: a second execution of a run may begin after its first has ended
    (a worker handed it again), so after all are final every worker polls once more, and if any run's state has
    changed meanwhile, its new execution is awaited to its end and the round repeats. Then the flows' ledger holds
    every execution there was."""
    deadline = time.monotonic() + 2 * RUN_TIMEOUT * timeout_scale()
    finals = [
        wait_for_final_state(api, run["id"], actor=workers[0], timeout=2 * RUN_TIMEOUT, poll_path=poll) for run in runs
    ]
    while True:
        since = utc_now().timestamp()
        for actor in workers:
            wait_until(
                lambda: any(e.path.endswith(poll) and e.started > since + 1 for e in actor.recorder.transcript()),
                awaiting=f"{actor.name} to poll {poll} once more after the runs ended",
                timeout=RUN_TIMEOUT,
                interval=0.25,
            )
        moved = any(
            (api.get(f"/flow_runs/{run['id']}").get("state") or {}).get("id") != final["state"].get("id")
            for run, final in zip(runs, finals)
        )
        if not moved or time.monotonic() > deadline:
            return finals
        finals = [
            wait_for_final_state(api, run["id"], actor=workers[0], timeout=RUN_TIMEOUT, poll_path=poll) for run in runs
        ]


def task_runs_of(api: ApiClient, flow_run_id: str) -> list[dict[str, Any]]:
    runs = api.post("/task_runs/filter", {"flow_runs": {"id": {"any_": [flow_run_id]}}})
    if not isinstance(runs, list):
        raise UnexpectedAnswer(f"POST /task_runs/filter answered {str(runs)[:300]}, not a list of task runs")
    return runs
