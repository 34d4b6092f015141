"""Real Prefect clients as child processes: a ``.serve()`` Runner, a ``prefect worker start`` worker, and a task
worker (``prefect.task_worker.serve``) with the client that submits its background tasks (``task.delay``).

Each actor talks to the target through its own :class:`~harness.clients.relay.RecordingRelay`, so its
transcript shows which endpoints the real client used. Actors get a clean environment (no user profile, no
``PREFECT_*`` from the caller) with short poll intervals set through Prefect's own settings, and their output
goes to a log file next to the transcript in the run's artifacts folder.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from harness.clients.budget import client_environment as budget_environment
from harness.clients.relay import RecordingRelay
from harness.processes import ManagedProcess, spawn
from harness.reference.environment import clean_environment
from harness.reference.releases import Release, pinned
from harness.target.credentials import client_environment

#: Seconds between the scheduled Runner's runs (``serve(interval=...)``): its first run is due within one interval of
#: the deployment's creation, a wait every run of the serve checks pays.
SCHEDULE_INTERVAL = 1

#: Client settings every actor runs with (names as of Prefect 3.9.1).
FAST_CLIENT_SETTINGS: dict[str, str] = {
    "PREFECT_RUNNER_POLL_FREQUENCY": "1",
    "PREFECT_WORKER_QUERY_SECONDS": "1",
    "PREFECT_WORKER_HEARTBEAT_SECONDS": "2",
    "PREFECT_WORKER_PREFETCH_SECONDS": "10",
    # A worker's fallback poll for runs to cancel, when no Cancelling event reaches it (Prefect's default 10 s).
    "PREFECT_WORKER_CANCELLATION_POLL_SECONDS": "2",
    "PREFECT_LOGGING_LEVEL": "INFO",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
}

#: Names a file a Runner's process waits for, with Prefect imported, before it calls ``.serve()``
#: (:func:`start_runner`'s ``gate``).
GATE_ENV = "PREFECT_CONFORMANCE_GATE"
#: How long a gated Runner waits for its gate before it gives up (exit 1, one line on stderr).
GATE_TIMEOUT = 600.0

FLOW_SOURCE = '''"""Flow code on local disk for prefect-conformance actors (generated; one file per scenario)."""
import json
import os
import sys
import time

from prefect import flow, get_run_logger


@flow(name={flow_name!r}, log_prints=True)
def conformance_flow(marker: str = "") -> str:
    print(f"conformance flow ran in pid {{os.getpid()}} with marker={{marker!r}}")
    get_run_logger().warning({log_line!r})
    return marker


if __name__ == "__main__":
    gate = os.environ.get({gate_env!r})
    if gate:  # started early so that importing Prefect is done; the harness says when to begin
        deadline = time.monotonic() + {gate_timeout!r}
        while not os.path.exists(gate):
            if time.monotonic() > deadline:
                sys.exit(f"gave up after {gate_timeout:.0f} s: the harness never opened {{gate}}")
            time.sleep(0.05)
    # Run as a Runner: serve() creates the deployment and polls for its scheduled runs.
    conformance_flow.serve(name={deployment_name!r}, **json.loads(sys.argv[1]))
'''

ENTRYPOINT_FUNCTION = "conformance_flow"
#: What the flow of every Runner's and worker's run logs with ``get_run_logger()``: its lines must be read back.
FLOW_LOG_LINE = "the conformance flow logs: Grüße, 日本語 🚀\nand a second line"


def write_flow_file(directory: Path, flow_name: str, deployment_name: str = "") -> Path:
    """Write the flow file an actor runs; returns its path (its directory is the pull-step working dir)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "conformance_flow.py"
    path.write_text(
        FLOW_SOURCE.format(
            flow_name=flow_name,
            deployment_name=deployment_name,
            gate_env=GATE_ENV,
            gate_timeout=GATE_TIMEOUT,
            log_line=FLOW_LOG_LINE,
        )
    )
    return path


