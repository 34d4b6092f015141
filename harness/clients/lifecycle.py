"""Flows whose runs live beyond scheduling: one that blocks until it is cancelled, one that fails and retries.

Served by a real ``.serve()`` Runner and run by a real process worker, as users run them. Each flow writes what it
does to a ledger file (JSON lines: the flow run's id, its process, the event), so a check counts executions from
the flows' own side effects rather than from the server's word.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harness.clients.actors import Actor, start_client
from harness.reference.releases import Release, pinned

LIFECYCLE_SOURCE = '''"""Flows for prefect-conformance's lifecycle checks (generated; one file per run)."""
import json
import os
import sys
import time

from prefect import flow, serve
from prefect.runtime import flow_run as current_run

LEDGER = {ledger!r}


def note(event, run_id, **fields):
    with open(LEDGER, "a") as handle:
        handle.write(json.dumps({{"event": event, "run": str(run_id), "pid": os.getpid(), "time": time.time(),
                                  **fields}}) + "\\n")


def attempts(run_id):
    try:
        with open(LEDGER) as handle:
            entries = [json.loads(line) for line in handle if line.strip()]
    except FileNotFoundError:
        return 0
    return sum(1 for e in entries if e["event"] == "attempt" and e["run"] == str(run_id))


def on_cancellation(flow, flow_run, state):
    note("on_cancellation", flow_run.id, state=state.type.value)


@flow(name={blocking_name!r}, on_cancellation=[on_cancellation])
def blocking_flow() -> None:
    note("started", current_run.id)
    deadline = time.monotonic() + {block_seconds!r}
    while time.monotonic() < deadline:  # until the client that runs it kills it
        time.sleep(0.1)
    note("finished", current_run.id)


@flow(name={flaky_name!r}, retries=2, retry_delay_seconds={retry_delay!r})
def flaky_flow() -> str:
    attempt = attempts(current_run.id) + 1
    note("attempt", current_run.id, attempt=attempt)
    if attempt <= 2:
        raise RuntimeError(f"planned failure of attempt {{attempt}}")
    return f"completed on attempt {{attempt}}"


if __name__ == "__main__":  # a Runner: serves both flows, one deployment each
    serve(blocking_flow.to_deployment(name=sys.argv[1]), flaky_flow.to_deployment(name=sys.argv[2]))
'''

FLOWS_FILE = "lifecycle_flows.py"
BLOCKING_ENTRYPOINT = f"{FLOWS_FILE}:blocking_flow"
FLAKY_ENTRYPOINT = f"{FLOWS_FILE}:flaky_flow"
#: How long the blocking flow blocks unless it is cancelled: past every wait of the checks, so a run that ends on
#: its own was never cancelled.
BLOCK_SECONDS = 300.0
#: The flaky flow's ``retry_delay_seconds``: each AwaitingRetry is scheduled this long after the failure.
RETRY_DELAY = 1
#: Its ``retries``: it fails this many times, then completes.
RETRIES = 2


def write_lifecycle_flows(directory: Path, *, blocking_name: str, flaky_name: str) -> Path:
    """The flows file (in ``directory``, which is the pull step's working directory for a worker's runs)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / FLOWS_FILE
    path.write_text(LIFECYCLE_SOURCE.format(ledger=str(ledger_path(directory)), blocking_name=blocking_name,
                                            flaky_name=flaky_name, block_seconds=BLOCK_SECONDS, retry_delay=RETRY_DELAY))
    return path


def ledger_path(directory: Path) -> Path:
    return directory / "ledger.jsonl"


def read_ledger(directory: Path, run_id: str) -> list[dict[str, Any]]:
    """What the flows wrote about one flow run, in order."""
    try:
        lines = ledger_path(directory).read_text().splitlines()
    except FileNotFoundError:
        return []
    entries = [json.loads(line) for line in lines if line.strip()]
    return [entry for entry in entries if entry.get("run") == run_id]


def start_lifecycle_runner(target_api_url: str, workdir: Path, *, flows_file: Path, blocking_deployment: str,
                           flaky_deployment: str, name: str = "runner", release: Release | None = None) -> Actor:
    """``serve(blocking.to_deployment(...), flaky.to_deployment(...))`` in a child process, through a recorder."""
    argv = [(release or pinned()).python, str(flows_file), blocking_deployment, flaky_deployment]
    return start_client(target_api_url, workdir, name, argv, cwd=flows_file.parent, sigint_wait=3.0)
