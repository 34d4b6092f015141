"""``prefect-conformance``: run the conformance scenarios against a target and write the reports.

Exit codes (CI gates rely on the distinction):

* 0 - every selected check passed, or failed as the expectations file says it will;
* 1 - a conformance failure or unsupported endpoint not listed in the expectations file (a regression);
* 2 - no verdict: usage error, unreachable or non-Prefect target, interrupted, or the harness itself broke.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

from harness import PREFECT_REFERENCE_VERSION, __version__
from harness.locations import PACKAGE_DIR, default_report_dir, plugin_autoloaded, scenarios_dir
from harness.target.credentials import redact
from harness.errors import HarnessError, TargetUnavailable, WaitTimeout
from harness.checks.naming import new_run_prefix
from harness.clients.budget import Load, default_max_starts
from harness.processes import REGISTRY_ENV, RUN_MARKER_ENV, install_termination_handler, reap_registry, stop_all
from harness.commands import checks as checks_command
from harness.commands import matrix as matrix_command
from harness.reporting import expectations as expectations_file
from harness.reporting.diff import diff_runs, render_diff_text
from harness.reporting.catalogue import load_catalogue, parse_profiles, profile_names
from harness.reporting.claims import make_claim, render_badge
from harness.reporting.diagnoses import diagnose
from harness.reporting.summary import render_summary
from harness.checks.coverage import probe
from harness.reporting.coverage import Coverage, add_client_usage
from harness.reporting.history import earlier_outcomes, prepare_report_dir, previous_results, target_identity
from harness.reporting.html import render_html
from harness.reporting.junit import render_junit
from harness.reporting.markdown import render_markdown
from harness.reporting.results import FEATURE_ORDER, GATE_FAILING, NOT_PASSING, CheckResult, ResultCollector, RunInfo, check_id, read_results_json, summarize, write_results_json
from harness.reference.environment import FAST_SERVICE_SETTINGS
from harness.reference.releases import (CLIENT_VERSION_ENV, REFERENCE_VERSION_ENV, check_release_number, release,
                                       scheduler_loop_seconds)
from harness.reference.server import ReferenceServer
from harness.reference.startup import ReferenceStartup
from harness.target.preflight import Target, preflight
from harness.checks.horizon import SCHEDULER_LIMITS_ENV, parse_limits, prefect_limits
from harness.waits import (PREFECT_SCHEDULER_INTERVAL, SCHEDULER_INTERVAL_ENV, SERVICE_LOOP_SETTINGS, SERVICE_LOOPS_ENV,
                           TIMEOUT_SCALE_ENV, parse_service_loops)

PYTEST_INI = PACKAGE_DIR / "scenarios.ini"
REFERENCE_MODES = ("local", "local-postgres", "docker", "docker-postgres")

EXIT_PASSED, EXIT_FAILED, EXIT_NO_VERDICT = 0, 1, 2


def absolute_path(value: str) -> Path:
    """A path option, resolved once against the directory the user ran the command in.

    Everything below the CLI (reference servers, real clients) runs in its own working directory, so a relative
    path must never travel further than this boundary.
    """
    return Path(value).expanduser().resolve()


def parallel_option(value: str) -> str:
    """``-n``: ``auto`` or a whole number of processes (0 and 1 both mean serially)."""
    if value != "auto" and not (value.isdigit()):
        raise argparse.ArgumentTypeError(f"expected 'auto' or a number of processes, got {value!r}")
    return value


#: How long a target that stopped answering mid-run is given to answer again (scaled by --timeout-scale):
#: ``--outage-wait``'s default.
RECOVERY_TIMEOUT = 120.0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="prefect-conformance",
        description="Check that real Prefect clients work against a Prefect-compatible server.",
        epilog="Exit codes: 0 every check passed or failed as its expectations file says, 1 conformance "
        "failures or unsupported endpoints (regressions), 2 no verdict (usage error, unreachable target, "
        "harness error). See `prefect-conformance run --help` for every option.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser(
        "run",
        help="run the conformance suite",
        description="Run the conformance scenarios against TARGET, or against a bundled reference server "
        f"(real Prefect {PREFECT_REFERENCE_VERSION}) when no target is given, and write reports.",
        epilog="Reports: REPORT_DIR/latest/{junit.xml,results.json,report.md,report.html}; the previous run moves "
        "to a dated folder beside it. Exit codes: 0 passed (expected failures allowed), 1 conformance failures or "
        "unsupported checks, 2 no verdict.",
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
        default=os.environ.get("REFERENCE") or "local",
        help="how to run the bundled reference when no --target is given: 'local' = a `prefect server start` "
        "subprocess with a throwaway SQLite database (default, no Docker); 'local-postgres' = the same on the "
        "PostgreSQL database --reference-db-url; 'docker' = a container (testcontainers) on SQLite; "
        "'docker-postgres' = a container plus a PostgreSQL container on a private network (also $REFERENCE)",
    )
    run.add_argument("--reference-version", metavar="X.Y.Z", default=os.environ.get(REFERENCE_VERSION_ENV) or None,
                     help=f"run the bundled reference from this Prefect release instead of {PREFECT_REFERENCE_VERSION}: "
                     "installed on first use like --client-version, or its official image (built here from Debian "
                     f"and PyPI packages where the engine cannot pull) for the docker modes (also ${REFERENCE_VERSION_ENV})")
    run.add_argument("--reference-image", metavar="IMAGE", default=os.environ.get("REFERENCE_IMAGE") or None,
                     help="Prefect image for the docker references (default prefecthq/prefect:3.9.1-python3.11, or its "
                     "equivalent built here from Debian and PyPI packages when the engine cannot pull it; "
                     "also $REFERENCE_IMAGE)")
    run.add_argument("--postgres-image", metavar="IMAGE", default=os.environ.get("POSTGRES_IMAGE") or None,
                     help="PostgreSQL image for docker-postgres (default postgres:15; also $POSTGRES_IMAGE)")
    run.add_argument("--reference-db-url", metavar="URL", default=os.environ.get("REFERENCE_DB_URL") or None,
                     help="postgresql+asyncpg://... database that local-postgres may own (also $REFERENCE_DB_URL)")
    run.add_argument("--differential", nargs="?", const="bundled", default=None, metavar="REFERENCE_URL",
                     help="also run the differential checks: one sequence of client calls sent to the target and to "
                     "Prefect's own server, answers compared. The bundled reference is started beside the target "
                     "(with no --target, it is compared with itself), or give the API root of a running Prefect server")
    run.add_argument("--restart-command", metavar="CMD", default=os.environ.get("PREFECT_CONFORMANCE_RESTART_COMMAND"),
                     help="a shell command that restarts the target on its own data, for the durability checks, which "
                     "restart it once, after every other check has finished (the bundled reference restarts itself; "
                     "also $PREFECT_CONFORMANCE_RESTART_COMMAND)")
    run.add_argument("--report-dir", type=absolute_path, default=None,
                     help="where reports go; a relative path is taken from the current directory (default: "
                     "$PREFECT_CONFORMANCE_REPORT_DIR, else reports/ of the suite's checkout, or "
                     "./prefect-conformance-reports/ when installed)")
    run.add_argument("-k", dest="keyword", metavar="EXPR", help="only checks whose id matches this pytest -k expression")
    features = ", ".join(f for f in FEATURE_ORDER if f != "differential")
    run.add_argument("-m", dest="markers", metavar="EXPR", help=f"only these feature areas ({features}; differential "
                     "with --differential), e.g. 'timestamps or scheduling'")
    run.add_argument(
        "-n",
        "--parallel",
        metavar="N",
        default="auto",
        type=parallel_option,
        help="run scenario modules in N parallel processes ('auto', the default: one per core, at most one per "
        "selected feature; 1 = serially)",
    )
    run.add_argument(
        "--max-starts",
        type=int,
        metavar="N",
        default=None,
        help="the run's load budget: at most N real-client processes (flow runs, Runners, workers) start at once, "
        "across all parallel processes; a start costs a core for a second or two, and a target starved of CPU by "
        "twenty at once answers late (default: the CPU count, at least 2; also PREFECT_CONFORMANCE_MAX_STARTS)",
    )
    run.add_argument(
        "--outage-wait",
        type=float,
        metavar="S",
        default=RECOVERY_TIMEOUT,
        help="a --target that stops answering mid-run is given S seconds (scaled by --timeout-scale) to answer GET "
        "/health again; then the checks it decided run once more, at half the start budget, and the verdict is "
        f"theirs; 0: no second attempt (default {RECOVERY_TIMEOUT:.0f})",
    )
    run.add_argument(
        "--timeout-scale",
        type=float,
        metavar="F",
        default=None,
        help=f"multiply every wait's timeout by F for a slow target (also {TIMEOUT_SCALE_ENV})",
    )
    run.add_argument(
        "--scheduler-interval",
        type=float,
        metavar="S",
        default=None,
        help="seconds between two loops of the target's scheduler; sizes the scheduler checks' waits (runs must "
        f"stop changing for longer than one loop). Default: {PREFECT_SCHEDULER_INTERVAL:.0f} (Prefect's "
        "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS) for --target, the bundled reference's own when it runs; "
        f"also {SCHEDULER_INTERVAL_ENV}",
    )
    run.add_argument(
        "--scheduler-limits",
        metavar="LIMITS",
        default=None,
        help="the limits of the target's scheduler, where they differ from Prefect's: how many runs of a schedule "
        "it keeps ahead and how far, e.g. 'min_runs=5,max_scheduled_time=30d' (names as Prefect's "
        "PREFECT_SERVER_SERVICES_SCHEDULER_* settings; times in s, m, h or d). Default: Prefect's (min_runs=3, "
        f"max_runs=100, min_scheduled_time=1h, max_scheduled_time=100d); also {SCHEDULER_LIMITS_ENV}",
    )
    run.add_argument(
        "--service-loops",
        metavar="LOOPS",
        default=None,
        help="seconds between loops of the target's services the lifecycle checks wait for, where they differ from "
        "Prefect's: 'pause_expirations=5,foreman=15,cancellation_cleanup=20,repossessor=15' are Prefect's defaults "
        "(PREFECT_SERVER_SERVICES_<NAME>_LOOP_SECONDS), 'concurrency_slot_wait=30' how long a run refused its "
        "deployment's concurrency slot waits (PREFECT_SERVER_DEPLOYMENTS_CONCURRENCY_SLOT_WAIT_SECONDS), and "
        "'deployment_last_polled_timeout=60,work_queue_last_polled_timeout=60' after how long the foreman marks "
        "what no one polled NOT_READY (PREFECT_SERVER_SERVICES_FOREMAN_<NAME>_SECONDS); "
        f"the bundled reference's own when it runs; also {SERVICE_LOOPS_ENV}",
    )
    run.add_argument(
        "--client-version",
        metavar="X.Y.Z",
        default=os.environ.get(CLIENT_VERSION_ENV) or None,
        help=f"run every real client (Runner, worker, task worker, Prefect's client calls) from this Prefect "
        f"release instead of {PREFECT_REFERENCE_VERSION}; installed from PyPI on first use into the cache, with "
        f"dependencies as they stood on the release's date (also ${CLIENT_VERSION_ENV})",
    )
    gate = run.add_argument_group("CI gate")
    gate.add_argument(
        "--expectations",
        type=absolute_path,
        metavar="FILE",
        default=os.environ.get("PREFECT_CONFORMANCE_EXPECTATIONS") or None,
        help="TOML file of checks known to fail on this target; they are reported as expected failures and do "
        "not fail the gate (see docs/ci.md, 'Adopting the suite for a new server')",
    )
    gate.add_argument(
        "--update-expectations",
        action="store_true",
        help="rewrite --expectations FILE from this run: every failing check listed, reasons of kept entries kept",
    )
    gate.add_argument("--strict", action="store_true",
                      help="fail the gate on `should` checks too (by default their failures are warnings; see "
                      "`prefect-conformance checks` for each check's severity and why)")
    gate.add_argument("--profiles", metavar="NAMES", default=None,
                      help="run and claim only these profiles, e.g. core,workers (see `prefect-conformance checks`; "
                      f"profiles: {', '.join(profile_names())})")
    gate.add_argument("--github-summary", nargs="?", type=absolute_path, metavar="FILE", default=None,
                      const=os.environ.get("GITHUB_STEP_SUMMARY") or "",
                      help="append a screenful of Markdown (the verdict, the claim, a row per feature, new failures "
                      "and fixes, the first causes) to FILE, by default $GITHUB_STEP_SUMMARY (a GitHub Actions job's "
                      "summary page)")
    gate.add_argument("--badge", type=absolute_path, metavar="FILE", default=None,
                      help="also write the claim as a shields.io endpoint JSON to FILE, for a README badge")
    gate.add_argument(
        "--strict-expectations",
        action="store_true",
        help="fail the gate on unexpected passes too, so the expectations file is kept current",
    )
    gate.add_argument("--compare", type=absolute_path, metavar="RESULTS_JSON",
                      help="report new failures, fixes and still-failing checks against an earlier results.json "
                      "(default: the newest earlier run in REPORT_DIR against the same target)")
    gate.add_argument("--rerun-failed", type=absolute_path, metavar="RESULTS_JSON",
                      help="run only the checks that failed, were unsupported or errored in that results.json")
    run.add_argument("-v", "--verbose", action="store_true", help="show each check as it runs")
    run.add_argument("pytest_args", nargs="*", metavar="-- PYTEST_ARG", help="extra arguments passed to pytest after --")
    compare = commands.add_parser(
        "compare",
        help="compare two results.json files",
        description="Print new failures, fixes and still-failing checks between two runs. Exit 1 if there are new failures.",
    )
    compare.add_argument("before", type=absolute_path, metavar="OLD_RESULTS_JSON")
    compare.add_argument("after", type=absolute_path, metavar="NEW_RESULTS_JSON")
    matrix_command.add_parser(commands, absolute_path)
    checks_command.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "report_dir", "unset") is None:
        args.report_dir = default_report_dir()
    install_termination_handler()
    registry = Path(tempfile.mkdtemp(prefix="prefect-conformance-processes-"))
    os.environ[REGISTRY_ENV] = str(registry)
    os.environ.setdefault(RUN_MARKER_ENV, registry.name)
    try:
        if args.command == "matrix":
            return matrix_command.matrix(args)
        if args.command == "checks":
            return checks_command.list_checks(args)
        return compare(args) if args.command == "compare" else run(args)
    except (TargetUnavailable, HarnessError) as exc:
        print(f"prefect-conformance: {exc}", file=sys.stderr)
        return EXIT_NO_VERDICT
    except KeyboardInterrupt:
        print("prefect-conformance: interrupted; stopped every process it started", file=sys.stderr)
        return 130
    finally:
        stop_all()
        leftovers = reap_registry(registry)
        if leftovers:
            print(f"prefect-conformance: killed leftover processes: {', '.join(sorted(leftovers))}", file=sys.stderr)
        shutil.rmtree(registry, ignore_errors=True)


def run(args: argparse.Namespace) -> int:
    """One run, as its steps: everything that can be wrong with the invocation is checked before anything is
    written or started, and a user's target before the previous reports are moved aside."""
    configure_waits(args)
    check_invocation(args)
    started, clock = dt.datetime.now(dt.timezone.utc), time.monotonic()
    expected = load_expectation_entries(args)
    client = release(args.client_version)  # installed now, once, not by each pytest worker
    selection = rerun_selection(read_results_json(args.rerun_failed)) if args.rerun_failed else None
    if selection == []:
        print(f"prefect-conformance: nothing failed in {args.rerun_failed}; nothing to rerun", flush=True)
        return EXIT_PASSED
    target = preflight(args.target) if args.target else None  # a typo leaves the previous reports alone
    check_differential_reference(args)
    report_dir = prepare_report_dir(args.report_dir)
    identity = target_identity(target.api_url, target.kind) if target else f"reference-{args.reference}"
    baseline = baseline_of(args, identity)
    run_info = RunInfo(target_url=target.api_url if target else "", target_kind=target.kind if target else "",
                       target_version=target.version if target else "", suite_version=__version__,
                       client_version=client.version, run_prefix=new_run_prefix(started),
                       started=started.isoformat(), expectations_file=str(args.expectations or ""))
    pytest_code, results, coverage = execute(args, target, run_info, report_dir, selection)
    stale = judge(args, results, expected, identity)
    claim = make_claim(results, __version__, PREFECT_REFERENCE_VERSION,
                       complete=not (args.keyword or args.markers or selection or args.pytest_args))
    run_info.finished = dt.datetime.now(dt.timezone.utc).isoformat()
    run_info.duration = round(time.monotonic() - clock, 2)
    diff = diff_runs(baseline, results) if baseline is not None else None
    code = exit_code(pytest_code, summarize(results), strict=args.strict_expectations)
    write_reports(args, report_dir, run_info, results, expected, claim=claim, coverage=coverage, diff=diff,
                  stale=stale, code=code)
    announce(results, run_info, report_dir, claim=claim, coverage=coverage, diff=diff)
    if pytest_code == 2:
        print(f"prefect-conformance: interrupted; the reports hold the checks that finished ({report_dir})", file=sys.stderr)
    return code


