"""A bundled reference that comes up while pytest starts: its readiness, written to a file the workers wait for.

On 2 cores the reference's start-up (importing Prefect, building its app: seconds of CPU on one core) and pytest's
(starting its workers, importing the scenarios: seconds on the others) need nothing of each other until the first
check, so they run side by side. The process is launched in the caller's thread, so stopping the reference always
finds it; only the wait for it to answer runs in the background.

The file holds ``ready`` once the reference passed preflight, or else the one line that says why it did not:
:func:`await_ready` (in each pytest worker) turns that line into a :class:`~harness.errors.HarnessError`,
so no check blames a target that never started.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from harness.errors import HarnessError
from harness.reference.server import ReferenceServer
from harness.target.preflight import PREFLIGHT_TIMEOUT, Target, preflight
from harness.waits import wait_until

READY = "ready"
#: Seconds a worker waits for the file: longer than the reference's own readiness timeout and preflight, so the
#: file's answer (ready, or why not) always comes first.
AWAIT_TIMEOUT = 300.0


class ReferenceStartup:
    """``launch`` the reference now, wait for it and preflight it in a background thread, then write ``ready_file``."""

    def __init__(self, reference: ReferenceServer, *, kind: str, ready_file: Path) -> None:
        self.reference, self.kind, self.ready_file = reference, kind, ready_file
        self._target: Target | None = None
        self._error: BaseException | None = None
        ready_file.parent.mkdir(parents=True, exist_ok=True)
        ready_file.unlink(missing_ok=True)
        reference.launch()
        self._thread = threading.Thread(target=self._come_up, name="reference-startup", daemon=True)
        self._thread.start()

    def _come_up(self) -> None:
        try:
            self.reference.wait_ready()
            self._target = preflight(self.reference.api_url, kind=self.kind)
            line = READY
        except BaseException as exc:  # noqa: BLE001 - handed to the caller by result()
            self._error = exc
            line = " ".join(str(exc).split()) or type(exc).__name__
        staged = self.ready_file.with_suffix(".tmp")
        staged.write_text(line)
        os.replace(staged, self.ready_file)  # the workers never read half a line

    def result(self) -> Target:
        """The reference after preflight; re-raises what kept it from starting."""
        self._thread.join()
        if self._error is not None:
            raise self._error
        assert self._target is not None
        return self._target

    def done(self) -> bool:
        """Whether the reference is ready or has failed (the background wait is over)."""
        return not self._thread.is_alive()

    def join(self, timeout: float) -> None:
        """Wait, bounded, for the background wait to end (after the reference was stopped, it ends at once)."""
        self._thread.join(timeout)


def await_ready(ready_file: Path) -> None:
    """In a pytest process: block until the reference started beside it is ready; raise ``HarnessError`` with the
    reason it did not start."""
    wait_until(
        ready_file.exists,
        awaiting=f"the bundled reference server to start ({ready_file} to appear)",
        timeout=AWAIT_TIMEOUT + PREFLIGHT_TIMEOUT,
        interval=0.05,
        hint="the run's command starts it; see reference/reference-server.log in the report folder",
    )
    line = ready_file.read_text()
    if line != READY:
        raise HarnessError(f"The bundled reference server did not start: {line}")
