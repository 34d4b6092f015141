"""The run's load budget: at most N real-client processes (flow-run processes, Runners, workers) start at once,
counted across every pytest worker of the run, and a record of the load the run put on the target.

A process costs most while it starts: importing Prefect takes about 2 CPU-s here, then a client or a flow run
mostly waits on the target. Twenty flow-run processes starting at once on two cores starve the target of CPU (its
SQLite writes time out: "database is locked"), so its verdict would depend on the machine's load. Each process a
real client starts runs the budget's ``sitecustomize`` first (its folder leads the clients' ``PYTHONPATH``, which
their flow-run processes inherit): it takes one of N slot files with ``flock`` before Python goes on, and lets it
go once the process has gone quiet (it imported no module and asked for less than half a core, running or waiting
for one, in two 0.15-s windows in a row: a start that waits on the disk is still a start) or exits, however it
exits (the kernel drops a dead process's locks). A process that still has no slot after :data:`WAIT_CAP` s goes on
anyway and says so, so a budget never deadlocks a run.

Only the start is bounded, not how many processes live: a paused flow waits in its process for its resume, and
holding its slot would leave the check that resumes it waiting behind other runs for ever.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

#: The folder of the run's budget (its slots, its log and the ``sitecustomize``), for the real clients' processes.
BUDGET_ENV = "PREFECT_CONFORMANCE_BUDGET"
#: How long a process waits for a slot before it starts without one (and the log says it did): the budget may
#: delay a run's start, but never by more than this, which every wait for a run to start allows. (At 120 s, a full
#: run beside three others on 2 cores queued a run 84.5 s behind the others' starts, and its check timed out.)
WAIT_CAP = 20.0
#: A process holds its slot at most this long, however busy it stays.
HOLD_CAP = 30.0

SITECUSTOMIZE = '''"""prefect-conformance's start budget (generated; see harness/clients/budget.py)."""
import fcntl, json, os, sys, threading, time


