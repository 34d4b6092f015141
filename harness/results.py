"""Per-check results of a run, and the reports written from them.

A *check* is one pytest test item in ``scenarios/``. Its id is stable across releases of the suite, so
expectation files and baselines survive upgrades:

    <feature>/<test function without "test_">[<parameter id>]

where ``feature`` is the scenario module's name without ``test_`` (``scenarios/test_timestamps.py`` ->
``timestamps``). A check that is renamed keeps its old id.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

import pytest

from harness.proxy import Exchange, condense

RESULTS_SCHEMA_VERSION = 1

#: Outcomes of one check. ``error`` means the harness could not reach a verdict.
STATUSES = ("passed", "failed", "error", "skipped")


@dataclass
class CheckResult:
    id: str
    feature: str
    scenario: str
    status: str
    message: str = ""
    duration: float = 0.0
    nodeid: str = ""


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
    extra: dict[str, Any] = field(default_factory=dict)


def check_id(nodeid: str) -> tuple[str, str]:
    """(check id, feature) for a pytest node id such as ``scenarios/test_timestamps.py::test_x[p]``."""
    module, _, name = nodeid.partition("::")
    feature = re.sub(r"^test_", "", Path(module).stem)
    name = name.split("::")[-1]
    return f"{feature}/{re.sub(r'^test_', '', name)}", feature


class ResultCollector:
    """A pytest plugin (registered by the CLI on the controlling process) that gathers one result per check."""

    def __init__(self) -> None:
        self.results: dict[str, CheckResult] = {}

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        cid, feature = check_id(report.nodeid)
        result = self.results.get(cid)
        if result is None:
            scenario = report.nodeid.split("::")[-1]
            result = self.results[cid] = CheckResult(cid, feature, scenario, "passed", nodeid=report.nodeid)
        result.duration += report.duration
        harness_error = dict(report.user_properties).get("harness_error")
        if report.skipped and result.status == "passed":
            result.status = "skipped"
            result.message = _skip_reason(report)
        elif report.failed:
            result.status = "error" if (report.when != "call" or harness_error) else "failed"
            result.message = _failure_message(report)

    def ordered(self) -> list[CheckResult]:
        return sorted(self.results.values(), key=lambda r: r.id)


def _skip_reason(report: pytest.TestReport) -> str:
    if isinstance(report.longrepr, tuple):
        return str(report.longrepr[2]).removeprefix("Skipped: ")
    return str(report.longrepr or "")


def _failure_message(report: pytest.TestReport) -> str:
    crash = getattr(report.longrepr, "reprcrash", None)
    message = crash.message if crash is not None else str(report.longrepr)
    message = re.sub(r"^(harness\.errors\.)?(UnexpectedAnswer|WaitTimeout|AssertionError): ", "", message)
    # pytest appends its assertion introspection after the first line of a message; keep what we wrote.
    return message.split("\nassert ")[0].strip()


def summarize(results: Iterable[CheckResult]) -> dict[str, int]:
    counts = {status: 0 for status in STATUSES}
    for result in results:
        counts[result.status] = counts.get(result.status, 0) + 1
    return counts


def write_results_json(path: Path, run: RunInfo, results: list[CheckResult]) -> None:
    document = {
        "schema_version": RESULTS_SCHEMA_VERSION,
        "run": asdict(run),
        "summary": summarize(results),
        "checks": [asdict(r) for r in results],
    }
    path.write_text(json.dumps(document, indent=2) + "\n")


def load_transcript(path: Path) -> list[Exchange]:
    return [Exchange(**json.loads(line)) for line in path.read_text().splitlines() if line.strip()]


def transcript_sections(artifacts_dir: Path | None) -> list[str]:
    """Markdown for every actor transcript under ``artifacts_dir``: requests per endpoint, collapsed."""
    if artifacts_dir is None or not artifacts_dir.exists():
        return []
    lines: list[str] = []
    for path in sorted(artifacts_dir.glob("*/*.transcript.jsonl")):
        exchanges = load_transcript(path)
        feature, actor = path.parent.name, path.name.removesuffix(".transcript.jsonl")
        lines += [
            f"<details><summary><code>{feature}</code>: {actor}, {len(exchanges)} requests "
            f"(<code>{path.relative_to(artifacts_dir.parent)}</code>)</summary>",
            "",
            "| request | answers | count |",
            "|---|---|---|",
        ]
        lines += [f"| `{endpoint}` | {statuses} | {count} |" for endpoint, statuses, count in condense(exchanges)]
        lines += ["", "</details>", ""]
    return lines


def render_markdown(run: RunInfo, results: list[CheckResult], artifacts_dir: Path | None = None) -> str:
    counts = summarize(results)
    verdict = "PASS" if counts["failed"] == 0 and counts["error"] == 0 else "FAIL"
    lines = [
        f"# Prefect conformance: {verdict}",
        "",
        f"- Target: `{run.target_url}` ({run.target_kind}), version `{run.target_version}`",
        f"- Suite {run.suite_version}, clients from Prefect {run.client_version}, run prefix `{run.run_prefix}`",
        f"- Started {run.started}, took {run.duration:.1f} s",
        "",
        "| " + " | ".join(STATUSES) + " |",
        "|" + "---|" * len(STATUSES),
        "| " + " | ".join(str(counts[s]) for s in STATUSES) + " |",
        "",
        "## By feature",
        "",
        "| feature | passed | failed | error | skipped |",
        "|---|---|---|---|---|",
    ]
    by_feature: dict[str, list[CheckResult]] = {}
    for result in results:
        by_feature.setdefault(result.feature, []).append(result)
    for feature, items in sorted(by_feature.items()):
        c = summarize(items)
        lines.append(f"| {feature} | {c['passed']} | {c['failed']} | {c['error']} | {c['skipped']} |")
    problems = [r for r in results if r.status in ("failed", "error")]
    if problems:
        lines += ["", "## Failures", ""]
        for result in problems:
            lines += [f"### `{result.id}` ({result.status})", "", "```", result.message.strip(), "```", ""]
    transcripts = transcript_sections(artifacts_dir)
    if transcripts:
        lines += ["", "## What the real clients sent", "", "Recorded by the proxy in front of each actor.", ""] + transcripts
    return "\n".join(lines).rstrip() + "\n"


def prepare_report_dir(root: Path, keep: int = 20) -> Path:
    """Move the previous ``latest`` run into a dated folder and return an empty ``latest``.

    At most ``keep`` dated folders are kept; the oldest go first.
    """
    root.mkdir(parents=True, exist_ok=True)
    latest = root / "latest"
    if latest.exists():
        stamp = _run_stamp(latest)
        destination = root / stamp
        suffix = 1
        while destination.exists():
            destination = root / f"{stamp}-{suffix}"
            suffix += 1
        latest.rename(destination)
    dated = sorted(p for p in root.iterdir() if p.is_dir() and re.match(r"^\d{8}-\d{6}", p.name))
    for old in dated[:-keep] if keep else dated:
        shutil.rmtree(old, ignore_errors=True)
    latest.mkdir()
    return latest


def _run_stamp(folder: Path) -> str:
    try:
        started = json.loads((folder / "results.json").read_text())["run"]["started"]
        return dt.datetime.fromisoformat(started).strftime("%Y%m%d-%H%M%S")
    except (OSError, ValueError, KeyError, TypeError):
        return dt.datetime.fromtimestamp(folder.stat().st_mtime, dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
