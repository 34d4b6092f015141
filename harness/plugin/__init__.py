"""The pytest plugin that wires the harness to the conformance scenarios (``scenarios/``): its options and hooks.
Every failure is classified by the one rule of fault (:func:`harness.errors.outcome_of`) and attached to its report
through the contract in :mod:`harness.reporting.results`. The fixtures are in :mod:`.fixtures`; the run-wide barrier
before the durability checks in :mod:`.quiet_point`, the start budget in :mod:`.start_budget`.

Loaded through the ``pytest11`` entry point (or ``-p harness.plugin``). The CLI (``prefect-conformance run``)
starts the reference server if needed (while pytest starts: ``--target-ready-file``), runs preflight, and passes
``--target``; ``pytest --pyargs scenarios --target URL`` works too, and without ``--target`` a local reference
is started per session. The layer below :mod:`harness.commands`: it may import every other part of the harness.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from harness.clients.budget import load_now
from harness.errors import HarnessError, TargetUnavailable, outcome_of
from harness.features import FEATURES
from harness.plugin.fixtures import RESTART_COMMAND_ENV
from harness.plugin.quiet_point import QuietPoint
from harness.plugin.start_budget import MAX_STARTS_ENV, StartBudget
from harness.reference.releases import CLIENT_VERSION_ENV, not_applicable, pinned, storage_of
from harness.reference.startup import await_ready
from harness.reporting.catalogue import load_catalogue
from harness.reporting.results import (
    CHECK_ID,
    DESCRIPTION,
    NOT_APPLICABLE_PREFIX,
    OUTCOME,
    TARGET_DOWN,
    attach,
    check_id,
    describe,
)
from harness.target.credentials import api_headers
from harness.target.tls import tls_context

#: The fixtures live in a module of their own; pytest registers it with this plugin.
pytest_plugins = ["harness.plugin.fixtures"]


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("prefect-conformance")
    group.addoption(
        "--target", default=os.environ.get("PREFECT_CONFORMANCE_TARGET"), help="API root of the server under test"
    )
    group.addoption("--target-kind", default="url", help="what the target is: url, or a reference mode")
    group.addoption(
        "--target-ready-file",
        default=None,
        help="a bundled reference is starting beside pytest: wait until this file says it is ready",
    )
    group.addoption("--run-prefix", default=None, help="prefix of every object this run creates on the target")
    group.addoption("--artifacts-dir", default=None, help="folder for per-scenario logs and transcripts")
    group.addoption(
        "--target-version",
        default=None,
        help="the target's release as its /admin/version says (the CLI passes it): checks Prefect's own "
        "releases do not honour for this server and client are reported n/a",
    )
    group.addoption(
        "--reference-url",
        default=None,
        help="API root of Prefect's own server for the differential checks (the CLI's --differential "
        "passes it); without it they are not collected",
    )
    group.addoption(
        "--restart-command",
        default=os.environ.get(RESTART_COMMAND_ENV),
        help="a shell command that restarts the target on its own data, for the durability checks (the "
        "bundled reference restarts itself)",
    )
    group.addoption(
        "--profiles",
        default=None,
        help="only the checks of these profiles (comma-separated; see harness/catalogue.toml)",
    )
    group.addoption(
        "--max-starts",
        type=int,
        default=None,
        help="at most N real-client processes (flow runs, Runners, workers) start at once, across the "
        f"run's processes (default: ${MAX_STARTS_ENV}, or the CPU count, at least 2)",
    )
    group.addoption(
        "--client-version",
        default=os.environ.get(CLIENT_VERSION_ENV),
        help="run the real clients from this Prefect release (X.Y.Z; default: the pinned one), "
        "installed on first use into the cache",
    )


#: The order the scenario modules run in, and so (with ``--dist loadfile --no-loadscope-reorder``) the order xdist
#: hands them to its processes. The long, quiet waits first (the scheduler's loops, the lease check's minute) beside
#: the API-heavy modules; the lifecycle modules apart from each other, since their client processes starting at once
#: starve a small machine and Prefect's SQLite then refuses writes (docs/speed.md). The durability module comes last:
#: it restarts the target once every other check has finished (:class:`QuietPoint`).
DISPATCH_ORDER = (
    "scheduler",
    "lifecycle__lease",
    "scheduler__schedules",
    "scheduling",
    "timestamps",
    "timestamps__server_set",
    "schema",
    "scheduler__expansion",
    "bad_input",
    "scheduling__pools",
    "statuses",
    "upserts",
    "labels",
    "lists",
    "handshake",
    "logs",
    "variables",
    "events",
    "lifecycle__pauses",
    "serve",
    "lifecycle",
    "worker",
    "task_worker",
    "lifecycle__limits",
    "load",
    "differential",
    "durability",
)


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
    config.addinivalue_line(
        "markers", "check_id(id): the stable id a renamed check keeps (see harness/reporting/results.py)"
    )
    config.pluginmanager.register(QuietPoint(config), QuietPoint.name)
    if not hasattr(config, "workerinput"):  # the process that starts the others: they inherit its budget
        config.pluginmanager.register(StartBudget(config), StartBudget.name)


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


# --- module-scoped fixtures for actor scenarios: one real client per module, several checks on its outcome ----
