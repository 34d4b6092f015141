"""The bundled reference server: real Prefect, started and stopped by the harness.

The reference is the authority on behaviour. By default it is a local ``prefect server start`` subprocess from
the pinned Prefect release, on a free loopback port, with a throwaway ``PREFECT_HOME`` and SQLite database,
the UI and analytics off, and short service loops so that scheduling scenarios finish in seconds.

Start-up cost is dominated by database migrations (~9 s here on a fresh database, ~4 s on a migrated one),
so a migrated template database is built once per Prefect version under ``.cache/`` and copied for each run.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import httpx

from harness import PREFECT_REFERENCE_VERSION
from harness.errors import HarnessError
from harness.processes import ManagedProcess, spawn

#: Server settings every reference uses. Names as of Prefect 3.9.1 (``prefect config view --show-defaults``).
FAST_SERVICE_SETTINGS: dict[str, str] = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_UI_ENABLED": "false",
    # The cron scheduler: look at recently changed deployments every second, at all of them every 2 s.
    "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "2",
    "PREFECT_SERVER_SERVICES_SCHEDULER_RECENT_DEPLOYMENTS_LOOP_SECONDS": "1",
    # Runs more than 5 s past their scheduled time become "Late" (still SCHEDULED) within a second.
    "PREFECT_SERVER_SERVICES_LATE_RUNS_LOOP_SECONDS": "1",
    "PREFECT_SERVER_SERVICES_LATE_RUNS_AFTER_SECONDS": "5",
    "PREFECT_SERVER_LOGGING_LEVEL": "WARNING",
}

READY_TIMEOUT = 90.0
DEFAULT_CACHE_DIR = Path(__file__).resolve().parent.parent / ".cache"


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


class ReferenceServer:
    """What every kind of bundled reference offers: ``start``/``stop`` (or ``with``), ``api_url``, and a log
    file kept in the run's report folder (``workdir``)."""

    workdir: Path
    startup_seconds: float

    @property
    def api_url(self) -> str:  # pragma: no cover - each kind says where it listens
        raise NotImplementedError

    @property
    def log_path(self) -> Path:
        return self.workdir / "reference-server.log"

    def start(self) -> None:  # pragma: no cover
        raise NotImplementedError

    def stop(self) -> None:  # pragma: no cover
        raise NotImplementedError

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class LocalReference(ReferenceServer):
    """A real Prefect server in a child process; use as a context manager."""

    workdir: Path
    cache_dir: Path = DEFAULT_CACHE_DIR
    settings: Mapping[str, str] = field(default_factory=dict)
    #: A PostgreSQL URL (``postgresql+asyncpg://...``) to use instead of a throwaway SQLite file; Prefect
    #: migrates it on start. It must be a database this run may own.
    db_url: str = ""
    port: int = 0
    process: ManagedProcess | None = field(default=None, init=False)
    startup_seconds: float = field(default=0.0, init=False)

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def start(self) -> None:
        started = time.monotonic()
        home = self.workdir / "prefect-home"
        home.mkdir(parents=True, exist_ok=True)
        if not self.db_url:
            shutil.copy2(ensure_template_database(self.cache_dir), home / "prefect.db")
        self.port = self.port or free_port()
        env = clean_environment(
            {
                **FAST_SERVICE_SETTINGS,
                **self.settings,
                "PREFECT_HOME": str(home),
                "PREFECT_SERVER_DATABASE_CONNECTION_URL": self.db_url or f"sqlite+aiosqlite:///{home / 'prefect.db'}",
                "PREFECT_SERVER_API_HOST": "127.0.0.1",
                "PREFECT_SERVER_API_PORT": str(self.port),
            }
        )
        argv = [prefect_executable(), "server", "start", "--host", "127.0.0.1", "--port", str(self.port), "--no-ui"]
        self.process = spawn("reference-server", argv, log_path=self.log_path, env=env, cwd=home)
        self._wait_ready(READY_TIMEOUT)
        self.startup_seconds = time.monotonic() - started

    def _wait_ready(self, timeout: float) -> None:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=2.0) as http:
            while time.monotonic() < deadline:
                if not self.process.is_running():
                    raise HarnessError(
                        f"The reference server exited with code {self.process.popen.returncode} before it was ready. "
                        f"Last log lines ({self.log_path}):\n{self.process.log_tail()}"
                    )
                try:
                    if http.get(self.api_url + "/health").json() is True:
                        return
                except (httpx.HTTPError, ValueError):
                    pass
                time.sleep(0.1)  # poll interval of a bounded readiness wait
        self.stop()
        raise HarnessError(
            f"Timed out after {timeout:.0f}s waiting for the reference server to answer GET {self.api_url}/health "
            f"with true. Log: {self.log_path}. Hint: the machine may be overloaded."
        )

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop(sigint_wait=5.0, sigterm_wait=5.0)
            self.process = None


def ensure_template_database(cache_dir: Path) -> Path:
    """A migrated, empty SQLite database for the pinned Prefect, built once and cached.

    Built in a temporary folder and renamed into place, so concurrent runs never see half a database.
    """
    target = cache_dir / f"reference-db-prefect-{PREFECT_REFERENCE_VERSION}" / "prefect.db"
    if target.exists():
        return target
    target.parent.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent.parent) as tmp:
        home = Path(tmp) / "home"
        home.mkdir()
        env = clean_environment({"PREFECT_HOME": str(home)})
        log = Path(tmp) / "migrate.log"
        proc = spawn("migrate-template-db", [prefect_executable(), "server", "database", "upgrade", "-y"], log_path=log, env=env)
        try:
            code = proc.popen.wait(timeout=180)
        finally:
            proc.stop(sigint_wait=0, sigterm_wait=2)
        if code != 0 or not (home / "prefect.db").exists():
            raise HarnessError(f"Building the reference's template database failed (exit {code}): {proc.log_tail()}")
        staged = Path(tmp) / "template"
        staged.mkdir()
        shutil.move(str(home / "prefect.db"), staged / "prefect.db")
        try:
            os.rename(staged, target.parent)
        except OSError:
            if not target.exists():  # someone else won the race only if the file is there now
                raise
    return target
