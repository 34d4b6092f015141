"""The run's summary for a CI page (GitHub's ``$GITHUB_STEP_SUMMARY``): at most a screenful.

The verdict, the claim, a row per feature, what changed since the previous run, and the first causes of failure
with their diagnoses; everything else is one click away in the reports (the action uploads them).
"""

from __future__ import annotations

from harness.reporting.causes import group_by_cause
from harness.reporting.claims import Claim
from harness.reporting.diff import RunDiff
from harness.reporting.results import GATE_FAILING, CheckResult, RunInfo, by_feature, summarize, verdict

#: Causes of failure shown (the rest are counted).
SHOWN_CAUSES = 5
#: New failures and fixes named (the rest are counted).
SHOWN_IDS = 10


def first_line(text: str, limit: int = 240) -> str:
    line = (text.strip().splitlines() or [""])[0]
    return line if len(line) <= limit else line[: limit - 1] + "…"


def named(ids: list[str]) -> str:
    shown = ", ".join(f"`{i}`" for i in ids[:SHOWN_IDS])
    return shown + (f" and {len(ids) - SHOWN_IDS} more" if len(ids) > SHOWN_IDS else "")


def render_summary(
    run: RunInfo,
    results: list[CheckResult],
    *,
    claim: Claim | None = None,
    diff: RunDiff | None = None,
    exit_code: int | None = None,
) -> str:
    counts = summarize(results)
    lines = [
        f"## Prefect conformance: {verdict(results)}" + (f" (exit {exit_code})" if exit_code is not None else ""),
        "",
        f"Target `{run.target_url}`, version `{run.target_version}`; suite {run.suite_version}, clients from "
        f"Prefect {run.client_version}; {run.duration:.0f} s.",
        "",
    ]
    if claim is not None:
        lines += [f"> {claim.line}", ""]
    lines += ["| feature | passed | failed | other |", "|---|---|---|---|"]
    for feature, items in by_feature(results):
        c = summarize(items)
        failing = sum(c[s] for s in GATE_FAILING)
        other = len(items) - c["passed"] - failing
        lines.append(f"| {feature} | {c['passed']} | {failing or ''} | {other or ''} |")
    lines.append(
        f"| **all** | **{counts['passed']}** | **{sum(counts[s] for s in GATE_FAILING)}** | "
        f"**{len(results) - counts['passed'] - sum(counts[s] for s in GATE_FAILING)}** |"
    )
    if diff is not None and (diff.new_failures or diff.fixed):
        lines += [""]
        if diff.new_failures:
            lines.append(f"- **New failures** ({len(diff.new_failures)}): {named(diff.new_failures)}")
        if diff.fixed:
            lines.append(f"- **Fixed** ({len(diff.fixed)}): {named(diff.fixed)}")
    causes = group_by_cause([r for r in results if r.status in GATE_FAILING])
    if causes:
        lines += ["", f"**Failures** ({sum(len(c.results) for c in causes)} checks, {len(causes)} causes):", ""]
        for cause in causes[:SHOWN_CAUSES]:
            which = f"`{cause.ids[0]}`" + (f" and {len(cause.ids) - 1} more" if len(cause.ids) > 1 else "")
            lines.append(f"- {which} ({cause.status}): {first_line(cause.diagnosis or cause.example)}")
        if len(causes) > SHOWN_CAUSES:
            lines.append(f"- … {len(causes) - SHOWN_CAUSES} more causes: see report.html in the run's artifact")
    return "\n".join(lines) + "\n"
