"""Scheduling queries: ``next_scheduled_start_time`` and the two polling endpoints, compared as instants.

The single query that decides whether runners and workers ever run anything. Behaviour relied on (Prefect
3.9.1 server; runs are created here directly through the API at crafted instants so every edge is exact):

* ``next_scheduled_start_time`` equals the SCHEDULED state's ``scheduled_time`` (also for a "Late" SCHEDULED
  state and after a reschedule) and is null once the run leaves SCHEDULED.
* ``POST /deployments/get_scheduled_flow_runs`` returns the SCHEDULED runs of the given deployments with
  ``next_scheduled_start_time <= scheduled_before`` (inclusive), ascending by it; without ``scheduled_before``,
  all of them; ``limit`` above 200 is a 422. Polling marks the deployment READY and sets ``last_polled``.
* ``POST /work_pools/{name}/get_scheduled_flow_runs`` returns ``{work_pool_id, work_queue_id, flow_run}`` items,
  ``scheduled_after <= next_scheduled_start_time <= scheduled_before``, by queue priority first and time within
  a queue; an unknown queue name is a 404. It leaves out a run awaiting a retry in its flow's own process: the
  engine's unforced FAILED with retries left is answered REJECT with AwaitingRetry, and that run is no worker's.

The crafted instants make string order differ from time order: ``...T10:00:00Z`` (Prefect drops a zero
fraction) sorts after ``...T10:00:00.500000Z`` as a string but is earlier in time.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Callable

import pytest

from harness.checks.objects import (
    Created,
    create_deployment,
    create_flow,
    create_work_pool,
    create_work_queue,
    scheduled_state,
    set_state,
)
from harness.checks.polling import (
    US,
    Dataset,
    assert_sequence,
    base_instant,
    create_run,
    poll_deployments,
    poll_pool,
    pool_items,
)
from harness.checks.sequences import Entry
from harness.checks.timestamps import INPUT_FORMATS, UTC, InputFormat, describe_instant, read_instant
from harness.target.api import ApiClient
from harness.waits import wait_until

pytestmark = pytest.mark.scheduling

# --- next_scheduled_start_time field semantics --------------------------------------------------------------


def test_next_scheduled_start_time_set_on_create(api: ApiClient, flow: dict, names: Callable[..., str]) -> None:
    """A run created in a SCHEDULED state has next_scheduled_start_time = its scheduled time (as an instant)."""
    instant = base_instant() + dt.timedelta(microseconds=123456)
    run = api.post("/flow_runs/", {"flow_id": flow["id"], "name": names("run"), "state": scheduled_state(instant)})
    for source, document in (("POST /flow_runs/", run), ("GET /flow_runs/{id}", api.get(f"/flow_runs/{run['id']}"))):
        value = document.get("next_scheduled_start_time")
        assert value is not None, (
            f"{source} returned next_scheduled_start_time null for a SCHEDULED run; expected "
            f"{describe_instant(instant)}"
        )
        assert read_instant(value, f"{source} next_scheduled_start_time") == instant, (
            f"{source} returned next_scheduled_start_time {value!r}; the run is scheduled for "
            f"{describe_instant(instant)}"
        )


def test_next_scheduled_start_time_cleared_when_leaving_scheduled(
    api: ApiClient, flow: dict, names: Callable[..., str]
) -> None:
    """Once a run leaves SCHEDULED (here: PENDING, as a runner sets it), next_scheduled_start_time is null."""
    run = api.post(
        "/flow_runs/", {"flow_id": flow["id"], "name": names("run"), "state": scheduled_state(base_instant())}
    )
    result = set_state(api, run["id"], "PENDING")
    assert result.get("status") == "ACCEPT", f"setting PENDING was not accepted: {result}"
    value = api.get(f"/flow_runs/{run['id']}").get("next_scheduled_start_time")
    assert value is None, (
        f"a PENDING run still has next_scheduled_start_time {value!r}; Prefect clears it when the run leaves "
        "SCHEDULED, and pollers filter on it"
    )


def test_next_scheduled_start_time_kept_for_late_runs(api: ApiClient, flow: dict, names: Callable[..., str]) -> None:
    """A "Late" run is still SCHEDULED: next_scheduled_start_time keeps its (past) scheduled time."""
    instant = (dt.datetime.now(UTC) - dt.timedelta(minutes=10)).replace(microsecond=654321)
    run = api.post("/flow_runs/", {"flow_id": flow["id"], "name": names("run"), "state": scheduled_state(instant)})
    set_state(api, run["id"], scheduled_state(instant, name="Late"))
    read = api.get(f"/flow_runs/{run['id']}")
    assert (read.get("state") or {}).get("name") == "Late", f"the run's state is {read.get('state')}, expected Late"
    value = read.get("next_scheduled_start_time")
    assert value is not None and read_instant(value, "the Late run's next_scheduled_start_time") == instant, (
        f"a Late run has next_scheduled_start_time {value!r}; expected its scheduled time {describe_instant(instant)}"
    )


def test_next_scheduled_start_time_follows_reschedule(api: ApiClient, flow: dict, names: Callable[..., str]) -> None:
    """A new SCHEDULED state with a later scheduled time (as retries produce) moves next_scheduled_start_time."""
    first = base_instant()
    later = first + dt.timedelta(hours=1, microseconds=42)
    run = api.post("/flow_runs/", {"flow_id": flow["id"], "name": names("run"), "state": scheduled_state(first)})
    set_state(api, run["id"], scheduled_state(later, name="AwaitingRetry"))
    value = api.get(f"/flow_runs/{run['id']}").get("next_scheduled_start_time")
    assert value is not None and read_instant(value, "next_scheduled_start_time after rescheduling") == later, (
        f"after rescheduling from {describe_instant(first)} to {describe_instant(later)}, next_scheduled_start_time "
        f"is {value!r}"
    )


def test_next_scheduled_start_time_set_when_a_running_run_awaits_retry(
    api: ApiClient, flow: dict, names: Callable[..., str]
) -> None:
    """A RUNNING run that fails into AwaitingRetry (a SCHEDULED-type state) gets next_scheduled_start_time = its
    retry time: both polling endpoints filter on it, so a run without it is never retried by a Runner or worker."""
    retry_at = base_instant() + dt.timedelta(microseconds=777)
    run = api.post(
        "/flow_runs/", {"flow_id": flow["id"], "name": names("run"), "state": scheduled_state(base_instant())}
    )
    for state_type in ("PENDING", "RUNNING"):
        set_state(api, run["id"], state_type)
    set_state(api, run["id"], scheduled_state(retry_at, name="AwaitingRetry"))
    read = api.get(f"/flow_runs/{run['id']}")
    assert (read.get("state") or {}).get("name") == "AwaitingRetry", (
        f"the run's state is {read.get('state')}, expected AwaitingRetry"
    )
    value = read.get("next_scheduled_start_time")
    assert value is not None and read_instant(value, "next_scheduled_start_time in AwaitingRetry") == retry_at, (
        f"a run that went from RUNNING to AwaitingRetry at {describe_instant(retry_at)} has next_scheduled_start_time "
        f"{value!r}; Prefect sets it on entering any SCHEDULED-type state"
    )


# --- POST /deployments/get_scheduled_flow_runs ----------------------------------------------------------------

#: The SCHEDULED runs of the polled deployment, in time order, with their offsets from t0.
DEPLOYMENT_RUNS = [
    ("early", dt.timedelta(hours=-1)),
    ("just-before", -US),  # 09:59:59.999999
    ("whole", dt.timedelta(0)),  # 10:00:00 -> returned without a fraction
    ("half", dt.timedelta(milliseconds=500)),  # 10:00:00.500000 -> sorts before "whole" as a string
    ("late", dt.timedelta(hours=1)),
]


@dataclass
class DeploymentPolling:
    dataset: Dataset
    deployment: dict[str, Any]
    other_deployment: dict[str, Any]


@pytest.fixture(scope="module")
def polling(api: ApiClient, module_names: Callable[..., str], module_created: Created) -> DeploymentPolling:
    """A deployment with runs at crafted instants, plus runs that must never be returned for it."""
    flow = create_flow(api, module_created, module_names("flow"))
    deployment = create_deployment(api, flow["id"], module_names("deployment"))
    other = create_deployment(api, flow["id"], module_names("other-deployment"))
    data = Dataset(base_instant())
    # Created out of order, so an insertion-ordered answer is not accidentally right.
    for label, offset in reversed(DEPLOYMENT_RUNS):
        data.add(create_run(api, deployment["id"], module_names(label), data.t0 + offset), label, data.t0 + offset)
    left = create_run(api, deployment["id"], module_names("left-scheduled"), data.t0 - dt.timedelta(minutes=30))
    set_state(api, left["id"], "PENDING")
    data.add(left, "left-scheduled(PENDING)", data.t0 - dt.timedelta(minutes=30))
    foreign = create_run(api, other["id"], module_names("other-deployment-run"), data.t0 - dt.timedelta(minutes=20))
    data.add(foreign, "other-deployment-run", data.t0 - dt.timedelta(minutes=20))
    return DeploymentPolling(data, deployment, other)


def poll_deployment(api: ApiClient, polling: DeploymentPolling, **body: Any) -> list[dict[str, Any]]:
    return poll_deployments(api, [polling.deployment["id"]], **body)


def expected_due(polling: DeploymentPolling, before: dt.datetime | None) -> list[Entry]:
    labels = [label for label, offset in DEPLOYMENT_RUNS if before is None or polling.dataset.t0 + offset <= before]
    return polling.dataset.expected(labels)


def test_deployment_poll_orders_by_next_scheduled_start_time(api: ApiClient, polling: DeploymentPolling) -> None:
    """All due runs of the deployment come back ascending by next_scheduled_start_time (as instants)."""
    before = polling.dataset.t0 + dt.timedelta(hours=2)
    runs = poll_deployment(api, polling, scheduled_before=describe_instant(before))
    assert_sequence(
        "POST /deployments/get_scheduled_flow_runs (every run due)",
        expected_due(polling, before),
        polling.dataset.entries(runs),
    )


@pytest.mark.parametrize(
    "bound, offset",
    [
        ("at-a-run", dt.timedelta(0)),
        ("one-us-before-a-run", -US),
        ("one-us-after-a-run", US),
        ("at-a-fractional-run", dt.timedelta(milliseconds=500)),
    ],
    ids=["at-a-run", "one-us-before-a-run", "one-us-after-a-run", "at-a-fractional-run"],
)
def test_deployment_poll_bound_is_inclusive(
    bound: str, offset: dt.timedelta, api: ApiClient, polling: DeploymentPolling
) -> None:
    """``scheduled_before`` is inclusive to the microsecond: a run exactly at the bound is returned, one 1 µs later is
    not."""
    before = polling.dataset.t0 + offset
    runs = poll_deployment(api, polling, scheduled_before=describe_instant(before))
    assert_sequence(
        f"POST /deployments/get_scheduled_flow_runs with scheduled_before {describe_instant(before)} ({bound})",
        expected_due(polling, before),
        polling.dataset.entries(runs),
    )


#: Each input format at the whole-second run and, where the format has a fraction, at the half-second run.
BOUND_CASES = [
    pytest.param(fmt, at, id=f"{at}-{fmt.id}")
    for at in ("whole", "half")
    for fmt in INPUT_FORMATS
    if at == "whole" or fmt.fraction_digits
]


@pytest.mark.parametrize("fmt, at", BOUND_CASES)
def test_deployment_poll_bound_in_any_format(
    fmt: InputFormat, at: str, api: ApiClient, polling: DeploymentPolling
) -> None:
    """The same bound written in any format real clients send selects the same runs: instants, not strings."""
    instant = polling.dataset.t0 + dict(DEPLOYMENT_RUNS)[at]
    sent = fmt.render(instant)
    runs = poll_deployment(api, polling, scheduled_before=sent)
    assert_sequence(
        f"POST /deployments/get_scheduled_flow_runs with scheduled_before {sent!r} (= {describe_instant(instant)})",
        expected_due(polling, instant),
        polling.dataset.entries(runs),
    )


def test_deployment_poll_without_bound_returns_all_scheduled(api: ApiClient, polling: DeploymentPolling) -> None:
    """Without ``scheduled_before`` every SCHEDULED run of the deployment is returned, in order."""
    runs = poll_deployment(api, polling)
    assert_sequence(
        "POST /deployments/get_scheduled_flow_runs without scheduled_before",
        expected_due(polling, None),
        polling.dataset.entries(runs),
    )


def test_deployment_poll_only_returns_scheduled_runs_of_the_deployment(
    api: ApiClient, polling: DeploymentPolling
) -> None:
    """A run that left SCHEDULED, and a run of another deployment, are never returned."""
    runs = poll_deployment(api, polling, scheduled_before=describe_instant(polling.dataset.t0 + dt.timedelta(hours=2)))
    intruders = [
        f"{label}@{describe_instant(instant)}"
        for label, instant in polling.dataset.entries(runs)
        if label.startswith(("left-scheduled", "other-deployment", "foreign:"))
    ]
    assert not intruders, f"POST /deployments/get_scheduled_flow_runs returned runs it must not: {intruders}"


def test_deployment_poll_limit(api: ApiClient, polling: DeploymentPolling) -> None:
    """``limit`` keeps the earliest runs; a limit above 200 is rejected with 422."""
    runs = poll_deployment(api, polling, limit=2)
    assert_sequence(
        "POST /deployments/get_scheduled_flow_runs with limit 2",
        expected_due(polling, None)[:2],
        polling.dataset.entries(runs),
    )
    api.post(
        "/deployments/get_scheduled_flow_runs",
        {"deployment_ids": [polling.deployment["id"]], "limit": 201},
        expect=422,
        what="limit 201 should be rejected with 422 like Prefect does",
    )


def test_deployment_poll_marks_deployment_ready(api: ApiClient, polling: DeploymentPolling) -> None:
    """Polling is how a Runner says it is alive: the deployment becomes READY and ``last_polled`` is set."""
    poll_deployment(api, polling, limit=1)
    path = f"/deployments/{polling.deployment['id']}"

    def ready() -> dict[str, Any]:
        deployment = api.get(path)
        assert deployment.get("status") == "READY" and deployment.get("last_polled"), (
            f"status {deployment.get('status')!r}, last_polled {deployment.get('last_polled')!r}"
        )
        return deployment

    deployment = wait_until(
        ready, awaiting=f"GET {path} to show status READY and last_polled after a poll", timeout=15, interval=0.25
    )
    read_instant(deployment["last_polled"], f"GET {path} last_polled")


# --- POST /work_pools/{name}/get_scheduled_flow_runs -----------------------------------------------------------

#: (label, queue, offset from t0). The low-priority queue's runs are *earlier*, so priority must beat time.
POOL_RUNS = [
    ("urgent-1", "urgent", dt.timedelta(minutes=10)),
    ("urgent-2", "urgent", dt.timedelta(minutes=20)),
    ("routine-1", "routine", dt.timedelta(0)),
    ("routine-2", "routine", dt.timedelta(minutes=5)),
]
QUEUE_PRIORITIES = {"urgent": 1, "routine": 50}


@dataclass
class PoolPolling:
    dataset: Dataset
    pool: dict[str, Any]
    queues: dict[str, dict[str, Any]]
    other_pool: dict[str, Any]
    other_queue: dict[str, Any]


@pytest.fixture(scope="module")
def pool_polling(api: ApiClient, module_names: Callable[..., str], module_created: Created) -> PoolPolling:
    """A work pool with an urgent (priority 1) and a routine (priority 50) queue, each with a deployment and runs."""
    pool = create_work_pool(api, module_created, module_names("pool"))
    other_pool = create_work_pool(api, module_created, module_names("other-pool"))
    other_queue = create_work_queue(api, other_pool["name"], module_names("other-queue"))
    queues = {q: create_work_queue(api, pool["name"], module_names(q), priority=p) for q, p in QUEUE_PRIORITIES.items()}
    flow = create_flow(api, module_created, module_names("pool-flow"))
    deployments = {
        q: create_deployment(
            api, flow["id"], module_names(f"{q}-deployment"), work_pool_name=pool["name"], work_queue_name=queue["name"]
        )
        for q, queue in queues.items()
    }
    data = Dataset(base_instant())
    for label, queue, offset in reversed(POOL_RUNS):
        run = create_run(api, deployments[queue]["id"], module_names(label), data.t0 + offset)
        data.add(run, label, data.t0 + offset)
    return PoolPolling(data, pool, queues, other_pool, other_queue)


def pool_runs(pool_polling: PoolPolling, api: ApiClient, **body: Any) -> list[Entry]:
    """(label, instant) of the runs a worker's poll of the pool hands out."""
    return pool_polling.dataset.entries(poll_pool(api, pool_polling.pool["name"], **body))


