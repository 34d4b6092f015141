"""The options of ``prefect-conformance run``: the target or the bundled reference, the selection, the load budget,
the waits that describe the target's loops, the clients' release, and the CI gate."""

from __future__ import annotations

import argparse
import os

from harness import PREFECT_REFERENCE_VERSION
from harness.checks.horizon import SCHEDULER_LIMITS_ENV
from harness.commands.options import absolute_path, parallel_option
from harness.features import FEATURE_ORDER
from harness.reference.releases import CLIENT_VERSION_ENV, REFERENCE_VERSION_ENV
from harness.reporting.catalogue import profile_names
from harness.waits import PREFECT_SCHEDULER_INTERVAL, SCHEDULER_INTERVAL_ENV, SERVICE_LOOPS_ENV, TIMEOUT_SCALE_ENV

REFERENCE_MODES = ("local", "local-postgres", "docker", "docker-postgres")

#: How long a target that stopped answering mid-run is given to answer again (scaled by --timeout-scale):
#: ``--outage-wait``'s default.
RECOVERY_TIMEOUT = 120.0


def add_run_parser(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``run`` and every option of it to the command line's subcommands."""
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
    run.add_argument(
        "--reference-version",
        metavar="X.Y.Z",
        default=os.environ.get(REFERENCE_VERSION_ENV) or None,
        help=f"run the bundled reference from this Prefect release instead of {PREFECT_REFERENCE_VERSION}: "
        "installed on first use like --client-version, or its official image (built here from Debian "
        f"and PyPI packages where the engine cannot pull) for the docker modes (also ${REFERENCE_VERSION_ENV})",
    )
    run.add_argument(
        "--reference-image",
        metavar="IMAGE",
        default=os.environ.get("REFERENCE_IMAGE") or None,
        help="Prefect image for the docker references (default prefecthq/prefect:3.9.1-python3.11, or its "
        "equivalent built here from Debian and PyPI packages when the engine cannot pull it; "
        "also $REFERENCE_IMAGE)",
    )
    run.add_argument(
        "--postgres-image",
        metavar="IMAGE",
        default=os.environ.get("POSTGRES_IMAGE") or None,
        help="PostgreSQL image for docker-postgres (default postgres:15; also $POSTGRES_IMAGE)",
    )
    run.add_argument(
        "--reference-db-url",
        metavar="URL",
        default=os.environ.get("REFERENCE_DB_URL") or None,
        help="postgresql+asyncpg://... database that local-postgres may own (also $REFERENCE_DB_URL)",
    )
    run.add_argument(
        "--differential",
        nargs="?",
        const="bundled",
        default=None,
        metavar="REFERENCE_URL",
        help="also run the differential checks: one sequence of client calls sent to the target and to "
        "Prefect's own server, answers compared. The bundled reference is started beside the target "
        "(with no --target, it is compared with itself), or give the API root of a running Prefect server",
    )
    run.add_argument(
        "--restart-command",
        metavar="CMD",
        default=os.environ.get("PREFECT_CONFORMANCE_RESTART_COMMAND"),
        help="a shell command that restarts the target on its own data, for the durability checks, which "
        "restart it once, after every other check has finished (the bundled reference restarts itself; "
        "also $PREFECT_CONFORMANCE_RESTART_COMMAND)",
    )
    run.add_argument(
        "--report-dir",
        type=absolute_path,
        default=None,
        help="where reports go; a relative path is taken from the current directory (default: "
        "$PREFECT_CONFORMANCE_REPORT_DIR, else reports/ of the suite's checkout, or "
        "./prefect-conformance-reports/ when installed)",
    )
    run.add_argument(
        "-k", dest="keyword", metavar="EXPR", help="only checks whose id matches this pytest -k expression"
    )
    features = ", ".join(f for f in FEATURE_ORDER if f != "differential")
    run.add_argument(
        "-m",
        dest="markers",
        metavar="EXPR",
        help=f"only these feature areas ({features}; differential "
        "with --differential), e.g. 'timestamps or scheduling'",
    )
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
    gate.add_argument(
        "--strict",
        action="store_true",
        help="fail the gate on `should` checks too (by default their failures are warnings; see "
        "`prefect-conformance checks` for each check's severity and why)",
    )
    gate.add_argument(
        "--profiles",
        metavar="NAMES",
        default=None,
        help="run and claim only these profiles, e.g. core,workers (see `prefect-conformance checks`; "
        f"profiles: {', '.join(profile_names())})",
    )
    gate.add_argument(
        "--github-summary",
        nargs="?",
        type=absolute_path,
        metavar="FILE",
        default=None,
        const=os.environ.get("GITHUB_STEP_SUMMARY") or "",
        help="append a screenful of Markdown (the verdict, the claim, a row per feature, new failures "
        "and fixes, the first causes) to FILE, by default $GITHUB_STEP_SUMMARY (a GitHub Actions job's "
        "summary page)",
    )
    gate.add_argument(
        "--badge",
        type=absolute_path,
        metavar="FILE",
        default=None,
        help="also write the claim as a shields.io endpoint JSON to FILE, for a README badge",
    )
    gate.add_argument(
        "--strict-expectations",
        action="store_true",
        help="fail the gate on unexpected passes too, so the expectations file is kept current",
    )
    gate.add_argument(
        "--compare",
        type=absolute_path,
        metavar="RESULTS_JSON",
        help="report new failures, fixes and still-failing checks against an earlier results.json "
        "(default: the newest earlier run in REPORT_DIR against the same target)",
    )
    gate.add_argument(
        "--rerun-failed",
        type=absolute_path,
        metavar="RESULTS_JSON",
        help="run only the checks that failed, were unsupported or errored in that results.json",
    )
    run.add_argument("-v", "--verbose", action="store_true", help="show each check as it runs")
    run.add_argument(
        "pytest_args", nargs="*", metavar="-- PYTEST_ARG", help="extra arguments passed to pytest after --"
    )
    return run
