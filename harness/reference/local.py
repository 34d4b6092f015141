"""The bundled reference server: real Prefect, started and stopped by the harness.

The reference is the authority on behaviour. By default it is a local ``prefect server start`` subprocess from
the pinned Prefect release, on a free loopback port, with a throwaway ``PREFECT_HOME`` and SQLite database,
the UI and analytics off, and short service loops so that scheduling scenarios finish in seconds.

Start-up cost is dominated by database migrations (~9 s here on a fresh database, ~4 s on a migrated one),
so a migrated template database is built once per Prefect version in the user cache directory
(:func:`harness.locations.cache_dir`) and copied for each run.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from harness.errors import HarnessError, WaitTimeout
from harness.locations import cache_dir as user_cache_dir
from harness.processes import ManagedProcess, spawn
from harness.reference.environment import FAST_SERVICE_SETTINGS, clean_environment, free_port
from harness.reference.releases import Release, pinned
from harness.reference.server import ReferenceServer
from harness.target.health import wait_for_health
from harness.waits import wait_until

READY_TIMEOUT = 90.0
#: How long a restarted reference may wait for its port: a closed connection holds it for about a minute.
RESTART_PORT_TIMEOUT = 90.0


@dataclass
class LocalReference(ReferenceServer):
    """A real Prefect server in a child process; use as a context manager."""

    workdir: Path
    cache_dir: Path = field(default_factory=user_cache_dir)
    settings: Mapping[str, str] = field(default_factory=dict)
    #: A PostgreSQL URL (``postgresql+asyncpg://...``) to use instead of a throwaway SQLite file; Prefect
    #: migrates it on start. It must be a database this run may own.
    db_url: str = ""
    port: int = 0
    #: The Prefect release that serves (``--reference-version``); default the pinned one.
    release: Release = field(default_factory=pinned)
    process: ManagedProcess | None = field(default=None, init=False)
    startup_seconds: float = field(default=0.0, init=False)
    #: CPU seconds of the server's processes before the last restart (for ``make bench``, with :meth:`cpu_seconds`).
    _stopped_cpu: float = field(default=0.0, init=False, repr=False)
    _launched: float = field(default=0.0, init=False, repr=False)

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def start(self) -> None:
        self.launch()
        self.wait_ready()

    def cpu_seconds(self) -> float | None:
        """CPU time the server has used so far, across restarts; None where it cannot be read (see
        ``ManagedProcess``)."""
        running = self.process.cpu_seconds() if self.process is not None else None
        return None if running is None else running + self._stopped_cpu

    restart_how = "stopped, then started on its database"

    def restart(self) -> None:
        """Stop the server (asking it to shut down, as a deployment's restart does) and start it again on the same
        database and port: the durability checks' restart."""
        if self.process is not None:
            self._stopped_cpu += self.process.cpu_seconds() or 0.0
            self.process.stop(sigint_wait=10.0, sigterm_wait=5.0)
            self.process = None

        def started() -> bool:
            self.launch(keep_database=True)
            try:
                self.wait_ready()
            except HarnessError as exc:
                if "already in use" in str(exc):  # releases before 3.9 refuse a port the old server's closed
                    raise AssertionError(str(exc).splitlines()[-1]) from None  # connections hold (TIME_WAIT, ~60 s)
                raise
            return True

        wait_until(
            started,
            awaiting=f"the restarted reference server to get its port {self.port} back",
            timeout=RESTART_PORT_TIMEOUT,
            interval=1.0,
            hint="the old server's connections hold the port for up to a minute after it stops",
        )

    def launch(self, *, keep_database: bool = False) -> None:
        self._launched = time.monotonic()
        home = self.workdir / "prefect-home"
        home.mkdir(parents=True, exist_ok=True)
        if not self.db_url and not keep_database:
            shutil.copy2(ensure_template_database(self.cache_dir, self.release), home / "prefect.db")
        self.port = self.port or free_port()
        env = clean_environment(
            {
                **FAST_SERVICE_SETTINGS,
                **self.settings,
                "PREFECT_HOME": str(home),
                "PREFECT_SERVER_DATABASE_CONNECTION_URL": self.db_url or f"sqlite+aiosqlite:///{home / 'prefect.db'}",
                # A copy of the template was migrated by this Prefect release; checking it again costs ~0.7 s of CPU.
                **({} if self.db_url else {"PREFECT_SERVER_DATABASE_MIGRATE_ON_START": "false"}),
                "PREFECT_SERVER_API_HOST": "127.0.0.1",
                "PREFECT_SERVER_API_PORT": str(self.port),
            }
        )
        argv = [self.release.prefect, "server", "start", "--host", "127.0.0.1", "--port", str(self.port), "--no-ui"]
        self.process = spawn("reference-server", argv, log_path=self.log_path, env=env, cwd=home)

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        process = self.process
        if process is None:
            raise HarnessError("The reference server was stopped before it was ready.")

        def alive() -> None:
            if not process.is_running():
                raise HarnessError(
                    f"The reference server exited with code {process.popen.returncode} before it was ready. "
                    f"Last log lines ({self.log_path}):\n{process.log_tail()}"
                )

        try:
            wait_for_health(
                self.api_url,
                timeout=timeout,
                what="the reference server",
                alive=alive,
                hint=f"see its log, {self.log_path}; the machine may be overloaded",
            )
        except (WaitTimeout, HarnessError) as exc:
            self.stop()
            raise HarnessError(str(exc)) from None
        self.startup_seconds = time.monotonic() - self._launched

    def stop(self) -> None:
        # Killed, not asked to shut down: when a run stops its reference, every answer the checks needed is in and
        # its SQLite file is thrown away (a PostgreSQL database rolls back what was in flight); a graceful shutdown
        # only adds seconds to every run.
        if self.process is not None:
            self.process.stop(sigint_wait=0.0, sigterm_wait=0.0)
            self.process = None


def ensure_template_database(cache_dir: Path, release: Release | None = None) -> Path:
    """A migrated, empty SQLite database for the release (default: the pinned one), built once and cached.

    Built in a temporary folder and renamed into place, so concurrent runs never see half a database.
    """
    release = release or pinned()
    target = cache_dir / f"reference-db-prefect-{release.version}" / "prefect.db"
    if target.exists():
        return target
    target.parent.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent.parent) as tmp:
        home = Path(tmp) / "home"
        home.mkdir()
        env = clean_environment({"PREFECT_HOME": str(home)})
        log = Path(tmp) / "migrate.log"
        proc = spawn(
            "migrate-template-db", [release.prefect, "server", "database", "upgrade", "-y"], log_path=log, env=env
        )
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
