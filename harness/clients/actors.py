"""Real Prefect clients as child processes: a ``.serve()`` Runner and a ``prefect worker start`` worker.

Each actor talks to the target through its own recording :class:`~harness.clients.recorder.ReverseProxy`, so its
transcript shows which endpoints the real client used. Actors get a clean environment (no user profile, no
``PREFECT_*`` from the caller) with short poll intervals set through Prefect's own settings, and their output
goes to a log file next to the transcript in the run's artifacts folder.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from harness.target.credentials import client_environment
from harness.clients.processes import ManagedProcess, spawn
from harness.clients.recorder import ReverseProxy
from harness.reference.environment import clean_environment, prefect_executable

#: Client settings every actor runs with (names as of Prefect 3.9.1).
FAST_CLIENT_SETTINGS: dict[str, str] = {
    "PREFECT_RUNNER_POLL_FREQUENCY": "1",
    "PREFECT_WORKER_QUERY_SECONDS": "1",
    "PREFECT_WORKER_HEARTBEAT_SECONDS": "2",
    "PREFECT_WORKER_PREFETCH_SECONDS": "10",
    "PREFECT_LOGGING_LEVEL": "INFO",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
}

FLOW_SOURCE = '''"""Flow code on local disk for prefect-conformance actors (generated; one file per scenario)."""
import json
import os
import sys

from prefect import flow


@flow(name={flow_name!r}, log_prints=True)
def conformance_flow(marker: str = "") -> str:
    print(f"conformance flow ran in pid {{os.getpid()}} with marker={{marker!r}}")
    return marker


if __name__ == "__main__":
    # Run as a Runner: serve() creates the deployment and polls for its scheduled runs.
    conformance_flow.serve(name={deployment_name!r}, **json.loads(sys.argv[1]))
'''

ENTRYPOINT_FUNCTION = "conformance_flow"


def write_flow_file(directory: Path, flow_name: str, deployment_name: str = "") -> Path:
    """Write the flow file an actor runs; returns its path (its directory is the pull-step working dir)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "conformance_flow.py"
    path.write_text(FLOW_SOURCE.format(flow_name=flow_name, deployment_name=deployment_name))
    return path


@dataclass
class Actor:
    """A running real client and the recorder in front of its target."""

    name: str
    process: ManagedProcess
    recorder: ReverseProxy
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


def actor_environment(api_url: str, home: Path) -> dict[str, str]:
    """A clean environment for a real client: fast settings, its own PREFECT_HOME, the target, credentials."""
    home.mkdir(parents=True, exist_ok=True)
    return clean_environment(
        {**FAST_CLIENT_SETTINGS, "PREFECT_HOME": str(home), "PREFECT_API_URL": api_url, **client_environment()}
    )


def start_runner(
    target_api_url: str,
    workdir: Path,
    *,
    flow_name: str,
    deployment_name: str,
    serve_kwargs: Mapping[str, Any] | None = None,
    name: str = "runner",
) -> Actor:
    """``flow.serve(name=deployment_name, **serve_kwargs)`` in a child process, through a recorder."""
    flow_file = write_flow_file(workdir / "flow", flow_name, deployment_name)
    recorder = ReverseProxy(target_api_url, actor=name)
    recorder.start()
    try:
        env = actor_environment(recorder.api_url, workdir / f"{name}-home")
        argv = [sys.executable, str(flow_file), json.dumps(dict(serve_kwargs or {}))]
        process = spawn(name, argv, log_path=workdir / f"{name}.log", env=env, cwd=flow_file.parent)
    except BaseException:
        recorder.stop()
        raise
    return Actor(name, process, recorder, workdir, sigint_wait=3.0)


def start_worker(
    target_api_url: str,
    workdir: Path,
    *,
    pool_name: str,
    worker_name: str,
    name: str = "worker",
) -> Actor:
    """``prefect worker start --pool POOL --type process`` in a child process, through a recorder."""
    recorder = ReverseProxy(target_api_url, actor=name)
    recorder.start()
    try:
        env = actor_environment(recorder.api_url, workdir / f"{name}-home")
        argv = [prefect_executable(), "worker", "start", "--pool", pool_name, "--type", "process", "--name", worker_name]
        process = spawn(name, argv, log_path=workdir / f"{name}.log", env=env, cwd=workdir)
    except BaseException:
        recorder.stop()
        raise
    return Actor(name, process, recorder, workdir, sigint_wait=1.0)
