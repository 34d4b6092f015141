"""Statuses: what the server keeps up to date about work pools, work queues and deployments, which the UI,
``prefect work-pool ls`` and ``prefect deployment ls`` show, and which a user reads to learn whether anything will
run their runs.

Real-client behaviour relied on (Prefect 3.9.1): a worker sends ``POST /work_pools/{name}/workers/heartbeat``
(``{name, heartbeat_interval_seconds}``) when it starts and every interval after, and polls ``POST
/work_pools/{name}/get_scheduled_flow_runs`` with its queues' names; a ``.serve()`` Runner polls ``POST
/deployments/get_scheduled_flow_runs`` with its deployments' ids. ``prefect work-pool pause`` and ``resume`` send
``PATCH /work_pools/{name}`` with ``is_paused``; ``prefect work-queue pause`` and ``resume`` the same for
``PATCH /work_pools/{pool}/queues/{name}``. These checks send exactly those requests.

What Prefect's server does with them (``models/workers.py``, ``models/work_queues.py``, ``services/foreman.py``):

- A work pool is created NOT_READY (PAUSED if created paused). A heartbeat makes a NOT_READY pool READY, never a
  PAUSED one. Pausing makes it PAUSED; resuming makes it READY if one of its workers is ONLINE, NOT_READY if
  none is. (It also sets the pool's ``last_transitioned_status_at`` whenever it sets a status, but 3.9.1's
  answers leave that field out: ``schemas/core.py``'s WorkPool has no such field, so no check can read it.)
- A work queue is created NOT_READY. A poll makes a NOT_READY queue READY (a PAUSED one stays PAUSED). Pausing
  makes it PAUSED; resuming makes it READY if it was polled in the last 60 s, NOT_READY otherwise.
- The foreman marks a READY queue NOT_READY once nothing has polled it for
  ``work_queue_last_polled_timeout_seconds``, and a READY deployment once nothing has polled it (nor its queue)
  for ``deployment_last_polled_timeout_seconds``: 60 s each by default, looked at every foreman loop (15 s).
  ``--service-loops`` sizes these waits for the target.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass, field
from typing import Callable

import pytest

from harness.checks.objects import (
    Created,
    create_deployment,
    create_flow,
    create_work_pool,
    create_work_queue,
    pause_work_pool,
    pause_work_queue,
    send_heartbeat,
)
from harness.checks.polling import poll_deployments, pool_items
from harness.checks.timestamps import utc_now
from harness.target.api import ApiClient
from harness.waits import service_loop, timeout_scale, wait_until

pytestmark = pytest.mark.statuses

#: How long a status the server sets after a request (a poll's READY is a background task on Prefect 3.9) may take
#: to show, scaled by --timeout-scale.
SETTLE_TIMEOUT = 15.0
#: How long a status the server must leave alone (a paused pool's through a heartbeat, a paused queue's through a
#: poll) is watched: Prefect 3.9 sets a polled queue READY in a background task, within milliseconds.
HOLD = 2.0
#: How recently Prefect's server requires a queue to have been polled for a resume to make it READY (a constant
#: in models/work_queues.py, not a setting).
RECENT_POLL = dt.timedelta(seconds=60)


def pool_status(api: ApiClient, pool: str) -> str | None:
    return api.get(f"/work_pools/{pool}").get("status")


def queue_status(api: ApiClient, pool: str, queue: str) -> str | None:
    return api.get(f"/work_pools/{pool}/queues/{queue}").get("status")


def deployment_status(api: ApiClient, deployment_id: str) -> str | None:
    return api.get(f"/deployments/{deployment_id}").get("status")


def poll_queue(api: ApiClient, pool: str, queue: str) -> None:
    """A worker's poll of its pool for one queue's runs."""
    pool_items(api, pool, work_queue_names=[queue])


def await_status(read: Callable[[], str | None], wanted: str, what: str, after: str, hint: str = "") -> None:
    """Until ``read()`` gives ``wanted`` (the server may set a status in the background, as Prefect 3.9 does after a
    poll): the timeout message quotes the status the target kept answering."""

    def probe() -> bool:
        status = read()
        if status == wanted:
            return True
        raise AssertionError(f"{what} is {status!r}")

    wait_until(probe, awaiting=f"{what} to be {wanted} {after}", timeout=SETTLE_TIMEOUT, interval=0.2, hint=hint)


def assert_status(
    read: Callable[[], str | None], wanted: str, what: str, after: str, why: str, hold: float = 0.0
) -> None:
    """``read()`` gives ``wanted`` now and, with ``hold``, at every read for that many seconds more (scaled): where
    the server must *not* change a status, a background task that would change it has had the time to."""
    deadline = time.monotonic() + hold * timeout_scale()
    while True:
        status = read()
        assert status == wanted, f"{what} is {status!r} {after}; Prefect's is {wanted}: {why}"
        if time.monotonic() >= deadline:
            return
        time.sleep(0.2)  # the next read of an observation window, not a wait for something to happen


# --- work pools ----------------------------------------------------------------------------------------------


def test_a_new_pool_is_not_ready_or_paused_as_created(
    api: ApiClient, created: Created, names: Callable[..., str]
) -> None:
    """A pool no worker has reported to is NOT_READY; one created paused is PAUSED."""
    pool = names("pool")
    create_work_pool(api, created, pool)
    assert_status(
        lambda: pool_status(api, pool),
        "NOT_READY",
        f"work pool {pool!r}",
        "as created",
        "no worker has sent a heartbeat to it",
    )
    paused = names("paused-pool")
    create_work_pool(api, created, paused, is_paused=True)
    assert_status(
        lambda: pool_status(api, paused),
        "PAUSED",
        f"work pool {paused!r}",
        "created with is_paused",
        "a paused pool hands out no runs, and says so",
    )


def test_a_heartbeat_makes_a_pool_ready(api: ApiClient, created: Created, names: Callable[..., str]) -> None:
    """A worker's first heartbeat makes its NOT_READY pool READY."""
    pool = names("pool")
    create_work_pool(api, created, pool)
    send_heartbeat(api, pool, names("worker"))
    await_status(
        lambda: pool_status(api, pool),
        "READY",
        f"work pool {pool!r}",
        "after a worker's heartbeat",
        hint="Prefect makes a NOT_READY pool READY when one of its workers sends a heartbeat",
    )


