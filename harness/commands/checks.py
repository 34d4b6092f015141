"""``prefect-conformance checks``: the catalogue of checks, from the scenarios themselves.

The checks are collected as a run collects them (pytest, the scenarios, ``-m``/``-k``/``--profiles``), nothing is
run and no target is needed; each is described by :mod:`harness.reporting.catalogue`.
"""

from __future__ import annotations

import argparse
import sys

import pytest

from harness.commands.scenarios_run import PYTEST_INI, plugin_option
from harness.errors import HarnessError
from harness.locations import scenarios_dir
from harness.reporting.catalogue import (
    CheckInfo,
    applies_to,
    load_catalogue,
    render_catalogue_json,
    render_catalogue_markdown,
)
from harness.reporting.results import check_id, describe


class _Collected:
    """A pytest plugin that keeps the checks the collection selected."""

    def __init__(self) -> None:
        self.checks: list[CheckInfo] = []

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        catalogue = load_catalogue()
        for item in session.items:
            marker = item.get_closest_marker("check_id")
            cid, feature = check_id(item.nodeid, marker.args[0] if marker else "")
            self.checks.append(catalogue.info(cid, feature, describe(item), applies_to(cid)))


def collect_checks(keyword: str | None = None, markers: str | None = None) -> list[CheckInfo]:
    """Every check of the scenarios (those ``-k``/``-m`` select), in the order a report lists them."""
    collected = _Collected()
    root = scenarios_dir().parent
    args = [
        str(scenarios_dir()),
        f"--rootdir={root}",
        "-c",
        str(PYTEST_INI),
        *plugin_option(),
        "--collect-only",
        "-p",
        "no:cacheprovider",
        "-p",
        "no:terminal",
        "--reference-url=none",
    ]  # the differential checks are listed too (nothing runs)
    args += ["-k", keyword] if keyword else []
    args += ["-m", markers] if markers else []
    code = pytest.main(args, plugins=[collected])
    if code not in (0, 5):
        raise HarnessError(
            f"collecting the scenarios failed (pytest exit {code}); run pytest --collect-only scenarios to see why"
        )
    unique = {c.id: c for c in collected.checks}
    return sorted(unique.values(), key=lambda c: c.id)


def add_parser(commands: argparse._SubParsersAction) -> None:
    checks = commands.add_parser(
        "checks",
        help="list every check: its profile, severity, since, reference and what it proves",
        description="List the catalogue of checks (no target needed; nothing runs). docs/checks.md is this "
        "command's --format md.",
    )
    checks.add_argument(
        "--format",
        choices=("text", "md", "json"),
        default="text",
        help="text (a line each, the default), md (docs/checks.md) or json",
    )
    checks.add_argument("-m", dest="markers", metavar="EXPR", help="only these feature areas, as for run")
    checks.add_argument("-k", dest="keyword", metavar="EXPR", help="only checks whose id matches, as for run")
    checks.add_argument("--profiles", metavar="NAMES", help="only the checks of these profiles (comma-separated)")


def list_checks(args: argparse.Namespace) -> int:
    from harness.reporting.catalogue import parse_profiles

    try:
        profiles = parse_profiles(args.profiles) if args.profiles else None
    except ValueError as exc:
        raise HarnessError(f"--profiles {args.profiles!r}: {exc}.") from None
    found = [c for c in collect_checks(args.keyword, args.markers) if profiles is None or c.profile in profiles]
    if args.format == "json":
        sys.stdout.write(render_catalogue_json(found))
    elif args.format == "md":
        sys.stdout.write(render_catalogue_markdown(found))
    else:
        for c in found:
            print(f"{c.id}  [{c.profile}, {c.severity}, since {c.since}]")
        print(f"{len(found)} checks", file=sys.stderr)
    return 0
