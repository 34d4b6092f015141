"""A --target that stopped answering mid-run: which checks the outage decided, and their second attempt once the
target answers again, at half the start budget (the report keeps both attempts)."""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from harness.clients.budget import default_max_starts
from harness.commands.scenarios_run import run_scenarios
from harness.errors import HarnessError, TargetUnavailable, WaitTimeout
from harness.reporting.results import (
    GATE_FAILING,
    CheckResult,
    ResultCollector,
    RunInfo,
)
from harness.target.preflight import Target

#: What a check says that was not run because the target had stopped answering (the plugin's words).
NOT_RUN_DOWN = "not run: the target stopped answering"


def outage_victims(results: list[CheckResult]) -> list[CheckResult]:
    """The checks a target that stopped answering decided: the one in flight when it was taken for gone, and those
    not run after it."""
    return [r for r in results if r.outcome in GATE_FAILING and (r.target_down or NOT_RUN_DOWN in r.message)]


def second_attempt(
    args: argparse.Namespace,
    target: Target,
    run_info: RunInfo,
    report_dir: Path,
    collector: ResultCollector,
    unrun: list[CheckResult],
) -> int:
    """A target that stopped answering mid-run is said so once, with the load at that moment; given
    ``--outage-wait`` seconds to answer ``/health`` again; then the checks it decided run once more, at half the start
    budget, and replace their first attempts (which each keeps in ``attempts``). pytest's exit code for the run: a
    target that stays down leaves the first attempts, and no verdict. Only for ``--target``: a bundled reference that
    stops answering is the harness's error."""
    from harness.target.health import wait_for_health
    from harness.waits import timeout_scale

    why = next((r.target_down for r in unrun if r.target_down), "") or unrun[0].message
    budget = args.max_starts or int(os.environ.get("PREFECT_CONFORMANCE_MAX_STARTS") or default_max_starts())
    half = max(1, budget // 2)
    print(
        f"prefect-conformance: the target stopped answering mid-run ({why}); {len(unrun)} checks could not run. "
        f"Waiting up to {args.outage_wait * timeout_scale():.0f} s for GET /health to answer again",
        flush=True,
    )
    began = time.monotonic()
    try:
        wait_for_health(
            target.api_url,
            timeout=args.outage_wait,
            what="the target after it stopped answering",
            hint="a server that stops answering under the suite's load (stated in the report) gets no "
            "verdict; --max-starts lowers that load",
        )
    except (TargetUnavailable, HarnessError, WaitTimeout) as exc:
        run_info.extra["outage"] = f"the target stopped answering mid-run ({why}) and did not answer again: {exc}"
        print(f"prefect-conformance: {run_info.extra['outage']}", flush=True)
        return 1
    back = time.monotonic() - began
    run_info.extra["outage"] = (
        f"the target stopped answering mid-run ({why}); it answered again after {back:.0f} s, "
        f"and the {len(unrun)} checks it could not run ran once more at --max-starts {half}"
    )
    print(
        f"prefect-conformance: it answered again after {back:.0f} s: running those {len(unrun)} checks once more, "
        f"at half the start budget (--max-starts {half})",
        flush=True,
    )
    retry = argparse.Namespace(**{**vars(args), "max_starts": half})
    again = ResultCollector()
    code = run_scenarios(
        retry,
        target,
        run_info.run_prefix,
        report_dir,
        again,
        sorted(r.nodeid for r in unrun),
        artifacts=report_dir / "artifacts" / "second-attempt",
    )
    first = {r.id: r for r in unrun}
    for result in again.ordered():
        previous = first.get(result.id)
        if previous is not None:
            result.attempts = [*previous.attempts, f"{previous.outcome}: {previous.message}"]
            collector.results[result.id] = result
    return 1 if code in (0, 1) else code  # the verdict is read from the checks' statuses (exit_code)