def test_a_heartbeat_never_resumes_a_paused_pool(api: ApiClient, created: Created, names: Callable[..., str]) -> None:
    """A paused pool stays PAUSED through its worker's heartbeats: only ``resume`` ends a pause."""
    pool, worker = names("pool"), names("worker")
    create_work_pool(api, created, pool)
    send_heartbeat(api, pool, worker)
    await_status(lambda: pool_status(api, pool), "READY", f"work pool {pool!r}", "after a worker's heartbeat")
    pause_work_pool(api, pool, True)
    assert_status(
        lambda: pool_status(api, pool),
        "PAUSED",
        f"work pool {pool!r}",
        "after PATCH is_paused true",
        "pausing a pool sets its status",
    )
    send_heartbeat(api, pool, worker)
    assert_status(
        lambda: pool_status(api, pool),
        "PAUSED",
        f"paused work pool {pool!r}",
        "after its worker's next heartbeat",
        "a heartbeat makes only a NOT_READY pool READY",
        hold=HOLD,
    )


def test_a_resumed_pool_is_ready_with_an_online_worker_and_not_ready_without(
    api: ApiClient, created: Created, names: Callable[..., str]
) -> None:
    """Resuming a pool gives it the status its workers justify: READY when one of them is ONLINE, NOT_READY when
    it has none."""
    staffed, empty = names("staffed-pool"), names("empty-pool")
    for pool in (staffed, empty):
        create_work_pool(api, created, pool)
    send_heartbeat(api, staffed, names("worker"))
    for pool in (staffed, empty):
        pause_work_pool(api, pool, True)
        pause_work_pool(api, pool, False)
    assert_status(
        lambda: pool_status(api, staffed),
        "READY",
        f"work pool {staffed!r}",
        "resumed with an ONLINE worker",
        "Prefect resumes a pool READY when one of its workers is ONLINE",
    )
    assert_status(
        lambda: pool_status(api, empty),
        "NOT_READY",
        f"work pool {empty!r}",
        "resumed without a worker",
        "Prefect resumes a pool without an ONLINE worker NOT_READY, so no one believes its runs will be picked up",
    )


# --- work queues ---------------------------------------------------------------------------------------------


@dataclass
class Queue:
    pool: str
    name: str

    def status(self, api: ApiClient) -> str | None:
        return queue_status(api, self.pool, self.name)


@pytest.fixture
def queue(api: ApiClient, created: Created, names: Callable[..., str]) -> Queue:
    pool = names("pool")
    create_work_pool(api, created, pool)
    name = names("queue")
    create_work_queue(api, pool, name)
    return Queue(pool, name)


def test_a_polled_queue_is_ready_paused_when_paused_and_ready_again_when_resumed(api: ApiClient, queue: Queue) -> None:
    """A queue a worker polls is READY; paused it is PAUSED, and polls leave it so; resumed (it was polled within
    the minute) it is READY again."""
    what = f"work queue {queue.name!r}"
    poll_queue(api, queue.pool, queue.name)
    await_status(
        lambda: queue.status(api),
        "READY",
        what,
        "after a worker polled it",
        hint="Prefect makes a NOT_READY queue READY when a worker polls it",
    )
    pause_work_queue(api, queue.pool, queue.name, True)
    assert_status(lambda: queue.status(api), "PAUSED", what, "after PATCH is_paused true", "pausing sets its status")
    poll_queue(api, queue.pool, queue.name)
    assert_status(
        lambda: queue.status(api),
        "PAUSED",
        f"paused {what}",
        "after a worker polled it",
        "a poll makes only a NOT_READY queue READY",
        hold=HOLD,
    )
    pause_work_queue(api, queue.pool, queue.name, False)
    assert_status(
        lambda: queue.status(api),
        "READY",
        what,
        "resumed a moment after a worker polled it",
        f"Prefect resumes a queue polled in the last {RECENT_POLL.seconds} s READY",
    )


