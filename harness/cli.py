"""``prefect-conformance``: run the conformance scenarios against a target and write the reports.

Exit codes (CI gates rely on the distinction):

* 0 - every selected check passed;
* 1 - at least one conformance failure (the target differs from Prefect);
* 2 - no verdict: usage error, unreachable or non-Prefect target, or the harness itself broke.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import time
from pathlib import Path
from typing import Sequence

from harness import PREFECT_REFERENCE_VERSION, __version__
from harness.errors import HarnessError, TargetUnavailable
from harness.naming import new_run_prefix
from harness.processes import install_termination_handler, stop_all
from harness.results import ResultCollector, RunInfo, prepare_report_dir, render_markdown, summarize, write_results_json
from harness.target import Target, preflight
from harness.waiting import TIMEOUT_SCALE_ENV

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SCENARIOS_DIR = PROJECT_ROOT / "scenarios"
REFERENCE_MODES = ("local",)

EXIT_PASSED, EXIT_FAILED, EXIT_NO_VERDICT = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="prefect-conformance",
        description="Check that real Prefect clients work against a Prefect-compatible server.",
        epilog="Exit codes: 0 all checks passed, 1 conformance failures, 2 no verdict (usage error, "
        "unreachable target, harness error).",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser(
        "run",
        help="run the conformance suite",
        description="Run the conformance scenarios against TARGET, or against a bundled reference server "
        f"(real Prefect {PREFECT_REFERENCE_VERSION}) when no target is given, and write reports.",
        epilog="Reports: REPORT_DIR/latest/{junit.xml,results.json,report.md}; the previous run moves to a "
        "dated folder beside it. Exit codes: 0 passed, 1 conformance failures, 2 no verdict.",
    )
    run.add_argument(
        "--target",
        metavar="URL",
        default=os.environ.get("PREFECT_CONFORMANCE_TARGET") or None,
        help="API root of the server under test, as in PREFECT_API_URL (e.g. http://127.0.0.1:4200/api). "
        "Default: start the bundled reference server.",
    )
    run.add_argument(
        "--reference",
        choices=REFERENCE_MODES,
        default="local",
        help="how to run the bundled reference when no --target is given: 'local' = a `prefect server start` "
        "subprocess with a throwaway SQLite database (default)",
    )
    run.add_argument("--report-dir", type=Path, default=PROJECT_ROOT / "reports", help="where reports go (default: reports/)")
    run.add_argument("-k", dest="keyword", metavar="EXPR", help="only checks whose id matches this pytest -k expression")
    run.add_argument("-m", dest="markers", metavar="EXPR", help="only these feature areas, e.g. 'timestamps'")
    run.add_argument(
        "-n",
        "--parallel",
        metavar="N",
        default="auto",
        help="run scenario modules in N parallel processes ('auto' = one per core, the default; 1 = serially)",
    )
    run.add_argument(
        "--timeout-scale",
        type=float,
        metavar="F",
        default=None,
        help=f"multiply every wait's timeout by F for a slow target (also {TIMEOUT_SCALE_ENV})",
    )
    run.add_argument("-v", "--verbose", action="store_true", help="show each check as it runs")
    run.add_argument("pytest_args", nargs="*", metavar="-- PYTEST_ARG", help="extra arguments passed to pytest after --")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    install_termination_handler()
    try:
        return run(args)
    except (TargetUnavailable, HarnessError) as exc:
        print(f"prefect-conformance: {exc}", file=sys.stderr)
        return EXIT_NO_VERDICT
    except KeyboardInterrupt:
        print("prefect-conformance: interrupted; stopped every process it started", file=sys.stderr)
        return 130
    finally:
        stop_all()


def run(args: argparse.Namespace) -> int:
    if args.timeout_scale:
        os.environ[TIMEOUT_SCALE_ENV] = str(args.timeout_scale)
    started = dt.datetime.now(dt.timezone.utc)
    clock = time.monotonic()
    # A user's target is checked before anything is written, so a typo leaves the previous reports alone.
    target = preflight(args.target) if args.target else None
    report_dir = prepare_report_dir(args.report_dir)
    reference = None
    try:
        if target is None:
            reference = start_reference(args.reference, report_dir)
            target = preflight(reference.api_url, kind=f"reference-{args.reference}")
        print(f"prefect-conformance: target {target.api_url} (version {target.version}, {target.kind})", flush=True)
        collector = ResultCollector()
        run_info = RunInfo(
            target_url=target.api_url,
            target_kind=target.kind,
            target_version=target.version,
            suite_version=__version__,
            client_version=PREFECT_REFERENCE_VERSION,
            run_prefix=new_run_prefix(started),
            started=started.isoformat(),
        )
        if reference is not None:
            run_info.extra["reference_startup_seconds"] = round(reference.startup_seconds, 2)
        pytest_code = run_scenarios(args, target, run_info.run_prefix, report_dir, collector)
    finally:
        if reference is not None:
            reference.stop()
    results = collector.ordered()
    run_info.finished = dt.datetime.now(dt.timezone.utc).isoformat()
    run_info.duration = round(time.monotonic() - clock, 2)
    write_results_json(report_dir / "results.json", run_info, results)
    (report_dir / "report.md").write_text(render_markdown(run_info, results, report_dir / "artifacts"))
    counts = summarize(results)
    print(
        "prefect-conformance: "
        + ", ".join(f"{counts[s]} {s}" for s in counts)
        + f" in {run_info.duration:.1f}s; reports in {report_dir}",
        flush=True,
    )
    return exit_code(pytest_code, counts)


def start_reference(mode: str, report_dir: Path):
    from harness.reference import LocalReference

    print(f"prefect-conformance: starting the reference server (Prefect {PREFECT_REFERENCE_VERSION}, {mode})", flush=True)
    reference = LocalReference(workdir=report_dir / "reference")
    reference.start()
    return reference


def run_scenarios(args: argparse.Namespace, target: Target, run_prefix: str, report_dir: Path, collector: ResultCollector) -> int:
    import pytest

    pytest_args = [
        str(SCENARIOS_DIR),
        f"--rootdir={PROJECT_ROOT}",
        "-c",
        str(PROJECT_ROOT / "pyproject.toml"),
        f"--target={target.api_url}",
        f"--target-kind={target.kind}",
        f"--run-prefix={run_prefix}",
        f"--artifacts-dir={report_dir / 'artifacts'}",
        f"--junitxml={report_dir / 'junit.xml'}",
        "-o",
        "junit_suite_name=prefect-conformance",
        "-p",
        "no:cacheprovider",
        "-W",
        "ignore::pytest.PytestAssertRewriteWarning",
        "-rfE",
        "--tb=line",
        "-v" if args.verbose else "-q",
    ]
    if args.keyword:
        pytest_args += ["-k", args.keyword]
    if args.markers:
        pytest_args += ["-m", args.markers]
    if str(args.parallel) not in ("1", "0"):
        pytest_args += ["-n", str(args.parallel), "--dist", "loadfile"]
    pytest_args += list(args.pytest_args)
    return int(pytest.main(pytest_args, plugins=[collector]))


def exit_code(pytest_code: int, counts: dict[str, int]) -> int:
    """Map pytest's exit code and the checks' outcomes onto the suite's 0/1/2 contract."""
    if pytest_code == 5 or sum(counts.values()) == 0:
        print("prefect-conformance: no checks were selected; nothing was verified", file=sys.stderr)
        return EXIT_NO_VERDICT
    if pytest_code not in (0, 1) or counts["error"]:
        return EXIT_NO_VERDICT
    return EXIT_FAILED if counts["failed"] else EXIT_PASSED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
