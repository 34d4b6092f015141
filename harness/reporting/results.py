"""Per-check results of a run: what happened (the *outcome*) and what it means for the gate (the *status*).

A *check* is one pytest test item in ``scenarios/``. Its id is stable across releases of the suite, so
expectation files and baselines survive upgrades:

    <feature>/<test function without "test_">[<parameter id>]

where ``feature`` is the scenario module's name without ``test_`` (``scenarios/test_timestamps.py`` ->
``timestamps``). A check that is renamed keeps its old id: the test carries
``@pytest.mark.check_id("feature/old_name")``, which replaces the part before any ``[parameter]``.

Outcomes (from the run alone): passed, failed, unsupported, skipped, n/a, error. ``n/a``: the check does not apply
to this pair of server and client releases (Prefect itself differs there; see ``harness/releases.toml``).
Statuses (after the expectations file): the same, plus expected-failure (listed, and not passing),
unexpected-pass (listed, but passing), warning (a ``should`` check that did not pass; see
:mod:`harness.reporting.catalogue`) and pending (a check newer than the suite that wrote the expectations file,
not passing, and never passed against this target). The gate fails on failed, unsupported and error.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable

import pytest

from harness.features import FEATURE_ORDER
from harness.reporting.catalogue import load_catalogue

#: Version of the results.json layout; bumped on any incompatible change (see docs/results-schema.md).
RESULTS_SCHEMA_VERSION = 1


STATUSES = (
    "passed",
    "failed",
    "unsupported",
    "expected-failure",
    "unexpected-pass",
    "warning",
    "pending",
    "skipped",
    "n/a",
    "error",
)
#: How a skip reason starts when the check does not apply to the releases in this run (status ``n/a``).
NOT_APPLICABLE_PREFIX = "n/a: "
#: Statuses that fail the gate (exit 1, or 2 for error); as outcomes, the same names mean "did not pass".
GATE_FAILING = frozenset({"failed", "unsupported", "error"})
NOT_PASSING = frozenset({"failed", "unsupported"})


@dataclass
class CheckResult:
    id: str
    feature: str
    scenario: str
    outcome: str
    status: str = ""
    message: str = ""
    duration: float = 0.0
    nodeid: str = ""
    expectation: str = ""  # the reason given in the expectations file, when the check is listed
    description: str = ""  # what the check proves: its docstring's first paragraph, parameters filled in
    measured: str = ""  # what the check measured of the target, whatever its outcome (the target's clock, say)
    profile: str = ""  # the catalogue's (harness/catalogue.toml): the profile it counts in, its severity, since when
    severity: str = "must"
    since: str = ""
    #: The classic mistake the failure's evidence proves, in one line (:mod:`harness.reporting.diagnoses`), or "".
    diagnosis: str = ""
    #: Why the target was taken for gone during this check (its ``GET /health`` after the failure), or "".
    target_down: str = ""
    #: Earlier attempts of this check in the run, each "<outcome>: <message>" (a target that stopped answering and
    #: came back has the checks it could not run run once more).
    attempts: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.status = self.status or self.outcome


@dataclass
class RunInfo:
    target_url: str
    target_kind: str
    target_version: str
    suite_version: str
    client_version: str
    run_prefix: str
    started: str
    finished: str = ""
    duration: float = 0.0
    expectations_file: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def check_id(nodeid: str, pinned: str = "") -> tuple[str, str]:
    """(check id, feature) for a pytest node id such as ``scenarios/test_timestamps.py::test_x[p]``.

    A feature's checks may be split across modules named ``test_<feature>__<part>.py`` (so that pytest's processes
    run them side by side); their ids are the feature's all the same. ``pinned`` is the value of a ``check_id``
    marker: the id a renamed check keeps.
    """
    module, _, name = nodeid.partition("::")
    name = name.split("::")[-1]
    parameter = name[name.index("[") :] if "[" in name else ""
    if pinned:
        return pinned + parameter, pinned.split("/", 1)[0]
    feature = re.sub(r"^test_|__.*$", "", Path(module).stem)
    return f"{feature}/{re.sub(r'^test_', '', name)}", feature


# --- the outcome contract between the plugin (in pytest's workers) and the collector (in the CLI's process) ---

#: Properties the plugin attaches to each pytest report; the collector reads them. Written and read only here.
CHECK_ID, OUTCOME, DESCRIPTION, TARGET_DOWN = "check_id", "outcome", "description", "target_down"
#: What a check measured of the target, stated in the reports whatever its outcome: a scenario records it with
#: pytest's ``record_property(MEASURED, text)``.
MEASURED = "measured"


def attach(report: pytest.TestReport, key: str, value: str) -> None:
    """Record one property of the check on ``report`` (it travels from xdist workers with the report)."""
    report.user_properties.append((key, value))


def attached(report: pytest.TestReport) -> dict[str, str]:
    return dict(report.user_properties)


def describe(item: pytest.Item) -> str:
    """The first paragraph of a check's docstring, with its parameters filled in (``{fmt.description}``)."""
    import inspect

    doc = inspect.getdoc(getattr(item, "function", None)) or ""
    first = " ".join(doc.split("\n\n")[0].split())
    params = getattr(getattr(item, "callspec", None), "params", {})
    try:
        return first.format(**params)
    except (KeyError, IndexError, AttributeError, ValueError):  # braces that are not placeholders
        return first