def configure_waits(args: argparse.Namespace) -> None:
    """The options that size the checks' waits, passed to pytest's processes through the environment; with the
    bundled reference, its own service loops and scheduler interval."""
    if args.timeout_scale:
        os.environ[TIMEOUT_SCALE_ENV] = str(args.timeout_scale)
    if args.scheduler_interval:
        os.environ[SCHEDULER_INTERVAL_ENV] = str(args.scheduler_interval)
    if args.service_loops is not None:
        try:
            parse_service_loops(args.service_loops)
        except ValueError as exc:
            raise HarnessError(f"--service-loops {args.service_loops!r}: {exc}.") from None
        os.environ[SERVICE_LOOPS_ENV] = args.service_loops
    elif not args.target:  # the bundled reference loops as its settings say
        os.environ.setdefault(SERVICE_LOOPS_ENV, ",".join(
            f"{name}={FAST_SERVICE_SETTINGS[setting]}" for name, setting in SERVICE_LOOP_SETTINGS.items()))
    if args.scheduler_limits is not None:
        try:
            parse_limits(args.scheduler_limits, prefect_limits())
        except ValueError as exc:
            raise HarnessError(f"--scheduler-limits {args.scheduler_limits!r}: {exc}.") from None
        os.environ[SCHEDULER_LIMITS_ENV] = args.scheduler_limits
    elif not args.target:  # the bundled reference loops as its settings say, where its release honours them
        configured = float(FAST_SERVICE_SETTINGS["PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS"])
        loop = scheduler_loop_seconds(args.reference_version, configured) if args.reference_version else configured
        os.environ.setdefault(SCHEDULER_INTERVAL_ENV, f"{loop:g}")


