"""``report.html``: the same content as ``report.md`` as one self-contained page (inline CSS, no scripts).

May import the other reporting modules and :mod:`harness.clients.transcript`.
"""

from __future__ import annotations

import html
from pathlib import Path

from harness.clients.transcript import condense, transcripts
from harness.reporting.causes import group_by_cause
from harness.reporting.claims import Claim
from harness.reporting.coverage import Coverage
from harness.reporting.diff import RunDiff
from harness.reporting.markdown import FOLD_AFTER
from harness.reporting.results import GATE_FAILING, STATUSES, CheckResult, RunInfo, by_feature, summarize, verdict

CSS = """
body{font:15px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
main{max-width:1100px;margin:0 auto;padding:24px}
h1{margin:0 0 4px;font-size:26px} h2{margin:28px 0 10px;font-size:19px;border-bottom:1px solid
#dde1e6;padding-bottom:4px}
.badge{display:inline-block;padding:2px 12px;border-radius:12px;color:#fff;font-weight:700;margin-left:8px}
.PASS{background:#1f8a4c}.FAIL{background:#c62828}
.meta{color:#555;margin:2px 0}
table{border-collapse:collapse;background:#fff;margin:6px 0 12px;width:100%}
th,td{border:1px solid #dde1e6;padding:5px 9px;text-align:left;vertical-align:top}
th{background:#eef1f4} td.n{text-align:right;font-variant-numeric:tabular-nums}
.s-passed{color:#1f8a4c}.s-failed,.s-error,.s-unsupported{color:#c62828;font-weight:600}
.s-expected-failure,.s-warning,.s-pending{color:#8a6d1f}.s-unexpected-pass{color:#6a1b9a;font-weight:600}.s-skipped{color:#777}
.zero{color:#bbb}
.failure{background:#fff;border:1px solid #e3c4c4;border-left:5px solid #c62828;padding:8px 12px;margin:10px 0}
.failure h3{margin:0 0 6px;font-size:15px;font-family:ui-monospace,Menlo,monospace}
pre{white-space:pre-wrap;word-break:break-word;background:#f3f4f6;padding:8px;margin:4px 0;font-size:13px}
code{font-family:ui-monospace,Menlo,monospace;font-size:13px}
details{background:#fff;border:1px solid #dde1e6;padding:6px 10px;margin:8px 0} summary{cursor:pointer}
.callout{background:#f3e5f5;border:1px solid #ce93d8;padding:8px 12px}
.c-conformant{color:#1f8a4c;font-weight:600}.c-not-conformant,.c-not-supported,.c-no-verdict{color:#c62828;font-weight:600}
.c-partial{color:#8a6d1f;font-weight:600}
"""


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def render_html(
    run: RunInfo,
    results: list[CheckResult],
    *,
    diff: RunDiff | None = None,
    stale: list[str] | None = None,
    artifacts_dir: Path | None = None,
    claim: Claim | None = None,
    coverage: Coverage | None = None,
) -> str:
    """A single self-contained page (inline CSS, no scripts, no external resources)."""
    counts = summarize(results)
    shown = [s for s in STATUSES if counts[s] or s in ("passed", "failed")]
    v = verdict(results)
    out = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        f"<title>Prefect conformance: {v} - {_e(run.target_url)}</title><style>{CSS}</style></head><body><main>",
        f"<h1>Prefect conformance<span class='badge {v}'>{v}</span></h1>",
        f"<p class=meta>Target <code>{_e(run.target_url)}</code> ({_e(run.target_kind)}), version "
        f"<code>{_e(run.target_version)}</code></p>",
        f"<p class=meta>Suite {_e(run.suite_version)}, clients from Prefect {_e(run.client_version)}, run prefix "
        f"<code>{_e(run.run_prefix)}</code>, "
        f"started {_e(run.started)}, took {run.duration:.1f} s"
        + (f", expectations <code>{_e(run.expectations_file)}</code>" if run.expectations_file else "")
        + "</p>",
        *([f"<p class=meta>Load on the target: {_e(run.extra['load'])}</p>"] if run.extra.get("load") else []),
        *([f"<p class=callout>Outage: {_e(run.extra['outage'])}</p>"] if run.extra.get("outage") else []),
    ]
    if claim is not None:
        out.append(
            f"<h2>Claim</h2><p class=callout>{_e(claim.line)}</p><table><tr><th>profile</th><th>claim</th>"
            "<th>passed</th></tr>"
        )
        out += [
            f"<tr><td><code>{_e(p.profile)}</code></td><td class='c-{_e(p.verdict.replace(' ', '-'))}'>{_e(p.text)}"
            f"</td><td class=n>{p.passed} of {p.total}</td></tr>"
            for p in claim.profiles
        ]
        out.append("</table>")
    out.append(
        "<h2>Summary by feature</h2><table><tr><th>feature</th>"
        + "".join(f"<th class='s-{s}'>{s}</th>" for s in shown)
        + "</tr>"
    )
    for feature, items in by_feature(results) + [("all", results)]:
        c = summarize(items)
        cells = "".join(f"<td class='n {'zero' if not c[s] else 's-' + s}'>{c[s]}</td>" for s in shown)
        label = f"<b>{_e(feature)}</b>" if feature == "all" else _e(feature)
        out.append(f"<tr><td>{label}</td>{cells}</tr>")
    out.append("</table>")
    if diff is not None:
        out.append(
            "<h2>Since the previous run against this target</h2><p class=meta>Compared with "
            f"{_e(diff.baseline)}</p><ul>"
        )
        for title, ids, css in (
            ("New failures", diff.new_failures, "s-failed"),
            ("Fixed", diff.fixed, "s-passed"),
            ("Still failing", diff.still_failing, ""),
        ):
            items = ", ".join(f"<code>{_e(i)}</code>" for i in ids)
            out.append(f"<li class='{css}'><b>{title}</b> ({len(ids)}){': ' + items if ids else ''}</li>")
        out.append("</ul>")
    measured = [r for r in results if r.measured]
    if measured:
        out.append(
            "<h2>Measured</h2><ul>"
            + "".join(f"<li><code>{_e(r.id)}</code>: {_e(r.measured)}</li>" for r in measured)
            + "</ul>"
        )
    unexpected = [r for r in results if r.status == "unexpected-pass"]
    if unexpected:
        out.append(
            "<h2>Unexpected passes</h2><div class=callout>Listed as failing in the expectations file, but passing now: "
            "remove them.<ul>"
        )
        out += [f"<li><code>{_e(r.id)}</code> (expected to fail: {_e(r.expectation)})</li>" for r in unexpected]
        out.append("</ul></div>")
    if stale:
        out.append(
            "<h2>Expectation entries that matched no check</h2><ul>"
            + "".join(f"<li><code>{_e(p)}</code></li>" for p in stale)
            + "</ul>"
        )
    problems = [r for r in results if r.status in GATE_FAILING]
    causes = group_by_cause(problems)
    out.append(f"<h2>Failures ({len(problems)} checks, {len(causes)} causes)</h2>")
    if not problems:
        out.append("<p>None: every check that ran behaved as on the reference.</p>")
    for cause in causes:
        first = cause.results[0]
        title = (
            _e(first.id)
            if len(cause.ids) == 1
            else f"{len(cause.ids)} checks, one cause: {_e(first.id)} and {len(cause.ids) - 1} more"
        )
        ids = ", ".join(f"<code>{_e(i)}</code>" for i in cause.ids)
        listed = (
            ""
            if len(cause.ids) == 1
            else (
                f"<details><summary>{len(cause.ids)} checks</summary><p>{ids}</p></details>"
                if len(cause.ids) > FOLD_AFTER
                else f"<p>{ids}</p>"
            )
        )
        described = f"<p class=meta><i>{_e(first.description)}</i></p>" if first.description else ""
        diagnosed = f"<p><b>Diagnosis:</b> {_e(cause.diagnosis)}</p>" if cause.diagnosis else ""
        out.append(
            f"<div class=failure><h3>{title} <span "
            f"class='s-{cause.status}'>({cause.status})</span></h3>{diagnosed}{listed}{described}"
            f"<pre>{_e(cause.example)}</pre></div>"
        )
    for status, title in (
        ("warning", "Warnings: should checks that did not pass (not gating unless --strict)"),
        ("pending", "Pending: checks newer than the expectations file (not gating yet)"),
    ):
        held = [r for r in results if r.status == status]
        if held:
            out.append(
                f"<h2>{title} ({len(held)})</h2><table><tr><th>check</th><th>why it does not gate</th>"
                "<th>message</th></tr>"
            )
            out += [
                f"<tr><td><code>{_e(r.id)}</code></td><td>{_e(r.expectation)}</td><td><pre>{_e(r.message[:400])}"
                "</pre></td></tr>"
                for r in held
            ]
            out.append("</table>")
    expected = [r for r in results if r.status == "expected-failure"]
    if expected:
        out.append(
            f"<h2>Expected failures ({len(expected)})</h2><table><tr><th>check</th><th>reason</th><th>message</th></tr>"
        )
        out += [
            f"<tr><td><code>{_e(r.id)}</code></td><td>{_e(r.expectation)}</td><td><pre>{_e(r.message[:400])}</pre></td></tr>"
            for r in expected
        ]
        out.append("</table>")
    not_applicable = [r for r in results if r.status == "n/a"]
    if not_applicable:
        out.append(
            f"<h2>Not applicable to these releases ({len(not_applicable)})</h2><p class=meta>Prefect's own "
            f"releases differ here (server {_e(run.target_version)}, clients {_e(run.client_version)}); see "
            "<code>harness/releases.toml</code>.</p><table><tr><th>check</th><th>why</th></tr>"
        )
        out += [f"<tr><td><code>{_e(r.id)}</code></td><td>{_e(r.message)}</td></tr>" for r in not_applicable]
        out.append("</table>")
    if coverage is not None:
        out.append(f"<h2>API coverage</h2><p>The target {_e(coverage.line)}.</p>")
        if coverage.routes and not coverage.error:
            out.append(
                "<table><tr><th>routes (Prefect's tags)</th><th>present</th><th>missing</th><th>server error</th>"
                "<th>not probed</th></tr>"
            )
            out += [
                f"<tr><td>{_e(tag)}</td><td class=n>{c.get('present', 0)}</td><td class='n "
                f"{'s-failed' if c.get('missing') else 'zero'}'>"
                f"{c.get('missing', 0)}</td><td class=n>{c.get('server error', 0)}</td><td "
                f"class=n>{c.get('not probed', 0)}"
                "</td></tr>"
                for tag, c in coverage.by_tag()
            ]
            out.append("</table>")
            missing = [r for r in coverage.routes if r.verdict == "missing"]
            if missing:
                out.append(
                    "<p>Missing:</p><ul>"
                    + "".join(
                        f"<li><code>{_e(r.method)} "
                        f"{_e(r.route)}</code>{' <b>(used by the real clients)</b>' if r.used else ''}: "
                        f"{r.status} {_e(r.answer)}</li>"
                        for r in missing
                    )
                    + "</ul>"
                )
            used = [r for r in coverage.routes if r.used]
            if used:
                out.append(
                    f"<details><summary>The {len(used)} routes the real clients "
                    "called</summary><table><tr><th>route</th>"
                    "<th>calls</th><th>answers</th><th>present</th></tr>"
                )
                out += [
                    f"<tr><td><code>{_e(r.method)} {_e(r.route)}</code></td><td class=n>{r.used}</td><td>"
                    f"{_e(', '.join(f'{s}×{n}' for s, n in sorted(r.used_statuses.items())))}</td>"
                    f"<td>{_e(r.verdict)}</td></tr>"
                    for r in used
                ]
                out.append("</table></details>")
    found = transcripts(artifacts_dir)
    if found:
        out.append(
            "<h2>What the real clients sent</h2><p class=meta>Recorded by the proxy in front of each actor; raw "
            "transcripts are in the artifacts folder.</p>"
        )
        for t in found:
            out.append(
                f"<details><summary><code>{_e(t.feature)}</code>: <b>{_e(t.actor)}</b>, {len(t.exchanges)} requests"
                + "".join(f", <code>{_e(agent)}</code>" for agent in t.user_agents)
                + "</summary>"
                "<table><tr><th>request</th><th>answers</th><th>count</th></tr>"
            )
            out += [
                f"<tr><td><code>{_e(e)}</code></td><td>{_e(s)}</td><td class=n>{n}</td></tr>"
                for e, s, n in condense(t.exchanges)
            ]
            out.append("</table></details>")
    out.append(
        f"<h2>All checks ({len(results)})</h2><details><summary>Show every "
        "check</summary><table><tr><th>check</th><th>status</th><th>seconds</th></tr>"
    )
    out += [
        f"<tr><td><code>{_e(r.id)}</code></td><td class='s-{r.status}'>{r.status}</td><td "
        f"class=n>{r.duration:.2f}</td></tr>"
        for r in results
    ]
    out.append("</table></details></main></body></html>")
    return "\n".join(out) + "\n"