def test_a_resumed_queue_no_one_polled_is_not_ready(api: ApiClient, queue: Queue) -> None:
    """A queue no worker has polled is NOT_READY; paused and resumed, it is NOT_READY again, not READY."""
    what = f"work queue {queue.name!r}"
    assert_status(lambda: queue.status(api), "NOT_READY", what, "as created", "no worker has polled it")
    pause_work_queue(api, queue.pool, queue.name, True)
    pause_work_queue(api, queue.pool, queue.name, False)
    assert_status(
        lambda: queue.status(api),
        "NOT_READY",
        what,
        "paused and resumed without ever being polled",
        f"Prefect resumes a queue not polled in the last {RECENT_POLL.seconds} s NOT_READY",
    )


# --- what no one polls any more --------------------------------------------------------------------------------


@dataclass
class Abandoned:
    """A queue and a deployment polled once when the module began, then never again."""

    queue: Queue
    deployment_id: str
    polled: dt.datetime
    #: Why the queue or the deployment was not READY after its poll, by "queue" or "deployment".
    not_ready: dict[str, AssertionError] = field(default_factory=dict)


@pytest.fixture(scope="module")
def abandoned(api: ApiClient, module_created: Created, module_names: Callable[..., str]) -> Abandoned:
    """Made and polled once when the first check that needs it begins, so the wait for the target's foreman runs
    beside the other checks."""
    pool, name = module_names("abandoned-pool"), module_names("abandoned-queue")
    create_work_pool(api, module_created, pool)
    create_work_queue(api, pool, name)
    flow = create_flow(api, module_created, module_names("abandoned-flow"))
    deployment = create_deployment(api, flow["id"], module_names("abandoned-deployment"))
    module_created.add(f"/deployments/{deployment['id']}")
    abandoned = Abandoned(Queue(pool, name), deployment["id"], utc_now())
    poll_queue(api, pool, name)
    poll_deployments(api, [deployment["id"]])
    # READY is seen at once, here: by the time a check begins, the target's timeout may already have passed.
    for key, read, what in (
        ("queue", lambda: abandoned.queue.status(api), f"work queue {name!r}"),
        ("deployment", lambda: deployment_status(api, deployment["id"]), f"deployment {deployment['id']}"),
    ):
        try:
            await_status(
                read, "READY", what, "after its one poll", hint="Prefect makes what a worker or a Runner polls READY"
            )
        except AssertionError as exc:  # the target's answer: the check that needs it fails with it
            abandoned.not_ready[key] = exc
    return abandoned


def await_abandoned(
    abandoned: Abandoned, key: str, read: Callable[[], str | None], what: str, timeout_name: str
) -> None:
    """READY after the one poll, then NOT_READY once the target's timeout for ``timeout_name`` has passed, within
    two foreman loops and 10 s."""
    if key in abandoned.not_ready:
        raise abandoned.not_ready[key]
    since = abandoned.polled
    limit, loop = service_loop(timeout_name), service_loop("foreman")
    remaining = max(0.0, (since - utc_now()).total_seconds() + limit)

    def stale() -> bool:
        status = read()
        if status == "NOT_READY":
            return True
        raise AssertionError(f"{what} is {status!r}, {(utc_now() - since).total_seconds():.0f} s after its one poll")

    wait_until(
        stale,
        awaiting=f"{what} to be NOT_READY once no one has polled it for {limit:g} s",
        timeout=remaining / timeout_scale() + 2 * loop + 10,
        interval=0.5,
        hint=f"Prefect's foreman marks what no one polled for {timeout_name.replace('_', ' ')} ({limit:g} s here: "
        f"--service-loops {timeout_name}) NOT_READY, every loop ({loop:g} s: --service-loops foreman)",
    )


def test_a_queue_no_one_polls_becomes_not_ready(api: ApiClient, abandoned: Abandoned) -> None:
    """A queue polled once and never again is READY, then NOT_READY once the target's
    ``work_queue_last_polled_timeout`` has passed (Prefect: 60 s), so the UI stops showing it as served."""
    await_abandoned(
        abandoned,
        "queue",
        lambda: abandoned.queue.status(api),
        f"work queue {abandoned.queue.name!r}",
        "work_queue_last_polled_timeout",
    )


def test_a_deployment_no_one_polls_becomes_not_ready(api: ApiClient, abandoned: Abandoned) -> None:
    """A served deployment polled once and never again (its Runner stopped) is READY, then NOT_READY once the
    target's ``deployment_last_polled_timeout`` has passed (Prefect: 60 s)."""
    await_abandoned(
        abandoned,
        "deployment",
        lambda: deployment_status(api, abandoned.deployment_id),
        f"deployment {abandoned.deployment_id}",
        "deployment_last_polled_timeout",
    )
