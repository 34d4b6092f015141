"""Child processes that never outlive the harness.

Every server, runner and worker the harness starts is a :class:`ManagedProcess`: it runs in its own process
group (so the child processes Prefect starts per flow run go with it), its output goes to a log file in the
run's report folder, and it is stopped with escalating signals and bounded waits.

Two safety nets stop whatever is left when a run ends abnormally (Ctrl-C, SIGTERM, a crashed scenario):

* in-process: an ``atexit`` hook stops every live process of this interpreter;
* across processes: when ``PREFECT_CONFORMANCE_PROCESS_REGISTRY`` names a folder, each spawn leaves a file
  there named after its process group, removed when the group is stopped. The CLI sets the folder for its
  pytest workers and, last thing before it exits, kills every group still listed (:func:`reap_registry`), so
  actors started in a worker that was killed outright are gone too.
"""

from __future__ import annotations

import atexit
import os
import re
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

from harness.errors import HarnessError

REGISTRY_ENV = "PREFECT_CONFORMANCE_PROCESS_REGISTRY"
#: Set in every child's environment, so a test can find any process of one run by its marker.
RUN_MARKER_ENV = "PREFECT_CONFORMANCE_RUN_ID"

_live: set["ManagedProcess"] = set()
_live_lock = threading.Lock()


