"""Running pytest over the conformance scenarios: the suite's own ini file and plugin, which feature modules a
selection collects, and how many processes share them."""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path
from typing import Sequence

from harness.features import FEATURE_ORDER
from harness.locations import PACKAGE_DIR, plugin_autoloaded, scenarios_dir
from harness.reference.server import ReferenceServer
from harness.reporting.catalogue import load_catalogue, parse_profiles
from harness.reporting.results import ResultCollector, check_id
from harness.target.preflight import Target

PYTEST_INI = PACKAGE_DIR / "scenarios.ini"


def run_scenarios(
    args: argparse.Namespace,
    target: Target,
    run_prefix: str,
    report_dir: Path,
    collector: ResultCollector,
    selection: list[str] | None = None,
    *,
    ready_file: Path | None = None,
    restart: ReferenceServer | None = None,
    artifacts: Path | None = None,
) -> int:
    import pytest

    root = scenarios_dir().parent  # node ids, and so check ids, read "scenarios/test_x.py::..." everywhere
    paths = [str(root / nodeid) for nodeid in selection] if selection else [str(scenarios_dir())]
    pytest_args = [
        *paths,
        f"--rootdir={root}",
        "-c",
        str(PYTEST_INI),
        *plugin_option(),
        f"--target={target.api_url}",
        f"--target-kind={target.kind}",
        f"--run-prefix={run_prefix}",
        f"--artifacts-dir={artifacts or report_dir / 'artifacts'}",
        "-p",
        "no:cacheprovider",
        "-rfE",
        "--tb=line",
        "-v" if args.verbose else "-q",
    ]
    if args.keyword:
        pytest_args += ["-k", args.keyword]
    if args.markers:
        pytest_args += ["-m", args.markers]
    if args.client_version:
        pytest_args += ["--client-version", args.client_version]
    if args.max_starts:
        pytest_args += ["--max-starts", str(args.max_starts)]
    if args.profiles:
        pytest_args += ["--profiles", ",".join(parse_profiles(args.profiles))]
    pytest_args += ["--target-version", target.version]
    if ready_file is not None:
        pytest_args += ["--target-ready-file", str(ready_file)]
    if args.differential:
        pytest_args += ["--reference-url", args.differential]
    if args.restart_command:
        pytest_args += ["--restart-command", args.restart_command]
    features = selected_features(args.markers, selection, differential=bool(args.differential))
    if args.profiles:
        features = [f for f in features if f in load_catalogue().features_of(parse_profiles(args.profiles))]
    workers = worker_count(args.parallel, selected_modules(features))
    if workers > 1:
        pytest_args += ["-n", str(workers), "--dist", "loadfile", "--no-loadscope-reorder"]  # plugin.DISPATCH_ORDER
    pytest_args += list(args.pytest_args)
    if restart is None:
        return int(pytest.main(pytest_args, plugins=[collector]))
    from harness.reference.restart import RestartService

    # The durability checks restart the bundled reference through it, from whichever process runs them.
    with RestartService(restart.restart, restart.restart_description):
        return int(pytest.main(pytest_args, plugins=[collector]))


def selected_features(
    markers: str | None, selection: Sequence[str] | None = None, *, differential: bool = False
) -> list[str]:
    """The features (one scenario module each) a run will execute: those of the ``selection``'s node ids, or those
    the ``-m`` expression picks (all, when there is none). ``-k`` is not looked at: it only ever selects fewer."""
    features = [
        f
        for f in FEATURE_ORDER
        if (differential or f != "differential") and (f != "load" or re.search(r"\bload\b", markers or "") or selection)
    ]
    if selection:
        modules = {check_id(nodeid)[1] for nodeid in selection}
        return [f for f in features if f in modules]
    if not markers:
        return features
    from _pytest.mark.expression import Expression  # how pytest itself reads -m; a syntax error is pytest's to report

    try:
        expression = Expression.compile(markers)
    except Exception:
        return features
    return [f for f in features if expression.evaluate(lambda name, **_: name == f)]


def selected_modules(features: Sequence[str]) -> list[str]:
    """The scenario modules of the ``features``: ``test_<feature>.py`` and its parts, ``test_<feature>__<part>.py``."""
    modules = [path.stem for path in sorted(scenarios_dir().glob("test_*.py"))]
    return [m for m in modules if check_id(f"{m}.py::t")[1] in features]


def worker_count(parallel: str | int, modules: Sequence[str]) -> int:
    """The pytest processes for ``-n``: a number as given; ``auto``, one per core and one more while the machine is
    not already busy (its load average below its cores), else one per core; never more than there are selected
    modules (a process without a module would only start up: ``-m timestamps`` runs in one).

    The suite mostly waits (a lease's minute, the scheduler's loops, a foreman's timeouts), so a process more than
    the cores keeps them busy meanwhile. Not on a busy machine, whose cores are taken already, nor more than one
    extra: on Prefect's SQLite more writes at once mean more "database is locked" 503s, which real clients back off
    from for seconds (docs/speed.md). The real clients' starts are bounded apart from this (``--max-starts``)."""
    if str(parallel) != "auto":
        return int(parallel)
    cores = os.cpu_count() or 1
    spare = 1 if os.getloadavg()[0] < cores else 0
    return max(1, min(len(modules), cores + spare))


def plugin_option() -> list[str]:
    """``-p harness.plugin`` when pytest will not load the plugin through its ``pytest11`` entry point itself."""
    return [] if plugin_autoloaded() else ["-p", "harness.plugin"]
