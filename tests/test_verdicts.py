"""Who is at fault: the target's answers are failures, the harness's and the machine's faults are errors.

Each rule of ``harness.errors.outcome_of`` and the places that feed it, shown on the smallest real thing that
exercises it (a real child process, a closed port, a real proxy in front of the reference).
"""

from __future__ import annotations

import datetime as dt
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from harness.checks.timestamps import UTC, read_instant
from harness.clients.actors import Actor
from harness.clients.progress import actor_can_still_act
from harness.clients.relay import RecordingRelay
from harness.errors import ActorCouldNotStart, HarnessError, Hopeless, UnexpectedAnswer, Unsupported, outcome_of
from harness.processes import spawn
from harness.reference.environment import free_port
from harness.reporting.expectations import Expectation, apply, updated
from harness.reporting.history import prepare_report_dir, previous_results
from harness.reporting.results import CheckResult
from harness.target.api import Answer, ApiClient
from harness.waits import wait_until
from tests.conftest import PROJECT_ROOT, SuiteRun
from tests.deviations.framework import Refuses


def test_outcome_rule() -> None:
    assert outcome_of(UnexpectedAnswer("x"), "call") == "failed"
    assert outcome_of(AssertionError("x"), "setup") == "failed"
    assert outcome_of(Unsupported("x"), "setup") == "unsupported"
    assert outcome_of(ActorCouldNotStart("x"), "setup") == "error"
    assert outcome_of(KeyError("x"), "call") == "error"
    assert outcome_of(UnexpectedAnswer("x"), "teardown") == "error"


# --- what the target sent, read as the client reads it ---------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "2026-11-29T09:00:00Z",
        "2026-11-29 09:00:00Z",
        "2026-11-29T09:00:00",
        "2026-11-29T14:30:00+05:30",
        "2026-11-29 09:00:00.000000+00:00",
    ],
)
def test_read_instant_reads_what_the_client_reads(value: str) -> None:
    assert read_instant(value, "$.x") == dt.datetime(2026, 11, 29, 9, tzinfo=UTC)


@pytest.mark.parametrize(
    "value, says",
    [
        (None, "is null"),
        ("garbage", "'garbage', which a Prefect client cannot read"),
        ("2026-11-29T25:00:00Z", "cannot read"),
    ],
)
def test_read_instant_fails_quoting_what_the_client_cannot_read(value, says: str) -> None:
    with pytest.raises(UnexpectedAnswer, match=says):
        read_instant(value, "$.next_scheduled_start_time")


def test_a_missing_field_fails_quoting_the_answer() -> None:
    run = Answer("GET", "/flow_runs/1", 200, '{"id": "1", "state": {"type": "SCHEDULED"}}', "application/json").json()
    assert run["state"]["type"] == "SCHEDULED" and run.get("name") is None
    with pytest.raises(
        UnexpectedAnswer, match=r"GET /flow_runs/1 answered without the field 'state_details': \{\"type\""
    ):
        run["state"]["state_details"]


def test_no_answer_at_all_is_the_targets_failure() -> None:
    with ApiClient(f"http://127.0.0.1:{free_port()}/api", patience=0.05) as api:
        with pytest.raises(
            UnexpectedAnswer, match=r"POST /flows/: the target did not answer after \d+ attempts in \d+s \(ConnectError"
        ):
            api.post("/flows/", {"name": "x"})


# --- a real client that dies ------------------------------------------------------------------------------------


def dying_actor(tmp_path: Path, target: str, script: str) -> Actor:
    recorder = RecordingRelay(target, actor="runner")
    recorder.start()
    env = {"PATH": "/usr/bin:/bin", "PREFECT_API_URL": recorder.api_url}
    process = spawn("runner", [sys.executable, "-c", script], log_path=tmp_path / "runner.log", env=env, cwd=tmp_path)
    actor = Actor("runner", process, recorder, tmp_path)
    wait_until(lambda: not actor.is_running(), awaiting="the client to exit", timeout=30, interval=0.05)
    return actor


def test_a_client_that_cannot_start_is_a_harness_error(tmp_path: Path, reference) -> None:
    """The serve Runner's "can't open file" of issue 10: nothing reached the target, so it is not its fault."""
    with dying_actor(tmp_path, reference.api_url, "import sys; sys.exit(\"can't open file '/x/flow.py'\")") as actor:
        with pytest.raises(ActorCouldNotStart, match=r"(?s)before the target had any part in it .*can.t open file"):
            actor_can_still_act(actor)


def test_a_client_killed_by_the_targets_answer_is_the_targets_failure(tmp_path: Path, deviating) -> None:
    proxy = deviating(Refuses("POST", r"/deployments/get_scheduled_flow_runs$"))
    script = (
        "import httpx, os, sys; url = os.environ['PREFECT_API_URL'];"
        "r = httpx.post(url + '/deployments/get_scheduled_flow_runs', json={}); sys.exit(r.status_code != 200)"
    )
    with dying_actor(tmp_path, proxy.api_url, script) as actor:
        with pytest.raises(
            Hopeless,
            match=r"exited with code 1 after the target answered: POST /deployments/get_scheduled_flow_runs -> 404",
        ):
            actor_can_still_act(actor)


def test_a_client_that_talked_to_the_target_and_died_is_the_targets_failure(tmp_path: Path, reference) -> None:
    script = (
        "import httpx, os, sys; httpx.get(os.environ['PREFECT_API_URL'] + '/health');"
        "sys.exit('ValueError: cannot sort the scheduled runs')"
    )
    with dying_actor(tmp_path, reference.api_url, script) as actor:
        with pytest.raises(Hopeless, match=r"(?s)while talking to the target .* cannot sort"):
            actor_can_still_act(actor)


