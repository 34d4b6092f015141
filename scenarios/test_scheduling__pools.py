"""Scheduling: what a work pool's poll hands out: nothing from a paused pool or queue, no more than the pool's or
queue's concurrency limit allows beside its PENDING and RUNNING runs, and every run once when many tie and a client
pages through them as a Runner does.
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
    fail_with_retries_left,
    limit_concurrency,
    pause_work_pool,
    pause_work_queue,
    scheduled_state,
    set_state,
)
from harness.checks.polling import (
    US,
    Dataset,
    assert_sequence,
    base_instant,
    create_run,
    create_runs,
    page_like_a_runner,
    poll_pool,
)
from harness.checks.sequences import Entry, is_non_decreasing
from harness.checks.timestamps import describe_instant
from harness.target.api import ApiClient

pytestmark = pytest.mark.scheduling


# --- paused work pools and queues hand out nothing -------------------------------------------------------------


@dataclass
class PausablePool:
    dataset: Dataset
    pool: dict[str, Any]
    queues: dict[str, dict[str, Any]]
    flow: dict[str, Any]

    def poll(self, api: ApiClient) -> list[Entry]:
        before = describe_instant(self.dataset.t0 + dt.timedelta(hours=1))
        return self.dataset.entries(poll_pool(api, self.pool["name"], scheduled_before=before))


@pytest.fixture
def pausable_pool(api: ApiClient, names: Callable[..., str], created: Created) -> PausablePool:
    """A work pool with a "held" and an "open" queue, each with a deployment and one run due within the hour."""
    pool = create_work_pool(api, created, names("pool"))
    queues = {q: create_work_queue(api, pool["name"], names(q)) for q in ("held", "open")}
    flow = create_flow(api, created, names("flow"))
    data = Dataset(base_instant())
    for offset, (label, queue) in enumerate(queues.items()):
        deployment = create_deployment(
            api, flow["id"], names(f"{label}-deployment"), work_pool_name=pool["name"], work_queue_name=queue["name"]
        )
        instant = data.t0 + dt.timedelta(minutes=offset)
        data.add(create_run(api, deployment["id"], names(label), instant), label, instant)
    return PausablePool(data, pool, queues, flow)


def test_paused_work_pool_hands_out_nothing(api: ApiClient, pausable_pool: PausablePool) -> None:
    """A worker polling a paused pool gets no runs; once resumed it gets them again (so they were due)."""
    pause_work_pool(api, pausable_pool.pool["name"], True)
    assert_sequence("POST /work_pools/{name}/get_scheduled_flow_runs of a paused pool", [], pausable_pool.poll(api))
    pause_work_pool(api, pausable_pool.pool["name"], False)
    assert_sequence(
        "POST /work_pools/{name}/get_scheduled_flow_runs of the resumed pool",
        pausable_pool.dataset.expected(["held", "open"]),
        pausable_pool.poll(api),
    )


def test_paused_work_queue_hands_out_nothing(api: ApiClient, pausable_pool: PausablePool) -> None:
    """A worker polling a pool gets no runs of its paused queue, and still gets the other queue's runs."""
    pause_work_queue(api, pausable_pool.pool["name"], pausable_pool.queues["held"]["name"], True)
    assert_sequence(
        "POST /work_pools/{name}/get_scheduled_flow_runs with the 'held' queue paused",
        pausable_pool.dataset.expected(["open"]),
        pausable_pool.poll(api),
    )


def test_work_queue_names_hands_out_a_run_moved_back_to_scheduled(api: ApiClient, pausable_pool: PausablePool) -> None:
    """A run handed out, moved to PENDING and then back to SCHEDULED (as a worker that gave it up leaves it) is
    handed out again by a poll naming its queue, at its new time."""
    pool, queue = pausable_pool.pool["name"], pausable_pool.queues["held"]["name"]
    data = pausable_pool.dataset

    def poll() -> list[Entry]:
        return data.entries(
            poll_pool(
                api, pool, work_queue_names=[queue], scheduled_before=describe_instant(data.t0 + dt.timedelta(hours=1))
            )
        )

    assert_sequence(
        f"POST /work_pools/{{name}}/get_scheduled_flow_runs with work_queue_names [{queue!r}]",
        data.expected(["held"]),
        poll(),
    )
    (run_id,) = [run_id for run_id, label in data.labels.items() if label == "held"]
    later = data.t0 + dt.timedelta(minutes=5)
    set_state(api, run_id, "PENDING")
    set_state(api, run_id, scheduled_state(later))
    assert_sequence(
        f"the same poll after the run went PENDING and back to SCHEDULED at {describe_instant(later)}",
        [("held", later)],
        poll(),
    )


