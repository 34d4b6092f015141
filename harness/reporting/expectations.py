"""Per-target expectation files: the known failures of a server, so the gate fails only on regressions.

Modelled on web-platform-tests' expectation files and test262's per-engine status files. The file is TOML:

    # Known failures of prefect-conformance against my-server.
    [expected."timestamps/input_format[naive]"]
    outcome = "fail"            # or "unsupported"
    reason = "naive timestamps are rejected"
    link = "https://tracker.example/issue/12"   # optional

Keys are check ids (see :mod:`harness.reporting.results`); ``*`` matches any run of characters (``"worker/*"``,
``"timestamps/input_format[*]"``) and nothing else is special, so the brackets of ids need no escaping. A listed
check that fails (or is unsupported) is an *expected failure* and does not fail the gate; a listed check that
passes is an *unexpected pass*, reported prominently so the entry can be removed. ``outcome = "intermittent"``
accepts either, for a check the author knows flaps; the report counts how often it failed.

The file also says which suite version wrote it (``[suite] version = "0.2.0"``; a file without it was written
before 0.2.0, so by 0.1.0). A check that came in a later version (the catalogue's ``since``) is *pending* against
it while it does not pass and never passed against this target: reported, not gating, as Pact's pending pacts
are, so upgrading the suite never turns a port's CI red by itself. ``--update-expectations`` records the version.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass
from pathlib import Path

from harness.errors import HarnessError
from harness.reporting.catalogue import load_catalogue, matches, newer
from harness.reporting.results import NOT_PASSING, CheckResult

EXPECTED_OUTCOMES = ("fail", "unsupported", "intermittent")
#: The suite version that wrote a file without a ``[suite]`` table: the field came in 0.2.0.
UNVERSIONED = "0.1.0"


@dataclass(frozen=True)
class Expectation:
    pattern: str
    outcome: str
    reason: str
    link: str = ""


def load_expectations(path: Path) -> list[Expectation]:
    try:
        document = tomllib.loads(path.read_text())
    except OSError as exc:
        raise HarnessError(f"Cannot read expectations file {path}: {exc.strerror}.") from None
    except tomllib.TOMLDecodeError as exc:
        raise HarnessError(f"Expectations file {path} is not valid TOML: {exc}.") from None
    entries = document.get("expected", {})
    if not isinstance(entries, dict):
        raise HarnessError(f"Expectations file {path}: [expected] must be a table of check ids.")
    expectations = []
    for pattern, entry in entries.items():
        if not isinstance(entry, dict) or entry.get("outcome", "fail") not in EXPECTED_OUTCOMES:
            raise HarnessError(
                f'Expectations file {path}: entry {pattern!r} needs outcome = "fail", "unsupported" or '
                '"intermittent" and a reason.'
            )
        expectations.append(
            Expectation(pattern, entry.get("outcome", "fail"), str(entry.get("reason", "")), str(entry.get("link", "")))
        )
    return expectations


def written_by(path: Path) -> str:
    """The suite version that wrote the expectations file (``[suite] version``; :data:`UNVERSIONED` without one)."""
    try:
        suite = tomllib.loads(path.read_text()).get("suite", {})
    except (OSError, tomllib.TOMLDecodeError):
        return UNVERSIONED  # load_expectations says what is wrong with the file
    return str(suite.get("version", UNVERSIONED)) if isinstance(suite, dict) else UNVERSIONED


def find(expectations: list[Expectation], check_id: str) -> Expectation | None:
    """The entry for ``check_id``: an exact key wins over a wildcard."""
    for expectation in expectations:
        if expectation.pattern == check_id:
            return expectation
    for expectation in expectations:
        if matches(check_id, expectation.pattern):
            return expectation
    return None


def listed_as(outcome: str) -> str:
    """The expectations file's word for a not-passing outcome (``failed`` -> ``fail``)."""
    return "unsupported" if outcome == "unsupported" else "fail"


