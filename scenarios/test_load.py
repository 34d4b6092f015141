"""Load (opt-in: ``-m load``, the ``capacity`` profile): how many runs due at once the target serves without an
error, as a measurement, never part of a default run or its claim.

A conformance run measures behaviour at a small, bounded load (``--max-starts``); a server's author who wants to
know how far it goes asks for this. A real process worker (``prefect worker start --limit 8``) runs waves of 1, 2, 4
and 8 runs of a flow that holds its process a few seconds, all due at once: a wave is served when every run ends
COMPLETED and the target answered none of the worker's requests with a server error (5xx, but a 503, which
Prefect's clients retry by design: Prefect on SQLite answers it when its database is locked). The
largest wave served is the measurement; the check fails only if the target cannot serve even one run. The real
clients' starts stay within the run's budget, so the flows that hold their processes together are counted from the
flows' own ledger, and said beside the measurement.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import pytest

from harness.checks.objects import Created, create_deployment, create_flow, create_work_pool
from harness.checks.polling import create_run
from harness.checks.timestamps import utc_now
from harness.clients.actors import Actor, start_worker
from harness.clients.budget import most_at_once
from harness.clients.lifecycle import FLOW_KEYS, entrypoint, read_ledger, write_lifecycle_flows
from harness.clients.progress import describe_state, wait_for_final_state
from harness.reporting.results import MEASURED
from harness.target.api import ApiClient

pytestmark = pytest.mark.load

#: The waves of runs due at once, smallest first; the worker runs up to the largest at once. ``WAVES_ENV`` gives
#: others ("1,2,4,8,16"; the project's own tests use "1,2").
WAVES_ENV = "PREFECT_CONFORMANCE_LOAD_WAVES"


def waves() -> tuple[int, ...]:
    configured = os.environ.get(WAVES_ENV, "")
    return tuple(sorted({int(n) for n in configured.split(",") if n.strip()})) or (1, 2, 4, 8)


#: How long a wave's runs may take to end (each holds its process ``HOLD_SECONDS``; starts wait for the budget).
WAVE_TIMEOUT = 180.0
#: A server's "busy, ask again" (Prefect on SQLite: "database is locked"), which Prefect's clients retry by design:
#: not an error while the run still completes.
BUSY = 503


def serve_wave(
    api: ApiClient, worker: Actor, deployment: str, flows_dir: Path, names: Callable[..., str], size: int
) -> tuple[str, int]:
    """Make ``size`` runs due now and wait for them: (what went wrong, or "", the most that ran at once)."""
    began = utc_now().timestamp()
    runs = [create_run(api, deployment, names("wave", str(size), str(n)), utc_now()) for n in range(size)]
    finals = [wait_for_final_state(api, run["id"], actor=worker, timeout=WAVE_TIMEOUT) for run in runs]
    answered = [e for e in worker.recorder.transcript() if e.started >= began]
    errors = [
        f"{e.method} {e.path.split('/api', 1)[-1]} -> {e.status}"
        for e in answered
        if e.status >= 500 and e.status != BUSY
    ]
    spans = []
    for run in runs:
        entries = {e["event"]: e["time"] for e in read_ledger(flows_dir, run["id"])}
        if "started" in entries and "finished" in entries:
            spans.append((entries["started"], entries["finished"]))
    wrong = [
        f"{final['id']} ended {describe_state(final)}" for final in finals if final["state"]["type"] != "COMPLETED"
    ]
    problem = "; ".join(
        wrong
        + (
            [f"the target answered {len(errors)} requests with a server error, e.g. {', '.join(errors[:3])}"]
            if errors
            else []
        )
    )
    return problem, most_at_once(spans)


def test_runs_due_at_once_served_without_errors(
    api: ApiClient,
    actors: Callable[..., Actor],
    module_names: Callable[..., str],
    module_created: Created,
    scenario_dir: Path,
    record_property: Callable[[str, Any], None],
) -> None:
    """Waves of 1, 2, 4 and 8 runs due at once (``PREFECT_CONFORMANCE_LOAD_WAVES`` gives others), each run holding
    its process a few seconds, run by a real process worker: the largest wave the target serves with every run
    COMPLETED and no server error is measured (the
    capacity profile's figure); the target must serve one run at least."""
    flow_names = {key: module_names(key) for key in FLOW_KEYS}
    flows_dir = scenario_dir / "flows"
    write_lifecycle_flows(flows_dir, flow_names)
    pool = module_names("pool")
    create_work_pool(api, module_created, pool)
    flow_id = create_flow(api, module_created, flow_names["holding"])["id"]
    deployment = create_deployment(
        api,
        flow_id,
        module_names("holding"),
        work_pool_name=pool,
        entrypoint=entrypoint("holding"),
        pull_steps=[{"prefect.deployments.steps.set_working_directory": {"directory": str(flows_dir)}}],
    )["id"]
    sizes = waves()
    worker = actors(start_worker, pool_name=pool, worker_name=module_names("worker"), limit=max(sizes))
    served, together, stopped = 0, 0, ""
    for size in sizes:
        problem, at_once = serve_wave(api, worker, deployment, flows_dir, module_names, size)
        if problem:
            stopped = f"; a wave of {size}: {problem}"
            break
        served, together = size, max(together, at_once)
    record_property(
        MEASURED,
        f"served {served} runs due at once without an error (waves of "
        f"{', '.join(map(str, sizes))}; at most {together} ran at once, within the run's "
        f"start budget){stopped or '; every wave was served'}",
    )
    assert served >= 1, f"the target could not serve one run{stopped}"