def expected_pool(
    pool_polling: PoolPolling,
    after: dt.datetime | None = None,
    before: dt.datetime | None = None,
    queues: tuple[str, ...] = ("urgent", "routine"),
) -> list[Entry]:
    t0 = pool_polling.dataset.t0
    chosen = [
        label
        for queue in sorted(queues, key=QUEUE_PRIORITIES.get)
        for label, q, offset in sorted(POOL_RUNS, key=lambda r: r[2])
        if q == queue and (after is None or t0 + offset >= after) and (before is None or t0 + offset <= before)
    ]
    return pool_polling.dataset.expected(chosen)


def test_work_pool_poll_response_shape(api: ApiClient, pool_polling: PoolPolling) -> None:
    """Each item is ``{work_pool_id, work_queue_id, flow_run}`` naming the pool and the run's own queue."""
    items = pool_items(
        api,
        pool_polling.pool["name"],
        scheduled_before=describe_instant(pool_polling.dataset.t0 + dt.timedelta(hours=1)),
    )
    assert len(items) == len(POOL_RUNS), f"expected {len(POOL_RUNS)} items, got {str(items)[:300]}"
    queue_ids = {q["id"] for q in pool_polling.queues.values()}
    for item in items:
        missing = {"work_pool_id", "work_queue_id", "flow_run"} - set(item)
        assert not missing, f"an item lacks {sorted(missing)}: {str(item)[:300]}"
        assert item["work_pool_id"] == pool_polling.pool["id"], (
            f"item names work_pool_id {item['work_pool_id']}, the pool is {pool_polling.pool['id']}"
        )
        assert item["work_queue_id"] in queue_ids and item["work_queue_id"] == item["flow_run"].get("work_queue_id"), (
            f"item names work_queue_id {item['work_queue_id']}, its run is in queue "
            f"{item['flow_run'].get('work_queue_id')}"
        )


