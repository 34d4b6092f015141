"""``make bench``: how long the suite takes against the bundled reference, and where the time goes.

Measures, in one invocation on this machine, after a warm-up run that fills the caches (so neither timed run pays
for them): the full suite serially and in parallel, each ``--repeat`` times, alternating, reporting the median run
of each (wall time per feature and in total, the CPU all its processes used, each pytest worker's checks and idle
time, the requests the harness and the real clients sent per feature); the reference server's start-up; the
unavoidable waits (derived from the suite's settings); and the recorder's added latency per request (the same
request sent directly and through the recording relay every real client talks through, in interleaved pairs, as a
ratio with a confidence interval).
Writes ``REPORT_DIR/bench/bench.md`` and prints it.
Not a test: nothing asserts on time; the numbers are for people and for docs/status.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from harness.clients.actors import FAST_CLIENT_SETTINGS, SCHEDULE_INTERVAL
from harness.clients.lifecycle import HOLD_SECONDS, LEASE_SECONDS, PEER_SETTLE, RETRIES, RETRY_DELAY
from harness.clients.relay import RecordingRelay
from harness.commands.options import absolute_path
from harness.commands.timeline import (
    TIMELINE_ENV,
    WorkerProfile,
    critical_path,
    describe_path,
    requests_by_module,
    worker_profile,
)
from harness.features import FEATURE_ORDER
from harness.locations import default_report_dir
from harness.reference.environment import FAST_SERVICE_SETTINGS, clean_environment
from harness.reference.local import LocalReference
from harness.waits import stability_window


def flow_run_startup(samples: int = 3) -> float:
    """Seconds a new Python process takes to import Prefect's flow engine: the least a flow-run process costs
    before it can report, on this machine (median of ``samples``)."""
    times = []
    for _ in range(samples):
        started = time.monotonic()
        subprocess.run([sys.executable, "-c", "import prefect.flow_engine"], check=True, env=clean_environment({}))
        times.append(time.monotonic() - started)
    return statistics.median(times)


def unavoidable_waits(startup: float) -> dict[str, tuple[str, float]]:
    """Per feature, the waits no target can avoid (why, seconds), from the settings and constants the suite runs
    with and the measured flow-run start-up: the floor that even an infinitely fast server meets."""
    poll = float(FAST_CLIENT_SETTINGS["PREFECT_RUNNER_POLL_FREQUENCY"])
    query = float(FAST_CLIENT_SETTINGS["PREFECT_WORKER_QUERY_SECONDS"])
    slot_wait = float(FAST_SERVICE_SETTINGS["PREFECT_SERVER_DEPLOYMENTS_CONCURRENCY_SLOT_WAIT_SECONDS"])
    repossessor = float(FAST_SERVICE_SETTINGS["PREFECT_SERVER_SERVICES_REPOSSESSOR_LOOP_SECONDS"])
    foreman = float(FAST_SERVICE_SETTINGS["PREFECT_SERVER_SERVICES_FOREMAN_LOOP_SECONDS"])
    stale = float(FAST_SERVICE_SETTINGS["PREFECT_SERVER_SERVICES_FOREMAN_WORK_QUEUE_LAST_POLLED_TIMEOUT_SECONDS"])
    loop = float(FAST_SERVICE_SETTINGS["PREFECT_SERVER_SERVICES_SCHEDULER_RECENT_DEPLOYMENTS_LOOP_SECONDS"])
    stable = stability_window(float(FAST_SERVICE_SETTINGS["PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS"]))
    return {
        "scheduler": (
            f"the scheduler's first loop ({loop:.0f} s), then the run count must hold still for {stable:.0f} s",
            loop + stable,
        ),
        "serve": (
            f"two Runners in turn, each polling every {poll:.0f} s and starting a flow-run process "
            f"({startup:.1f} s); the scheduled run comes due up to {SCHEDULE_INTERVAL} s after its deployment",
            2 * (poll + startup) + SCHEDULE_INTERVAL,
        ),
        "worker": (
            f"the worker queries every {query:.0f} s, then starts a flow-run process ({startup:.1f} s)",
            query + startup,
        ),
        "task_worker": ("none: the target pushes task runs over a websocket as they are delayed", 0.0),
        "upserts": ("none: pure API requests", 0.0),
        "labels": ("none: pure API requests", 0.0),
        "lists": ("none: pure API requests", 0.0),
        "statuses": (
            f"a queue and a deployment polled once become NOT_READY after {stale:g} s (the foreman loops every "
            f"{foreman:g} s)",
            stale + foreman,
        ),
        "lifecycle": (
            f"three modules side by side, each with clients of its own: about twenty runs of a Runner's and "
            f"a worker's in two waves, each picked up ({poll:.0f} s, "
            f"{query:.0f} s) and started in a flow-run process ({startup:.1f} s); a suspended run and a "
            f"subflow start after another, two runs of a one-slot deployment one after the other "
            f"({HOLD_SECONDS:g} s each, the second refused for {slot_wait:g} s), a global slot held until the "
            f"other holder's ask is answered and {PEER_SETTLE:g} s more; then three workers start and share six "
            "runs. In the third, a dead holder's slot is freed once its "
            f"{LEASE_SECONDS} s lease has expired (the repossessor loops every "
            f"{repossessor:g} s)",
            max(
                max(
                    2 * (max(poll, query) + startup) + RETRIES * RETRY_DELAY,
                    2 * (query + startup) + 2 * HOLD_SECONDS + slot_wait,
                    2 * (poll + startup) + PEER_SETTLE,
                )
                + query
                + startup,
                poll + startup + LEASE_SECONDS + repossessor,
            ),
        ),
        "logs": (f"a flow called as a script: a process's start-up ({startup:.1f} s)", startup),
        "durability": (
            f"after every other check, the target's restart (its start-up, measured below), then the "
            f"scheduler's runs must hold still for {stable:.0f} s (the Runner and the worker run their runs "
            "meanwhile)",
            stable,
        ),
        "events": (
            f"an events client's start-up ({startup:.1f} s); the reference persists events every "
            f"{FAST_SERVICE_SETTINGS['PREFECT_SERVER_SERVICES_EVENT_PERSISTER_FLUSH_INTERVAL']} s",
            startup + float(FAST_SERVICE_SETTINGS["PREFECT_SERVER_SERVICES_EVENT_PERSISTER_FLUSH_INTERVAL"]),
        ),
        "scheduling": ("none: pure API requests", 0.0),
        "timestamps": ("none: pure API requests", 0.0),
        "handshake": ("none: one API request", 0.0),
        "schema": ("none: pure API requests (the OpenAPI document is generated once per release and cached)", 0.0),
        "bad_input": (
            "none: pure API requests (the requests and Prefect's answers are made once per release and cached)",
            0.0,
        ),
    }


@dataclass
class SuiteRun:
    """One run of the whole suite against the bundled reference, and where its time went."""

    wall: float
    cpu: float  # CPU seconds of every process of the run (the CLI, the reference, pytest's workers, real clients)
    results: dict
    span: float  # from the first check's start to the last one's end
    workers: list[WorkerProfile]
    report_dir: Path

    def harness_requests(self) -> tuple[dict[str, int], list[tuple[str, int]]]:
        """Per feature, and for the busiest checks, the requests the harness itself sent the target."""
        return requests_by_module(self.report_dir / "timeline.jsonl")

    def client_requests(self) -> dict[str, int]:
        """Per feature, the requests (and websockets) the real clients sent, from their transcripts."""
        counts: dict[str, int] = {}
        for path in (self.report_dir / "latest" / "artifacts").glob("*/*.transcript.jsonl"):
            lines = sum(1 for line in path.read_text().splitlines() if line.strip())
            counts[path.parent.name] = counts.get(path.parent.name, 0) + lines
        return counts

    @property
    def reference_cpu(self) -> float:
        return float(self.results["run"]["extra"].get("reference_cpu_seconds", 0.0))


#: The features whose first run on a machine builds a cache (Prefect's OpenAPI document, the bad-input requests
#: and Prefect's answers to them, the datetime fields of Prefect's schemas); the reference's template database is
#: built by any run.
CACHE_BUILDING_FEATURES = "schema or bad_input or timestamps"


def warm_up(report_dir: Path) -> float:
    """Run the features that fill the user cache once, untimed by the comparison, and return how long it took.

    Without it the first timed run pays for every cache on a fresh machine, and the speed-up of the parallel run
    over it is inflated; the run that comes first must not be the one that pays."""
    started = time.monotonic()
    run_cli(["-n", "1", "-m", CACHE_BUILDING_FEATURES, "--report-dir", str(report_dir)], what="the warm-up run")
    return time.monotonic() - started


def run_cli(run_args: list[str], *, what: str, env: dict[str, str] | None = None) -> None:
    """``prefect-conformance run`` with ``run_args`` in a child process; a run that did not pass ends the bench."""
    proc = subprocess.run(
        [sys.executable, "-m", "harness.commands.cli", "run", *run_args], capture_output=True, text=True, env=env
    )
    if proc.returncode != 0:
        raise SystemExit(
            f"bench: {what} did not pass (exit {proc.returncode}):\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}"
        )


def run_suite(parallel: str, report_dir: Path) -> SuiteRun:
    timeline = report_dir / "timeline.jsonl"
    report_dir.mkdir(parents=True, exist_ok=True)
    timeline.unlink(missing_ok=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    run_cli(
        ["-n", parallel, "--report-dir", str(report_dir), "--", "-p", "harness.commands.timeline"],
        what="the suite",
        env={**os.environ, TIMELINE_ENV: str(timeline)},
    )
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    span, workers = worker_profile(timeline)
    return SuiteRun(
        wall, cpu, json.loads((report_dir / "latest" / "results.json").read_text()), span, workers, report_dir
    )


def median_run(runs: list[SuiteRun]) -> SuiteRun:
    """The run whose wall time is the median (the lower of the two middle ones for an even count): its profile is
    reported whole, so the figures of one table come from one run."""
    return sorted(runs, key=lambda run: run.wall)[(len(runs) - 1) // 2]


def spread(runs: list[SuiteRun]) -> str:
    walls = sorted(run.wall for run in runs)
    if len(walls) == 1:
        return "one run"
    return f"median of {len(walls)}: {', '.join(f'{wall:.1f}' for wall in walls)} s"


def profile_lines(run: SuiteRun, cores: int) -> list[str]:
    """Where the parallel run's time went: its CPU against what the cores could give, and each worker's checks
    and idle time (the modules in the order it ran them)."""
    lines = [
        f"CPU: {run.cpu:.1f} s over {run.wall:.1f} s of wall on {cores} cores ({run.cpu / run.wall / cores:.0%} busy); "
        f"the reference server used {run.reference_cpu:.1f} s of it, pytest and the real clients the rest. "
        f"A run that needs {run.cpu:.1f} CPU-seconds takes at least {run.cpu / cores:.1f} s here (its CPU floor): this "
        f"one took {run.wall / (run.cpu / cores):.2f} x that.",
        "",
        f"Critical path (the modules that decided the wall time, each after the one before it on its worker, or after "
        "the rest of the run for the durability checks): "
        f"{describe_path(critical_path(run.report_dir / 'timeline.jsonl'))}.",
        "",
        f"Load: {run.results['run']['extra'].get('load', 'not recorded')}.",
        "",
        "| worker | in checks (s) | idle between its first and the last check (s) | modules, in order (s) |",
        "|---|---|---|---|",
    ]
    for worker in run.workers:
        idle = max(0.0, run.span - worker.first - worker.busy)
        modules = ", ".join(f"{module} {seconds:.1f}" for module, seconds in worker.modules)
        lines.append(f"| {worker.worker} | {worker.busy:.1f} | {idle:.1f} | {modules} |")
    return lines


def per_feature(results: dict) -> dict[str, float]:
    totals: dict[str, float] = {}
    for check in results["checks"]:
        totals[check["feature"]] = totals.get(check["feature"], 0.0) + check["duration"]
    return totals


@dataclass(frozen=True)
class Overhead:
    """The recorder's cost, from interleaved pairs of the same request sent directly and through it."""

    pairs: int
    direct_ms: float  # median latency, direct
    recorded_ms: float  # median latency, through the recorder
    ratio: float  # median of the per-pair ratios recorded / direct
    low: float  # 95 % bootstrap confidence interval of that median
    high: float

    def describe(self) -> str:
        return (
            f"{(self.ratio - 1) * 100:+.1f} % (95 % CI {(self.low - 1) * 100:+.1f} % to {(self.high - 1) * 100:+.1f} "
            "%; "
            f"{self.direct_ms:.2f} ms direct, {self.recorded_ms:.2f} ms recorded; median of {self.pairs} interleaved "
            "pairs)"
        )