def check_invocation(args: argparse.Namespace) -> None:
    """Options that contradict each other, or name what does not exist: one line and exit 2, before anything."""
    if args.update_expectations and not args.expectations:
        raise HarnessError("--update-expectations needs --expectations FILE (the file to write).")
    if args.github_summary is not None:  # a path given, or the const: $GITHUB_STEP_SUMMARY as it was, maybe ""
        if not str(args.github_summary):
            raise HarnessError("--github-summary without FILE needs $GITHUB_STEP_SUMMARY (set in GitHub Actions jobs).")
        args.github_summary = absolute_path(str(args.github_summary))
    if not args.target and args.reference == "local-postgres" and not args.reference_db_url:
        raise HarnessError("--reference local-postgres needs --reference-db-url postgresql+asyncpg://USER:PASSWORD@HOST/DB "
                           "(a database this run may own). Hint: or use --reference docker-postgres.")
    if args.reference_version and args.target:
        raise HarnessError("--reference-version chooses the bundled reference's release; it has no meaning with --target.")
    if args.reference_version:
        check_release_number(args.reference_version)
    if args.profiles:
        try:
            parse_profiles(args.profiles)
        except ValueError as exc:
            raise HarnessError(f"--profiles {args.profiles!r}: {exc}.") from None


def check_differential_reference(args: argparse.Namespace) -> None:
    """``--differential URL``: the Prefect server to compare with answers as one (the bundled one starts later)."""
    if args.differential not in (None, "bundled"):
        try:
            args.differential = preflight(args.differential).api_url
        except TargetUnavailable as exc:
            raise TargetUnavailable(f"--differential: the Prefect server to compare with is unusable. {exc}") from None