TASKS_SOURCE = '''"""Background tasks for prefect-conformance actors (generated; one file per scenario)."""
import json
import os
import sys
import time

from prefect import task


@task(name={task_name!r})
def conformance_task(n: int) -> int:
    # The marker makes this function's code, and so its task key, unique to one run: no other task worker on the
    # target subscribes to these runs, and this run's task worker gets no one else's.
    with open(os.environ["PREFECT_CONFORMANCE_TASK_LEDGER"], "a") as ledger:
        ledger.write(json.dumps({{"marker": {marker!r}, "n": n, "pid": os.getpid()}}) + "\\n")
    return n * n


if __name__ == "__main__":
    if sys.argv[1] == "serve":  # a task worker: subscribes to scheduled runs of this task and executes them
        from prefect.task_worker import serve

        serve(conformance_task)
    else:  # submit COUNT TIMEOUT OUT: delay COUNT runs, wait for their results, write ids and results to OUT
        count, timeout, out = int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
        futures = [conformance_task.delay(n) for n in range(count)]
        ids = [str(future.task_run_id) for future in futures]
        print(f"submitted task runs {{ids}}", flush=True)
        deadline, results = time.monotonic() + timeout, []
        for future in futures:
            # Asked in slices of at most 5 s until the deadline: each call reads the run's state first, then waits
            # for its final-state event. Older clients miss an event that fires between the two (3.0.11 waited out
            # its whole timeout for a run already COMPLETED), or raise "has no state" when they read the run before
            # its first state is recorded (3.4.25); asking again is what their users do.
            while True:
                remaining = deadline - time.monotonic()
                try:
                    results.append({{"result": future.result(timeout=max(0.1, min(5.0, remaining)))}})
                except (TimeoutError, RuntimeError) as exc:
                    if time.monotonic() < deadline and (isinstance(exc, TimeoutError) or "has no state" in str(exc)):
                        continue
                    results.append({{"error": f"{{type(exc).__name__}}: {{exc}}"}})
                except Exception as exc:  # reported to the harness as the client saw it
                    results.append({{"error": f"{{type(exc).__name__}}: {{exc}}"}})
                break
        with open(out + ".tmp", "w") as handle:
            json.dump({{"task_run_ids": ids, "results": results}}, handle)
        os.replace(out + ".tmp", out)
'''


def write_tasks_file(directory: Path, task_name: str, marker: str) -> Path:
    """Write the module that both the task worker and the submitter import (the same task, the same task key)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "conformance_tasks.py"
    path.write_text(TASKS_SOURCE.format(task_name=task_name, marker=marker))
    return path


LOGGING_FLOW_SOURCE = '''"""A flow that logs, run as a script, for prefect-conformance's logs checks (generated; one
file per run)."""
import json
import os
import sys

from prefect import flow, get_run_logger, task
from prefect.runtime import flow_run as current_flow_run, task_run as current_task_run

FLOW_LINES = {flow_lines!r}
TASK_LINES = {task_lines!r}


@task(name={task_name!r})
def logging_task() -> str:
    logger = get_run_logger()
    for level, message in TASK_LINES:
        logger.log(level, message)
    return str(current_task_run.id)


@flow(name={flow_name!r})
def logging_flow() -> dict:
    logger = get_run_logger()
    for level, message in FLOW_LINES:
        logger.log(level, message)
    return {{"flow_run_id": str(current_flow_run.id), "task_run_id": logging_task()}}


if __name__ == "__main__":
    ids = logging_flow()
    with open(sys.argv[1] + ".tmp", "w") as out:
        json.dump(ids, out)
    os.replace(sys.argv[1] + ".tmp", sys.argv[1])
'''


def start_logging_flow(
    target_api_url: str,
    workdir: Path,
    *,
    flow_name: str,
    task_name: str,
    flow_lines: list[tuple[int, str]],
    task_lines: list[tuple[int, str]],
    out: Path,
    name: str = "flow-run",
    release: Release | None = None,
) -> Actor:
    """A flow called as a script (the flow engine, as in every Runner's and worker's flow-run process): it logs
    ``flow_lines`` with ``get_run_logger()``, calls a task that logs ``task_lines``, writes its flow run's and task
    run's ids to ``out`` and exits, its logs sent."""
    path = workdir / "logging-flow" / "conformance_logging_flow.py"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        LOGGING_FLOW_SOURCE.format(
            flow_name=flow_name, task_name=task_name, flow_lines=flow_lines, task_lines=task_lines
        )
    )
    return start_client(
        target_api_url, workdir, name, [(release or pinned()).python, str(path), str(out)], cwd=path.parent
    )


