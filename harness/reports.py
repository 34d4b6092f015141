"""The reports of a run: ``junit.xml`` for CI, ``results.json`` for machines, ``report.md`` and a
self-contained ``report.html`` for people, and the differences from an earlier run.

Every run writes ``REPORT_DIR/latest/``; the run before it moves to ``REPORT_DIR/YYYYMMDD-HHMMSS/``.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import re
import shutil
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from harness.proxy import Exchange, condense
from harness.results import GATE_FAILING, STATUSES, CheckResult, RunInfo, StoredRun, summarize

FEATURE_ORDER = ("timestamps", "scheduling", "scheduler", "serve", "worker")


# --- the report folder -------------------------------------------------------------------------------------


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
    for old in dated_runs(root)[:-keep] if keep else dated_runs(root):
        shutil.rmtree(old, ignore_errors=True)
    latest.mkdir()
    return latest


def dated_runs(root: Path) -> list[Path]:
    """Earlier runs' folders, oldest first."""
    if not root.exists():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and re.match(r"^\d{8}-\d{6}", p.name))


def target_identity(target_url: str, target_kind: str) -> str:
    """What makes two runs comparable: the same URL, or the same kind of bundled reference (whose port varies)."""
    return target_url if target_kind == "url" else target_kind


def previous_results(root: Path, identity: str) -> Path | None:
    """The newest earlier run's results.json against the same target (see :func:`target_identity`), if any.

    A run against another server is no baseline: its failures are not this target's, and "fixed" would lie.
    """
    for folder in reversed(dated_runs(root)):
        try:
            run = json.loads((folder / "results.json").read_text())["run"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if target_identity(run.get("target_url", ""), run.get("target_kind", "")) == identity:
            return folder / "results.json"
    return None


def _run_stamp(folder: Path) -> str:
    try:
        started = json.loads((folder / "results.json").read_text())["run"]["started"]
        return dt.datetime.fromisoformat(started).strftime("%Y%m%d-%H%M%S")
    except (OSError, ValueError, KeyError, TypeError):
        return dt.datetime.fromtimestamp(folder.stat().st_mtime, dt.timezone.utc).strftime("%Y%m%d-%H%M%S")


# --- differences between runs ------------------------------------------------------------------------------


@dataclass
class RunDiff:
    """How this run differs from an earlier one, by outcome (expectations do not hide a regression here)."""

    baseline: str
    new_failures: list[str] = field(default_factory=list)
    fixed: list[str] = field(default_factory=list)
    still_failing: list[str] = field(default_factory=list)


def diff_runs(before: StoredRun, after: list[CheckResult]) -> RunDiff:
    now = {r.id: r for r in after}
    target = before.run.get("target_url", "?")
    kind = before.run.get("target_kind", "")
    started = before.run.get("started", "?")
    against = f"{target} ({kind})" if kind and kind != "url" else target
    diff = RunDiff(baseline=f"{before.path} (run of {started} against {against})")
    for cid, result in sorted(now.items()):
        old = before.checks.get(cid)
        bad_now = result.outcome in GATE_FAILING
        if old is None:
            if bad_now:  # a check the earlier run did not have, failing now
                diff.new_failures.append(cid)
        elif bad_now and old.outcome not in GATE_FAILING:
            diff.new_failures.append(cid)
        elif bad_now:
            diff.still_failing.append(cid)
        elif old.outcome in GATE_FAILING and result.outcome == "passed":
            diff.fixed.append(cid)
    return diff


def render_diff_text(diff: RunDiff) -> str:
    lines = [f"Compared with {diff.baseline}:"]
    for title, ids in (("new failures", diff.new_failures), ("fixed", diff.fixed), ("still failing", diff.still_failing)):
        lines.append(f"  {title}: {len(ids)}")
        lines += [f"    {cid}" for cid in ids]
    return "\n".join(lines)


# --- transcripts ---------------------------------------------------------------------------------------------


@dataclass
class Transcript:
    feature: str
    actor: str
    path: Path
    exchanges: list[Exchange]


def transcripts(artifacts_dir: Path | None) -> list[Transcript]:
    if artifacts_dir is None or not artifacts_dir.exists():
        return []
    found = []
    for path in sorted(artifacts_dir.glob("*/*.transcript.jsonl")):
        exchanges = [Exchange(**json.loads(line)) for line in path.read_text().splitlines() if line.strip()]
        found.append(Transcript(path.parent.name, path.name.removesuffix(".transcript.jsonl"), path, exchanges))
    return found


# --- Markdown ------------------------------------------------------------------------------------------------


def verdict(results: list[CheckResult]) -> str:
    return "FAIL" if any(r.status in GATE_FAILING for r in results) else "PASS"


def by_feature(results: list[CheckResult]) -> list[tuple[str, list[CheckResult]]]:
    groups: dict[str, list[CheckResult]] = {}
    for result in results:
        groups.setdefault(result.feature, []).append(result)
    order = {f: i for i, f in enumerate(FEATURE_ORDER)}
    return sorted(groups.items(), key=lambda item: (order.get(item[0], len(order)), item[0]))


def render_markdown(run: RunInfo, results: list[CheckResult], *, diff: RunDiff | None = None,
                    stale: list[str] | None = None, artifacts_dir: Path | None = None) -> str:
    counts = summarize(results)
    shown = [s for s in STATUSES if counts[s] or s in ("passed", "failed")]
    lines = [
        f"# Prefect conformance: {verdict(results)}",
        "",
        f"- Target: `{run.target_url}` ({run.target_kind}), version `{run.target_version}`",
        f"- Suite {run.suite_version}, clients from Prefect {run.client_version}, run prefix `{run.run_prefix}`",
        f"- Started {run.started}, took {run.duration:.1f} s"
        + (f"; expectations: `{run.expectations_file}`" if run.expectations_file else ""),
        "",
        "| " + " | ".join(shown) + " |",
        "|" + "---|" * len(shown),
        "| " + " | ".join(str(counts[s]) for s in shown) + " |",
        "",
        "## By feature",
        "",
        "| feature | " + " | ".join(shown) + " |",
        "|---|" + "---|" * len(shown),
    ]
    for feature, items in by_feature(results):
        c = summarize(items)
        lines.append(f"| {feature} | " + " | ".join(str(c[s]) for s in shown) + " |")
    if diff is not None:
        lines += ["", "## Since the previous run against this target", "", f"Compared with {diff.baseline}.", ""]
        for title, ids in (("New failures", diff.new_failures), ("Fixed", diff.fixed), ("Still failing", diff.still_failing)):
            lines.append(f"- **{title}** ({len(ids)})" + (": " + ", ".join(f"`{i}`" for i in ids) if ids else ""))
    unexpected = [r for r in results if r.status == "unexpected-pass"]
    if unexpected:
        lines += ["", "## Unexpected passes", "", "Listed as failing in the expectations file, but passing now: remove them.", ""]
        lines += [f"- `{r.id}` (was expected to fail: {r.expectation})" for r in unexpected]
    if stale:
        lines += ["", "## Expectation entries that matched no check", ""] + [f"- `{p}`" for p in stale]
    problems = [r for r in results if r.status in GATE_FAILING]
    if problems:
        lines += ["", "## Failures", ""]
        for result in problems:
            lines += [f"### `{result.id}` ({result.status})", "", "```", result.message.strip(), "```", ""]
    expected = [r for r in results if r.status == "expected-failure"]
    if expected:
        lines += ["", "## Expected failures", ""]
        lines += [f"- `{r.id}`: {r.expectation}" for r in expected]
    found = transcripts(artifacts_dir)
    if found:
        lines += ["", "## What the real clients sent", "", "Recorded by the proxy in front of each actor.", ""]
        for t in found:
            lines += [
                f"<details><summary><code>{t.feature}</code>: {t.actor}, {len(t.exchanges)} requests "
                f"(<code>{t.path.relative_to(artifacts_dir.parent)}</code>)</summary>",
                "",
                "| request | answers | count |",
                "|---|---|---|",
            ]
            lines += [f"| `{endpoint}` | {statuses} | {count} |" for endpoint, statuses, count in condense(t.exchanges)]
            lines += ["", "</details>", ""]
    return "\n".join(lines).rstrip() + "\n"


# --- HTML ----------------------------------------------------------------------------------------------------

CSS = """
body{font:15px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
main{max-width:1100px;margin:0 auto;padding:24px}
h1{margin:0 0 4px;font-size:26px} h2{margin:28px 0 10px;font-size:19px;border-bottom:1px solid #dde1e6;padding-bottom:4px}
.badge{display:inline-block;padding:2px 12px;border-radius:12px;color:#fff;font-weight:700;margin-left:8px}
.PASS{background:#1f8a4c}.FAIL{background:#c62828}
.meta{color:#555;margin:2px 0}
table{border-collapse:collapse;background:#fff;margin:6px 0 12px;width:100%}
th,td{border:1px solid #dde1e6;padding:5px 9px;text-align:left;vertical-align:top}
th{background:#eef1f4} td.n{text-align:right;font-variant-numeric:tabular-nums}
.s-passed{color:#1f8a4c}.s-failed,.s-error,.s-unsupported{color:#c62828;font-weight:600}
.s-expected-failure{color:#8a6d1f}.s-unexpected-pass{color:#6a1b9a;font-weight:600}.s-skipped{color:#777}
.zero{color:#bbb}
.failure{background:#fff;border:1px solid #e3c4c4;border-left:5px solid #c62828;padding:8px 12px;margin:10px 0}
.failure h3{margin:0 0 6px;font-size:15px;font-family:ui-monospace,Menlo,monospace}
pre{white-space:pre-wrap;word-break:break-word;background:#f3f4f6;padding:8px;margin:4px 0;font-size:13px}
code{font-family:ui-monospace,Menlo,monospace;font-size:13px}
details{background:#fff;border:1px solid #dde1e6;padding:6px 10px;margin:8px 0} summary{cursor:pointer}
.callout{background:#f3e5f5;border:1px solid #ce93d8;padding:8px 12px}
"""


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def render_html(run: RunInfo, results: list[CheckResult], *, diff: RunDiff | None = None,
                stale: list[str] | None = None, artifacts_dir: Path | None = None) -> str:
    """A single self-contained page (inline CSS, no scripts, no external resources)."""
    counts = summarize(results)
    shown = [s for s in STATUSES if counts[s] or s in ("passed", "failed")]
    v = verdict(results)
    out = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        f"<title>Prefect conformance: {v} - {_e(run.target_url)}</title><style>{CSS}</style></head><body><main>",
        f"<h1>Prefect conformance<span class='badge {v}'>{v}</span></h1>",
        f"<p class=meta>Target <code>{_e(run.target_url)}</code> ({_e(run.target_kind)}), version <code>{_e(run.target_version)}</code></p>",
        f"<p class=meta>Suite {_e(run.suite_version)}, clients from Prefect {_e(run.client_version)}, run prefix <code>{_e(run.run_prefix)}</code>, "
        f"started {_e(run.started)}, took {run.duration:.1f} s"
        + (f", expectations <code>{_e(run.expectations_file)}</code>" if run.expectations_file else "") + "</p>",
        "<h2>Summary by feature</h2><table><tr><th>feature</th>" + "".join(f"<th class='s-{s}'>{s}</th>" for s in shown) + "</tr>",
    ]
    for feature, items in by_feature(results) + [("all", results)]:
        c = summarize(items)
        cells = "".join(f"<td class='n {'zero' if not c[s] else 's-' + s}'>{c[s]}</td>" for s in shown)
        label = f"<b>{_e(feature)}</b>" if feature == "all" else _e(feature)
        out.append(f"<tr><td>{label}</td>{cells}</tr>")
    out.append("</table>")
    if diff is not None:
        out.append(f"<h2>Since the previous run against this target</h2><p class=meta>Compared with {_e(diff.baseline)}</p><ul>")
        for title, ids, css in (("New failures", diff.new_failures, "s-failed"), ("Fixed", diff.fixed, "s-passed"), ("Still failing", diff.still_failing, "")):
            items = ", ".join(f"<code>{_e(i)}</code>" for i in ids)
            out.append(f"<li class='{css}'><b>{title}</b> ({len(ids)}){': ' + items if ids else ''}</li>")
        out.append("</ul>")
    unexpected = [r for r in results if r.status == "unexpected-pass"]
    if unexpected:
        out.append("<h2>Unexpected passes</h2><div class=callout>Listed as failing in the expectations file, but passing now: remove them.<ul>")
        out += [f"<li><code>{_e(r.id)}</code> (expected to fail: {_e(r.expectation)})</li>" for r in unexpected]
        out.append("</ul></div>")
    if stale:
        out.append("<h2>Expectation entries that matched no check</h2><ul>" + "".join(f"<li><code>{_e(p)}</code></li>" for p in stale) + "</ul>")
    problems = [r for r in results if r.status in GATE_FAILING]
    out.append(f"<h2>Failures ({len(problems)})</h2>")
    if not problems:
        out.append("<p>None: every check that ran behaved as on the reference.</p>")
    for r in problems:
        out.append(f"<div class=failure><h3>{_e(r.id)} <span class='s-{r.status}'>({r.status})</span></h3><pre>{_e(r.message.strip())}</pre></div>")
    expected = [r for r in results if r.status == "expected-failure"]
    if expected:
        out.append(f"<h2>Expected failures ({len(expected)})</h2><table><tr><th>check</th><th>reason</th><th>message</th></tr>")
        out += [f"<tr><td><code>{_e(r.id)}</code></td><td>{_e(r.expectation)}</td><td><pre>{_e(r.message[:400])}</pre></td></tr>" for r in expected]
        out.append("</table>")
    found = transcripts(artifacts_dir)
    if found:
        out.append("<h2>What the real clients sent</h2><p class=meta>Recorded by the proxy in front of each actor; raw transcripts are in the artifacts folder.</p>")
        for t in found:
            out.append(f"<details><summary><code>{_e(t.feature)}</code>: <b>{_e(t.actor)}</b>, {len(t.exchanges)} requests</summary>"
                       "<table><tr><th>request</th><th>answers</th><th>count</th></tr>")
            out += [f"<tr><td><code>{_e(e)}</code></td><td>{_e(s)}</td><td class=n>{n}</td></tr>" for e, s, n in condense(t.exchanges)]
            out.append("</table></details>")
    out.append(f"<h2>All checks ({len(results)})</h2><details><summary>Show every check</summary><table><tr><th>check</th><th>status</th><th>seconds</th></tr>")
    out += [f"<tr><td><code>{_e(r.id)}</code></td><td class='s-{r.status}'>{r.status}</td><td class=n>{r.duration:.2f}</td></tr>" for r in results]
    out.append("</table></details></main></body></html>")
    return "\n".join(out) + "\n"