class ResultCollector:
    """A pytest plugin (registered by the CLI on the controlling process) that gathers one result per check."""

    def __init__(self) -> None:
        self.results: dict[str, CheckResult] = {}

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        properties = attached(report)
        cid, feature = check_id(report.nodeid, properties.get(CHECK_ID, ""))
        result = self.results.get(cid)
        if result is None:
            scenario = report.nodeid.split("::")[-1]
            known = load_catalogue()
            result = self.results[cid] = CheckResult(
                cid,
                feature,
                scenario,
                "passed",
                nodeid=report.nodeid,
                profile=known.profile_of(cid, feature),
                severity=known.severity_of(cid)[0],
                since=known.since_of(cid),
            )
        result.duration += report.duration
        result.description = result.description or properties.get(DESCRIPTION, "")
        result.measured = result.measured or properties.get(MEASURED, "")
        if report.skipped and result.outcome == "passed":
            reason = _skip_reason(report)
            not_applicable = reason.startswith(NOT_APPLICABLE_PREFIX)
            result.outcome = result.status = "n/a" if not_applicable else "skipped"
            result.message = reason.removeprefix(NOT_APPLICABLE_PREFIX)
        elif report.failed and result.outcome in ("passed", "skipped"):
            # The plugin classified the exception; a failure without a class is a harness error.
            result.outcome = result.status = properties.get(OUTCOME, "error")
            result.message = _failure_message(report)
        if TARGET_DOWN in properties:
            result.target_down = properties[TARGET_DOWN]

    def ordered(self) -> list[CheckResult]:
        return sorted(self.results.values(), key=lambda r: r.id)


def _skip_reason(report: pytest.TestReport) -> str:
    if isinstance(report.longrepr, tuple):
        return str(report.longrepr[2]).removeprefix("Skipped: ")
    return str(report.longrepr or "")


def _failure_message(report: pytest.TestReport) -> str:
    crash = getattr(report.longrepr, "reprcrash", None)
    message = crash.message if crash is not None else str(report.longrepr)
    message = re.sub(
        r"^(harness\.errors\.)?(UnexpectedAnswer|Unsupported|WaitTimeout|Hopeless|TargetUnavailable|"
        r"AssertionError): ",
        "",
        message,
    )
    # pytest appends its assertion introspection after the first line of a message; keep what we wrote.
    return message.split("\nassert ")[0].strip()


def summarize(results: Iterable[CheckResult]) -> dict[str, int]:
    counts = {status: 0 for status in STATUSES}
    for result in results:
        counts[result.status] = counts.get(result.status, 0) + 1
    return counts


def write_results_json(
    path: Path,
    run: RunInfo,
    results: list[CheckResult],
    claim: dict[str, Any] | None = None,
    coverage: dict[str, Any] | None = None,
) -> None:
    document = {
        "schema_version": RESULTS_SCHEMA_VERSION,
        "run": asdict(run),
        "summary": summarize(results),
        **({"claim": claim} if claim is not None else {}),
        "checks": [asdict(r) for r in results],
        **({"coverage": coverage} if coverage is not None else {}),
    }
    path.write_text(json.dumps(document, indent=2) + "\n")


@dataclass
class StoredRun:
    """A results.json read back (for --compare, --rerun-failed and the previous-run section of reports)."""

    path: Path
    run: dict[str, Any]
    checks: dict[str, CheckResult]


def read_results_json(path: Path) -> StoredRun:
    from harness.errors import HarnessError

    try:
        document = json.loads(path.read_text())
        known = {f.name for f in fields(CheckResult)}
        checks = {c["id"]: CheckResult(**{k: v for k, v in c.items() if k in known}) for c in document["checks"]}
        return StoredRun(path, document.get("run", {}), checks)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise HarnessError(
            f"Cannot read results file {path}: {exc}. Hint: pass a results.json written by this suite."
        ) from None


def verdict(results: list[CheckResult]) -> str:
    return "FAIL" if any(r.status in GATE_FAILING for r in results) else "PASS"


def by_feature(results: list[CheckResult]) -> list[tuple[str, list[CheckResult]]]:
    groups: dict[str, list[CheckResult]] = {}
    for result in results:
        groups.setdefault(result.feature, []).append(result)
    order = {f: i for i, f in enumerate(FEATURE_ORDER)}
    return sorted(groups.items(), key=lambda item: (order.get(item[0], len(order)), item[0]))