EVENTS_CLIENT_SOURCE = '''"""A client of the target's events, for prefect-conformance (generated; one file per run).

It subscribes to WS /events/out (Prefect's own subscriber, as a Runner does) for the given resources, says so by
creating READY, emits one event of its own over WS /events/in (emit_event, as every flow run does), and writes each
event the subscription delivers to OUT, a JSON object a line, until it has seen every EXPECTED event name or
TIMEOUT seconds have passed.
"""
import asyncio
import datetime
import json
import sys
import time

from prefect.events import emit_event
from prefect.events.clients import get_events_subscriber
from prefect.events.filters import EventFilter, EventOccurredFilter, EventResourceFilter


async def main(resource_ids, own, expected, timeout, out, ready):
    now = datetime.datetime.now(datetime.timezone.utc)
    # An explicit window, a day either side: the filter's default ends at the moment it was made, before any live event.
    window = EventOccurredFilter(since=now - datetime.timedelta(days=1), until=now + datetime.timedelta(days=1))
    deadline = time.monotonic() + timeout
    events = EventFilter(occurred=window, resource=EventResourceFilter(id=resource_ids))
    async with get_events_subscriber(filter=events) as subscriber:
        open(ready, "w").close()
        emit_event(event=own["event"], resource=own["resource"], payload=own["payload"],
                   occurred=datetime.datetime.fromisoformat(own["occurred"]))
        missing = set(expected)
        with open(out, "a") as handle:
            while missing and time.monotonic() < deadline:
                try:
                    event = await asyncio.wait_for(subscriber.__anext__(), max(0.1, deadline - time.monotonic()))
                except asyncio.TimeoutError:
                    break
                handle.write(json.dumps(event.model_dump(mode="json")) + "\\n")
                handle.flush()
                missing.discard(event.event)


if __name__ == "__main__":
    asyncio.run(main(*json.loads(sys.argv[1])))
'''


def start_events_client(
    target_api_url: str,
    workdir: Path,
    *,
    resource_ids: list[str],
    own_event: dict[str, Any],
    expected: list[str],
    timeout: float,
    out: Path,
    ready: Path,
    name: str = "events-client",
    release: Release | None = None,
) -> Actor:
    """Prefect's own events clients in a child process: a subscription to ``resource_ids`` over ``WS /events/out``
    and ``own_event`` (``event``, ``resource``, ``payload``, ``occurred``) emitted over ``WS /events/in``; every
    event delivered goes to ``out`` until each ``expected`` name was seen or ``timeout`` passed. ``ready`` appears
    once the subscription is open."""
    path = workdir / "events-client" / "conformance_events_client.py"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(EVENTS_CLIENT_SOURCE)
    arguments = json.dumps([resource_ids, own_event, expected, timeout, str(out), str(ready)])
    return start_client(
        target_api_url, workdir, name, [(release or pinned()).python, str(path), arguments], cwd=path.parent
    )


