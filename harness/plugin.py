"""The pytest plugin that wires the harness to the conformance scenarios (``scenarios/``): options, fixtures,
and the classification of every failure by the one rule of fault (:func:`harness.errors.outcome_of`),
attached to each report through the contract in :mod:`harness.reporting.results`.

Loaded through the ``pytest11`` entry point (or ``-p harness.plugin``). The CLI (``prefect-conformance run``)
starts the reference server if needed (while pytest starts: ``--target-ready-file``), runs preflight, and passes
``--target``; ``pytest --pyargs scenarios --target URL`` works too, and without ``--target`` a local reference
is started per session. The top layer beside :mod:`harness.commands`: it may import every other part of the
harness.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import httpx
import pytest

from harness.checks.naming import new_run_prefix, unique_name
from harness.checks.objects import Created
from harness.reference.openapi import openapi_document
from harness.checks.server_times import TargetClock, during, measure_clock
from harness.clients.actors import Actor
from harness.clients.budget import BUDGET_ENV, AliveSampler, default_max_starts, load_now, prepare, read_load
from harness.reference.server import ReferenceServer
from harness.reference.releases import CLIENT_VERSION_ENV, Release, not_applicable, pinned, release, storage_of
from harness.reference.startup import await_ready
from harness.reporting.catalogue import load_catalogue
from harness.reporting.results import (CHECK_ID, DESCRIPTION, NOT_APPLICABLE_PREFIX, OUTCOME, TARGET_DOWN, attach,
                                      check_id, describe)
from harness.target.api import ApiClient
from harness.target.credentials import api_headers
from harness.errors import HarnessError, TargetUnavailable, WaitTimeout, outcome_of
from harness.target.preflight import Target, preflight
from harness.target.tls import tls_context


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("prefect-conformance")
    group.addoption("--target", default=os.environ.get("PREFECT_CONFORMANCE_TARGET"), help="API root of the server under test")
    group.addoption("--target-kind", default="url", help="what the target is: url, or a reference mode")
    group.addoption("--target-ready-file", default=None,
                    help="a bundled reference is starting beside pytest: wait until this file says it is ready")
    group.addoption("--run-prefix", default=None, help="prefix of every object this run creates on the target")
    group.addoption("--artifacts-dir", default=None, help="folder for per-scenario logs and transcripts")
    group.addoption("--target-version", default=None,
                    help="the target's release as its /admin/version says (the CLI passes it): checks Prefect's own "
                         "releases do not honour for this server and client are reported n/a")
    group.addoption("--reference-url", default=None,
                    help="API root of Prefect's own server for the differential checks (the CLI's --differential "
                         "passes it); without it they are not collected")
    group.addoption("--restart-command", default=os.environ.get(RESTART_COMMAND_ENV),
                    help="a shell command that restarts the target on its own data, for the durability checks (the "
                         "bundled reference restarts itself)")
    group.addoption("--profiles", default=None,
                    help="only the checks of these profiles (comma-separated; see harness/catalogue.toml)")
    group.addoption("--max-starts", type=int, default=None,
                    help="at most N real-client processes (flow runs, Runners, workers) start at once, across the "
                         f"run's processes (default: ${MAX_STARTS_ENV}, or the CPU count, at least 2)")
    group.addoption("--client-version", default=os.environ.get(CLIENT_VERSION_ENV),
                    help="run the real clients from this Prefect release (X.Y.Z; default: the pinned one), "
                         "installed on first use into the cache")


#: The environment variable that can give ``--max-starts``.
MAX_STARTS_ENV = "PREFECT_CONFORMANCE_MAX_STARTS"
#: The environment variable that can give ``--restart-command``.
RESTART_COMMAND_ENV = "PREFECT_CONFORMANCE_RESTART_COMMAND"
#: Where a session that started its own reference (no ``--target``) leaves its restart for the durability checks; the
#: CLI's bundled reference is restarted through :mod:`harness.reference.restart` instead.
RESTARTER = pytest.StashKey[ReferenceServer]()
#: How long a restart command may take, and the target to answer ``/health`` again after it (scaled).
RESTART_TIMEOUT = 120.0


#: Feature areas; each scenario module carries one as a marker so ``-m timestamps`` selects it.
FEATURES = {
    "handshake": "what every client asks first: GET /admin/version is a release Prefect 3 clients accept",
    "timestamps": "datetime formats returned and accepted, and the times the server sets itself",
    "logs": "what a flow run logs is read back complete, in order and unchanged",
    "events": "what clients emit and the run's state events are kept and reach subscribers over the websockets",
    "durability": "what the server keeps survives a restart of it, at the end of the run (with a way to restart it)",
    "scheduler": "the target's own cron scheduler creates runs",
    "serve": "a flow's .serve() Runner polls the deployments endpoint and runs its own runs",
    "worker": "a process worker polls its work pool and runs the pool's runs",
    "task_worker": "a task worker subscribes to background task runs that another client delays",
    "lifecycle": "a run's life with real clients beyond scheduling: cancelled while running or before it starts, crashed, paused, suspended, expired, retried; lost workers",
    "scheduling": "next_scheduled_start_time and the two get_scheduled_flow_runs queries",
    "lists": "the filter endpoints' pages hold each object once in sort order, and their counts agree with them",
    "labels": "the labels the server gives deployments and flow runs, merged with their parents' and their own",
    "upserts": "what a client sends again finds what it made: idempotency keys, deployments sent again, schedules patched by slug",
    "statuses": "the statuses the server keeps: work pools and queues as workers report and users pause them, and what no one polls any more",
    "schema": "answers of the routes real clients use match Prefect's OpenAPI response schemas",
    "bad_input": "requests Prefect rejects with 422 are rejected with 4xx, never a 5xx, and nothing of them is stored",
    "differential": "one sequence of client calls answered as Prefect's own server answers it (--differential)",
    "load": "how many runs due at once the target serves without an error, measured (opt-in: only with -m load)",
}


#: The order the scenario modules run in, and so (with ``--dist loadfile --no-loadscope-reorder``) the order xdist
#: hands them to its processes, each taking the next module when it is nearly done with its own. The long, quiet
#: waits first (the scheduler's loops, the lifecycle lease check's minute: a Runner and one run), beside the API-heavy
#: modules; the lifecycle feature's main module (its clients and a dozen runs) once those are done, before the short
#: client modules; its limits module last but one. The three lifecycle modules at once (some twenty client processes
#: starting in the first seconds) took as long on an idle machine (147 s against 146 s) and queued a run's start 84 s
#: on a busy one. On Prefect's SQLite a client's read-then-write transaction is refused with a 503 "database is
#: locked" whenever another write commits meanwhile, and real clients back off 2, 4 and 8 s from it (a Runner lost
#: 14 s beside the scheduling checks' ~50 writes a second, 2026-11-29). Measured on 2 cores: ``make bench`` and
#: docs/status.md. The durability module must come last: it restarts the target once every other check has finished
#: (:class:`QuietPoint`), and a module queued behind it in its own process would never finish.
DISPATCH_ORDER = ("scheduler", "lifecycle__lease", "scheduling", "timestamps", "schema", "bad_input", "statuses",
                  "upserts", "labels", "lists", "handshake", "logs", "events", "lifecycle", "serve", "worker",
                  "task_worker", "lifecycle__limits", "load", "differential", "durability")


def dispatch_rank(item: pytest.Item) -> int:
    """Where an item's module comes in :data:`DISPATCH_ORDER`, by its own name or its feature's (a feature's part,
    ``test_<feature>__<part>.py``, may have a place of its own); modules it does not name come last."""
    module = Path(item.nodeid.split("::")[0]).stem.removeprefix("test_")
    for name in (module, check_id(item.nodeid)[1]):
        if name in DISPATCH_ORDER:
            return DISPATCH_ORDER.index(name)
    return len(DISPATCH_ORDER)


def pytest_configure(config: pytest.Config) -> None:
    _target_down.clear()  # a second session in one process (the CLI's second attempt) starts afresh
    for feature, description in FEATURES.items():
        config.addinivalue_line("markers", f"{feature}: {description}")
    config.addinivalue_line("markers", "check_id(id): the stable id a renamed check keeps (see harness/reporting/results.py)")
    config.pluginmanager.register(QuietPoint(config), QuietPoint.name)
    if not hasattr(config, "workerinput"):  # the process that starts the others: they inherit its budget
        config.pluginmanager.register(StartBudget(config), StartBudget.name)


class StartBudget:
    """The run's start budget (:mod:`harness.clients.budget`), made before any pytest worker starts, which inherit it
    through the environment; the peak of flow-run processes alive is sampled here, and the run's load is written
    to ``budget/load.json`` at the end (for the reports)."""

    name = "prefect-conformance-start-budget"

    def __init__(self, config: pytest.Config) -> None:
        configured = config.getoption("--max-starts") or os.environ.get(MAX_STARTS_ENV)
        self.max_starts = max(1, int(configured)) if configured else default_max_starts()
        artifacts = config.getoption("--artifacts-dir")
        root = Path(artifacts).resolve() if artifacts else Path(tempfile.mkdtemp(prefix="prefect-conformance-"))
        self.folder = prepare(root / "budget", self.max_starts)
        os.environ[BUDGET_ENV] = str(self.folder)
        self.sampler = AliveSampler(self.folder).start()

    def pytest_unconfigure(self) -> None:
        load = read_load(self.folder, self.max_starts, self.sampler.stop())
        (self.folder / "load.json").write_text(json.dumps(load.as_dict()))
        os.environ.pop(BUDGET_ENV, None)


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
            wait_until(unfinished, awaiting=f"the run's other {len(others)} checks to finish before the {but} checks",
                       timeout=QUIET_TIMEOUT, interval=0.2, hint="a check that never ends holds the run")
        except WaitTimeout as exc:
            raise HarnessError(str(exc)) from None
        return f"the run's other {len(others)} checks had finished"


#: Set (per process) once the target stopped answering: every later check ends at once as an error.
_target_down: list[str] = []


def target_health(api_url: str) -> str | None:
    """None if ``GET /health`` answers true within 3 s; otherwise what it answered instead."""
    try:
        with httpx.Client(timeout=3.0, headers=api_headers(), verify=tls_context()) as http:
            response = http.get(api_url.rstrip("/") + "/health")
    except httpx.HTTPError as exc:
        return f"GET /health failed: {type(exc).__name__}: {exc}"
    if response.status_code == 200 and response.text.strip() == "true":
        return None
    return f"GET /health answered {response.status_code} {response.text[:120]!r}"


#: A ``-m`` expression that names the ``load`` feature: the capacity measurement runs only then.
OPT_IN = re.compile(r"\bload\b")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Leave out the capacity measurement unless ``-m`` names it, and the differential checks unless there is a
    reference to compare with, and mark ``n/a`` the checks
    that do not hold for this run's server and client releases (``releases.toml``), before any of their fixtures
    start a client."""
    items.sort(key=dispatch_rank)  # stable: a module's checks stay together and in their order
    if profiles := config.getoption("--profiles"):
        wanted, catalogue = set(profiles.split(",")), load_catalogue()
        kept = [item for item in items if catalogue.profile_of(*check_id(item.nodeid, pinned_id(item))) in wanted]
        if len(kept) < len(items):
            config.hook.pytest_deselected(items=[item for item in items if item not in kept])
            items[:] = kept
    # The capacity measurement runs only where asked for (a collection alone lists it: the catalogue has every check).
    if not config.option.collectonly and not OPT_IN.search(config.getoption("markexpr") or ""):
        kept = [item for item in items if item.get_closest_marker("load") is None]
        if len(kept) < len(items):
            config.hook.pytest_deselected(items=[item for item in items if item not in kept])
            items[:] = kept
    if not config.getoption("--reference-url"):
        kept = [item for item in items if item.get_closest_marker("differential") is None]
        if len(kept) < len(items):
            config.hook.pytest_deselected(items=[item for item in items if item not in kept])
            items[:] = kept
    server = config.getoption("--target-version")
    if not server:
        return
    client = config.getoption("--client-version") or pinned().version
    storage = storage_of(config.getoption("--target-kind") or "url")
    for item in items:
        if "scenarios" not in item.path.parts:
            continue
        reason = not_applicable(check_id(item.nodeid, pinned_id(item))[0], client, server, storage=storage)
        if reason:
            item.add_marker(pytest.mark.skip(reason=NOT_APPLICABLE_PREFIX + reason))


