"""``report.md``: the run for a person reading it in a terminal, a pull request or a CI log.

May import the other reporting modules and :mod:`harness.clients.transcript` (the actors' recorded traffic).
"""

from __future__ import annotations

from pathlib import Path

from harness.clients.transcript import condense, transcripts
from harness.reporting.causes import Cause, group_by_cause
from harness.reporting.claims import Claim
from harness.reporting.coverage import Coverage
from harness.reporting.diff import RunDiff
from harness.reporting.results import GATE_FAILING, STATUSES, CheckResult, RunInfo, by_feature, summarize, verdict

#: Lists of check ids longer than this are folded.
FOLD_AFTER = 8


def cause_heading(cause: Cause) -> str:
    if len(cause.results) == 1:
        return f"### `{cause.ids[0]}` ({cause.status})"
    return (
        f"### {len(cause.results)} checks, one cause ({cause.status}): `{cause.ids[0]}` and {len(cause.ids) - 1} more"
    )


def claim_lines(claim: Claim) -> list[str]:
    """The claim, first thing in the report: the line to publish, and a row per profile."""
    lines = ["## Claim", "", f"> {claim.line}", "", "| profile | claim | passed |", "|---|---|---|"]
    lines += [f"| `{p.profile}` | {p.text} | {p.passed} of {p.total} |" for p in claim.profiles]
    return lines + [""]


def noted_lines(results: list[CheckResult]) -> list[str]:
    """Checks that did not pass but do not fail the gate: warnings (``should``) and pending (new) ones."""
    lines: list[str] = []
    for status, title, about in (
        (
            "warning",
            "Warnings",
            "`should` checks that did not pass: Prefect's clients tolerate the difference "
            "(`--strict` fails the gate on them).",
        ),
        (
            "pending",
            "Pending",
            "Checks newer than the expectations file that do not pass yet: not gating until "
            "they pass once or `--update-expectations` records them.",
        ),
    ):
        held = [r for r in results if r.status == status]
        if held:
            lines += ["", f"## {title} ({len(held)})", "", about, ""]
            lines += [f"- `{r.id}`: {(r.message.splitlines() or [''])[0][:300]}" for r in held]
    return lines


def coverage_lines(coverage: Coverage) -> list[str]:
    """The API coverage map: a line, a row per tag of Prefect's document, the missing routes, the clients' routes."""
    lines = ["", "## API coverage", "", f"The target {coverage.line}.", ""]
    if coverage.error or not coverage.routes:
        return lines
    lines += ["| routes (Prefect's tags) | present | missing | server error | not probed |", "|---|---|---|---|---|"]
    lines += [
        f"| {tag} | {c.get('present', 0)} | {c.get('missing', 0)} | {c.get('server error', 0)} | "
        f"{c.get('not probed', 0)} |"
        for tag, c in coverage.by_tag()
    ]
    missing = [r for r in coverage.routes if r.verdict == "missing"]
    if missing:
        lines += ["", "Missing (a request the route must refuse was answered as by a server without it):", ""]
        lines += [
            f"- `{r.method} {r.route}`{' (**used by the real clients**)' if r.used else ''}: {r.status} {r.answer}"
            for r in missing
        ]
    used = [r for r in coverage.routes if r.used]
    if used:
        lines += [
            "",
            f"<details><summary>The {len(used)} routes the real clients called</summary>",
            "",
            "| route | calls | answers | present |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| `{r.method} {r.route}` | {r.used} | "
            f"{', '.join(f'{s}×{n}' for s, n in sorted(r.used_statuses.items()))} | {r.verdict} |"
            for r in used
        ]
        lines += ["", "</details>"]
    return lines


