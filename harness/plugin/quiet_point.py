"""The quiet point: the moment every other check of the run has finished, when the durability checks may restart
the target."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from harness.errors import HarnessError, WaitTimeout
from harness.reporting.results import check_id

#: How long the durability checks wait for the rest of the run to finish before they restart the target (scaled by
#: ``--timeout-scale``, as every check's own waits are, which bound it).
QUIET_TIMEOUT = 900.0


class QuietPoint:
    """The moment every other check of the run has finished: the durability checks restart the target only then,
    so no other check sees it go away. The durability module comes last (:data:`DISPATCH_ORDER`); in a parallel
    run the other processes may still be running their last modules when it starts.

    The process that receives every report (xdist's controller, or the only one) writes the node id of each
    finished check to a file; the check that needs the quiet point waits until every other collected check is in it.
    """

    name = "prefect-conformance-quiet-point"

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        worker = getattr(config, "workerinput", None)
        self.writer = worker is None
        if worker is not None:
            self.path = Path(worker[self.name])
        else:
            handle, name = tempfile.mkstemp(prefix="prefect-conformance-finished-", suffix=".txt")
            os.close(handle)
            self.path = Path(name)

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node) -> None:  # xdist's controller, for each worker it starts
        node.workerinput[self.name] = str(self.path)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if self.writer and report.when in ("teardown", "???"):  # "???": xdist's report of a check whose worker crashed
            with self.path.open("a", encoding="utf-8") as finished:
                finished.write(report.nodeid + "\n")

    def pytest_unconfigure(self) -> None:
        if self.writer:
            self.path.unlink(missing_ok=True)

    def wait(self, session: pytest.Session, *, but: str) -> str:
        """Return once every collected check outside the ``but`` feature has finished (bounded: QUIET_TIMEOUT),
        saying what had to finish."""
        from harness.waits import wait_until

        others = {item.nodeid for item in session.items if check_id(item.nodeid)[1] != but}

        def unfinished() -> bool:
            finished = set(self.path.read_text(encoding="utf-8").splitlines()) if self.path.exists() else set()
            pending = others - finished
            if pending:
                raise AssertionError(f"{len(pending)} still running, e.g. {sorted(pending)[0]}")
            return True

        try:  # the other checks' time, not the target's answer: running out of it is the harness's error
            wait_until(
                unfinished,
                awaiting=f"the run's other {len(others)} checks to finish before the {but} checks",
                timeout=QUIET_TIMEOUT,
                interval=0.2,
                hint="a check that never ends holds the run",
            )
        except WaitTimeout as exc:
            raise HarnessError(str(exc)) from None
        return f"the run's other {len(others)} checks had finished"
