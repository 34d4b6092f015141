"""Durability: what the server keeps survives a restart of it.

A server whose logs, events or runs live in memory (the notes of the Zig port say its logs do) loses them on every
deploy. Prefect keeps all of it in its database: after a restart every flow, deployment and schedule, run and state,
work pool and queue, log line and event is there as it was, and its scheduler does not create a second run for a
time it had already scheduled.

The checks restart the target once, at a quiet point: their module runs last, and it restarts the target only
once every other check of the run has finished. They need something that can restart it: the bundled reference
restarts itself (stopped, then started on its database), any other target needs ``--restart-command CMD``.
Otherwise they are skipped, with the reason. The records and the connected clients are set up before the quiet
point, while the rest of the run finishes.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pytest

from harness.checks.events import read_events
from harness.checks.logs import read_logs
from harness.checks.objects import (
    Created,
    create_deployment,
    create_flow,
    create_local_code_deployment,
    create_scheduled_run,
    create_work_pool,
    create_work_queue,
    runs_of_deployment,
    scheduled_state,
    set_state,
)
from harness.checks.timestamps import describe_instant, read_instant, utc_now
from harness.clients.actors import Actor, start_runner, start_worker
from harness.clients.progress import wait_for_deployment, wait_for_final_state
from harness.plugin.fixtures import Restart
from harness.reporting.results import MEASURED
from harness.target.api import ApiClient
from harness.waits import scheduler_interval, stability_window, wait_for_stable, wait_until

pytestmark = pytest.mark.durability

#: The scheduled deployment's interval: a week, so the scheduler makes a handful of runs (Prefect: up to 100 days).
INTERVAL = 7 * 24 * 3600
#: How long events may take to be readable (Prefect's persister flushes every 5 s by default).
PERSIST_TIMEOUT = 30.0
#: How long a real client may take to start (import Prefect, create its deployment) or to run a run to its end.
CLIENT_TIMEOUT = 60.0


@dataclass
class Snapshot:
    """What the checks compare before and after the restart: stable fields of each object, by a label."""

    records: dict[str, Any]
    runs: dict[str, str]  # the scheduled deployment's SCHEDULED runs: id -> expected_start_time


@dataclass
class Restarted:
    before: Snapshot
    after: Snapshot
    how: str
    took: float  # seconds the restart took, until the target answered again
    quiet: str  # what had finished before the restart
    #: Per real client connected before the restart (the Runner, the worker): the run it was given after the restart,
    #: as it ended, or why it did not.
    clients: dict[str, tuple[Actor, dict[str, Any] | None, AssertionError | None]] = field(default_factory=dict)


def keep(document: dict[str, Any], *fields: str) -> dict[str, Any]:
    return {field: document.get(field) for field in fields}


def scheduled_runs(api: ApiClient, deployment_id: str) -> dict[str, str]:
    runs = runs_of_deployment(api, deployment_id, "SCHEDULED", limit=200)
    return {
        run["id"]: describe_instant(read_instant(run.get("expected_start_time"), "expected_start_time")) for run in runs
    }


def event_of(api: ApiClient, resource_id: str) -> list[dict[str, Any]]:
    """The events about ``resource_id``, their fields that must not change."""
    return [keep(e, "id", "event", "occurred", "payload") for e in read_events(api, resource_id)]


def connected_clients(
    api: ApiClient,
    actors: Callable[..., Actor],
    module_names: Callable[..., str],
    module_created: Created,
    scenario_dir: Path,
) -> dict[str, tuple[Actor, dict[str, Any], str]]:
    """A ``.serve()`` Runner and a process worker, each with its deployment and the route it polls, connected."""
    flow_name, deployment_name = module_names("served-flow"), module_names("served-deployment")
    runner = actors(start_runner, flow_name=flow_name, deployment_name=deployment_name)
    pool_name = module_names("pool-of-worker")
    create_work_pool(api, module_created, pool_name)
    worker_deployment = create_local_code_deployment(
        api,
        module_created,
        scenario_dir / "worker-flow",
        pool_name=pool_name,
        flow_name=module_names("worker-flow"),
        deployment_name=module_names("worker-deployment"),
    )
    worker = actors(start_worker, pool_name=pool_name, worker_name=module_names("worker"))
    served = wait_for_deployment(api, flow_name, deployment_name, actor=runner, timeout=CLIENT_TIMEOUT)
    module_created.add(f"/flows/{served['flow_id']}")
    return {
        "runner": (runner, served, "/deployments/get_scheduled_flow_runs"),
        "worker": (worker, worker_deployment, f"/work_pools/{pool_name}/get_scheduled_flow_runs"),
    }


@pytest.fixture(scope="module")
def restarted(
    api: ApiClient,
    target_restart: Restart | None,
    quiet_point: Callable[[], str],
    module_names: Callable[..., str],
    module_created: Created,
    actors: Callable[..., Actor],
    scenario_dir: Path,
) -> Restarted:
    """The run's records, read before and after one restart of the target."""
    if target_restart is None:
        pytest.skip(
            "nothing can restart this target: give --restart-command CMD (the bundled reference restarts itself)"
        )
    flow = create_flow(api, module_created, module_names("flow"))
    anchor = utc_now().replace(microsecond=0) + dt.timedelta(hours=1)
    schedule = {
        "schedule": {"interval": INTERVAL, "anchor_date": describe_instant(anchor), "timezone": "UTC"},
        "active": True,
    }
    deployment = create_deployment(api, flow["id"], module_names("deployment"), schedules=[schedule])
    window = stability_window(scheduler_interval())
    # The scheduler's runs settle while the clients start and the rest of the run finishes (the quiet point).
    with ThreadPoolExecutor(1, thread_name_prefix="settle") as background:
        settled = background.submit(
            wait_for_stable,
            lambda: scheduled_runs(api, deployment["id"]),
            stable_for=window,
            awaiting="the runs the scheduler makes for the weekly deployment",
            timeout=window + 60,
        )
        clients = connected_clients(api, actors, module_names, module_created, scenario_dir)
        run = create_scheduled_run(api, flow["id"], module_names("run"), utc_now())
        for state_type in ("PENDING", "RUNNING", "COMPLETED"):
            set_state(api, run["id"], state_type)
        pool = create_work_pool(api, module_created, module_names("pool"))
        queue = create_work_queue(api, pool["name"], module_names("queue"))
        logs = [
            {
                "name": "prefect.flow_runs",
                "level": 20 + 10 * i,
                "message": f"line {i}: Grüße 🚀",
                "timestamp": describe_instant(utc_now() - dt.timedelta(seconds=3 - i)),
                "flow_run_id": run["id"],
            }
            for i in range(3)
        ]
        api.call("POST", "/logs/", logs, expect=(200, 201))
        resource = f"prefect-conformance.{module_names('event')}"
        event = {
            "id": str(uuid.uuid4()),
            "event": "prefect-conformance.kept",
            "occurred": describe_instant(utc_now()),
            "resource": {"prefect.resource.id": resource},
            "payload": {"n": 1},
        }
        api.call("POST", "/events", [event], expect=(200, 201, 204))
        wait_until(
            lambda: event_of(api, resource),
            awaiting="the event to be readable before the restart",
            timeout=PERSIST_TIMEOUT,
            interval=0.25,
        )
        quiet = quiet_point()
        settled.result()

    def snapshot() -> Snapshot:
        run_now = api.get(f"/flow_runs/{run['id']}")
        records = {
            "flow": keep(api.get(f"/flows/{flow['id']}"), "id", "name", "created"),
            "deployment": keep(
                api.get(f"/deployments/{deployment['id']}"), "id", "name", "created", "updated", "paused"
            ),
            "schedules": [
                keep(s, "id", "schedule", "active") for s in api.get(f"/deployments/{deployment['id']}/schedules")
            ],
            "flow run": {
                **keep(run_now, "id", "name", "state_type", "start_time", "end_time", "created"),
                "state": keep(run_now.get("state") or {}, "id", "type", "timestamp"),
            },
            "flow run states": sorted(
                [keep(s, "id", "type", "timestamp") for s in api.get(f"/flow_run_states/?flow_run_id={run['id']}")],
                key=lambda s: str(s["id"]),
            ),
            "work pool": keep(api.get(f"/work_pools/{pool['name']}"), "id", "name", "created", "type"),
            "work queue": keep(
                api.get(f"/work_pools/{pool['name']}/queues/{queue['name']}"), "id", "name", "created", "priority"
            ),
            "logs": [
                str(line) for line in read_logs(api, {"flow_run_id": {"any_": [run["id"]]}}, sort="TIMESTAMP_ASC")
            ],
            "event": event_of(api, resource),
        }
        return Snapshot(records, scheduled_runs(api, deployment["id"]))

    before = snapshot()
    api.close_connections()  # closed by this side, they do not hold the server's port while it restarts
    started = time.monotonic()
    target_restart.act()
    took, answering = time.monotonic() - started, time.time()
    # The clients' runs are created first: they run while the scheduler is watched for a second run of a time.
    given = {
        name: api.post(f"/deployments/{client_deployment['id']}/create_flow_run", {"state": scheduled_state(utc_now())})
        for name, (_, client_deployment, _) in clients.items()
    }
    wait_for_stable(
        lambda: scheduled_runs(api, deployment["id"]),
        awaiting="the weekly deployment's runs after the restart",
        stable_for=window,
        timeout=window + 60,
    )
    outcome = Restarted(before, snapshot(), target_restart.how, took, quiet)
    for name, (actor, _, poll_path) in clients.items():
        try:
            final = wait_for_final_state(
                api,
                given[name]["id"],
                actor=actor,
                timeout=CLIENT_TIMEOUT,
                poll_path=poll_path,
                since=answering,
                hint=f"the {name} must reconnect to the restarted target by itself",
            )
            outcome.clients[name] = (actor, final, None)
        except AssertionError as exc:
            outcome.clients[name] = (actor, None, exc)
        actor.stop()
    return outcome


