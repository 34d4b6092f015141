"""Where a run's time went, for ``make bench``: when each check ran, in which pytest process.

A pytest plugin (``-p harness.commands.timeline``) that appends one JSON line per finished check to the file named by
``PREFECT_CONFORMANCE_TIMELINE``: the xdist worker, the node id, the start and end (wall clock, setup to
teardown) and how many requests the harness sent the target meanwhile (its :class:`ApiClient`'s, retries included;
a check runs alone in its process, so the count is its own). :func:`worker_profile` turns the lines into what a
person reads: per worker, how long it ran checks and how long it sat idle, and the modules in the order it ran
them; :func:`requests_by_module`, the requests per module and the busiest checks.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from harness.reporting.results import check_id
from harness.target.api import ApiClient

TIMELINE_ENV = "PREFECT_CONFORMANCE_TIMELINE"

_started: dict[str, tuple[float, int]] = {}
#: Whether this process is an xdist controller, which also sees every check's log events (relayed from the
#: workers): only the process that ran a check writes it.
_controller: list[bool] = []


@pytest.hookimpl(trylast=True)
def pytest_configure(config: pytest.Config) -> None:
    _controller.append(bool(getattr(config.option, "numprocesses", None)) and not hasattr(config, "workerinput"))


def pytest_runtest_logstart(nodeid: str, location: object) -> None:
    _started[nodeid] = (time.time(), ApiClient.sent)


def pytest_runtest_logfinish(nodeid: str, location: object) -> None:
    path = os.environ.get(TIMELINE_ENV)
    if not path or nodeid not in _started or (_controller and _controller[0]):
        return
    start, sent = _started.pop(nodeid)
    line = {
        "worker": os.environ.get("PYTEST_XDIST_WORKER", "main"),
        "nodeid": nodeid,
        "start": start,
        "end": time.time(),
        "requests": ApiClient.sent - sent,
    }
    with open(path, "a") as out:  # one short line per write: appends of several processes do not interleave
        out.write(json.dumps(line) + "\n")


@dataclass
class WorkerProfile:
    worker: str
    busy: float  # seconds spent in checks (setup, call, teardown)
    first: float  # when its first check started, seconds after the run's first check
    modules: list[tuple[str, float]] = field(default_factory=list)  # (module, seconds) in the order it ran them


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _module(nodeid: str) -> str:
    """``scenarios/test_worker.py::test_x`` -> ``worker``: the feature a check belongs to."""
    return check_id(nodeid)[1]


def _own_module(nodeid: str) -> str:
    """``scenarios/test_lifecycle__lease.py::test_x`` -> ``lifecycle__lease``: the module itself, a feature's part."""
    return Path(nodeid.split("::")[0]).stem.removeprefix("test_")


@dataclass(frozen=True)
class Segment:
    """A module's run on one worker: from its first check's start to its last one's end (seconds since the run's
    first check)."""

    worker: str
    module: str
    start: float
    end: float


#: The modules that wait for every other check to finish before they begin (the durability checks' quiet point).
WAITS_FOR_THE_REST = ("durability",)


def critical_path(path: Path) -> list[Segment]:
    """The chain of modules that decided the run's wall time: from the segment that ended last, back through the
    segment before it on the same worker, or, for a module that waits for the rest of the run (the durability
    checks' quiet point), through the last other segment to end; in the order they ran."""
    rows = sorted(_rows(path), key=lambda r: r["start"])
    if not rows:
        return []
    t0 = min(r["start"] for r in rows)
    segments: list[Segment] = []
    for row in rows:
        module = _own_module(row["nodeid"])
        last = next((s for s in reversed(segments) if s.worker == row["worker"]), None)
        if last is not None and last.module == module:
            segments[segments.index(last)] = Segment(last.worker, module, last.start, row["end"] - t0)
        else:
            segments.append(Segment(row["worker"], module, row["start"] - t0, row["end"] - t0))
    chain = [max(segments, key=lambda s: s.end)]
    while True:
        current = chain[-1]
        if current.module in WAITS_FOR_THE_REST:
            before = [s for s in segments if s.module not in WAITS_FOR_THE_REST and s.end <= current.end]
        else:
            before = [s for s in segments if s.worker == current.worker and s.end <= current.start + 1e-6]
        if not before:
            return list(reversed(chain))
        chain.append(max(before, key=lambda s: s.end))


def describe_path(chain: list[Segment]) -> str:
    """``gw1 lifecycle__lease 0.0-72.3 s -> gw1 timestamps 72.3-75.0 s -> ...``"""
    return " -> ".join(f"{s.worker} {s.module} {s.start:.1f}-{s.end:.1f} s" for s in chain)


def worker_profile(path: Path) -> tuple[float, list[WorkerProfile]]:
    """The span from the first check's start to the last one's end, and each worker's profile."""
    rows = _rows(path)
    if not rows:
        return 0.0, []
    t0 = min(r["start"] for r in rows)
    span = max(r["end"] for r in rows) - t0
    profiles: dict[str, WorkerProfile] = {}
    for row in sorted(rows, key=lambda r: r["start"]):
        profile = profiles.setdefault(row["worker"], WorkerProfile(row["worker"], 0.0, row["start"] - t0))
        seconds = row["end"] - row["start"]
        profile.busy += seconds
        module = _module(row["nodeid"])
        if profile.modules and profile.modules[-1][0] == module:
            profile.modules[-1] = (module, profile.modules[-1][1] + seconds)
        else:
            profile.modules.append((module, seconds))
    return span, sorted(profiles.values(), key=lambda p: p.worker)


def requests_by_module(path: Path) -> tuple[dict[str, int], list[tuple[str, int]]]:
    """Requests the harness sent per module, and the checks that sent the most (node id, count), busiest first."""
    rows = _rows(path)
    modules: dict[str, int] = {}
    for row in rows:
        module = _module(row["nodeid"])
        modules[module] = modules.get(module, 0) + row.get("requests", 0)
    busiest = sorted(((row["nodeid"], row.get("requests", 0)) for row in rows), key=lambda pair: -pair[1])
    return modules, busiest
