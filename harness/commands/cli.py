"""``prefect-conformance``: run the conformance scenarios against a target and write the reports.

Exit codes (CI gates rely on the distinction):

* 0 - every selected check passed, or failed as the expectations file says it will;
* 1 - a conformance failure or unsupported endpoint not listed in the expectations file (a regression);
* 2 - no verdict: usage error, unreachable or non-Prefect target, interrupted, or the harness itself broke.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Sequence

from harness.commands import checks as checks_command
from harness.commands import matrix as matrix_command
from harness.commands.conformance import EXIT_NO_VERDICT, compare, run
from harness.commands.options import absolute_path
from harness.commands.run_options import add_run_parser
from harness.errors import HarnessError, TargetUnavailable
from harness.locations import default_report_dir
from harness.processes import REGISTRY_ENV, RUN_MARKER_ENV, install_termination_handler, reap_registry, stop_all


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="prefect-conformance",
        description="Check that real Prefect clients work against a Prefect-compatible server.",
        epilog="Exit codes: 0 every check passed or failed as its expectations file says, 1 conformance "
        "failures or unsupported endpoints (regressions), 2 no verdict (usage error, unreachable target, "
        "harness error). See `prefect-conformance run --help` for every option.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    add_run_parser(commands)
    compare = commands.add_parser(
        "compare",
        help="compare two results.json files",
        description="Print new failures, fixes and still-failing checks between two runs. Exit 1 if there are new "
        "failures.",
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


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
