"""Flows whose runs live beyond scheduling: one that blocks until it is cancelled, one that fails and retries, one
that pauses, one that pauses for an input, and one that suspends itself until resumed, one that runs a deployment as
its subflow, one that holds a
global concurrency slot or a task's tag slot, one that takes a slot on a lease and dies holding it, one that holds its
process a while, and a quick one whose task retries once.

Served by a real ``.serve()`` Runner and run by a real process worker, as users run them. Each flow writes what it
does to a ledger file (JSON lines: the flow run's id, its process, the event), so a check counts executions from
the flows' own side effects rather than from the server's word.
"""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path
from typing import Any

from harness.clients.actors import Actor, start_client
from harness.clients.transcript import Exchange, Recorded
from harness.reference.releases import Release, pinned

LIFECYCLE_SOURCE = '''"""Flows for prefect-conformance's lifecycle checks (generated; one file per run)."""
import json
import os
import signal
import sys
import time

from prefect import flow, serve, task
from prefect.concurrency.sync import concurrency
from prefect.deployments import run_deployment
from prefect.flow_runs import pause_flow_run, suspend_flow_run
from prefect.runtime import flow_run as current_run

LEDGER = {ledger!r}


def note(event, run_id, **fields):
    with open(LEDGER, "a") as handle:
        handle.write(json.dumps({{"event": event, "run": str(run_id), "pid": os.getpid(), "time": time.time(),
                                  **fields}}) + "\\n")


def entries():
    try:
        with open(LEDGER) as handle:
            return [json.loads(line) for line in handle if line.strip()]
    except FileNotFoundError:
        return []


def attempts(run_id, event="attempt"):
    return sum(1 for e in entries() if e["event"] == event and e["run"] == str(run_id))


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


@flow(name={pausing_name!r})
def pausing_flow() -> str:
    note("started", current_run.id)
    pause_flow_run(timeout={pause_timeout!r}, poll_interval=1)  # waits in this process until resumed
    note("resumed", current_run.id)
    return "resumed"


@flow(name={asking_name!r})
def asking_flow() -> str:
    note("started", current_run.id)
    # Waits in this process for a resume that brings a string (a RunInput of one field, "value").
    answer = pause_flow_run(wait_for_input=str, timeout={pause_timeout!r}, poll_interval=1)
    note("resumed", current_run.id, answer=answer)
    return answer


@flow(name={suspending_name!r})
def suspending_flow() -> str:
    note("started", current_run.id)
    suspend_flow_run(timeout={pause_timeout!r})  # this process exits; resumed, the run starts again from the top
    note("resumed", current_run.id)
    return "resumed"


@flow(name={expiring_name!r})
def expiring_flow() -> str:
    note("started", current_run.id)
    suspend_flow_run(timeout={expire_after!r})  # never resumed: the server fails the run once the pause expires
    note("resumed", current_run.id)
    return "resumed"


@flow(name={nesting_name!r})
def nesting_flow(child: str) -> None:
    note("started", current_run.id)
    run_deployment(child, poll_interval=1)  # a subflow run of that deployment; waits for it to end


def decided(entry):
    """An answer to an ask for a slot that decides it: granted (2xx) or refused as taken (423, which Prefect's client
    asks again after). A 503 of a busy server decides nothing: its client simply asks again."""
    return entry["event"] == "asked" and (200 <= entry["status"] < 300 or entry["status"] == 423)


def hold(limit, peers):
    """Holds what the caller holds until every peer is asking for it and the target has decided an ask of each (the
    harness notes each answer it sees in the traffic: "asked"; the caller's own grant is one), and a moment more, so
    a peer the target granted a slot that was not free notes it meanwhile; a minute at most."""
    note("acquired", current_run.id, limit=limit)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        mine = [e for e in entries() if e.get("limit") == limit]
        if (sum(1 for e in mine if e["event"] == "acquiring") >= peers
                and sum(1 for e in mine if decided(e)) >= peers):
            break
        time.sleep(0.1)
    time.sleep({peer_settle!r})
    note("releasing", current_run.id, limit=limit)


@task
def tagged_task(limit, peers):
    hold(limit, peers)


@flow(name={limited_name!r})
def limited_flow(limit: str, peers: int, tag: bool = False) -> str:
    note("started", current_run.id, limit=limit)
    note("acquiring", current_run.id, limit=limit)
    if tag:  # a task-run concurrency limit on the tag (v1): the task takes a slot before it runs
        tagged_task.with_options(tags=[limit])(limit, peers)
    else:  # a global concurrency limit (v2)
        with concurrency(limit, occupy=1):
            hold(limit, peers)
    return "released"


@flow(name={leasing_name!r})
def leasing_flow(limit: str) -> None:
    note("started", current_run.id, limit=limit)
    with concurrency(limit, occupy=1, lease_duration={lease_seconds!r}):
        note("acquired", current_run.id, limit=limit)
        # A holder that dies without a word: nothing releases its slot, and it renews its lease no more.
        os.kill(os.getpid(), signal.SIGKILL)


@flow(name={holding_name!r})
def holding_flow() -> str:
    note("started", current_run.id)
    time.sleep({hold_seconds!r})
    note("finished", current_run.id)
    return "held"


@task(retries=1, retry_delay_seconds=0)
def wobbly_task(run_id) -> str:
    if attempts(run_id, "task-try") == 0:
        note("task-try", run_id)
        raise RuntimeError("planned failure of the task's first try")
    note("task-try", run_id)
    return "ok"


@flow(name={quick_name!r})
def quick_flow() -> str:
    note("started", current_run.id)
    return wobbly_task(current_run.id)


FLOWS = {{"blocking": blocking_flow, "flaky": flaky_flow, "pausing": pausing_flow, "asking": asking_flow,
          "suspending": suspending_flow,
          "expiring": expiring_flow, "nesting": nesting_flow, "limited": limited_flow, "leasing": leasing_flow,
          "holding": holding_flow,
          "quick": quick_flow}}

if __name__ == "__main__":  # a Runner: serves every flow, one deployment each, named in argv[1] (JSON)
    names = json.loads(sys.argv[1])
    serve(*(FLOWS[key].to_deployment(name=name) for key, name in names.items()))
'''