def test_records_survive_a_restart(restarted: Restarted, record_property: Callable[[str, str], None]) -> None:
    """Every flow, deployment and schedule, run and state, work pool and queue, log line and event the run created
    before the restart reads back the same after it."""
    record_property(
        MEASURED, f"restarted by {restarted.how} once {restarted.quiet}: {restarted.took:.1f} s until it answered again"
    )
    changed = [
        f"{label}: before {restarted.before.records[label]!r}, after {value!r}"
        for label, value in restarted.after.records.items()
        if value != restarted.before.records[label]
    ]
    assert not changed, (
        f"after {restarted.how}, {len(changed)} of the run's records differ:\n"
        + "\n".join(f"  - {c[:600]}" for c in changed)
        + "\nHint: keep every record in durable storage, not in memory"
    )


@pytest.mark.parametrize("client", ["runner", "worker"])
def test_connected_clients_run_runs_after_a_restart(client: str, restarted: Restarted) -> None:
    """A {client} connected before the restart reconnects by itself and runs a run created after it to COMPLETED."""
    actor, final, failure = restarted.clients[client]
    if failure is not None:
        raise failure
    state = (final or {}).get("state") or {}
    assert state.get("type") == "COMPLETED", (
        f"after {restarted.how}, the {client}'s run ended {state.get('type')}/{state.get('name')} "
        f"({state.get('message')!r}), not COMPLETED"
    )


def test_scheduler_schedules_no_time_twice_across_a_restart(restarted: Restarted) -> None:
    """The runs the scheduler made before the restart are still there after it, and it makes no second run for a
    time it had already scheduled."""
    before, after = restarted.before.runs, restarted.after.runs
    lost = sorted(set(before) - set(after))
    times = sorted(after.values())
    twice = sorted({t for t in times if times.count(t) > 1})
    assert not lost and not twice, (
        f"after {restarted.how}: "
        + (f"{len(lost)} of the {len(before)} scheduled runs are gone; " if lost else "")
        + (f"these times have two runs or more: {twice}; " if twice else "")
        + f"before {sorted(before.values())}, after {times}. Hint: the scheduler must read what it already scheduled "
        "from the database after a restart"
    )
