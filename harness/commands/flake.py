"""``make flake-check N=20``: run the full suite N times in a row and report each check's pass rate.

The target is 20/20 for every check against the bundled reference. Writes ``REPORT_DIR/flake/flake.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import subprocess
import sys
import time
from collections import Counter

from harness.commands.options import absolute_path
from harness.locations import default_report_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.commands.flake", description=__doc__.splitlines()[0])
    parser.add_argument("-N", "--runs", type=int, default=20, help="how many runs (default 20)")
    parser.add_argument(
        "--report-dir",
        type=absolute_path,
        default=str(default_report_dir()),
        help="where to write (a relative path is taken from the current directory)",
    )
    parser.add_argument("run_args", nargs="*", help="extra arguments for `prefect-conformance run` (after --)")
    args = parser.parse_args(argv)
    out = args.report_dir / "flake"
    passes: Counter[str] = Counter()
    seen: Counter[str] = Counter()
    failures: dict[str, list[str]] = {}
    walls = []
    empty_runs: list[str] = []  # runs that produced no results: they prove nothing, so the check fails
    for index in range(1, args.runs + 1):
        started = time.monotonic()
        # A folder per run: a run that ends before writing results must not be credited with an earlier run's.
        run_dir = out / "runs" / f"{index:03d}"
        shutil.rmtree(run_dir, ignore_errors=True)
        proc = subprocess.run(
            [sys.executable, "-m", "harness.commands.cli", "run", "--report-dir", str(run_dir), *args.run_args],
            capture_output=True,
            text=True,
        )
        walls.append(time.monotonic() - started)
        results_path = run_dir / "latest" / "results.json"
        checks = json.loads(results_path.read_text())["checks"] if results_path.exists() else []
        if not checks:
            tail = (proc.stderr.strip().splitlines() or proc.stdout.strip().splitlines() or ["(no output)"])[-1]
            empty_runs.append(f"run {index}: exit {proc.returncode}, no results: {tail[:300]}")
        for check in checks:
            if check["status"] in (
                "skipped",
                "n/a",
            ):  # not run (durability with nothing to restart the target): not flaky
                continue
            seen[check["id"]] += 1
            if check["status"] == "passed":
                passes[check["id"]] += 1
            else:
                failures.setdefault(check["id"], []).append(f"run {index}: {check['status']}: {check['message'][:200]}")
        print(
            f"flake-check: run {index}/{args.runs}: exit {proc.returncode}, {len(checks)} checks, {walls[-1]:.1f}s",
            flush=True,
        )
    flaky = sorted(cid for cid in seen if passes[cid] < args.runs)
    lines = [
        f"# flake-check, {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC",
        "",
        f"{args.runs} runs of the full suite; {len(seen)} checks; {len(seen) - len(flaky)} passed every run; "
        f"wall time per run {min(walls):.1f}-{max(walls):.1f} s.",
        "",
    ]
    if empty_runs:
        lines += [f"{len(empty_runs)} of {args.runs} runs produced no results, so nothing was verified in them:", ""]
        lines += [f"- {line}" for line in empty_runs] + [""]
    if flaky:
        lines += ["| check | passed |", "|---|---|"] + [f"| `{cid}` | {passes[cid]}/{args.runs} |" for cid in flaky]
        for cid in flaky:
            lines += ["", f"## `{cid}`", ""] + [f"- {line}" for line in failures.get(cid, [])]
    elif not empty_runs:
        lines.append(f"Every check passed {args.runs}/{args.runs}.")
    out.mkdir(parents=True, exist_ok=True)
    (out / "flake.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 1 if flaky or empty_runs else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