def baseline_of(args: argparse.Namespace, identity: str):
    """The run this one is compared with: ``--compare``'s, or the newest earlier one against the same target."""
    if args.compare:
        return read_results_json(args.compare)
    previous = previous_results(args.report_dir, identity)
    return read_results_json(previous) if previous is not None else None


def execute(args: argparse.Namespace, target: Target | None, run_info: RunInfo, report_dir: Path,
            selection: list[str] | None) -> tuple[int, list[CheckResult], Coverage | None]:
    """Start the bundled reference where there is no target (and the one to compare with), run the scenarios, map
    the target's API while it is still up, and stop every server whatever happens: (pytest's exit code, the
    results, the coverage map)."""
    reference = compared = startup = coverage = None
    collector = ResultCollector()
    try:
        if target is None:
            # The reference comes up while pytest starts its workers; the checks wait for it (ReferenceStartup).
            reference = make_reference(args, report_dir)
            startup = ReferenceStartup(reference, kind=f"reference-{args.reference}",
                                       ready_file=report_dir / "reference" / "ready")
            target = Target(reference.api_url, args.reference_version or PREFECT_REFERENCE_VERSION,
                            f"reference-{args.reference}")
            run_info.target_url, run_info.target_kind, run_info.target_version = target.api_url, target.kind, target.version
        print(f"prefect-conformance: target {target.api_url} (version {target.version}, {target.kind})", flush=True)
        if args.differential == "bundled" and reference is None:
            compared = make_reference(args, report_dir)
            compared.start()
            args.differential = preflight(compared.api_url, kind=f"reference-{args.reference}").api_url
        elif args.differential == "bundled":
            args.differential = target.api_url
        if args.differential:
            run_info.extra["differential_reference"] = args.differential
        pytest_code = run_scenarios(args, target, run_info.run_prefix, report_dir, collector, selection,
                                    ready_file=startup.ready_file if startup else None,
                                    restart=reference)
        if reference is None and pytest_code == 1 and args.outage_wait and (unrun := outage_victims(collector.ordered())):
            pytest_code = second_attempt(args, target, run_info, report_dir, collector, unrun)
        if (load := read_load_file(report_dir / "artifacts")) is not None:
            run_info.extra["load"], run_info.extra["load_figures"] = load.describe(), load.as_dict()
        if pytest_code in (0, 1):  # the target is still there (a bundled reference is stopped below)
            coverage = api_coverage(target.api_url, run_info.run_prefix, report_dir / "artifacts")
        # Interrupted while the reference was still starting: it is stopped below, not awaited.
        if startup is not None and (pytest_code != 2 or startup.done()):
            ready = startup.result()  # what kept it from starting, if anything, is the run's one error line
            if ready.version != target.version:
                raise HarnessError(f"The bundled reference answered version {ready.version}, not {target.version}.")
            run_info.extra["reference_startup_seconds"] = round(reference.startup_seconds, 2)
            cpu_seconds = getattr(reference, "cpu_seconds", None)  # a local reference's CPU, for make bench
            if cpu_seconds is not None and (cpu := cpu_seconds()) is not None:
                run_info.extra["reference_cpu_seconds"] = round(cpu, 1)
    finally:
        for server in (reference, compared):
            if server is not None:
                server.stop()
        if startup is not None:
            startup.join(timeout=10)
    return pytest_code, collector.ordered(), coverage