def test_work_pool_poll_skips_a_run_retrying_in_process(api: ApiClient, pausable_pool: PausablePool) -> None:
    """A run whose flow failed with retries left is retried by the flow's own process: Prefect answers the
    engine's FAILED with AwaitingRetry and no worker's poll hands that run out (else a second process starts it,
    Prefect issue #15458); runs scheduled anew, like the 'open' one, are still handed out."""
    (run_id,) = [run_id for run_id, label in pausable_pool.dataset.labels.items() if label == "held"]
    answers = fail_with_retries_left(api, run_id)
    for state_type, expected in (("PENDING", "Pending"), ("RUNNING", "Running"), ("FAILED", "AwaitingRetry")):
        state = answers[state_type].get("state") or {}
        assert state.get("name") == expected, (
            f"the flow engine proposed {state_type} for a due run with 1 retry left and the target answered "
            f"{answers[state_type].get('status')} with state {state.get('type')} {state.get('name')!r}; Prefect's "
            f"answer leaves the run {expected!r}"
            + (
                " (REJECT), which tells the engine to retry the flow in its own process"
                if state_type == "FAILED"
                else ""
            )
        )
    assert_sequence(
        "POST /work_pools/{name}/get_scheduled_flow_runs while the 'held' run awaits its in-process retry",
        pausable_pool.dataset.expected(["open"]),
        pausable_pool.poll(api),
    )


# --- concurrency limits: PENDING and RUNNING runs use up the pool's or the queue's slots ------------------------

ACTIVE_STATES = {"running": "RUNNING", "pending": "PENDING"}


@pytest.mark.parametrize("holder", ["work_pool", "work_queue"])
def test_concurrency_limit_counts_pending_and_running_runs(
    holder: str, api: ApiClient, pausable_pool: PausablePool, names: Callable[..., str]
) -> None:
    """A {holder} with ``concurrency_limit`` 2 and one RUNNING and one PENDING run in it is full: a worker's poll
    hands out none of its runs (the other queue's still, for a queue), and all of them once the limit is lifted."""
    pool, queue = pausable_pool.pool["name"], pausable_pool.queues["held"]["name"]
    deployment = create_deployment(
        api, pausable_pool.flow["id"], names("busy-deployment"), work_pool_name=pool, work_queue_name=queue
    )
    data = pausable_pool.dataset
    for offset, (label, state) in enumerate(ACTIVE_STATES.items()):  # due before the "held" and "open" runs
        run = create_run(api, deployment["id"], names(label), data.t0 - dt.timedelta(minutes=10 - offset))
        set_state(api, run["id"], state)
    limit_concurrency(api, pool, 2, queue if holder == "work_queue" else None)
    assert_sequence(
        f"POST /work_pools/{{name}}/get_scheduled_flow_runs with {holder} concurrency_limit 2 and 2 runs "
        "PENDING or RUNNING in it",
        data.expected([] if holder == "work_pool" else ["open"]),
        pausable_pool.poll(api),
    )
    limit_concurrency(api, pool, None, queue if holder == "work_queue" else None)
    assert_sequence(
        f"POST /work_pools/{{name}}/get_scheduled_flow_runs with the {holder} limit lifted",
        data.expected(["held", "open"]),
        pausable_pool.poll(api),
    )


# --- ties and volume: paging the way a Runner does ------------------------------------------------------------

SPACED_RUNS = 40  # one microsecond apart
TIED_RUNS = 25  # all at one instant: more than a page, so ties straddle page boundaries
PAGE = 15


def test_many_runs_paged_like_a_runner_lose_nothing(
    api: ApiClient, module_names: Callable[..., str], module_created: Created
) -> None:
    """Dozens of runs at microsecond spacing and at one identical instant, fetched ``limit`` at a time and
    moved to PENDING after each page (as a Runner does): every page ascends, and every run arrives exactly once."""
    flow = create_flow(api, module_created, module_names("volume-flow"))
    deployment = create_deployment(api, flow["id"], module_names("volume-deployment"))
    t0 = base_instant() + dt.timedelta(hours=3)
    tie = t0 + dt.timedelta(milliseconds=1)
    wanted = [(module_names(f"spaced-{i}"), t0 + i * US) for i in range(SPACED_RUNS)]
    wanted += [(module_names(f"tied-{i}"), tie) for i in range(TIED_RUNS)]
    expected = {run["id"]: instant for run, (_, instant) in zip(create_runs(api, deployment["id"], wanted), wanted)}
    pages = page_like_a_runner(
        api, deployment["id"], before=tie + dt.timedelta(seconds=1), page_size=PAGE, max_pages=len(expected) // PAGE + 3
    )
    seen: list[tuple[str, dt.datetime]] = []
    for page_number, page in enumerate(pages):
        assert len(page) <= PAGE, f"page {page_number} has {len(page)} runs, more than limit {PAGE}"
        instants = [instant for _, instant in page]
        back = is_non_decreasing(instants)
        assert back is None, (
            f"page {page_number} goes back in time at position {back}: {describe_instant(instants[back - 1])} then "
            f"{describe_instant(instants[back])}"
        )
        assert not seen or instants[0] >= seen[-1][1], (
            f"page {page_number} starts at {describe_instant(instants[0])}, before the previous page ended "
            f"({describe_instant(seen[-1][1])})"
        )
        seen += page
    ids = [run_id for run_id, _ in seen]
    duplicates = len(ids) - len(set(ids))
    lost = set(expected) - set(ids)
    assert not duplicates and not lost, (
        f"paging {len(expected)} runs {PAGE} at a time returned {len(ids)} runs: {duplicates} duplicated, "
        f"{len(lost)} never returned"
    )
    wrong = [(run_id, i) for run_id, i in seen if expected.get(run_id) != i]
    assert not wrong, f"{len(wrong)} runs came back with another next_scheduled_start_time, e.g. {wrong[:2]}"