def pinned_id(item: pytest.Item) -> str:
    """The id a renamed check keeps (its ``check_id`` marker), or ""."""
    marker = item.get_closest_marker("check_id")
    return marker.args[0] if marker else ""


@pytest.hookimpl(tryfirst=True)
def pytest_runtestloop(session: pytest.Session) -> None:
    """With a bundled reference starting beside pytest, wait for it before the first check: in the process that
    hands out the checks (xdist's controller, or the only one), while the workers start and collect. A reference
    that did not start ends the session here, without a check blamed; the CLI says why in one line."""
    ready_file = session.config.getoption("--target-ready-file")
    if ready_file and not hasattr(session.config, "workerinput"):
        try:
            await_ready(Path(ready_file))
        except HarnessError:
            pytest.exit("the bundled reference server did not start", returncode=pytest.ExitCode.INTERRUPTED)


def pytest_runtest_setup(item: pytest.Item) -> None:
    if _target_down and "scenarios" in item.path.parts:
        raise TargetUnavailable(f"not run: the target stopped answering earlier in this run ({_target_down[0]})")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    """Classify what went wrong, for the results, by the one rule in :func:`harness.errors.outcome_of`."""
    outcome = yield
    report = outcome.get_result()
    pinned = item.get_closest_marker("check_id")
    if pinned:  # on every phase, so setup, call and teardown land in one result
        attach(report, CHECK_ID, pinned.args[0])
    if call.when == "setup":
        attach(report, DESCRIPTION, describe(item))
    excinfo = call.excinfo
    if excinfo is None or excinfo.errisinstance(pytest.skip.Exception):
        return
    target = item.config.getoption("--target")
    if target and not _target_down and call.when in ("setup", "call") and not excinfo.errisinstance(TargetUnavailable):
        problem = target_health(target)
        if problem:  # the check failed because the target went away: say so, and stop asking it
            problem += f", while {load}" if (load := load_now()) else ""
            _target_down.append(problem)
            attach(report, TARGET_DOWN, problem)
    attach(report, OUTCOME, outcome_of(excinfo.value, call.when))