def _budget(folder):
    slots = sorted(name for name in os.listdir(folder) if name.startswith("slot-"))
    flow_run = os.environ.get("PREFECT__FLOW_RUN_ID", "")
    asked, handle, slot = time.time(), None, None
    while handle is None and time.time() - asked < {wait_cap!r}:
        for name in slots:
            candidate = open(os.path.join(folder, name), "a")
            try:
                fcntl.flock(candidate, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                candidate.close()
                continue
            handle, slot = candidate, name
            break
        else:
            time.sleep(0.02)
    granted = time.time()
    if flow_run:  # held for the process's life: the harness counts the flow-run processes alive by these locks
        alive = open(os.path.join(folder, "alive", str(os.getpid())), "a")
        fcntl.flock(alive, fcntl.LOCK_EX)
        sys._prefect_conformance_alive = alive
    record = {{"pid": os.getpid(), "flow_run": flow_run, "argv": " ".join(sys.argv)[:120] or sys.executable,
              "asked": asked, "granted": granted, "slot": slot}}

    def note(**more):
        with open(os.path.join(folder, "log.jsonl"), "a") as log:
            log.write(json.dumps({{**record, **more}}) + "\\n")

    note(event="granted" if handle else "overrun")
    if handle is None:
        return

    def demand():
        """CPU-seconds the process's main thread ran or waited to run: its demand for a core, however busy the
        machine (its CPU time alone falls when it waits for a core, and it would let go of its slot too soon)."""
        try:
            with open("/proc/self/schedstat") as stat:
                ran, waited = stat.read().split()[:2]
            return (int(ran) + int(waited)) / 1e9
        except (OSError, ValueError):
            return time.process_time()

    def release():
        used, seen, modules, quiet = demand(), time.time(), len(sys.modules), 0
        while quiet < 2 and time.time() - granted < {hold_cap!r}:
            time.sleep(0.15)
            now_used, now, now_modules = demand(), time.time(), len(sys.modules)
            idle = (now_used - used) / max(now - seen, 1e-3) < 0.5 and now_modules == modules
            quiet = quiet + 1 if idle else 0
            used, seen, modules = now_used, now, now_modules
        handle.close()
        note(event="released", released=time.time())

    threading.Thread(target=release, name="prefect-conformance-budget", daemon=True).start()


if os.environ.get({env!r}):
    try:
        _budget(os.environ[{env!r}])
    except OSError as exc:  # a budget that cannot be kept never stops a client
        print(f"prefect-conformance budget: {{exc}}", file=sys.stderr)
'''


def default_max_starts() -> int:
    """The machine's CPU count, at least 2."""
    return max(2, os.cpu_count() or 1)


def prepare(folder: Path, max_starts: int) -> Path:
    """Make the budget's folder: ``max_starts`` slots, the ``sitecustomize`` and an empty log."""
    (folder / "alive").mkdir(parents=True, exist_ok=True)
    for index in range(max_starts):
        (folder / f"slot-{index}").touch()
    (folder / "sitecustomize.py").write_text(SITECUSTOMIZE.format(wait_cap=WAIT_CAP, hold_cap=HOLD_CAP, env=BUDGET_ENV))
    (folder / "log.jsonl").touch()
    return folder


def client_environment(folder: str | None = None) -> dict[str, str]:
    """What a real client's environment needs for the budget to hold over it and every process it starts."""
    folder = folder or os.environ.get(BUDGET_ENV)
    if not folder:
        return {}
    path = [folder, *filter(None, [os.environ.get("PYTHONPATH", "")])]
    return {BUDGET_ENV: folder, "PYTHONPATH": os.pathsep.join(path)}


def alive_flow_runs(folder: Path) -> int:
    """How many flow-run processes are alive now (each holds a lock on its file under ``alive/`` till it exits)."""
    import fcntl

    count = 0
    for path in (folder / "alive").iterdir():
        try:
            with path.open("a") as handle:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            count += 1
            continue
        except OSError:
            continue
        path.unlink(missing_ok=True)  # its process is gone
    return count


def starting_now(folder: Path) -> int:
    """How many of the budget's slots are held now: processes starting."""
    import fcntl

    held = 0
    for path in folder.glob("slot-*"):
        try:
            with path.open("a") as handle:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            held += 1
        except OSError:
            continue
    return held


def load_now(folder: str | Path | None = None) -> str:
    """The real clients' load at this moment, in words ("2 client processes starting, 6 flow-run processes alive"),
    or "" without a budget."""
    folder = folder or os.environ.get(BUDGET_ENV)
    if not folder or not Path(folder).is_dir():
        return ""
    starting, alive = starting_now(Path(folder)), alive_flow_runs(Path(folder))
    return f"{starting} client processes starting, {alive} flow-run processes alive"


@dataclass
class Load:
    """The load a run put on the target through its real clients."""

    #: The budget: real-client processes starting at once (``--max-starts``).
    max_starts: int
    #: Processes started under the budget, and how many went on without a slot after WAIT_CAP s.
    started: int = 0
    overruns: int = 0
    #: The most processes that held a slot at once (never above ``max_starts``) and the longest wait for one (s).
    peak_starting: int = 0
    longest_wait: float = 0.0
    #: The most flow-run processes alive at once, as sampled every quarter second.
    peak_flow_runs_alive: int = 0

    def describe(self) -> str:
        line = (
            f"at most {self.max_starts} client processes starting at once (--max-starts): {self.started} started, "
            f"{self.peak_starting} at once at the most, the longest wait {self.longest_wait:.1f} s; "
            f"{self.peak_flow_runs_alive} flow-run processes alive at once at the most"
        )
        return line + (
            f"; {self.overruns} started without a slot after waiting {WAIT_CAP:.0f} s" if self.overruns else ""
        )

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def most_at_once(spans: list[tuple[float, float]]) -> int:
    """The most spans (start, end) that cover one instant."""
    edges = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    current = peak = 0
    for _, step in edges:
        current += step
        peak = max(peak, current)
    return peak


def read_load(folder: Path, max_starts: int, peak_alive: int = 0) -> Load:
    """The load the budget's log records."""
    load = Load(max_starts, peak_flow_runs_alive=peak_alive)
    spans: list[tuple[float, float]] = []
    try:
        lines = (folder / "log.jsonl").read_text().splitlines()
    except FileNotFoundError:
        return load
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry["event"] in ("granted", "overrun"):
            load.started += 1
            load.overruns += entry["event"] == "overrun"
            load.longest_wait = max(load.longest_wait, entry["granted"] - entry["asked"])
        if entry["event"] == "released":
            spans.append((entry["granted"], entry["released"]))
    load.peak_starting = most_at_once(spans)
    return load


class AliveSampler:
    """Samples how many flow-run processes are alive, every ``interval`` s in a thread, keeping the peak."""

    def __init__(self, folder: Path, interval: float = 0.25) -> None:
        self.folder, self.interval, self.peak = folder, interval, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="budget-sampler", daemon=True)

    def start(self) -> "AliveSampler":
        self._thread.start()
        return self

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(timeout=5)
        return self.peak

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.peak = max(self.peak, alive_flow_runs(self.folder))
            except OSError:
                continue