def test_work_pool_poll_orders_by_queue_priority_then_time(api: ApiClient, pool_polling: PoolPolling) -> None:
    """Runs of the priority-1 queue come before earlier runs of the priority-50 queue; time orders each queue."""
    runs = pool_runs(
        pool_polling, api, scheduled_before=describe_instant(pool_polling.dataset.t0 + dt.timedelta(hours=1))
    )
    assert_sequence("POST /work_pools/{name}/get_scheduled_flow_runs", expected_pool(pool_polling), runs)


@pytest.mark.parametrize(
    "case, after, before",
    [
        ("both-at-runs", dt.timedelta(minutes=5), dt.timedelta(minutes=10)),
        ("one-us-inside", dt.timedelta(minutes=5) + US, dt.timedelta(minutes=10) - US),
        ("space-form", dt.timedelta(minutes=5), dt.timedelta(minutes=10)),
    ],
    ids=["both-at-runs", "one-us-inside", "space-form"],
)
def test_work_pool_poll_bounds_are_inclusive(
    case: str, after: dt.timedelta, before: dt.timedelta, api: ApiClient, pool_polling: PoolPolling
) -> None:
    """``scheduled_after <= next_scheduled_start_time <= scheduled_before``, both inclusive to the microsecond."""
    t0 = pool_polling.dataset.t0
    render = (lambda i: str(i)) if case == "space-form" else describe_instant  # str(datetime) is what clients send
    body = {"scheduled_after": render(t0 + after), "scheduled_before": render(t0 + before)}
    assert_sequence(
        f"POST /work_pools/{{name}}/get_scheduled_flow_runs with {body}",
        expected_pool(pool_polling, after=t0 + after, before=t0 + before),
        pool_runs(pool_polling, api, **body),
    )


def test_work_pool_poll_filters_by_queue_names(api: ApiClient, pool_polling: PoolPolling) -> None:
    """``work_queue_names`` restricts the answer to those queues; a queue of another pool is a 404."""
    routine = pool_polling.queues["routine"]["name"]
    assert_sequence(
        f"POST /work_pools/{{name}}/get_scheduled_flow_runs with work_queue_names [{routine!r}]",
        expected_pool(pool_polling, queues=("routine",)),
        pool_runs(pool_polling, api, work_queue_names=[routine]),
    )
    api.post(
        f"/work_pools/{pool_polling.pool['name']}/get_scheduled_flow_runs",
        {"work_queue_names": [pool_polling.other_queue["name"]]},
        expect=404,
        what="asking for a queue of another pool should be a 404 like in Prefect",
    )


def test_work_pool_poll_limit(api: ApiClient, pool_polling: PoolPolling) -> None:
    """``limit`` keeps the first runs in the endpoint's order (priority, then time)."""
    assert_sequence(
        "POST /work_pools/{name}/get_scheduled_flow_runs with limit 3",
        expected_pool(pool_polling)[:3],
        pool_runs(pool_polling, api, limit=3),
    )