@pytest.fixture(scope="session")
def run_prefix(request: pytest.FixtureRequest) -> str:
    return request.config.getoption("--run-prefix") or new_run_prefix()


@pytest.fixture(scope="session")
def artifacts_dir(request: pytest.FixtureRequest) -> Path:
    configured = request.config.getoption("--artifacts-dir")
    # Resolved here, where the option enters: actors run in their own working directories.
    path = Path(configured).resolve() if configured else Path(tempfile.mkdtemp(prefix="prefect-conformance-"))
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def target(request: pytest.FixtureRequest, artifacts_dir: Path) -> Iterator[Target]:
    """The server under test, after preflight; a local reference when no ``--target`` was given."""
    url = request.config.getoption("--target")
    if url:  # a reference starting beside pytest is ready by now: pytest_runtestloop waited for it
        yield preflight(url, kind=request.config.getoption("--target-kind"))
        return
    from harness.reference.local import LocalReference

    with LocalReference(workdir=artifacts_dir / "reference") as reference:
        request.config.stash[RESTARTER] = reference
        yield preflight(reference.api_url, kind="local")


@pytest.fixture(scope="session")
def api(target: Target) -> Iterator[ApiClient]:
    with ApiClient(target.api_url, headers=api_headers()) as client:
        yield client


