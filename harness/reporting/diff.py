"""How one run differs from an earlier one: new failures, fixes, and what still fails.

Compared by outcome, so expectations never hide a regression here. May import :mod:`harness.reporting.results`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from harness.reporting.results import GATE_FAILING, CheckResult, StoredRun


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
    for title, ids in (
        ("new failures", diff.new_failures),
        ("fixed", diff.fixed),
        ("still failing", diff.still_failing),
    ):
        lines.append(f"  {title}: {len(ids)}")
        lines += [f"    {cid}" for cid in ids]
    return "\n".join(lines)
