"""Hostile and slow targets, interruption, isolation on a shared server, and credentials.

A gate that hangs once, or leaves a worker running, or touches someone's data, stops being trusted.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from harness.checks.timestamps import describe_instant, utc_now
from harness.reference.local import LocalReference
from harness.target.api import ApiClient
from harness.waits import wait_until
from tests.conftest import PROJECT_ROOT, SCHEDULED_RUNNER_CHECKS, run_suite
from tests.deviating_proxy import DeviatingProxy, ProxyRequest, ProxyResponse
from tests.deviations.framework import Deviation


class BreaksAfter(Deviation):
    """Answers like the reference for ``n`` requests, then 500 to everything (health included)."""

    def __init__(self, n: int) -> None:
        self.remaining = n

    def on_request(self, request: ProxyRequest) -> ProxyResponse | None:
        self.remaining -= 1
        if self.remaining < 0:
            return ProxyResponse(500, [("content-type", "text/plain")], b"Internal Server Error")
        return None


class BreaksFor(Deviation):
    """Answers like the reference for ``n`` requests, then 500 to everything (health included) for ``seconds``, then
    like the reference again: a server that stops answering a while and comes back."""

    def __init__(self, n: int, seconds: float) -> None:
        self.remaining, self.seconds, self.broke = n, seconds, 0.0

    def on_request(self, request: ProxyRequest) -> ProxyResponse | None:
        self.remaining -= 1
        if self.remaining == 0:
            self.broke = time.monotonic()
        if self.remaining <= 0 and time.monotonic() - self.broke < self.seconds:
            return ProxyResponse(500, [("content-type", "text/plain")], b"Internal Server Error")
        return None


class DiesAfter(Deviation):
    """After ``n`` requests the whole server goes away: the port stops accepting connections."""

    def __init__(self, n: int) -> None:
        self.remaining, self.proxy = n, None

    def on_request(self, request: ProxyRequest) -> ProxyResponse | None:
        self.remaining -= 1
        if self.remaining == 0:
            threading.Thread(target=self.proxy.stop, daemon=True).start()
        return None


class AnswersSlowly(Deviation):
    latency = 0.3


def processes_with_marker(marker: str) -> list[str]:
    """Command lines of every live process whose environment carries ``marker`` (our run-id variable)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if f"PREFECT_CONFORMANCE_RUN_ID={marker}".encode() in (entry / "environ").read_bytes():
                state = (entry / "stat").read_text().split(")")[-1].split()[0]
                if state != "Z":
                    found.append((entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")[:160])
        except OSError:
            continue
    return found


# --- a target that breaks in the middle of a run --------------------------------------------------------------


@pytest.mark.long
def test_target_answering_500_mid_run(deviating, tmp_path: Path) -> None:
    proxy = deviating(BreaksAfter(60))
    started = time.monotonic()
    run = run_suite("--target", proxy.api_url, "-m", "timestamps", "-n", "1", "--outage-wait", "3", report_dir=tmp_path)
    elapsed = time.monotonic() - started
    assert run.code == 2, run.explain()  # no verdict: part of the suite could not run
    assert "and did not answer again" in run.stdout, run.explain()
    statuses = [c["status"] for c in run.checks.values()]
    assert "passed" in statuses and "error" in statuses, run.explain()
    in_flight = [c for c in run.checks.values() if c["outcome"] == "failed"]  # a `should` check's is a warning
    assert in_flight and all("-> 500" in c["message"] for c in in_flight), run.explain()
    errors = [c for c in run.checks.values() if c["status"] == "error"]
    assert all(
        "the target stopped answering earlier in this run (GET /health answered 500" in c["message"] for c in errors
    )
    assert (run.report_dir / "report.html").exists() and (run.report_dir / "junit.xml").exists()
    coverage = json.loads((run.report_dir / "results.json").read_text()).get("coverage", {}).get("summary", {})
    assert not coverage.get("present"), f"a route answering 500 is no proof that it exists: {coverage}"
    assert elapsed < 60, f"took {elapsed:.0f}s"


@pytest.mark.long
def test_a_target_that_stops_answering_a_while_gets_a_verdict(deviating, tmp_path: Path) -> None:
    """20 s of 500s mid-run: said once with the load then, awaited, and the checks it decided run once more at half
    the start budget; the verdict is the second attempt's, and the first is kept beside it."""
    proxy = deviating(BreaksFor(60, 20.0))
    run = run_suite("--target", proxy.api_url, "-m", "timestamps", "-n", "1", "--max-starts", "2", report_dir=tmp_path)
    assert run.code == 0, run.explain()
    assert "the target stopped answering mid-run (GET /health answered 500" in run.stdout, run.explain()
    assert "client processes starting" in run.stdout and "running those" in run.stdout, run.explain()
    assert "at half the start budget (--max-starts 1)" in run.stdout, run.explain()
    retried = [c for c in run.checks.values() if c["attempts"]]
    assert retried and all(c["status"] == "passed" for c in retried), run.explain()
    assert any(a.startswith("error: not run: the target stopped answering") for c in retried for a in c["attempts"]), (
        run.explain()
    )
    assert "Run once more after the target came back" in (run.report_dir / "report.md").read_text()
    outage = json.loads((run.report_dir / "results.json").read_text())["run"]["extra"]["outage"]
    assert "answered again after" in outage, outage


@pytest.mark.long
def test_target_that_dies_mid_run(reference, tmp_path: Path) -> None:
    deviation = DiesAfter(60)
    proxy = DeviatingProxy(reference.api_url, actor="dying-target", deviation=deviation)
    deviation.proxy = proxy
    proxy.start()
    try:
        started = time.monotonic()
        run = run_suite(
            "--target", proxy.api_url, "-m", "timestamps", "-n", "1", "--outage-wait", "3", report_dir=tmp_path
        )
        elapsed = time.monotonic() - started
    finally:
        proxy.stop()
    assert run.code == 2, run.explain()
    errors = [c for c in run.checks.values() if c["status"] == "error"]
    assert errors and any("the target stopped answering" in c["message"] for c in errors), run.explain()
    assert "passed" in {c["status"] for c in run.checks.values()}
    assert elapsed < 60, f"took {elapsed:.0f}s"


# --- a slow target ---------------------------------------------------------------------------------------------


#: The scheduler checks of schedules expanded on request (``POST /deployments/{id}/schedule``), no waiting.
EXPANDED_ON_REQUEST = "expands_as_prefect or each_schedule or inactive_schedule or deleting_one"


@pytest.mark.long
def test_slow_target_still_passes(deviating, tmp_path: Path) -> None:
    """300 ms added to every request: the real clients and the checks still pass; waits scale, nothing sleeps.

    The features that wait on real clients and the server's scheduler (the request-and-answer checks have no
    waits to scale), in two pytest workers as a user's run has them; the scheduled Runner waits on the same two
    things as the scheduler and the first Runner, so it is left out. So are the scheduler module's 22 checks of
    schedules expanded on request (intervals, cron and rrule details, two schedules): requests and answers only,
    they added 40 s of 300-ms requests here (2026-12-06)."""
    proxy = deviating(AnswersSlowly())
    run = run_suite(
        "--target",
        proxy.api_url,
        "-m",
        "serve or worker or task_worker or scheduler",
        "-k",
        f"not ({SCHEDULED_RUNNER_CHECKS} or {EXPANDED_ON_REQUEST})",
        "--timeout-scale",
        "3",
        "-n",
        "2",
        report_dir=tmp_path,
    )
    assert run.code == 0, run.explain()


# --- interruption ----------------------------------------------------------------------------------------------


@pytest.mark.long
@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_interrupted_run_leaves_nothing_running(how: str, tmp_path: Path) -> None:
    """Interrupt a real run (bundled reference, runner and worker up) and list what is left afterwards."""
    marker = f"interrupt-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "PREFECT_CONFORMANCE_RUN_ID": marker}
    reports = tmp_path / "reports"
    cli = subprocess.Popen(
        [sys.executable, "-m", "harness.commands.cli", "run", "-m", "serve or worker", "--report-dir", str(reports)],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        # As from a terminal: a shell's background job (`make test &`) hands its children SIGINT ignored.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        logs = [
            reports / "latest" / "artifacts" / feature / f"{actor}.log"
            for feature, actor in (("serve", "runner"), ("worker", "worker"))
        ]
        wait_until(
            lambda: all(p.exists() for p in logs),
            awaiting="a runner and a worker to be running",
            timeout=120,
            interval=0.2,
        )
        assert processes_with_marker(marker), "the marker should find the running processes"
        if how == "ctrl-c":
            os.killpg(cli.pid, signal.SIGINT)  # what a terminal does: the whole foreground process group
        else:
            cli.send_signal(signal.SIGTERM)  # what a CI system does: the main process only
        output, _ = cli.communicate(timeout=60)
    finally:
        if cli.poll() is None:
            os.killpg(cli.pid, signal.SIGKILL)
    assert cli.returncode != 0, output
    left = (
        wait_until(
            lambda: not processes_with_marker(marker) or None,
            awaiting="every process of the run to exit",
            timeout=10,
            interval=0.2,
        )
        if processes_with_marker(marker)
        else True
    )
    assert left and not processes_with_marker(marker)
    assert (reports / "latest" / "results.json").exists(), f"reports of what finished should be kept:\n{output}"


# --- isolation on a shared server ------------------------------------------------------------------------------


#: Fields the server computes when it answers (how late a run not yet started is), not stored data.
COMPUTED_ON_READ = ("estimated_start_time_delta", "estimated_run_time")


def snapshot(api: ApiClient, ids: dict[str, str]) -> dict[str, object]:
    return {
        name: {k: v for k, v in document.items() if k not in COMPUTED_ON_READ}
        for name, document in {
            "flow": api.get(f"/flows/{ids['flow']}"),
            "deployment": api.get(f"/deployments/{ids['deployment']}"),
            "run": api.get(f"/flow_runs/{ids['run']}"),
            "pool": api.get(f"/work_pools/{ids['pool']}"),
            "queue": api.get(f"/work_pools/{ids['pool']}/queues/default"),
            "task_run": api.get(f"/task_runs/{ids['task_run']}"),
        }.items()
    }


@pytest.mark.long
def test_two_runs_on_one_server_leave_its_data_alone(tmp_path: Path) -> None:
    """Objects that existed before are unchanged after two concurrent runs, and both runs pass.

    On a server of its own: two suites writing at once are the heaviest load of these tests, and on the shared
    reference they made its SQLite refuse the other tests' writes ("database is locked", 503) for half a minute at
    a time (2026-11-28), long enough for a real worker to give up on a run in a test about something else.
    """
    with LocalReference(workdir=tmp_path / "reference") as reference, ApiClient(reference.api_url) as api:
        flow = api.post("/flows/", {"name": "users-precious-flow"})
        deployment = api.post("/deployments/", {"flow_id": flow["id"], "name": "users-deployment", "paused": True})
        # A day ahead of now: a past instant would let the late-runs service change the run during the test.
        when = describe_instant(utc_now() + dt.timedelta(days=1))
        run = api.post(
            f"/deployments/{deployment['id']}/create_flow_run",
            {"state": {"type": "SCHEDULED", "state_details": {"scheduled_time": when}}},
        )
        pool = api.post("/work_pools/", {"name": "users-pool", "type": "process"})
        # A background task run waiting for its own task worker: no task worker of the runs may take it.
        task_run = api.post(
            "/task_runs/",
            {
                "name": "users-task-run",
                "task_key": "users-task",
                "dynamic_key": "users-task-1",
                "state": {"type": "SCHEDULED", "name": "Scheduled"},
            },
        )
        ids = {
            "flow": flow["id"],
            "deployment": deployment["id"],
            "run": run["id"],
            "pool": pool["name"],
            "task_run": task_run["id"],
        }
        before = snapshot(api, ids)
        # Every kind of object a run creates (flows, deployments, runs, pools, queues, workers, task runs) and the
        # clients that poll for them (a worker, a task worker). A Runner polls by its own deployment ids and creates
        # nothing the worker's scenario does not; many_runs only adds more of the same runs.
        # The reference is a slow target here (these two runs at once, on cores busy with the other tests): told
        # so, as a user would tell the suite, the worker check waits longer for a heartbeat the reference accepted.
        # Under make test's load it answered four of a worker's heartbeats in a row with "database is locked" 503s
        # (2026-11-28), and the worker was rightly OFFLINE for the default 6-s watch.
        select = ["-m", "scheduling or worker or task_worker", "-k", "not many_runs", "-n", "1", "--timeout-scale", "2"]
        with ThreadPoolExecutor(max_workers=2) as executor:  # both runs on the server at the same time
            suites = list(
                executor.map(
                    lambda name: run_suite("--target", reference.api_url, *select, report_dir=tmp_path / name),
                    ("first", "second"),
                )
            )
        assert [suite.code for suite in suites] == [0, 0], "\n".join(suite.explain() for suite in suites)
        after = snapshot(api, ids)
    assert after == before, "an object that existed before the runs was changed"
    prefixes = [json.loads((suite.report_dir / "results.json").read_text())["run"]["run_prefix"] for suite in suites]
    assert prefixes[0] != prefixes[1]


# --- credentials -----------------------------------------------------------------------------------------------

SECRET = "conformance:s3cret-" + uuid.uuid4().hex[:8]


@pytest.fixture(scope="module")
def protected_reference(tmp_path_factory):
    with LocalReference(
        workdir=tmp_path_factory.mktemp("protected"), settings={"PREFECT_SERVER_API_AUTH_STRING": SECRET}
    ) as server:
        yield server


@pytest.mark.long
def test_credentials_reach_the_target_and_never_the_reports(protected_reference, tmp_path: Path, monkeypatch) -> None:
    assert httpx.get(protected_reference.api_url + "/admin/version").status_code == 401
    without = run_suite("--target", protected_reference.api_url, report_dir=tmp_path / "without")
    assert without.code == 2 and "answered 401 to GET /admin/version without credentials" in without.stderr, (
        without.explain()
    )

    monkeypatch.setenv("PREFECT_API_AUTH_STRING", SECRET)
    # Every real client (Runner, worker, their flow-run processes, task worker and submitter, the events clients'
    # websockets included) and the harness's own calls; the scheduler feature adds no client of its own.
    run = run_suite(
        "--target",
        protected_reference.api_url,
        "-m",
        "serve or worker or task_worker or events",
        "-k",
        f"not ({SCHEDULED_RUNNER_CHECKS})",
        report_dir=tmp_path / "with",
    )
    assert run.code == 0, run.explain()
    import base64

    encoded = base64.b64encode(SECRET.encode()).decode()
    for path in (tmp_path / "with").rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert SECRET.encode() not in data and encoded.encode() not in data, f"the credential leaked into {path}"
