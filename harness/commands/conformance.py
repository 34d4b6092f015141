"""A conformance run, as its steps: check the invocation, start or preflight the target, run the scenarios (once
more for the checks an outage decided), judge against the expectations, and write the reports; and ``compare``."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from pathlib import Path

from harness import PREFECT_REFERENCE_VERSION, __version__
from harness.checks.coverage import probe
from harness.checks.horizon import SCHEDULER_LIMITS_ENV, parse_limits, prefect_limits
from harness.checks.naming import new_run_prefix
from harness.clients.budget import Load
from harness.commands.options import absolute_path
from harness.commands.outage import outage_victims, second_attempt
from harness.commands.scenarios_run import run_scenarios
from harness.errors import HarnessError, TargetUnavailable
from harness.processes import RUN_MARKER_ENV
from harness.reference.environment import FAST_SERVICE_SETTINGS, bundled_service_loops
from harness.reference.releases import check_release_number, release, scheduler_loop_seconds
from harness.reference.startup import ReferenceStartup
from harness.reporting import expectations as expectations_file
from harness.reporting.catalogue import parse_profiles
from harness.reporting.claims import make_claim, render_badge
from harness.reporting.coverage import Coverage, add_client_usage
from harness.reporting.diagnoses import diagnose
from harness.reporting.diff import diff_runs, render_diff_text
from harness.reporting.history import earlier_outcomes, prepare_report_dir, previous_results, target_identity
from harness.reporting.html import render_html
from harness.reporting.junit import render_junit
from harness.reporting.markdown import render_markdown
from harness.reporting.results import (
    GATE_FAILING,
    NOT_PASSING,
    CheckResult,
    ResultCollector,
    RunInfo,
    read_results_json,
    summarize,
    write_results_json,
)
from harness.reporting.summary import render_summary
from harness.target.credentials import redact
from harness.target.preflight import Target, preflight
from harness.waits import (
    SCHEDULER_INTERVAL_ENV,
    SERVICE_LOOPS_ENV,
    TIMEOUT_SCALE_ENV,
    parse_service_loops,
)

EXIT_PASSED, EXIT_FAILED, EXIT_NO_VERDICT = 0, 1, 2


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
    run_info = RunInfo(
        target_url=target.api_url if target else "",
        target_kind=target.kind if target else "",
        target_version=target.version if target else "",
        suite_version=__version__,
        client_version=client.version,
        run_prefix=new_run_prefix(started),
        started=started.isoformat(),
        expectations_file=str(args.expectations or ""),
    )
    pytest_code, results, coverage = execute(args, target, run_info, report_dir, selection)
    stale = judge(args, results, expected, identity)
    claim = make_claim(
        results,
        __version__,
        PREFECT_REFERENCE_VERSION,
        complete=not (args.keyword or args.markers or selection or args.pytest_args),
    )
    run_info.finished = dt.datetime.now(dt.timezone.utc).isoformat()
    run_info.duration = round(time.monotonic() - clock, 2)
    diff = diff_runs(baseline, results) if baseline is not None else None
    code = exit_code(pytest_code, summarize(results), strict=args.strict_expectations)
    write_reports(
        args, report_dir, run_info, results, expected, claim=claim, coverage=coverage, diff=diff, stale=stale, code=code
    )
    announce(results, run_info, report_dir, claim=claim, coverage=coverage, diff=diff)
    if pytest_code == 2:
        print(
            f"prefect-conformance: interrupted; the reports hold the checks that finished ({report_dir})",
            file=sys.stderr,
        )
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
        os.environ.setdefault(SERVICE_LOOPS_ENV, bundled_service_loops())
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
        raise HarnessError(
            "--reference local-postgres needs --reference-db-url postgresql+asyncpg://USER:PASSWORD@HOST/DB "
            "(a database this run may own). Hint: or use --reference docker-postgres."
        )
    if args.reference_version and args.target:
        raise HarnessError(
            "--reference-version chooses the bundled reference's release; it has no meaning with --target."
        )
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


def execute(
    args: argparse.Namespace, target: Target | None, run_info: RunInfo, report_dir: Path, selection: list[str] | None
) -> tuple[int, list[CheckResult], Coverage | None]:
    """Start the bundled reference where there is no target (and the one to compare with), run the scenarios, map
    the target's API while it is still up, and stop every server whatever happens: (pytest's exit code, the
    results, the coverage map)."""
    reference = compared = startup = coverage = None
    collector = ResultCollector()
    try:
        if target is None:
            # The reference comes up while pytest starts its workers; the checks wait for it (ReferenceStartup).
            reference = make_reference(args, report_dir)
            startup = ReferenceStartup(
                reference, kind=f"reference-{args.reference}", ready_file=report_dir / "reference" / "ready"
            )
            target = Target(
                reference.api_url, args.reference_version or PREFECT_REFERENCE_VERSION, f"reference-{args.reference}"
            )
            run_info.target_url, run_info.target_kind, run_info.target_version = (
                target.api_url,
                target.kind,
                target.version,
            )
        print(f"prefect-conformance: target {target.api_url} (version {target.version}, {target.kind})", flush=True)
        if args.differential == "bundled" and reference is None:
            compared = make_reference(args, report_dir)
            compared.start()
            args.differential = preflight(compared.api_url, kind=f"reference-{args.reference}").api_url
        elif args.differential == "bundled":
            args.differential = target.api_url
        if args.differential:
            run_info.extra["differential_reference"] = args.differential
        pytest_code = run_scenarios(
            args,
            target,
            run_info.run_prefix,
            report_dir,
            collector,
            selection,
            ready_file=startup.ready_file if startup else None,
            restart=reference,
        )
        if (
            reference is None
            and pytest_code == 1
            and args.outage_wait
            and (unrun := outage_victims(collector.ordered()))
        ):
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
        expected,
        results,
        strict=args.strict,
        history=history,
        written_by=expectations_file.written_by(args.expectations) if has_file(args.expectations) else "",
        passed_before=frozenset(cid for cid, outcomes in history.items() if "passed" in outcomes),
    )


def write_reports(
    args: argparse.Namespace,
    report_dir: Path,
    run_info: RunInfo,
    results: list[CheckResult],
    expected: list,
    *,
    claim,
    coverage: Coverage | None,
    diff,
    stale: list[str],
    code: int,
) -> None:
    """results.json, junit.xml, report.md and report.html; the badge, the GitHub summary and the rewritten
    expectations file where asked for."""
    artifacts = report_dir / "artifacts"
    write_results_json(
        report_dir / "results.json",
        run_info,
        results,
        claim=claim.as_dict(),
        coverage=coverage.as_dict() if coverage else None,
    )
    (report_dir / "junit.xml").write_text(render_junit(run_info, results, claim=claim))
    (report_dir / "report.md").write_text(
        render_markdown(
            run_info, results, diff=diff, stale=stale, artifacts_dir=artifacts, claim=claim, coverage=coverage
        )
    )
    (report_dir / "report.html").write_text(
        render_html(run_info, results, diff=diff, stale=stale, artifacts_dir=artifacts, claim=claim, coverage=coverage)
    )
    if args.badge:
        args.badge.parent.mkdir(parents=True, exist_ok=True)
        args.badge.write_text(render_badge(claim))
    if args.github_summary:
        with open(args.github_summary, "a", encoding="utf-8") as summary:
            summary.write(render_summary(run_info, results, claim=claim, diff=diff, exit_code=code))
    if args.update_expectations:
        write_expectations(args.expectations, expected, results, run_info.target_url)


def announce(
    results: list[CheckResult], run_info: RunInfo, report_dir: Path, *, claim, coverage: Coverage | None, diff
) -> None:
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
        reference = DockerReference(
            workdir,
            image=args.reference_image or official_image(version),
            postgres_image=postgres,
            run_id=os.environ.get(RUN_MARKER_ENV, ""),
            version=version,
        )
    else:
        from harness.reference.local import LocalReference

        reference = LocalReference(
            workdir=workdir,
            db_url=args.reference_db_url if mode == "local-postgres" else "",
            release=release(args.reference_version),
        )
    return reference


def exit_code(pytest_code: int, counts: dict[str, int], *, strict: bool = False) -> int:
    """Map pytest's exit code and the checks' statuses onto the suite's 0/1/2 contract."""
    if pytest_code == 5 or sum(counts.values()) == 0:
        print("prefect-conformance: no checks were selected; nothing was verified", file=sys.stderr)
        return EXIT_NO_VERDICT
    if pytest_code not in (0, 1) or counts.get("error"):
        return EXIT_NO_VERDICT
    failing = (
        counts.get("failed", 0) + counts.get("unsupported", 0) + (counts.get("unexpected-pass", 0) if strict else 0)
    )
    return EXIT_FAILED if failing else EXIT_PASSED