def paired_ratio(
    direct: list[float], recorded: list[float], *, resamples: int = 2000, seed: int = 0
) -> tuple[float, float, float]:
    """Median of the per-pair ratios ``recorded / direct`` and its 95 % bootstrap interval.

    Pairs, not two separate medians: a pair's two requests are sent back to back, so a slow moment of a shared
    machine slows both and cancels out of their ratio (two medians taken a second apart once gave -11 %).
    """
    ratios = [r / d for d, r in zip(direct, recorded, strict=True)]
    rng = random.Random(seed)
    medians = sorted(statistics.median(rng.choices(ratios, k=len(ratios))) for _ in range(resamples))
    return statistics.median(ratios), medians[int(0.025 * resamples)], medians[int(0.975 * resamples) - 1]


#: The client of :func:`recorder_overhead`, in its own process as every real client is: in the relay's process,
#: its wake-ups would wait for the relay thread's hold on the GIL, which no real client shares.
OVERHEAD_CLIENT = """
import json, sys, time
import httpx

direct_url, recorded_url, pairs = sys.argv[1], sys.argv[2], int(sys.argv[3])
body = {"flows": {"name": {"any_": ["no-such-flow"]}}, "limit": 1}
with httpx.Client(timeout=10) as http:
    def latency(url):
        started = time.perf_counter()
        http.post(url + "/flows/filter", json=body).raise_for_status()
        return (time.perf_counter() - started) * 1000

    for _ in range(50):  # warm up both paths (connections, the server's caches)
        latency(direct_url), latency(recorded_url)
    direct, recorded = [], []
    for i in range(pairs):
        if i % 2:
            recorded.append(latency(recorded_url)); direct.append(latency(direct_url))
        else:
            direct.append(latency(direct_url)); recorded.append(latency(recorded_url))
json.dump({"direct": direct, "recorded": recorded}, sys.stdout)
"""