@dataclass
class Actor:
    """A running real client and the recorder in front of its target."""

    name: str
    process: ManagedProcess
    recorder: RecordingRelay
    workdir: Path
    #: How long to wait after SIGINT before SIGTERM: the 3.9.1 worker ignores SIGINT for over 20 s.
    sigint_wait: float = 3.0
    stopped: bool = field(default=False, init=False)

    def is_running(self) -> bool:
        return self.process.is_running()

    def log_tail(self, lines: int = 15) -> str:
        return self.process.log_tail(lines)

    def stop(self) -> None:
        """Stop the client (SIGINT, SIGTERM, SIGKILL with bounded waits), then its recorder; keep the transcript."""
        if self.stopped:
            return
        self.stopped = True
        try:
            self.process.stop(sigint_wait=self.sigint_wait, sigterm_wait=5.0)
        finally:
            self.recorder.stop()
            self.recorder.write_transcript(self.workdir / f"{self.name}.transcript.jsonl")

    def __enter__(self) -> "Actor":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def actor_environment(api_url: str, home: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """A clean environment for a real client: fast settings, its own PREFECT_HOME, the target, credentials, and the
    run's start budget (:mod:`harness.clients.budget`) over it and the processes it starts."""
    home.mkdir(parents=True, exist_ok=True)
    return clean_environment(
        {
            **FAST_CLIENT_SETTINGS,
            "PREFECT_HOME": str(home),
            "PREFECT_API_URL": api_url,
            **(extra or {}),
            **client_environment(),
            **budget_environment(),
        }
    )


def start_client(
    target_api_url: str,
    workdir: Path,
    name: str,
    argv: list[str],
    *,
    cwd: Path,
    extra_env: Mapping[str, str] | None = None,
    sigint_wait: float = 3.0,
) -> Actor:
    """``argv`` (a real client of some release) in a child process, talking to the target through a recorder."""
    recorder = RecordingRelay(target_api_url, actor=name, keep_answers=True)
    recorder.start()
    try:
        env = actor_environment(recorder.api_url, workdir / f"{name}-home", extra_env)
        process = spawn(name, argv, log_path=workdir / f"{name}.log", env=env, cwd=cwd)
    except BaseException:
        recorder.stop()
        raise
    return Actor(name, process, recorder, workdir, sigint_wait=sigint_wait)


def start_runner(
    target_api_url: str,
    workdir: Path,
    *,
    flow_name: str,
    deployment_name: str,
    serve_kwargs: Mapping[str, Any] | None = None,
    name: str = "runner",
    release: Release | None = None,
    gate: Path | None = None,
) -> Actor:
    """``flow.serve(name=deployment_name, **serve_kwargs)`` in a child process, through a recorder.

    With a ``gate``, the process imports Prefect and then waits until that file exists before it calls
    ``.serve()``: a scenario that needs this Runner only after another client is done starts it early, and the
    seconds of importing overlap the other client's work while nothing of this one reaches the target."""
    # A folder per Runner: a flow-run process loads its flow from this file, so a second Runner must not rewrite it.
    flow_file = write_flow_file(workdir / f"{name}-flow", flow_name, deployment_name)
    argv = [(release or pinned()).python, str(flow_file), json.dumps(dict(serve_kwargs or {}))]
    return start_client(
        target_api_url,
        workdir,
        name,
        argv,
        cwd=flow_file.parent,
        sigint_wait=3.0,
        extra_env={GATE_ENV: str(gate)} if gate else None,
    )


def start_worker(
    target_api_url: str,
    workdir: Path,
    *,
    pool_name: str,
    worker_name: str,
    name: str = "worker",
    release: Release | None = None,
    limit: int | None = None,
) -> Actor:
    """``prefect worker start --pool POOL --type process`` in a child process, through a recorder; with ``limit``,
    ``--limit N``: at most N of its flow runs at once."""
    argv = [
        (release or pinned()).prefect,
        "worker",
        "start",
        "--pool",
        pool_name,
        "--type",
        "process",
        "--name",
        worker_name,
        *(["--limit", str(limit)] if limit else []),
    ]
    return start_client(target_api_url, workdir, name, argv, cwd=workdir, sigint_wait=1.0)


def task_ledger(workdir: Path) -> Path:
    """The file each execution of the generated task appends to (in the artifacts: it holds no secrets)."""
    return workdir / "task-ledger.jsonl"


def task_environment(workdir: Path, storage: Path) -> dict[str, str]:
    """What the task worker and its submitter share on this machine: result storage, where the submitter's
    parameters and the worker's results are written, and the ledger.

    ``storage`` must lie outside the reports: Prefect pickles each background run's context into it, settings and
    so the target's credentials included.
    """
    return {"PREFECT_LOCAL_STORAGE_PATH": str(storage), "PREFECT_CONFORMANCE_TASK_LEDGER": str(task_ledger(workdir))}


def start_task_worker(
    target_api_url: str,
    workdir: Path,
    *,
    tasks_file: Path,
    storage: Path,
    name: str = "task-worker",
    release: Release | None = None,
) -> Actor:
    """``prefect.task_worker.serve(task)`` in a child process, through a recorder."""
    return start_client(
        target_api_url,
        workdir,
        name,
        [(release or pinned()).python, str(tasks_file), "serve"],
        cwd=tasks_file.parent,
        extra_env=task_environment(workdir, storage),
        sigint_wait=3.0,
    )


def start_task_submitter(
    target_api_url: str,
    workdir: Path,
    *,
    tasks_file: Path,
    storage: Path,
    count: int,
    timeout: float,
    out: Path,
    name: str = "task-submitter",
    release: Release | None = None,
) -> Actor:
    """A second real client: ``task.delay(n)`` for n in range(count), then each future's ``result()``; it writes
    the task run ids and what each ``result()`` gave to ``out`` and exits."""
    argv = [(release or pinned()).python, str(tasks_file), "submit", str(count), str(timeout), str(out)]
    return start_client(
        target_api_url, workdir, name, argv, cwd=tasks_file.parent, extra_env=task_environment(workdir, storage)
    )


def read_submission(out: Path) -> dict[str, Any] | None:
    """What the task submitter wrote (``task_run_ids``, ``results``), or None while it has not finished."""
    try:
        return json.loads(out.read_text())
    except FileNotFoundError:
        return None


def read_task_ledger(workdir: Path, marker: str) -> list[dict[str, Any]]:
    """One entry per execution of the generated task's body in this scenario (``n`` and the executing ``pid``)."""
    path = task_ledger(workdir)
    if not path.exists():
        return []
    entries = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [entry for entry in entries if entry.get("marker") == marker]