@pytest.fixture(scope="session")
def reference_api(request: pytest.FixtureRequest, target: Target) -> Iterator[ApiClient]:
    """A client of Prefect's own server, for the differential checks (``--reference-url``). The target's
    credentials go only to the target: the reference gets them only when it is the target itself."""
    url = request.config.getoption("--reference-url").rstrip("/")
    with ApiClient(url, headers=api_headers() if url == target.api_url.rstrip("/") else {}) as client:
        yield client


@pytest.fixture(scope="session")
def target_clock(api: ApiClient, run_prefix: str) -> TargetClock:
    """How far the target's clock is from the harness's, measured once per process from flows it creates (and
    deletes at once): every check of a time the server sets reads it against the target's own clock."""
    ledger = Created(api)

    def create(index: int):
        body = {"name": unique_name(run_prefix, "clock", str(index))}
        answer, window = during("POST /flows/", lambda: api.request("POST", "/flows/", json_body=body))
        if answer.status in (200, 201):
            ledger.add(f"/flows/{answer.json()['id']}")
        return answer, window

    try:
        return measure_clock(create)
    finally:
        ledger.delete_all()


@dataclass(frozen=True)
class Restart:
    """How the target is restarted on its own data, for the durability checks."""

    how: str
    act: Callable[[], None]