# --- relative paths never reach a child --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, names",
    [
        ({"cwd": Path("reports/latest")}, "cwd=reports/latest"),
        ({"argv": [sys.executable, "reports/latest/flow.py"]}, "argv[1]=reports/latest/flow.py"),
        ({"env": {"PREFECT_HOME": "reports/home"}}, "PREFECT_HOME=reports/home"),
        (
            {"env": {"PREFECT_SERVER_DATABASE_CONNECTION_URL": "sqlite+aiosqlite:///reports/prefect.db"}},
            "CONNECTION_URL",
        ),
    ],
)
def test_spawn_refuses_relative_paths(kwargs: dict, names: str, tmp_path: Path) -> None:
    argv = kwargs.pop("argv", [sys.executable, "-c", "pass"])
    with pytest.raises(HarnessError, match=r"Refusing to start child with relative paths \(.*" + re.escape(names)):
        spawn("child", argv, log_path=tmp_path / "child.log", **kwargs)


def test_spawn_accepts_absolute_paths_urls_and_code(tmp_path: Path) -> None:
    env = {
        "PREFECT_HOME": str(tmp_path),
        "PREFECT_API_URL": "http://127.0.0.1:1/api",
        "PREFECT_SERVER_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{tmp_path}/x.db",
    }
    proc = spawn(
        "child",
        [sys.executable, "-c", "import os; print(1/1)", json.dumps({"a": "b/c"})],
        log_path=tmp_path / "child.log",
        env=env,
        cwd=tmp_path,
    )
    assert proc.popen.wait(timeout=30) == 0


def test_flake_check_fails_when_runs_produce_no_results(tmp_path: Path) -> None:
    """Run from another directory with a relative --report-dir, against a target that is not there."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "harness.commands.flake",
            "-N",
            "1",
            "--report-dir",
            "rel",
            "--",
            "--target",
            f"http://127.0.0.1:{free_port()}/api",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(PROJECT_ROOT)},
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    text = (tmp_path / "rel" / "flake" / "flake.md").read_text()
    assert (
        "1 of 1 runs produced no results" in text and "Cannot reach target" in text and "Every check passed" not in text
    )


# --- expectations and baselines ---------------------------------------------------------------------------------


def test_an_expectation_covers_only_the_outcome_it_names() -> None:
    entries = [
        Expectation("worker/*", "unsupported", "no work pools yet"),
        Expectation("timestamps/a", "fail", "known"),
    ]
    results = [
        CheckResult("worker/polls", "worker", "s", "failed", message="-> 500"),
        CheckResult("worker/registers", "worker", "s", "unsupported"),
        CheckResult("timestamps/a", "timestamps", "s", "unsupported"),
    ]
    apply(entries, results)
    assert [r.status for r in results] == ["failed", "expected-failure", "unsupported"]
    assert (
        results[0].message == "listed as outcome = 'unsupported' in the expectations file, but the check failed: -> 500"
    )
    rewritten = {e.pattern: e.outcome for e in updated(entries, results)}
    assert rewritten == {"worker/*": "unsupported", "worker/polls": "fail", "timestamps/a": "unsupported"}


def test_the_previous_run_is_one_against_the_same_target(tmp_path: Path) -> None:
    def stored(url: str, kind: str, started: str) -> None:
        folder = prepare_report_dir(tmp_path)
        (folder / "results.json").write_text(
            json.dumps({"run": {"target_url": url, "target_kind": kind, "started": started}})
        )

    stored("http://a/api", "url", "2026-11-26T10:00:00+00:00")
    stored("http://127.0.0.1:5555/api", "reference-local", "2026-11-26T11:00:00+00:00")
    stored("http://b/api", "url", "2026-11-26T12:00:00+00:00")
    prepare_report_dir(tmp_path)
    assert previous_results(tmp_path, "http://a/api") == tmp_path / "20261126-100000" / "results.json"
    assert previous_results(tmp_path, "reference-local") == tmp_path / "20261126-110000" / "results.json"
    assert previous_results(tmp_path, "http://c/api") is None


def test_invalid_input_on_a_missing_route_is_unsupported_never_a_pass(deviating, suite) -> None:
    """A 404 'Not Found' rejects every body, good or bad: it proves nothing about parsing timestamps."""
    proxy = deviating(Refuses("POST", r"/api/flow_runs/$"))
    run: SuiteRun = suite("--target", proxy.api_url, "-k", "invalid_input")
    assert run.code == 1, run.explain()
    assert run.with_status("unsupported") == set(run.checks) and len(run.checks) == 4, run.explain()
    assert all("does not implement POST /flow_runs/" in run.message(c) for c in run.checks), run.explain()


def test_a_bundled_reference_that_cannot_start_is_one_error_line_and_no_check(suite) -> None:
    """The reference starts beside pytest (harness.reference.startup): when it dies before it is ready, no check
    runs (none may blame a target that never started), and the run ends with the reason and exit 2."""
    run = suite(
        "--reference",
        "local-postgres",
        "--reference-db-url",
        f"postgresql+asyncpg://nobody:x@127.0.0.1:{free_port()}/none",
        "-m",
        "timestamps",
        "-n",
        "2",
    )
    assert run.code == 2, run.explain()
    assert not run.checks, run.explain()
    last = run.stderr.strip().splitlines()[0] if run.stderr.strip() else ""
    assert "The reference server exited with code" in last and "before it was ready" in last, run.explain()
