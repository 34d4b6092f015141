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
passes is an *unexpected pass*, reported prominently so the entry can be removed.
"""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from harness.target.errors import HarnessError
from harness.reporting.results import NOT_PASSING, CheckResult

EXPECTED_OUTCOMES = ("fail", "unsupported")


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
                f"Expectations file {path}: entry {pattern!r} needs outcome = \"fail\" or \"unsupported\" and a reason."
            )
        expectations.append(Expectation(pattern, entry.get("outcome", "fail"), str(entry.get("reason", "")), str(entry.get("link", ""))))
    return expectations


def matches(check_id: str, pattern: str) -> bool:
    """``pattern`` is a check id in which ``*`` stands for any run of characters."""
    return re.fullmatch(".*".join(map(re.escape, pattern.split("*"))), check_id) is not None


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


def apply(expectations: list[Expectation], results: list[CheckResult]) -> list[str]:
    """Set each result's status from its outcome and the expectations; return entries that matched no check.

    A listed check is an expected failure only with the outcome its entry names: a check listed as
    ``unsupported`` that now fails (the endpoint appeared and is wrong), or one listed as ``fail`` whose endpoint
    vanished, stays failing and says so.
    """
    used: set[str] = set()
    for result in results:
        expectation = find(expectations, result.id)
        result.status = result.outcome
        if expectation is None:
            continue
        used.add(expectation.pattern)
        result.expectation = expectation.reason + (f" ({expectation.link})" if expectation.link else "")
        if result.outcome in NOT_PASSING and listed_as(result.outcome) == expectation.outcome:
            result.status = "expected-failure"
        elif result.outcome in NOT_PASSING:  # listed, but for another outcome: a change the gate must see
            result.message = (f"listed as outcome = {expectation.outcome!r} in the expectations file, but the check "
                              f"{result.outcome}: {result.message}")
        elif result.outcome == "passed":
            result.status = "unexpected-pass"
    return [e.pattern for e in expectations if e.pattern not in used]


def render(expectations: list[Expectation], target: str) -> str:
    lines = [
        f"# Known failures of prefect-conformance against {target}.",
        "# Written by --update-expectations; reasons are kept when an entry stays. Check ids: see README.",
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
    for e in previous:
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
