"""The durability checks pass across a real restart of the reference, and fail on a target that forgets.

The deviating target is the reference behind a proxy whose ``--restart-command`` only touches a file: from then on
it answers as a server that kept its logs and events in memory (none are left), whose scheduler, starting
afresh, scheduled every time again (each run twice), and whose polling endpoints fail (500) ever after.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from harness.clients.recorder import ProxyRequest, ProxyResponse
from tests.conftest import SuiteRun
from tests.deviations import Deviation

CHECKS = {"durability/records_survive_a_restart", "durability/scheduler_schedules_no_time_twice_across_a_restart",
          "durability/connected_clients_run_runs_after_a_restart[runner]",
          "durability/connected_clients_run_runs_after_a_restart[worker]"}


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
            response.set_json(runs + [{**run, "id": str(uuid.uuid4())} for run in runs if run.get("state_type") == "SCHEDULED"])
        return response


@pytest.mark.long
def test_durability_checks_pass_across_a_real_restart(suite) -> None:
    """Alone, against the bundled reference, which restarts itself on its database: all pass (the Runner and the
    worker reconnect by themselves), and the report says how the target was restarted and how long it took."""
    run: SuiteRun = suite("-m", "durability")
    assert run.code == 0 and run.passed() == CHECKS, run.explain()
    assert "bundled reference's own restart" in run.checks["durability/records_survive_a_restart"]["measured"], run.explain()


@pytest.mark.long
def test_a_target_that_forgets_on_restart_fails(deviating, suite, tmp_path: Path) -> None:
    flag = tmp_path / "restarted"
    proxy = deviating(ForgetsOnRestart(flag))
    run: SuiteRun = suite("--target", proxy.api_url, "-m", "durability", "--restart-command", f"touch {flag}")
    run.assert_deviation_caught("forgets-on-restart", CHECKS, set(),
                                r"after --restart-command 'touch |POST \S+/get_scheduled_flow_runs( and the target refused it| -> 500)")
    records = run.message("durability/records_survive_a_restart")
    assert "logs: before [" in records and "event: before [" in records, records
    assert "these times have two runs or more" in run.message("durability/scheduler_schedules_no_time_twice_across_a_restart")


@pytest.mark.parametrize("args, reason", [
    (("--target", "REFERENCE", "-m", "durability or handshake"), "run only on their own (-m durability)"),
    (("--target", "REFERENCE", "-m", "durability"), "nothing can restart this target"),
])
def test_durability_checks_are_skipped_with_the_reason(args, reason, reference, suite) -> None:
    """Beside other checks, or with nothing that can restart the target, the checks are skipped (never passed),
    saying why."""
    run: SuiteRun = suite(*[reference.api_url if a == "REFERENCE" else a for a in args])
    assert run.code == 0 and {c for c in run.with_status("skipped") if c.startswith("durability/")} == CHECKS, run.explain()
    assert all(reason in run.message(check) for check in CHECKS), run.explain()
