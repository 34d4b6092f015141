"""What every reference server and every real client is started with: settings, a clean environment, the
``prefect`` executable of the pinned release, a free port.

Imports nothing of the harness but :mod:`harness.errors`.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
from pathlib import Path
from typing import Mapping

from harness.errors import HarnessError
from harness.waits import SERVICE_LOOP_SETTINGS

#: Server settings every reference uses. Names as of Prefect 3.9.1 (``prefect config view --show-defaults``).
FAST_SERVICE_SETTINGS: dict[str, str] = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_UI_ENABLED": "false",
    # The cron scheduler: look at recently changed deployments, and at all of them, every second. The scheduler
    # checks wait a loop and 2 s before changing a schedule (so no pass that read the old one is in flight): with
    # 2 s here that was 4 s of the scheduler module's critical path, now 3 s.
    "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "1",
    "PREFECT_SERVER_SERVICES_SCHEDULER_RECENT_DEPLOYMENTS_LOOP_SECONDS": "1",
    # Runs more than 5 s past their scheduled time become "Late" (still SCHEDULED) within a second. An ISO 8601
    # duration: releases before 3.6 read it as a plain timedelta and refuse to start on a bare "5".
    "PREFECT_SERVER_SERVICES_LATE_RUNS_LOOP_SECONDS": "1",
    "PREFECT_SERVER_SERVICES_PAUSE_EXPIRATIONS_LOOP_SECONDS": "1",
    "PREFECT_SERVER_SERVICES_FOREMAN_LOOP_SECONDS": "1",
    # A queue or deployment no one has polled for 10 s is NOT_READY (Prefect's default 60 s): the statuses checks
    # wait that long. Not less: a check that polls and then reads READY must not see the foreman undo it first.
    "PREFECT_SERVER_SERVICES_FOREMAN_DEPLOYMENT_LAST_POLLED_TIMEOUT_SECONDS": "10",
    "PREFECT_SERVER_SERVICES_FOREMAN_WORK_QUEUE_LAST_POLLED_TIMEOUT_SECONDS": "10",
    # Cancelled runs' subflows are cancelled within 5 s (Prefect's default 20 s). Not 1 s: every loop of 3.8.8's
    # cleanup service writes, and at 1 s its SQLite database stayed locked ("database is locked", requests
    # unanswered for 30 s) under the lifecycle checks; 3.9.1's (docket tasks) took 1 s.
    "PREFECT_SERVER_SERVICES_CANCELLATION_CLEANUP_LOOP_SECONDS": "5",
    # Expired concurrency leases are looked for every 2 s (Prefect's default 15 s): the slot of a holder that died
    # is free 60 s (the shortest lease) and a loop after it was taken.
    "PREFECT_SERVER_SERVICES_REPOSSESSOR_LOOP_SECONDS": "2",
    # A run refused its deployment's concurrency slot is handed out again after this (Prefect's default 30 s).
    "PREFECT_SERVER_DEPLOYMENTS_CONCURRENCY_SLOT_WAIT_SECONDS": "2",
    "PREFECT_SERVER_SERVICES_LATE_RUNS_AFTER_SECONDS": "PT5S",
    "PREFECT_SERVER_LOGGING_LEVEL": "WARNING",
    # Events are written in batches, every 5 s by default: the events checks wait for them to be readable. A whole
    # number, as releases that declare it an int read it too.
    "PREFECT_SERVER_SERVICES_EVENT_PERSISTER_FLUSH_INTERVAL": "1",
}


def free_port() -> int:
    """A currently free TCP port on the loopback interface."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def prefect_executable() -> str:
    """The ``prefect`` console script of the interpreter running the harness (the pinned release)."""
    candidate = Path(sys.executable).with_name("prefect")
    if candidate.exists():
        return str(candidate)
    found = shutil.which("prefect")
    if not found:
        raise HarnessError("Cannot find the `prefect` command. Hint: install the project with `make venv`.")
    return found


def clean_environment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The harness's environment without any PREFECT_* setting the user may have, plus ``extra``.

    A user's profile (``PREFECT_API_URL`` pointing at production, say) must never leak into a reference
    server or an actor.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(extra or {})
    return env


def bundled_service_loops() -> str:
    """The bundled reference's service loops as ``--service-loops`` states them: the checks' waits follow its own
    settings, not Prefect's defaults."""
    return ",".join(f"{name}={FAST_SERVICE_SETTINGS[setting]}" for name, setting in SERVICE_LOOP_SETTINGS.items())