def recorder_overhead(pairs: int = 400) -> Overhead:
    """The same realistic request, direct and through the recording relay, alternating which goes first in each
    pair, from a client in its own process (as real clients are) while the relay runs here (as in a run)."""
    with tempfile.TemporaryDirectory() as tmp, LocalReference(workdir=Path(tmp)) as reference:
        with RecordingRelay(reference.api_url, actor="bench") as relay:
            proc = subprocess.run(
                [sys.executable, "-c", OVERHEAD_CLIENT, reference.api_url, relay.api_url, str(pairs)],
                capture_output=True,
                text=True,
                timeout=600,
            )
            if proc.returncode != 0:
                raise SystemExit(f"bench: the overhead client failed:\n{proc.stderr[-2000:]}")
            timings = json.loads(proc.stdout)
    direct, recorded = timings["direct"], timings["recorded"]
    ratio, low, high = paired_ratio(direct, recorded)
    return Overhead(pairs, statistics.median(direct), statistics.median(recorded), ratio, low, high)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.commands.bench", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--report-dir",
        type=absolute_path,
        default=str(default_report_dir()),
        help="where to write (a relative path is taken from the current directory)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        metavar="K",
        help="time the suite K times serially and K times in parallel, alternating, and report the "
        "median run of each (default 3; one run of the suite varies by a third on a shared machine)",
    )
    args = parser.parse_args(argv)
    out = args.report_dir / "bench"
    out.mkdir(parents=True, exist_ok=True)
    warm = warm_up(out / "warm-up")
    serial_runs: list[SuiteRun] = []
    parallel_runs: list[SuiteRun] = []
    for index in range(1, max(1, args.repeat) + 1):  # alternating, so a slow spell of the machine hits both
        serial_runs.append(run_suite("1", out / f"serial-{index}"))
        parallel_runs.append(run_suite("auto", out / f"parallel-{index}"))
    serial_run, parallel_run = median_run(serial_runs), median_run(parallel_runs)
    serial_wall, serial, parallel_wall = serial_run.wall, serial_run.results, parallel_run.wall
    overhead = recorder_overhead()
    features = per_feature(serial)
    startup = flow_run_startup()
    waits = unavoidable_waits(startup)
    floor = sum(seconds for _, seconds in waits.values())
    lines = [
        f"# prefect-conformance benchmark, {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
        f"target: bundled reference (Prefect {serial['run']['target_version']}, SQLite).",
        "",
        "| feature | checks | time in checks, serial (s) | requests: harness / real clients | unavoidable waits (s) | "
        "what cannot be avoided |",
        "|---|---|---|---|---|---|",
    ]
    harness_requests, busiest = serial_run.harness_requests()
    client_requests = serial_run.client_requests()
    counts: dict[str, int] = {}
    for check in serial["checks"]:
        counts[check["feature"]] = counts.get(check["feature"], 0) + 1
    for feature in sorted(features, key=lambda f: FEATURE_ORDER.index(f) if f in FEATURE_ORDER else 99):
        why, seconds = waits.get(feature, ("", 0.0))
        lines.append(
            f"| {feature} | {counts[feature]} | {features[feature]:.1f} | {harness_requests.get(feature, 0)} / "
            f"{client_requests.get(feature, 0)} | {seconds:.1f} | {why} |"
        )
    lines += [
        "",
        "| measure | value |",
        "|---|---|",
        f"| warm-up before the timed runs (`-m '{CACHE_BUILDING_FEATURES}'`, serially; fills the caches on a "
        f"machine's first run) | {warm:.1f} s |",
        "| reference server start-up (cached template DB) | "
        f"{serial['run']['extra'].get('reference_startup_seconds', 0):.1f} s |",
        f"| full suite, serial (`-n 1`), wall | {serial_wall:.1f} s ({spread(serial_runs)}) |",
        f"| full suite, parallel (`-n auto`: {len(parallel_run.workers)} processes), wall | {parallel_wall:.1f} s "
        f"({spread(parallel_runs)}) |",
        f"| parallel speed-up | {serial_wall / parallel_wall:.2f}x |",
        f"| CPU used by the parallel run (every process: pytest, clients, the reference) | {parallel_run.cpu:.1f} "
        "CPU-s |",
        f"| parallel wall / CPU floor (CPU-s / {os.cpu_count()} cores) | "
        f"{parallel_wall / (parallel_run.cpu / (os.cpu_count() or 1)):.2f}x |",
        f"| flow-run process start-up (`import prefect.flow_engine`, median of 3) | {startup:.2f} s |",
        f"| sum of unavoidable waits | {floor:.1f} s (parallel goal: 1.5 x = {1.5 * floor:.1f} s) |",
        f"| recorder overhead per request | {overhead.describe()} |",
        "",
        f"Requests, serially: the harness sent {sum(harness_requests.values())} (its setup, waits and cleanup), the "
        f"real clients {sum(client_requests.values())}; the reference used {serial_run.reference_cpu:.1f} CPU-seconds "
        f"answering them and running its services. The checks that sent the most: "
        + ", ".join(f"{nodeid.split('::')[-1]} {count}" for nodeid, count in busiest[:5])
        + ".",
        "",
        "## Where the median parallel run's time went",
        "",
        *profile_lines(parallel_run, os.cpu_count() or 1),
        "",
        f"Serially: {serial_run.cpu:.1f} CPU-seconds over {serial_wall:.1f} s (the reference server "
        f"{serial_run.reference_cpu:.1f} s).",
        "",
    ]
    text = "\n".join(lines)
    (out / "bench.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
