"""Fixtures for the project's own tests: real reference servers shared by the session, deviating proxies in
front of them, and a runner for the real CLI (as a subprocess, exactly as users and CI run it)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import pytest

from harness.errors import HarnessError
from harness.reference.environment import FAST_SERVICE_SETTINGS, bundled_service_loops
from harness.reference.local import READY_TIMEOUT, LocalReference
from harness.target.health import wait_for_health
from harness.waits import SCHEDULER_INTERVAL_ENV, SERVICE_LOOPS_ENV
from tests.deviating_proxy import DeviatingProxy
from tests.deviations.framework import Deviation

PROJECT_ROOT = Path(__file__).resolve().parent.parent

# Every target of these tests is a reference with the bundled fast settings (or a proxy in front of one): its
# scheduler loops every second, not Prefect's default 60 s, and the CLI runs are told so.
os.environ.setdefault(SCHEDULER_INTERVAL_ENV, FAST_SERVICE_SETTINGS["PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS"])
# The same for the services' loops: a check failing on a deviating target waits as long as the reference behind it
# needs, not as long as Prefect's defaults would (a minute for the foreman's timeouts).
os.environ.setdefault(SERVICE_LOOPS_ENV, bundled_service_loops())


#: ``-k`` expression of the checks that need the scheduled Runner (a second Runner, and a flow-run process per
#: run). Tests that do not check it leave it out: the project's own tests are CPU-bound on 2 cores.
SCHEDULED_RUNNER_CHECKS = "served_deployment_has_its_schedule or runner_executes_server_scheduled_runs"

#: The four files every run writes into ``REPORT_DIR/latest/``.
REPORT_FILES = ("junit.xml", "results.json", "report.md", "report.html")


def user_environment() -> dict[str, str]:
    """The environment of a user's shell: none of this test run's virtualenv, Python path or Prefect settings.

    ``MAKEFLAGS`` & co., and make's own command-line variables (which it exports), would hand ``make test ARGS=...``
    down to a nested ``make conformance``.
    """
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PREFECT_", "VIRTUAL_ENV", "PYTEST_", "PYTHONPATH"))
        and k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "ARGS", "TARGET")
    }
    venv_bin = str(PROJECT_ROOT / ".venv" / "bin")
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p != venv_bin)
    return env


@dataclass
class SuiteRun:
    """The outcome of one ``prefect-conformance run`` subprocess."""

    code: int
    stdout: str
    stderr: str
    report_dir: Path
    checks: dict[str, dict] = field(default_factory=dict)

    def status(self, check_id: str) -> str:
        return self.checks[check_id]["status"]

    def failed(self) -> set[str]:
        """Checks that fail the gate as conformance problems: failed or unsupported."""
        return {cid for cid, c in self.checks.items() if c["status"] in ("failed", "unsupported")}

    def with_status(self, status: str) -> set[str]:
        return {cid for cid, c in self.checks.items() if c["status"] == status}

    def passed(self) -> set[str]:
        return {cid for cid, c in self.checks.items() if c["status"] == "passed"}

    def message(self, check_id: str) -> str:
        return self.checks[check_id]["message"]

    def explain(self) -> str:
        return f"exit {self.code}\nstdout:\n{self.stdout[-3000:]}\nstderr:\n{self.stderr[-3000:]}"

    def assert_deviation_caught(
        self, name: str, fails: set[str], passes: set[str], says: str, diagnosis: str = ""
    ) -> None:
        """The verdict a deviating target must get: exit 1, exactly-named checks failing with a message that
        matches the regex ``says``, and the named unaffected checks still passing (so the checks are specific).
        ``diagnosis``: the start of the one diagnosis its failures must name; without it, none may name any (a
        diagnosis fires only where its mistake is)."""
        assert self.code == 1, f"{name}: expected exit 1 (conformance failure)\n{self.explain()}"
        missing = fails - self.failed()
        assert not missing, f"{name}: these checks did not fail: {sorted(missing)}\n{self.explain()}"
        wrongly = passes - self.passed()
        assert not wrongly, f"{name}: these unaffected checks did not pass: {sorted(wrongly)}\n{self.explain()}"
        for check in fails:
            assert re.search(says, self.message(check), re.S), (
                f"{check}: message does not match {says!r}:\n{self.message(check)}"
            )
        diagnosed = {cid: c["diagnosis"] for cid, c in self.checks.items() if c.get("diagnosis")}
        if diagnosis:
            assert diagnosed and all(d.startswith(diagnosis) for d in diagnosed.values()), (
                f"{name}: expected the diagnosis {diagnosis!r}, got {diagnosed}"
            )
        else:
            assert not diagnosed, f"{name}: a diagnosis where none was expected: {diagnosed}"


@dataclass
class DeviationCase:
    """A deviating target (made fresh for each run), the checks a run against it selects, and the verdict it must get
    (:meth:`SuiteRun.assert_deviation_caught`): the one case type of the project's tests of checks."""

    id: str
    deviation: Callable[[], Deviation]
    fails: set[str]
    says: str  # a regular expression every failure message of the case must match
    markers: str = ""  # -m: the features run
    keywords: str = ""  # -k: the checks run
    passes: set[str] = field(default_factory=set)
    args: tuple[str, ...] = ()  # more of the CLI's options
    long: bool = False  # half a minute or more: started first (marker "long")
    unsupported: bool = False  # the failing checks must be "unsupported" (a missing endpoint), not "failed"
    diagnosis: str = ""  # the start of the diagnosis its failures name (harness/reporting/diagnoses.py), if any

    def options(self) -> list[str]:
        """What a run of the case passes after ``--target URL``."""
        return [
            *(["-m", self.markers] if self.markers else []),
            *(["-k", self.keywords] if self.keywords else []),
            *self.args,
        ]

    def assert_caught(self, run: SuiteRun, passes: set[str] | None = None) -> None:
        run.assert_deviation_caught(
            self.id, self.fails, self.passes if passes is None else passes, self.says, self.diagnosis
        )
        if self.unsupported:
            assert all(run.status(check) == "unsupported" for check in self.fails), run.explain()