@dataclass(eq=False)
class ManagedProcess:
    """A child process in its own process group, with its combined output in ``log_path``."""

    name: str
    argv: Sequence[str]
    log_path: Path
    popen: subprocess.Popen = field(repr=False)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def is_running(self) -> bool:
        return self.popen.poll() is None

    def cpu_seconds(self) -> float | None:
        """CPU time the running process has used so far (user and system, from ``/proc``); None where there is
        no ``/proc`` or the process is gone. For ``make bench``'s profile."""
        try:
            fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def log_tail(self, lines: int = 20) -> str:
        """The last lines of the process's output, for error messages."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, *, sigint_wait: float = 3.0, sigterm_wait: float = 5.0) -> int | None:
        """SIGINT, then SIGTERM, then SIGKILL to the whole process group, each with a bounded wait.

        Returns the exit code. The group is killed at the end even if the leader exited early, so grandchildren
        (flow-run processes) cannot survive their parent.
        """
        try:
            for sig, wait in ((signal.SIGINT, sigint_wait), (signal.SIGTERM, sigterm_wait)):
                if self.popen.poll() is not None:
                    break
                _signal_group(self.popen.pid, sig)
                try:
                    self.popen.wait(timeout=wait)
                except subprocess.TimeoutExpired:
                    continue
            _signal_group(self.popen.pid, signal.SIGKILL)
            try:
                self.popen.wait(timeout=5)
            except subprocess.TimeoutExpired:  # pragma: no cover - a process that survives SIGKILL
                pass
            _await_group_gone(self.popen.pid, timeout=5)
            return self.popen.returncode
        finally:
            with _live_lock:
                _live.discard(self)
            _unregister(self.popen.pid)


#: Environment variables whose value is a filesystem path (or a URL holding one) in the children we start.
PATH_VALUED_ENV = re.compile(r"^PREFECT_(.*_)?(HOME|DIR|PATH|FILE|CONNECTION_URL)$")


def relative_paths(argv: Sequence[str], env: Mapping[str, str], cwd: Path | None, log_path: Path) -> list[str]:
    """Every relative path among what a child would be started with, described for an error message.

    A child runs in its own working directory, so a relative path there names a different file than it did in
    the harness: the bug class behind "the Runner cannot open reports/latest/.../reports/latest/...". Paths are
    resolved once, at the boundary (CLI options, pytest options); this check keeps it that way.
    """
    found = []
    if cwd is not None and not Path(cwd).is_absolute():
        found.append(f"cwd={cwd}")
    if not Path(log_path).is_absolute():
        found.append(f"log_path={log_path}")
    for index, arg in enumerate(argv):
        text = str(arg)
        looks_like_path = "/" in text and not any(c.isspace() for c in text) and "://" not in text
        if looks_like_path and not text.startswith(("/", "-", "{", "[")) and argv[index - 1 if index else 0] != "-c":
            found.append(f"argv[{index}]={text}")
    for key, value in env.items():
        if PATH_VALUED_ENV.match(key) and value:
            path = value.split(":///", 1)[1] if ":///" in value else value
            if "://" not in path and not path.startswith("/"):
                found.append(f"{key}={value}")
    return found


def spawn(
    name: str,
    argv: Sequence[str],
    *,
    log_path: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> ManagedProcess:
    """Start ``argv`` in a new session/process group with output appended to ``log_path``.

    Refuses (``HarnessError``) a relative working directory, argv path or path-valued ``PREFECT_*`` variable.
    """
    child_env = dict(env if env is not None else os.environ)
    relative = relative_paths(argv, child_env, cwd, log_path)
    if relative:
        raise HarnessError(
            f"Refusing to start {name} with relative paths ({', '.join(relative)}): the child would resolve them "
            "against its own working directory. Hint: a harness bug; resolve paths where they enter the harness."
        )
    log_path.parent.mkdir(parents=True, exist_ok=True)
    if os.environ.get(RUN_MARKER_ENV):
        child_env[RUN_MARKER_ENV] = os.environ[RUN_MARKER_ENV]
    with open(log_path, "ab") as log:
        popen = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=child_env,
            cwd=str(cwd) if cwd else None,
            start_new_session=True,
        )
    proc = ManagedProcess(name=name, argv=list(argv), log_path=log_path, popen=popen)
    with _live_lock:
        _live.add(proc)
    _register(popen.pid, name)
    return proc


def _registry() -> Path | None:
    folder = os.environ.get(REGISTRY_ENV)
    return Path(folder) if folder else None


def _register(pgid: int, name: str) -> None:
    folder = _registry()
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / str(pgid)).write_text(name)


def _unregister(pgid: int) -> None:
    folder = _registry()
    if folder is not None:
        (folder / str(pgid)).unlink(missing_ok=True)


def reap_registry(folder: Path) -> list[str]:
    """Kill every process group still listed in ``folder``; return the names of those that were alive."""
    reaped = []
    if not folder.exists():
        return reaped
    for entry in folder.iterdir():
        if not entry.name.isdigit():
            continue
        pgid = int(entry.name)
        try:
            os.killpg(pgid, signal.SIGKILL)
            reaped.append(entry.read_text() or entry.name)
        except (ProcessLookupError, PermissionError):
            pass
        else:
            _await_group_gone(pgid, timeout=5)
        entry.unlink(missing_ok=True)
    return reaped


def live_processes() -> list[ManagedProcess]:
    """Processes started through :func:`spawn` that have not been stopped yet."""
    with _live_lock:
        return list(_live)


def stop_all(*, quick: bool = False) -> None:
    """Stop every live process; ``quick`` skips the polite SIGINT phase (used on interpreter exit)."""
    for proc in live_processes():
        if quick:
            proc.stop(sigint_wait=0.0, sigterm_wait=2.0)
        else:
            proc.stop()


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _group_members(pgid: int) -> list[int]:
    """Pids of the live (not yet zombie) processes in a process group, read from ``/proc``.

    Empty where ``/proc`` is missing: then SIGKILL's delivery is all we can vouch for.
    """
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # The command name (field 2) may hold spaces and parentheses; the fields after its last ")" do not.
            state, _ppid, group = stat.read_text().rsplit(")", 1)[1].split()[:3]
        except (OSError, IndexError, ValueError):
            continue
        if int(group) == pgid and state not in ("Z", "X"):
            members.append(int(stat.parent.name))
    return members


def _await_group_gone(pgid: int, *, timeout: float) -> None:
    """Wait until every process of the group has died, not merely been sent SIGKILL.

    A killed process is still running its exit path for a moment (a grandchild showed state ``R`` right after
    the kill), and "stopped" must mean gone. The wait is bounded, and SIGKILL is re-sent to any latecomer.
    """
    deadline = time.monotonic() + timeout
    while _group_members(pgid) and time.monotonic() < deadline:
        _signal_group(pgid, signal.SIGKILL)
        time.sleep(0.02)


def _on_exit() -> None:
    stop_all(quick=True)


atexit.register(_on_exit)


def install_termination_handler() -> None:
    """Turn SIGTERM into KeyboardInterrupt in the main thread, so ``finally`` blocks and atexit cleanup run.

    Called by the CLI: CI systems stop jobs with SIGTERM, and a bare SIGTERM would skip all cleanup.
    """
    if threading.current_thread() is not threading.main_thread():
        return

    def _raise(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"received signal {signum}")

    signal.signal(signal.SIGTERM, _raise)