FLOWS_FILE = "lifecycle_flows.py"
#: The flows of the file, by key: each key's function is ``<key>_flow``.
FLOW_KEYS = (
    "blocking",
    "flaky",
    "pausing",
    "asking",
    "suspending",
    "expiring",
    "nesting",
    "limited",
    "leasing",
    "holding",
    "quick",
)
#: How long the blocking flow blocks unless it is cancelled: past every wait of the checks, so a run that ends on
#: its own was never cancelled.
BLOCK_SECONDS = 300.0
#: The flaky flow's ``retry_delay_seconds``: each AwaitingRetry is scheduled this long after the failure.
RETRY_DELAY = 1
#: Its ``retries``: it fails this many times, then completes.
RETRIES = 2
#: The pausing and suspending flows' ``timeout``: past every wait of the checks, so no pause expires meanwhile.
PAUSE_TIMEOUT = 300
#: The expiring flow's suspend ``timeout``: its run is never resumed, so the server fails it this long after.
EXPIRE_AFTER = 3
#: How long a holder of a limit keeps it once every peer has asked the target for it and been answered: long enough
#: for a peer the target granted the slot to note it (a task's begins its run first), though the checks prove a
#: double grant from the target's answers themselves. (Before the answers were watched, the holder kept its slot a
#: fixed 8 s after every peer began asking, and on CI's loaded machine a peer's first request once came later still.)
PEER_SETTLE = 1.0
#: The requests that ask for a concurrency slot: v1 (a task's tags, before 3.4) and v2, with and without a lease.
SLOT_ASKS = ("/concurrency_limits/increment", "/concurrency_limits/increment-with-lease")
#: The leasing flow's ``lease_duration``: the shortest lease Prefect's server grants (``POST
#: /v2/concurrency_limits/increment-with-lease`` refuses less than 60 s), so its slot is freed as soon as Prefect would.
LEASE_SECONDS = 60
#: How long the holding flow holds its process (and so its deployment's concurrency slot).
HOLD_SECONDS = 3.0


def entrypoint(key: str) -> str:
    return f"{FLOWS_FILE}:{key}_flow"


