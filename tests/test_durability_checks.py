"""The durability checks pass across a real restart of the reference, and fail on a target that forgets.

The deviating target is the reference behind a proxy whose ``--restart-command`` only touches a file: from then on
it answers as a server that kept its logs and events in memory (none are left), whose scheduler, starting
afresh, scheduled every time again (each run twice), and whose polling endpoints fail (500) ever after.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from tests.conftest import SuiteRun
from tests.deviating_proxy import ProxyRequest, ProxyResponse
from tests.deviations.framework import Deviation

CHECKS = {
    "durability/records_survive_a_restart",
    "durability/scheduler_schedules_no_time_twice_across_a_restart",
    "durability/connected_clients_run_runs_after_a_restart[runner]",
    "durability/connected_clients_run_runs_after_a_restart[worker]",
}


class ForgetsOnRestart(Deviation):
    """After ``flag`` exists: no logs, no events, every SCHEDULED run listed twice (the copy with a new id), and
    both polling endpoints answer 500."""

    def __init__(self, flag: Path) -> None:
        self.flag = flag

    def on_request(self, request: ProxyRequest) -> ProxyResponse | None:
        if self.flag.exists() and request.path.endswith("/get_scheduled_flow_runs"):
            return ProxyResponse.of_json(500, {"detail": "lost on restart"})
        return None

    def on_response(self, request: ProxyRequest, response: ProxyResponse) -> ProxyResponse:
        if not self.flag.exists() or response.status != 200:
            return response
        if request.path.endswith("/logs/filter"):
            response.set_json([])
        elif request.path.endswith("/events/filter"):
            response.set_json({**response.json(), "events": [], "total": 0})
        elif request.path.endswith("/flow_runs/filter"):
            runs = response.json()
            response.set_json(
                runs + [{**run, "id": str(uuid.uuid4())} for run in runs if run.get("state_type") == "SCHEDULED"]
            )
        return response


@pytest.mark.long
def test_durability_checks_pass_across_a_real_restart(suite) -> None:
    """Against the bundled reference, which restarts itself on its database, in a parallel run beside another
    module: the durability checks (in one pytest process) restart it only once the logs checks (in the other) have
    finished, through the CLI's restart service. All pass (the Runner and the worker reconnect by themselves), and
    the report says how the target was restarted, when, and how long it took."""
    run: SuiteRun = suite("-m", "durability or logs", "-n", "2")
    logs = {cid for cid in run.checks if cid.startswith("logs/")}
    assert run.code == 0 and run.passed() == CHECKS | logs and logs, run.explain()
    measured = run.checks["durability/records_survive_a_restart"]["measured"]
    assert "bundled reference's own restart" in measured and f"the run's other {len(logs)} checks" in measured, (
        run.explain()
    )


@pytest.mark.long
def test_a_target_that_forgets_on_restart_fails(deviating, suite, tmp_path: Path) -> None:
    flag = tmp_path / "restarted"
    proxy = deviating(ForgetsOnRestart(flag))
    run: SuiteRun = suite("--target", proxy.api_url, "-m", "durability", "--restart-command", f"touch {flag}")
    run.assert_deviation_caught(
        "forgets-on-restart",
        CHECKS,
        set(),
        r"after --restart-command 'touch |POST \S+/get_scheduled_flow_runs( and the target refused it| -> 500)",
    )
    records = run.message("durability/records_survive_a_restart")
    assert "logs: before [" in records and "event: before [" in records, records
    assert "these times have two runs or more" in run.message(
        "durability/scheduler_schedules_no_time_twice_across_a_restart"
    )


def test_durability_checks_are_skipped_with_the_reason(reference, suite) -> None:
    """With nothing that can restart the target, the checks are skipped (never passed), saying why."""
    run: SuiteRun = suite("--target", reference.api_url, "-m", "durability or handshake")
    assert run.code == 0 and {c for c in run.with_status("skipped") if c.startswith("durability/")} == CHECKS, (
        run.explain()
    )
    assert all("nothing can restart this target" in run.message(check) for check in CHECKS), run.explain()


def test_the_quiet_point_waits_for_every_other_check(tmp_path: Path, monkeypatch) -> None:
    """The durability checks restart the target only once every other collected check is reported finished; a run
    whose other checks never finish ends the wait as the harness's error (bounded), naming one that is still running."""
    from types import SimpleNamespace

    from harness.errors import HarnessError
    from harness.plugin import quiet_point as plugin

    finished = tmp_path / "finished.txt"
    quiet = plugin.QuietPoint(SimpleNamespace(workerinput={plugin.QuietPoint.name: str(finished)}))
    items = [
        SimpleNamespace(nodeid=f"scenarios/test_{module}.py::test_{name}")
        for module, name in [("logs", "a"), ("logs", "b"), ("durability", "c")]
    ]
    session = SimpleNamespace(items=items)
    finished.write_text("scenarios/test_logs.py::test_a\nscenarios/test_logs.py::test_b\n")
    quiet.wait(session, but="durability")  # returns at once: both others are done
    finished.write_text("scenarios/test_logs.py::test_a\n")
    monkeypatch.setattr(plugin, "QUIET_TIMEOUT", 0.3)
    with pytest.raises(
        HarnessError,
        match=r"the run's other 2 checks to finish.*1 still running, e\.g\. scenarios/test_logs\.py::test_b",
    ):
        quiet.wait(session, but="durability")