@pytest.fixture(scope="session")
def target_restart(request: pytest.FixtureRequest, target: Target) -> Restart | None:
    """The bundled reference's own restart (the CLI serves it; a session's own reference stashes it), or
    ``--restart-command``; None without either."""
    from harness.reference.restart import RESTART_ENV, served_restart

    served = os.environ.get(RESTART_ENV)
    if served:
        return Restart(*served_restart(served))
    reference = request.config.stash.get(RESTARTER, None)
    if reference is not None:
        return Restart(reference.restart_description, reference.restart)
    command = request.config.getoption("--restart-command")
    if not command:
        return None

    def run_command() -> None:
        import subprocess

        from harness.waits import timeout_scale
        from harness.target.health import wait_for_health

        limit = RESTART_TIMEOUT * timeout_scale()
        try:
            done = subprocess.run(command, shell=True, capture_output=True, text=True, timeout=limit)
        except subprocess.TimeoutExpired:
            raise HarnessError(f"--restart-command {command!r} did not finish within {limit:.0f} s") from None
        if done.returncode != 0:
            raise HarnessError(f"--restart-command {command!r} exited with code {done.returncode}: "
                               f"{(done.stderr or done.stdout).strip()[-300:]}")
        wait_for_health(target.api_url, timeout=RESTART_TIMEOUT, what="the target after --restart-command",
                        hint="the restart command must leave the server running and answering /health")

    return Restart(f"--restart-command {command!r}", run_command)


@pytest.fixture
def names(run_prefix: str, request: pytest.FixtureRequest) -> Callable[..., str]:
    """``names("flow")`` -> a unique, run-prefixed name that says which scenario created it."""
    scenario = request.node.originalname.removeprefix("test_")
    return lambda *parts: unique_name(run_prefix, scenario, *parts)


@pytest.fixture
def created(api: ApiClient) -> Iterator[Created]:
    """Ledger of objects a scenario creates; they are deleted when it ends, whatever its outcome."""
    ledger = Created(api)
    yield ledger
    ledger.delete_all()



# --- module-scoped fixtures for actor scenarios: one real client per module, several checks on its outcome ----


@pytest.fixture(scope="module")
def feature(request: pytest.FixtureRequest) -> str:
    return request.module.__name__.rsplit(".", 1)[-1].removeprefix("test_")


@pytest.fixture(scope="module")
def module_names(run_prefix: str, feature: str) -> Callable[..., str]:
    return lambda *parts: unique_name(run_prefix, feature, *parts)


@pytest.fixture(scope="module")
def module_created(api: ApiClient) -> Iterator[Created]:
    ledger = Created(api)
    yield ledger
    ledger.delete_all()


@pytest.fixture(scope="module")
def scenario_dir(artifacts_dir: Path, feature: str) -> Path:
    """Where a module's actors keep their logs and transcripts (``artifacts/<feature>/``)."""
    path = artifacts_dir / feature
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def client_release(request: pytest.FixtureRequest) -> Release:
    """The Prefect release every real client of this run comes from (``--client-version``)."""
    return release(request.config.getoption("--client-version"))


@pytest.fixture(scope="module")
def actors(target: Target, scenario_dir: Path, client_release: Release) -> Iterator[Callable[..., Actor]]:
    """``actors(start_runner, flow_name=..., ...)`` starts a real client of the run's release through a recorder;
    all stop at teardown."""
    started: list[Actor] = []

    def start(factory: Callable[..., Actor], **kwargs: object) -> Actor:
        actor = factory(target.api_url, scenario_dir, release=client_release, **kwargs)
        started.append(actor)
        return actor

    yield start
    for actor in started:
        actor.stop()


@dataclass(frozen=True)
class ApiContract:
    """The OpenAPI document answers are judged by, and the Prefect release it is of."""

    version: str
    document: dict
    python: str  # an interpreter with that release installed (to ask its own app, see harness.checks.bad_input)


@pytest.fixture(scope="session")
def api_contract(request: pytest.FixtureRequest, target: Target) -> ApiContract:
    """A bundled reference of another release is judged by that release's document (its answers are that
    release's contract); any other target by the pinned release's, the clients this suite drives."""
    kind = request.config.getoption("--target-kind") or "url"
    chosen = pinned()
    if kind.startswith("reference-") and target.version != chosen.version:
        chosen = release(target.version)
    return ApiContract(chosen.version, openapi_document(chosen.version, chosen.python), chosen.python)


@pytest.fixture(scope="module")
def quiet_point(request: pytest.FixtureRequest, feature: str) -> Callable[[], str]:
    """``quiet_point()`` returns once every check of the run outside this module has finished (:class:`QuietPoint`):
    what a check that disturbs the target (restarts it) waits for."""
    plugin: QuietPoint = request.config.pluginmanager.get_plugin(QuietPoint.name)
    return lambda: plugin.wait(request.session, but=feature)