def write_lifecycle_flows(directory: Path, flow_names: dict[str, str]) -> Path:
    """The flows file (in ``directory``, which is the pull step's working directory for a worker's runs), each flow
    of :data:`FLOW_KEYS` named as ``flow_names`` says."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / FLOWS_FILE
    path.write_text(
        LIFECYCLE_SOURCE.format(
            ledger=str(ledger_path(directory)),
            block_seconds=BLOCK_SECONDS,
            retry_delay=RETRY_DELAY,
            pause_timeout=PAUSE_TIMEOUT,
            expire_after=EXPIRE_AFTER,
            hold_seconds=HOLD_SECONDS,
            peer_settle=PEER_SETTLE,
            lease_seconds=LEASE_SECONDS,
            **{f"{key}_name": flow_names[key] for key in FLOW_KEYS},
        )
    )
    return path


def ledger_path(directory: Path) -> Path:
    return directory / "ledger.jsonl"


def ledger_entries(directory: Path) -> list[dict[str, Any]]:
    """Everything the flows (and :class:`SlotAsks`) wrote, in order."""
    try:
        lines = ledger_path(directory).read_text().splitlines()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in lines if line.strip()]


def read_ledger(directory: Path, run_id: str) -> list[dict[str, Any]]:
    """What the flows wrote about one flow run, in order."""
    return [entry for entry in ledger_entries(directory) if entry.get("run") == run_id]


class SlotAsks:
    """Notes in the ledger, as the clients' recorded traffic shows them, the target's answers to each ask for a slot
    of the watched limits (``{"event": "asked", "limit", "status", "answered"}``): a holder keeps its slot until every
    peer's ask has been answered (:data:`LIFECYCLE_SOURCE`'s ``hold``), so the target's answer to a second holder is
    put to the test however late a loaded machine sends it, and a check reads who was granted what, when.

    A thread, polling the recorders a few times a second while the lifecycle module runs; stopped with it."""

    def __init__(self, directory: Path, actors: list[Actor], interval: float = 0.2) -> None:
        self.directory, self.actors, self.interval = directory, actors, interval
        self.names: list[str] = []
        self._noted: set[tuple[str, int, float]] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="slot-asks", daemon=True)

    def watch(self, name: str) -> None:
        """Watch the asks for ``name`` (a global limit's name, or a tag: its limit is named ``tag:<tag>`` since 3.4),
        starting the thread with the first."""
        self.names.append(name)
        if not self._thread.is_alive() and not self._stop.is_set():
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _watch(self) -> None:
        while not self._stop.wait(self.interval):
            self.note_new_answers()

    def note_new_answers(self) -> None:
        lines = []
        for index, actor in enumerate(self.actors):
            for status, answered, body in actor.recorder.answered("POST", SLOT_ASKS):
                for name in list(self.names):
                    # An answer is noted once: keyed by its recorder and when it came (a later-started ask may be
                    # answered first, so the answered ones are not an append-only list).
                    if f'{name}"'.encode() in body and (key := (name, index, answered)) not in self._noted:
                        self._noted.add(key)  # the ask names "NAME", or "tag:NAME" since 3.4
                        lines.append(
                            json.dumps(
                                {
                                    "event": "asked",
                                    "run": "",
                                    "limit": name,
                                    "status": status,
                                    "answered": answered,
                                    "time": time.time(),
                                }
                            )
                            + "\n"
                        )
        if lines:
            with open(ledger_path(self.directory), "a") as handle:
                handle.write("".join(lines))


def decided(ask: dict[str, Any]) -> bool:
    """An answer that decides an ask for a slot: granted (2xx) or refused as taken (423); not a busy server's 503,
    after which the client asks again (the flows' ``hold`` counts the same)."""
    return 200 <= ask["status"] < 300 or ask["status"] == 423


def limit_asks(directory: Path, limit: str) -> list[dict[str, Any]]:
    """The target's answers to the asks for ``limit``'s slots, as :class:`SlotAsks` noted them, by when they came."""
    asks = [entry for entry in ledger_entries(directory) if entry["event"] == "asked" and entry.get("limit") == limit]
    return sorted(asks, key=lambda entry: entry["answered"])


#: A lease's id in the answer to ``POST /v2/concurrency_limits/increment-with-lease`` (``{"lease_id": ..., "limits"}``).
_LEASE_ID = re.compile(r'"lease_id":"([0-9a-f-]{36})"')


def lease_set_times(recorded: Recorded, limit: str) -> list[tuple[str, float]]:
    """When the target may last have set the expiry of a lease on ``limit`` (what, when): the grant
    (``increment-with-lease``) and every renewal of that lease it did not refuse, by when its answer came. Prefect's
    client renews a lease as soon as it holds it (``_lease_renewal_loop`` renews before its first wait, in a thread of
    its own), so a holder that dies at once may still have renewed it: the lease expires ``lease_duration`` after the
    last of these, not after the grant. A renewal cut off by the holder's death (no answer reached it: the relay
    records 502) may still have been handled, so it counts too."""
    exchanges = recorded.transcript()

    def granted(e: Exchange) -> bool:
        return (
            e.method == "POST"
            and e.path.endswith("/increment-with-lease")
            and 200 <= e.status < 300
            and f'"{limit}"' in e.request_summary
        )

    leases = {match.group(1) for e in exchanges if granted(e) and (match := _LEASE_ID.search(e.response_summary))}
    return [
        (f"POST {e.path.split('/api', 1)[-1]} answered {e.status}", e.started + e.latency_ms / 1000)
        for e in exchanges
        if granted(e)
        or (not 400 <= e.status < 500 and any(e.path.endswith(f"/leases/{lease}/renew") for lease in leases))
    ]


def start_lifecycle_runner(
    target_api_url: str,
    workdir: Path,
    *,
    flows_file: Path,
    deployment_names: dict[str, str],
    name: str = "runner",
    release: Release | None = None,
) -> Actor:
    """``serve(<flow>.to_deployment(name=...), ...)`` of every flow in a child process, through a recorder."""
    argv = [(release or pinned()).python, str(flows_file), json.dumps(deployment_names)]
    return start_client(target_api_url, workdir, name, argv, cwd=flows_file.parent, sigint_wait=3.0)