#: What a check says that was not run because the target had stopped answering (the plugin's words).
NOT_RUN_DOWN = "not run: the target stopped answering"


def outage_victims(results: list[CheckResult]) -> list[CheckResult]:
    """The checks a target that stopped answering decided: the one in flight when it was taken for gone, and those
    not run after it."""
    return [r for r in results if r.outcome in GATE_FAILING and (r.target_down or NOT_RUN_DOWN in r.message)]


def second_attempt(args: argparse.Namespace, target: Target, run_info: RunInfo, report_dir: Path,
                   collector: ResultCollector, unrun: list[CheckResult]) -> int:
    """A target that stopped answering mid-run is said so once, with the load at that moment; given
    ``--outage-wait`` seconds to answer ``/health`` again; then the checks it decided run once more, at half the start
    budget, and replace their first attempts (which each keeps in ``attempts``). pytest's exit code for the run: a
    target that stays down leaves the first attempts, and no verdict. Only for ``--target``: a bundled reference that
    stops answering is the harness's error."""
    from harness.waits import timeout_scale
    from harness.target.health import wait_for_health

    why = next((r.target_down for r in unrun if r.target_down), "") or unrun[0].message
    budget = args.max_starts or int(os.environ.get("PREFECT_CONFORMANCE_MAX_STARTS") or default_max_starts())
    half = max(1, budget // 2)
    print(f"prefect-conformance: the target stopped answering mid-run ({why}); {len(unrun)} checks could not run. "
          f"Waiting up to {args.outage_wait * timeout_scale():.0f} s for GET /health to answer again", flush=True)
    began = time.monotonic()
    try:
        wait_for_health(target.api_url, timeout=args.outage_wait, what="the target after it stopped answering",
                        hint="a server that stops answering under the suite's load (stated in the report) gets no "
                        "verdict; --max-starts lowers that load")
    except (TargetUnavailable, HarnessError, WaitTimeout) as exc:
        run_info.extra["outage"] = f"the target stopped answering mid-run ({why}) and did not answer again: {exc}"
        print(f"prefect-conformance: {run_info.extra['outage']}", flush=True)
        return 1
    back = time.monotonic() - began
    run_info.extra["outage"] = (f"the target stopped answering mid-run ({why}); it answered again after {back:.0f} s, "
                                f"and the {len(unrun)} checks it could not run ran once more at --max-starts {half}")
    print(f"prefect-conformance: it answered again after {back:.0f} s: running those {len(unrun)} checks once more, "
          f"at half the start budget (--max-starts {half})", flush=True)
    retry = argparse.Namespace(**{**vars(args), "max_starts": half})
    again = ResultCollector()
    code = run_scenarios(retry, target, run_info.run_prefix, report_dir, again, sorted(r.nodeid for r in unrun),
                         artifacts=report_dir / "artifacts" / "second-attempt")
    first = {r.id: r for r in unrun}
    for result in again.ordered():
        previous = first.get(result.id)
        if previous is not None:
            result.attempts = [*previous.attempts, f"{previous.outcome}: {previous.message}"]
            collector.results[result.id] = result
    return 1 if code in (0, 1) else code  # the verdict is read from the checks' statuses (exit_code)


def read_load_file(artifacts: Path) -> Load | None:
    """The load the run put on the target, as the plugin's start budget wrote it (None if it wrote none)."""
    try:
        figures = json.loads((artifacts / "budget" / "load.json").read_text())
    except (OSError, ValueError):
        return None
    return Load(**figures)


def judge(args: argparse.Namespace, results: list[CheckResult], expected: list, identity: str) -> list[str]:
    """Each result's status for the gate (expectations, severity, pending, intermittent) and its diagnosis, its
    messages redacted; the expectation entries that matched no check."""
    for result in results:
        result.message = redact(result.message)
        result.measured = redact(result.measured)
        if result.outcome in NOT_PASSING and (found := diagnose(result.message)) is not None:
            result.diagnosis = found.line
    history = earlier_outcomes(args.report_dir, identity)
    return expectations_file.apply(
        expected, results, strict=args.strict, history=history,
        written_by=expectations_file.written_by(args.expectations) if has_file(args.expectations) else "",
        passed_before=frozenset(cid for cid, outcomes in history.items() if "passed" in outcomes))


def write_reports(args: argparse.Namespace, report_dir: Path, run_info: RunInfo, results: list[CheckResult],
                  expected: list, *, claim, coverage: Coverage | None, diff, stale: list[str], code: int) -> None:
    """results.json, junit.xml, report.md and report.html; the badge, the GitHub summary and the rewritten
    expectations file where asked for."""
    artifacts = report_dir / "artifacts"
    write_results_json(report_dir / "results.json", run_info, results, claim=claim.as_dict(),
                       coverage=coverage.as_dict() if coverage else None)
    (report_dir / "junit.xml").write_text(render_junit(run_info, results, claim=claim))
    (report_dir / "report.md").write_text(render_markdown(run_info, results, diff=diff, stale=stale, artifacts_dir=artifacts,
                                                          claim=claim, coverage=coverage))
    (report_dir / "report.html").write_text(render_html(run_info, results, diff=diff, stale=stale, artifacts_dir=artifacts,
                                                        claim=claim, coverage=coverage))
    if args.badge:
        args.badge.parent.mkdir(parents=True, exist_ok=True)
        args.badge.write_text(render_badge(claim))
    if args.github_summary:
        with open(args.github_summary, "a", encoding="utf-8") as summary:
            summary.write(render_summary(run_info, results, claim=claim, diff=diff, exit_code=code))
    if args.update_expectations:
        write_expectations(args.expectations, expected, results, run_info.target_url)


def announce(results: list[CheckResult], run_info: RunInfo, report_dir: Path, *, claim, coverage: Coverage | None,
             diff) -> None:
    """The run's last lines: its claim, its API coverage, the load it put on the target, then the summary."""
    print(f"prefect-conformance: claim: {claim.line}", flush=True)
    if coverage is not None:
        print(f"prefect-conformance: API coverage: {coverage.line}", flush=True)
    if "load" in run_info.extra:
        print(f"prefect-conformance: load: {run_info.extra['load']}", flush=True)
    print_summary(results, run_info, report_dir, diff)


def load_expectation_entries(args: argparse.Namespace) -> list[expectations_file.Expectation]:
    if not args.expectations:
        return []
    if args.update_expectations and not args.expectations.exists():
        return []  # the file is being created from this run
    return expectations_file.load_expectations(args.expectations)


def api_coverage(api_url: str, run_prefix: str, artifacts: Path) -> Coverage:
    """The target's routes of the pinned release's OpenAPI document, probed without side effects, and what the real
    clients of the run called (:mod:`harness.checks.coverage`)."""
    from harness.reference.openapi import openapi_document
    from harness.reference.releases import pinned

    reference = pinned()
    try:
        document = openapi_document(reference.version, reference.python)
    except HarnessError as exc:
        return Coverage([], f"Prefect {reference.version}'s OpenAPI document: {exc}")
    coverage = probe(api_url, document, f"{run_prefix}-coverage-probe")
    add_client_usage(coverage, artifacts)
    return coverage


def has_file(path: Path | None) -> bool:
    return bool(path) and path.exists()


def write_expectations(path: Path, previous: list, results: list[CheckResult], target_url: str) -> None:
    entries = expectations_file.updated(previous, results)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(expectations_file.render(entries, target_url))
    print(f"prefect-conformance: wrote {len(entries)} expected failures to {path}", flush=True)


def rerun_selection(stored) -> list[str]:
    """pytest node ids of the checks that did not pass in a stored run."""
    return sorted(r.nodeid for r in stored.checks.values() if r.outcome in GATE_FAILING and r.nodeid)


def print_summary(results: list[CheckResult], run_info: RunInfo, report_dir: Path, diff) -> None:
    counts = summarize(results)
    for r in results:
        if r.status == "unexpected-pass":
            print(f"prefect-conformance: UNEXPECTED PASS {r.id} (listed as failing: {r.expectation})", flush=True)
    named = {}  # one line per mistake (its name is the line's start), with its first example
    for r in results:
        if r.diagnosis and r.status in GATE_FAILING:
            named.setdefault(r.diagnosis.split(":", 1)[0], r.diagnosis)
    for line in named.values():
        print(f"prefect-conformance: diagnosis: {line}", flush=True)
    if diff is not None and (diff.new_failures or diff.fixed):
        print("prefect-conformance: " + render_diff_text(diff).replace("\n", "\nprefect-conformance: "), flush=True)
    print(
        "prefect-conformance: "
        + ", ".join(f"{counts[s]} {s}" for s in counts if counts[s] or s in ("passed", "failed"))
        + f" in {run_info.duration:.1f}s; reports in {report_dir}",
        flush=True,
    )


def compare(args: argparse.Namespace) -> int:
    before, after = read_results_json(args.before), read_results_json(args.after)
    diff = diff_runs(before, list(after.checks.values()))
    print(render_diff_text(diff))
    return EXIT_FAILED if diff.new_failures else EXIT_PASSED


def make_reference(args: argparse.Namespace, report_dir: Path):
    """The bundled reference in the requested mode, of ``--reference-version`` (default the pinned release), not
    yet started; the caller starts and stops it."""
    mode = args.reference
    version = args.reference_version or PREFECT_REFERENCE_VERSION
    print(f"prefect-conformance: starting the reference server (Prefect {version}, {mode})", flush=True)
    workdir = report_dir / "reference"
    if mode.startswith("docker"):
        from harness.reference.docker import DEFAULT_POSTGRES_IMAGE, DockerReference, official_image

        postgres = (args.postgres_image or DEFAULT_POSTGRES_IMAGE) if mode == "docker-postgres" else None
        reference = DockerReference(workdir, image=args.reference_image or official_image(version),
                                    postgres_image=postgres, run_id=os.environ.get(RUN_MARKER_ENV, ""),
                                    version=version)
    else:
        from harness.reference.local import LocalReference

        reference = LocalReference(workdir=workdir, db_url=args.reference_db_url if mode == "local-postgres" else "",
                                   release=release(args.reference_version))
    return reference


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


def selected_features(markers: str | None, selection: Sequence[str] | None = None, *, differential: bool = False) -> list[str]:
    """The features (one scenario module each) a run will execute: those of the ``selection``'s node ids, or those
    the ``-m`` expression picks (all, when there is none). ``-k`` is not looked at: it only ever selects fewer."""
    features = [f for f in FEATURE_ORDER if (differential or f != "differential")
                and (f != "load" or re.search(r"\bload\b", markers or "") or selection)]
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
    the cores keeps them busy meanwhile: on 2 cores, the whole suite took 146 s with three against 173 s with two
    (2026-12-07). Not on a busy machine, whose cores are taken already, nor more than one extra: on Prefect's SQLite
    more writes at once mean more "database is locked" 503s, and the real clients back off 2, 4 and 8 s from them
    (four processes on 2 cores, 2026-11-29: a Runner's ``POST /deployments/`` refused three times in a row while the
    scheduling checks wrote). The real clients' starts are bounded apart from this (``--max-starts``)."""
    if str(parallel) != "auto":
        return int(parallel)
    cores = os.cpu_count() or 1
    spare = 1 if os.getloadavg()[0] < cores else 0
    return max(1, min(len(modules), cores + spare))


def plugin_option() -> list[str]:
    """``-p harness.plugin`` when pytest will not load the plugin through its ``pytest11`` entry point itself."""
    return [] if plugin_autoloaded() else ["-p", "harness.plugin"]


def exit_code(pytest_code: int, counts: dict[str, int], *, strict: bool = False) -> int:
    """Map pytest's exit code and the checks' statuses onto the suite's 0/1/2 contract."""
    if pytest_code == 5 or sum(counts.values()) == 0:
        print("prefect-conformance: no checks were selected; nothing was verified", file=sys.stderr)
        return EXIT_NO_VERDICT
    if pytest_code not in (0, 1) or counts.get("error"):
        return EXIT_NO_VERDICT
    failing = counts.get("failed", 0) + counts.get("unsupported", 0) + (counts.get("unexpected-pass", 0) if strict else 0)
    return EXIT_FAILED if failing else EXIT_PASSED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