def apply(
    expectations: list[Expectation],
    results: list[CheckResult],
    *,
    written_by: str = "",
    passed_before: frozenset[str] = frozenset(),
    strict: bool = False,
    history: dict[str, list[str]] | None = None,
) -> list[str]:
    """Set each result's status from its outcome, the expectations and the catalogue; return entries that matched
    no check.

    A listed check is an expected failure only with the outcome its entry names: a check listed as
    ``unsupported`` that now fails (the endpoint appeared and is wrong), or one listed as ``fail`` whose endpoint
    vanished, stays failing and says so. An ``intermittent`` entry accepts a pass or a failure; ``history`` (check
    id -> the outcomes of earlier runs against this target) says how often it failed. A check that did not pass and
    is not listed is ``pending`` when it came after ``written_by`` and is not in ``passed_before`` (the checks that
    passed in an earlier run against this target), else a ``warning`` when it is a ``should`` check that failed
    (unless ``strict``; an endpoint it needs that is missing stays ``unsupported``: real clients need it too).
    """
    used: set[str] = set()
    for result in results:
        expectation = find(expectations, result.id)
        result.status = result.outcome
        if expectation is not None:
            used.add(expectation.pattern)
            result.expectation = expectation.reason + (f" ({expectation.link})" if expectation.link else "")
            if expectation.outcome == "intermittent":
                outcomes = [result.outcome, *(history or {}).get(result.id, [])]
                failed = sum(1 for outcome in outcomes if outcome in NOT_PASSING)
                result.expectation = (
                    f"intermittent, failed in {failed} of the last {len(outcomes)} runs against this "
                    f"target: {result.expectation}"
                )
                if result.outcome in NOT_PASSING:
                    result.status = "expected-failure"
                continue
            if result.outcome in NOT_PASSING and listed_as(result.outcome) == expectation.outcome:
                result.status = "expected-failure"
                continue
            if result.outcome in NOT_PASSING:  # listed, but for another outcome: a change the gate must see
                result.message = (
                    f"listed as outcome = {expectation.outcome!r} in the expectations file, but the "
                    f"check {result.outcome}: {result.message}"
                )
                continue
            if result.outcome == "passed":
                result.status = "unexpected-pass"
        if result.outcome not in NOT_PASSING:
            continue
        if written_by and result.since and newer(result.since, written_by) and result.id not in passed_before:
            result.status = "pending"
            result.expectation = (
                f"new in suite {result.since}, after the expectations file's {written_by}: not "
                "gating until it passes once, or --update-expectations records it"
            )
        elif result.severity == "should" and result.outcome == "failed" and not strict:  # a missing endpoint gates
            result.status = "warning"
            result.expectation = f"should, not must: {load_catalogue().severity_of(result.id)[1]}"
    return [e.pattern for e in expectations if e.pattern not in used]


def render(expectations: list[Expectation], target: str) -> str:
    lines = [
        f"# Known failures of prefect-conformance against {target}.",
        "# Written by --update-expectations; reasons are kept when an entry stays. Check ids: see docs/checks.md.",
        "# Checks that come in later suite versions are pending against this file until they pass once.",
        "",
        "[suite]",
        f"version = {json.dumps(load_catalogue().version)}",
        "",
    ]
    for e in sorted(expectations, key=lambda e: e.pattern):
        lines.append(f"[expected.{json.dumps(e.pattern)}]")
        lines.append(f"outcome = {json.dumps(e.outcome)}")
        lines.append(f"reason = {json.dumps(e.reason)}")
        if e.link:
            lines.append(f"link = {json.dumps(e.link)}")
        lines.append("")
    return "\n".join(lines)


def updated(previous: list[Expectation], results: list[CheckResult]) -> list[Expectation]:
    """Expectations that match this run: every check that does not pass, keeping reasons of entries that stay.

    Wildcard entries are kept as they are while they still match a failing check with their outcome; a check
    whose outcome changed gets an entry of its own with the new outcome.
    """
    failing = {r.id: r for r in results if r.outcome in NOT_PASSING}
    kept: list[Expectation] = []
    covered: set[str] = set()
    ran = {r.id for r in results}
    for e in previous:
        if e.outcome == "intermittent":  # kept while it names a check that ran, whichever way it went
            if any(matches(cid, e.pattern) for cid in ran):
                kept.append(e)
                covered.update(cid for cid in failing if matches(cid, e.pattern))
            continue
        matched = [cid for cid in failing if matches(cid, e.pattern) and listed_as(failing[cid].outcome) == e.outcome]
        if matched:
            kept.append(e)
            covered.update(matched)
    for cid, result in failing.items():
        if cid in covered:
            continue
        first_line = (result.message.splitlines() or ["(no message)"])[0]
        reason = "TODO: explain. First seen: " + (first_line[:160] + ("..." if len(first_line) > 160 else ""))
        kept.append(Expectation(cid, listed_as(result.outcome), reason))
    return kept
