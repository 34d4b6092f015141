"""A crowd of real workers racing for the same runs: the exactly-once check's world, and the runs once every worker
has settled them."""

from __future__ import annotations

import time
from typing import Any, Callable

from harness.checks.lifecycle import CROWD_RUNS, CROWD_WORKERS, RUN_TIMEOUT, Lifecycle
from harness.checks.objects import Created, create_deployment, create_work_pool
from harness.checks.polling import create_run
from harness.checks.timestamps import utc_now
from harness.clients.actors import Actor, start_worker
from harness.clients.lifecycle import (
    entrypoint,
)
from harness.clients.progress import wait_for_final_state
from harness.target.api import ApiClient
from harness.waits import timeout_scale, wait_until

#: How many runs each of the crowd's workers runs at once (``prefect worker start --limit``): every worker still
#: proposes PENDING for the same first runs of its poll, but at most six flow-run processes run at once. With ten
#: unlimited, Prefect's SQLite server answered 503 ("database is locked") beside another check's clients on two
#: cores; with ten runs, in a loaded `make test` one run CRASHED before its flow began; six runs still give three
#: workers the same first two to race for.
CROWD_WORKER_LIMIT = 2


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
    (a worker handed it again), so after all are final every worker polls twice more (a worker proposes PENDING for
    what one poll handed it before it polls again), and if any run's state has changed meanwhile, its new execution
    is awaited to its end and the round repeats. Then the flows' ledger holds every execution there was."""
    deadline = time.monotonic() + 2 * RUN_TIMEOUT * timeout_scale()
    finals = [
        wait_for_final_state(api, run["id"], actor=workers[0], timeout=2 * RUN_TIMEOUT, poll_path=poll) for run in runs
    ]
    while True:
        since = utc_now().timestamp()
        for actor in workers:
            wait_until(
                lambda: sum(e.path.endswith(poll) and e.started > since + 1 for e in actor.recorder.transcript()) >= 2,
                awaiting=f"{actor.name} to poll {poll} twice more after the runs ended",
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