def run_suite(*args: str, report_dir: Path, timeout: float = 600, extra_env: dict[str, str] | None = None) -> SuiteRun:
    """Run the real CLI; ``args`` are passed after ``run``, ``extra_env`` is added to this environment.

    While the project's own tests run in parallel (``make test``), each run is serial unless a test says
    otherwise: the tests already keep both cores busy, and extra pytest workers per run only cost start-up.
    """
    serial = ["-n", "1"] if os.environ.get("PYTEST_XDIST_WORKER") and "-n" not in args else []
    proc = subprocess.run(
        [sys.executable, "-m", "harness.commands.cli", "run", "--report-dir", str(report_dir), *serial, *args],
        cwd=PROJECT_ROOT,
        env={**os.environ, **(extra_env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    results_path = report_dir / "latest" / "results.json"
    checks = {}
    if results_path.exists():
        checks = {c["id"]: c for c in json.loads(results_path.read_text())["checks"]}
    return SuiteRun(proc.returncode, proc.stdout, proc.stderr, report_dir / "latest", checks)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Longest first: the shared setups (``xdist_group``) and the ``long`` runs start before the short tests, so
    no worker starts a minute-long run while the others run out of work (the tests are CPU-bound on 2 cores).

    Refuse to run when ``--dist loadgroup`` cannot group: the expensive shared setups (a fresh clone and its
    venv, a wheel and its venv, the Docker images) would silently run once per worker instead of once."""
    items.sort(
        key=lambda item: 0 if item.get_closest_marker("xdist_group") else 1 if item.get_closest_marker("long") else 2
    )
    if not getattr(config.option, "loadgroup", False):
        return
    ungrouped = [item.nodeid for item in items if item.get_closest_marker("xdist_group") and "@" not in item.nodeid]
    if ungrouped:
        raise pytest.UsageError(
            f"pytest-xdist did not tag {ungrouped[0]} with its xdist_group, so --dist loadgroup would not group it. "
            "Hint: this pytest and pytest-xdist do not work together; see the pin in pyproject.toml"
        )


#: Set by the xdist controller for its workers: the API URLs of the reference servers they share, space-separated.
SHARED_REFERENCE_ENV = "PREFECT_CONFORMANCE_TESTS_REFERENCE"
#: Where the controller writes why each shared reference did not come up: one file per URL, space-separated (read
#: by the workers' fixture).
SHARED_REFERENCE_ERROR_ENV = "PREFECT_CONFORMANCE_TESTS_REFERENCE_ERROR_FILE"
#: How many xdist workers share one reference server.
WORKERS_PER_REFERENCE = 2


@dataclass
class SharedReference:
    """A reference server that this process did not start (the tests only ever use its URL)."""

    api_url: str


def pytest_configure(config: pytest.Config) -> None:
    """Under xdist, start one reference server per two workers, while they start and collect.

    Each reference costs CPU all the time it runs (its scheduler and late-runs loops tick every second or two, a
    few CPU-seconds a minute), and four of them ran the whole session on 2 cores: a quarter of the tests' CPU.
    One for all four workers was too few: a reference is one process on one SQLite file, and when three or four
    suites wrote to it at once (runs created, flows deleted) its writes failed "database is locked" for half a
    minute on end; a worker's heartbeats and its PATCH of a run's labels got 503 after all of Prefect's retries,
    and a check that the deviation under test does not touch failed (CI, 2026-11-28). Two (and the two-runs test
    on a server of its own) cut those 503s from 146 to 93 in a run of make test, with no burst over 10 s but one,
    and let both cores answer requests. The workers inherit the URLs from the environment; the controller stops
    the servers when the session ends.
    """
    workers = getattr(config.option, "numprocesses", None)
    if hasattr(config, "workerinput") or not workers or os.environ.get(SHARED_REFERENCE_ENV):
        return
    import tempfile
    import threading

    from harness.reference.environment import free_port

    started = []
    count = -(-int(workers) // WORKERS_PER_REFERENCE) if str(workers).isdigit() else 1
    for index in range(max(1, count)):
        workdir = Path(tempfile.mkdtemp(prefix="prefect-conformance-tests-reference-"))
        server = LocalReference(workdir=workdir, port=free_port())
        error_file = workdir / "start-error.txt"

        def start(server: LocalReference = server, error_file: Path = error_file) -> None:
            try:
                server.start()
            except BaseException as exc:  # the workers' fixture reports it, in every test that needs the server
                error_file.write_text(f"{type(exc).__name__}: {exc}")

        thread = threading.Thread(target=start, name=f"shared-reference-{index}", daemon=True)
        thread.start()
        started.append((server, thread, error_file))
    os.environ[SHARED_REFERENCE_ENV] = " ".join(server.api_url for server, _, _ in started)
    os.environ[SHARED_REFERENCE_ERROR_ENV] = " ".join(str(error_file) for _, _, error_file in started)
    config.stash[_shared_references] = started


_shared_references = pytest.StashKey[list]()


def pytest_unconfigure(config: pytest.Config) -> None:
    for server, thread, _ in config.stash.get(_shared_references, []):
        thread.join(timeout=120)
        server.stop()
        if config.stash.get(_session_passed, False):  # its database and log are kept only to read a failure by
            shutil.rmtree(server.workdir, ignore_errors=True)
    os.environ.pop(SHARED_REFERENCE_ENV, None)


_session_passed = pytest.StashKey[bool]()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    session.config.stash[_session_passed] = exitstatus == 0


@pytest.fixture(scope="session")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalReference | SharedReference]:
    """A real Prefect server for the whole test session (the authority every deviation is compared with).

    Under xdist it is one of the controller's shared servers, picked by this worker's number (see
    :func:`pytest_configure`); without, this process's.
    """
    urls = os.environ.get(SHARED_REFERENCE_ENV, "").split()
    if not urls:
        with LocalReference(workdir=tmp_path_factory.mktemp("reference")) as server:
            yield server
        return
    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
    url = urls[worker % len(urls)]
    error_files = os.environ.get(SHARED_REFERENCE_ERROR_ENV, "").split()
    error_file = Path(error_files[worker % len(urls)] if len(error_files) == len(urls) else "/nonexistent")

    def not_failed() -> None:
        if error_file.exists():
            raise HarnessError(f"the shared reference server did not start: {error_file.read_text()}")

    wait_for_health(
        url,
        timeout=READY_TIMEOUT + 30,
        what="the tests' shared reference server",
        alive=not_failed,
        hint="the xdist controller starts it; see the line above or its log under the system temp folder",
    )
    yield SharedReference(url)


@pytest.fixture
def deviating(reference: LocalReference) -> Iterator[Callable[[Deviation], DeviatingProxy]]:
    """``deviating(SomeDeviation())`` -> a running proxy in front of the reference that applies it."""
    proxies: list[DeviatingProxy] = []

    def start(deviation: Deviation) -> DeviatingProxy:
        proxy = DeviatingProxy(reference.api_url, actor="deviating-target", deviation=deviation)
        proxy.start()
        proxies.append(proxy)
        return proxy

    yield start
    for proxy in proxies:
        proxy.stop()


@pytest.fixture
def suite(tmp_path: Path) -> Callable[..., SuiteRun]:
    """``suite("--target", url, "-k", expr)`` runs the CLI with a fresh report folder."""
    return lambda *args, **kw: run_suite(*args, report_dir=tmp_path / "reports", **kw)