def render_markdown(
    run: RunInfo,
    results: list[CheckResult],
    *,
    diff: RunDiff | None = None,
    stale: list[str] | None = None,
    artifacts_dir: Path | None = None,
    claim: Claim | None = None,
    coverage: Coverage | None = None,
) -> str:
    counts = summarize(results)
    shown = [s for s in STATUSES if counts[s] or s in ("passed", "failed")]
    lines = [
        f"# Prefect conformance: {verdict(results)}",
        "",
        f"- Target: `{run.target_url}` ({run.target_kind}), version `{run.target_version}`",
        f"- Suite {run.suite_version}, clients from Prefect {run.client_version}, run prefix `{run.run_prefix}`",
        f"- Started {run.started}, took {run.duration:.1f} s"
        + (f"; expectations: `{run.expectations_file}`" if run.expectations_file else ""),
        *([f"- Load on the target: {run.extra['load']}"] if run.extra.get("load") else []),
        *([f"- **Outage:** {run.extra['outage']}"] if run.extra.get("outage") else []),
        "",
        *(claim_lines(claim) if claim else []),
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
        for title, ids in (
            ("New failures", diff.new_failures),
            ("Fixed", diff.fixed),
            ("Still failing", diff.still_failing),
        ):
            lines.append(f"- **{title}** ({len(ids)})" + (": " + ", ".join(f"`{i}`" for i in ids) if ids else ""))
    retried = [r for r in results if r.attempts]
    if retried:
        lines += ["", "## Run once more after the target came back", ""]
        lines += [f"- `{r.id}`: now {r.status}; before: " + "; ".join(r.attempts) for r in retried]
    measured = [r for r in results if r.measured]
    if measured:
        lines += ["", "## Measured", ""] + [f"- `{r.id}`: {r.measured}" for r in measured]
    unexpected = [r for r in results if r.status == "unexpected-pass"]
    if unexpected:
        lines += [
            "",
            "## Unexpected passes",
            "",
            "Listed as failing in the expectations file, but passing now: remove them.",
            "",
        ]
        lines += [f"- `{r.id}` (was expected to fail: {r.expectation})" for r in unexpected]
    if stale:
        lines += ["", "## Expectation entries that matched no check", ""] + [f"- `{p}`" for p in stale]
    not_applicable = [r for r in results if r.status == "n/a"]
    if not_applicable:
        lines += [
            "",
            "## Not applicable to these releases",
            "",
            f"Prefect's own releases differ here (server {run.target_version}, clients {run.client_version}); "
            "see `harness/releases.toml`.",
            "",
        ]
        lines += [f"- `{r.id}`: {r.message}" for r in not_applicable]
    problems = [r for r in results if r.status in GATE_FAILING]
    if problems:
        causes = group_by_cause(problems)
        lines += ["", f"## Failures ({len(problems)} checks, {len(causes)} causes)", ""]
        for cause in causes:
            lines += [cause_heading(cause), ""]
            if cause.diagnosis:
                lines += [f"**Diagnosis:** {cause.diagnosis}", ""]
            if len(cause.ids) > 1:
                ids = ", ".join(f"`{i}`" for i in cause.ids)
                lines += [
                    f"<details><summary>{len(cause.ids)} checks</summary>\n\n{ids}\n\n</details>"
                    if len(cause.ids) > FOLD_AFTER
                    else ids,
                    "",
                ]
            if cause.results[0].description:
                lines += [f"_{cause.results[0].description}_", ""]
            lines += ["```", cause.example, "```", ""]
    lines += noted_lines(results)
    expected = [r for r in results if r.status == "expected-failure"]
    if expected:
        lines += ["", "## Expected failures", ""]
        lines += [f"- `{r.id}`: {r.expectation}" for r in expected]
    if coverage is not None:
        lines += coverage_lines(coverage)
    found = transcripts(artifacts_dir)
    if found:
        lines += ["", "## What the real clients sent", "", "Recorded by the proxy in front of each actor.", ""]
        for t in found:
            lines += [
                f"<details><summary><code>{t.feature}</code>: {t.actor}, {len(t.exchanges)} requests"
                + "".join(f", <code>{agent}</code>" for agent in t.user_agents)
                + " "
                f"(<code>{t.path.relative_to(artifacts_dir.parent)}</code>)</summary>",
                "",
                "| request | answers | count |",
                "|---|---|---|",
            ]
            lines += [f"| `{endpoint}` | {statuses} | {count} |" for endpoint, statuses, count in condense(t.exchanges)]
            lines += ["", "</details>", ""]
    return "\n".join(lines).rstrip() + "\n"