# --- JUnit ---------------------------------------------------------------------------------------------------


def render_junit(run: RunInfo, results: list[CheckResult]) -> str:
    """One <testsuite> per feature. Expected failures are skipped with their reason; unsupported is a failure."""
    suites = ET.Element("testsuites", name="prefect-conformance")
    for feature, items in by_feature(results):
        c = summarize(items)
        suite = ET.SubElement(
            suites, "testsuite", name=feature, tests=str(len(items)),
            failures=str(c["failed"] + c["unsupported"]), errors=str(c["error"]),
            skipped=str(c["skipped"] + c["expected-failure"]), time=f"{sum(r.duration for r in items):.3f}",
        )
        properties = ET.SubElement(suite, "properties")
        for name, value in (("target", run.target_url), ("target_version", run.target_version), ("suite_version", run.suite_version)):
            ET.SubElement(properties, "property", name=name, value=value)
        for r in items:
            case = ET.SubElement(suite, "testcase", classname=f"prefect-conformance.{feature}", name=r.id, time=f"{r.duration:.3f}")
            first = (r.message.splitlines() or [""])[0][:300]
            if r.status in ("failed", "unsupported"):
                ET.SubElement(case, "failure", type=r.status, message=first).text = r.message
            elif r.status == "error":
                ET.SubElement(case, "error", type="harness-error", message=first).text = r.message
            elif r.status == "expected-failure":
                ET.SubElement(case, "skipped", type="expected-failure", message=f"expected failure: {r.expectation}").text = r.message
            elif r.status == "skipped":
                ET.SubElement(case, "skipped", message=first)
            elif r.status == "unexpected-pass":
                ET.SubElement(case, "system-out").text = f"unexpected pass: listed as failing ({r.expectation})"
    ET.indent(suites)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"
