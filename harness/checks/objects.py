"""Creating the suite's own objects on the target, and removing them afterwards.

Every helper takes a name that already carries the run prefix (see :mod:`harness.checks.naming`) and records what it
created in a :class:`Created` ledger, so teardown deletes exactly those objects and nothing else.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.checks.timestamps import describe_instant
from harness.clients.actors import ENTRYPOINT_FUNCTION, write_flow_file
from harness.errors import WaitTimeout
from harness.target.api import ApiClient
from harness.waits import wait_until


@dataclass
class Created:
    """What a scenario created on the target, deleted in reverse order at teardown (best effort)."""

    api: ApiClient
    paths: list[str] = field(default_factory=list)

    def add(self, path: str) -> None:
        self.paths.append(path)

    def delete_all(self) -> None:
        # Deleting is a courtesy to the target's owner, not a conformance check: a failure is ignored.
        for path in reversed(self.paths):
            try:
                self.api.request("DELETE", path)
            except Exception:
                pass
        self.paths.clear()


def create_flow(api: ApiClient, created: Created, name: str) -> dict[str, Any]:
    flow = api.post("/flows/", {"name": name})
    created.add(f"/flows/{flow['id']}")
    return flow


def scheduled_state(scheduled_time: str | dt.datetime, name: str = "Scheduled") -> dict[str, Any]:
    """A SCHEDULED state body; a datetime is sent in the canonical UTC form, a string exactly as given."""
    when = describe_instant(scheduled_time) if isinstance(scheduled_time, dt.datetime) else scheduled_time
    return {"type": "SCHEDULED", "name": name, "state_details": {"scheduled_time": when}}


def create_scheduled_run(
    api: ApiClient, flow_id: str, name: str, scheduled_time: str | dt.datetime, **fields: Any
) -> dict[str, Any]:
    """POST /flow_runs/ with a SCHEDULED state at ``scheduled_time`` (deleted with its flow)."""
    body = {"flow_id": flow_id, "name": name, "state": scheduled_state(scheduled_time), **fields}
    return api.post("/flow_runs/", body)


def create_task_run(api: ApiClient, flow_run_id: str, name: str) -> dict[str, Any]:
    """POST /task_runs/ for a task of ``flow_run_id`` (Prefect starts it PENDING; deleted with the flow's runs)."""
    return api.post("/task_runs/", {"flow_run_id": flow_run_id, "name": name, "task_key": name, "dynamic_key": "0"})


def runs_of_deployment(
    api: ApiClient, deployment_id: str, state_type: str, *, starting_before: dt.datetime | None = None, **options: Any
) -> list[dict[str, Any]]:
    """``POST /flow_runs/filter``: the deployment's runs in ``state_type`` (``options``: sort, limit, ...), only
    those expected to start before ``starting_before`` if given."""
    runs_filter: dict[str, Any] = {"state": {"type": {"any_": [state_type]}}}
    if starting_before is not None:
        runs_filter["expected_start_time"] = {"before_": describe_instant(starting_before)}
    body = {"deployments": {"id": {"any_": [deployment_id]}}, "flow_runs": runs_filter}
    return api.post("/flow_runs/filter", {**body, **options})


def set_state(api: ApiClient, run_id: str, state: str | dict[str, Any], *, force: bool = True) -> dict[str, Any]:
    """POST /flow_runs/{id}/set_state with a state type (``"PENDING"``) or a whole state body (e.g.
    :func:`scheduled_state`); returns the orchestration result (``status``, ``state``)."""
    body = {"type": state} if isinstance(state, str) else state
    return api.post(f"/flow_runs/{run_id}/set_state", {"state": body, "force": force})


def fail_with_retries_left(api: ApiClient, run_id: str) -> dict[str, dict[str, Any]]:
    """What the flow engine does with a due run of a flow with ``retries=1`` whose first attempt fails: record
    the retry policy (``PATCH /flow_runs/{id}``), propose PENDING, RUNNING, then FAILED, unforced, so the target's
    orchestration decides. Returns the answer to each proposal by state type (Prefect: ACCEPT, ACCEPT, then
    REJECT with an AwaitingRetry state)."""
    api.call(
        "PATCH",
        f"/flow_runs/{run_id}",
        {"empirical_policy": {"retries": 1, "retry_delay": 0}},
        expect=(200, 204),
        what="recording the flow's retry policy on its run",
    )
    set_state(api, run_id, scheduled_state(dt.datetime.now(dt.timezone.utc)))  # due now, as runs a worker starts
    answers: dict[str, dict[str, Any]] = {}
    for state_type in ("PENDING", "RUNNING", "FAILED"):
        answers[state_type] = set_state(api, run_id, state_type, force=False)
    return answers


#: The parameter schema Prefect's clients send for a flow without parameters. Sent with every deployment, as
#: real clients do: Prefect 3.0 answers 409 to ``create_flow_run`` of a deployment that enforces a schema it lacks.
NO_PARAMETERS_SCHEMA = {"title": "Parameters", "type": "object", "properties": {}}


def create_deployment(api: ApiClient, flow_id: str, name: str, **fields: Any) -> dict[str, Any]:
    body = {"flow_id": flow_id, "name": name, "parameter_openapi_schema": NO_PARAMETERS_SCHEMA, **fields}
    return api.post("/deployments/", body)


def create_local_code_deployment(
    api: ApiClient, created: Created, directory: Path, *, pool_name: str, flow_name: str, deployment_name: str
) -> dict[str, Any]:
    """A deployment of flow code on local disk (the generated flow file, written into ``directory``) bound to the
    work pool ``pool_name``, as a process worker runs it: an entrypoint and a ``set_working_directory`` pull step."""
    flow_file = write_flow_file(directory, flow_name)
    flow = create_flow(api, created, flow_name)
    return create_deployment(
        api,
        flow["id"],
        deployment_name,
        work_pool_name=pool_name,
        entrypoint=f"{flow_file.name}:{ENTRYPOINT_FUNCTION}",
        pull_steps=[{"prefect.deployments.steps.set_working_directory": {"directory": str(flow_file.parent)}}],
    )


def create_work_pool(
    api: ApiClient, created: Created, name: str, pool_type: str = "process", **fields: Any
) -> dict[str, Any]:
    pool = create_own(api, "/work_pools/", {"name": name, "type": pool_type, **fields}, f"/work_pools/{name}")
    created.add(f"/work_pools/{name}")
    return pool


def create_own(api: ApiClient, path: str, body: dict[str, Any], read_path: str) -> dict[str, Any]:
    """POST a create of an object with this run's unique name; a 409 after retried 5xx answers means an earlier
    attempt landed (Prefect 3.0 on SQLite answers 503 "database is locked" after committing), so read it back."""
    answer = api.request("POST", path, json_body=body)
    if answer.status == 409 and answer.retried_for:
        return api.get(read_path)
    return answer.expect((200, 201), request_body=body)


def create_work_queue(api: ApiClient, pool_name: str, name: str, priority: int | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"name": name}
    if priority is not None:
        body["priority"] = priority
    # No trailing slash: Prefect answers 307 to POST /work_pools/{name}/queues/.
    return create_own(api, f"/work_pools/{pool_name}/queues", body, f"/work_pools/{pool_name}/queues/{name}")


def send_heartbeat(api: ApiClient, pool_name: str, worker_name: str) -> None:
    """A worker's heartbeat, as ``prefect worker start`` sends it (Prefect answers 204); it registers the worker."""
    api.call(
        "POST",
        f"/work_pools/{pool_name}/workers/heartbeat",
        {"name": worker_name, "heartbeat_interval_seconds": 30},
        expect=(200, 201, 204),
        what="a worker's heartbeat failed",
    )


def pause_work_pool(api: ApiClient, pool_name: str, paused: bool) -> None:
    """PATCH /work_pools/{name} ``is_paused`` (Prefect answers 204)."""
    api.call(
        "PATCH",
        f"/work_pools/{pool_name}",
        {"is_paused": paused},
        expect=(200, 204),
        what=f"{'pausing' if paused else 'resuming'} the work pool failed",
    )


def pause_work_queue(api: ApiClient, pool_name: str, queue_name: str, paused: bool) -> None:
    """PATCH /work_pools/{pool}/queues/{queue} ``is_paused`` (Prefect answers 204)."""
    api.call(
        "PATCH",
        f"/work_pools/{pool_name}/queues/{queue_name}",
        {"is_paused": paused},
        expect=(200, 204),
        what=f"{'pausing' if paused else 'resuming'} the work queue failed",
    )


def task_runs_named(api: ApiClient, name: str) -> list[dict[str, Any]]:
    """``POST /task_runs/filter``: the task runs whose name contains ``name`` (a run-prefixed, unique task name)."""
    return api.post("/task_runs/filter", {"task_runs": {"name": {"like_": name}}, "limit": 200})


def limit_concurrency(api: ApiClient, pool_name: str, limit: int | None, queue_name: str | None = None) -> None:
    """``PATCH /work_pools/{name}`` (or one of its queues) with ``concurrency_limit``: how many of its runs may be
    PENDING or RUNNING at once (None: no limit)."""
    path = f"/work_pools/{pool_name}" + (f"/queues/{queue_name}" if queue_name else "")
    api.call(
        "PATCH", path, {"concurrency_limit": limit}, expect=(200, 204), what=f"setting concurrency_limit on {path}"
    )


def watch_heartbeats(
    api: ApiClient, pool_name: str, worker_name: str, *, timeout: float, statuses: list[str] | None = None
) -> list[str]:
    """The distinct ``last_heartbeat_time`` values ``POST /work_pools/{name}/workers/filter`` lists for the worker,
    watched until a second one appears or ``timeout`` passes (both are outcomes: a check judges the list). The
    ``status`` of each listing is appended to ``statuses``."""
    seen: list[str] = []

    def moved() -> bool:
        workers = api.post(f"/work_pools/{pool_name}/workers/filter", {})
        listed = next((w for w in workers if w.get("name") == worker_name), {})
        value = listed.get("last_heartbeat_time")
        if statuses is not None and listed:
            statuses.append(listed.get("status"))
        if value and value not in seen:
            seen.append(value)
        return len(seen) >= 2

    try:
        wait_until(moved, awaiting=f"worker {worker_name!r} to heartbeat again", timeout=timeout, interval=0.5)
    except WaitTimeout:
        pass
    return seen
