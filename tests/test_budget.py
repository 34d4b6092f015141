"""The start budget (harness/clients/budget.py): real processes, as the real clients' are, never start more than N at
once, whatever kills them, and the run's load is read back from what they noted."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

from harness.clients.budget import AliveSampler, client_environment, most_at_once, prepare, read_load
from harness.reference.environment import clean_environment
from harness.reference.releases import pinned

#: A flow-run process's start as the real clients' begin: Python starts (the budget's sitecustomize runs first), then
#: Prefect's flow engine is imported; the process notes when its import began and ended, then waits a while.
START = """
import json, os, sys, time
began = time.time()
import prefect.flow_engine
ended = time.time()
with open(sys.argv[1], "a") as out:
    out.write(json.dumps({"pid": os.getpid(), "began": began, "ended": ended}) + "\\n")
if sys.argv[2] == "die":
    os.kill(os.getpid(), 9)
time.sleep(float(sys.argv[2]))
"""


def start(folder: Path, out: Path, then: str, run: str) -> subprocess.Popen:
    env = clean_environment({**client_environment(str(folder)), "PREFECT__FLOW_RUN_ID": run})
    return subprocess.Popen([pinned().python, "-c", START, str(out), then], env=env)


def test_no_more_than_n_processes_start_at_once_and_a_killed_one_frees_its_slot(tmp_path: Path) -> None:
    folder, out = prepare(tmp_path / "budget", 1), tmp_path / "starts.jsonl"
    sampler = AliveSampler(folder, interval=0.05).start()
    # The first dies holding nothing but its life (killed right after its start); the rest stay alive a while.
    processes = [start(folder, out, "die" if n == 0 else "2", f"run-{n}") for n in range(4)]
    for process in processes:
        process.wait(timeout=120)
    peak_alive = sampler.stop()
    starts = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(starts) == 4
    assert most_at_once([(s["began"], s["ended"]) for s in starts]) == 1, (
        f"with a budget of 1, two processes imported Prefect at once: {starts}"
    )
    load = read_load(folder, 1, peak_alive)
    assert (load.started, load.overruns, load.peak_starting) == (4, 0, 1), load
    assert load.peak_flow_runs_alive >= 2, "the processes that waited after their start were alive together"
    assert "at most 1 client processes starting at once" in load.describe()


def test_two_slots_let_two_start_together(tmp_path: Path) -> None:
    folder, out = prepare(tmp_path / "budget", 2), tmp_path / "starts.jsonl"
    processes = [start(folder, out, "0", f"run-{n}") for n in range(3)]
    for process in processes:
        process.wait(timeout=120)
    starts = [json.loads(line) for line in out.read_text().splitlines()]
    assert most_at_once([(s["began"], s["ended"]) for s in starts]) <= 2
    assert read_load(folder, 2).peak_starting <= 2


def test_without_a_budget_a_client_environment_adds_nothing(monkeypatch) -> None:
    monkeypatch.delenv("PREFECT_CONFORMANCE_BUDGET", raising=False)
    assert client_environment() == {}
    env = client_environment("/some/budget")
    assert env["PYTHONPATH"].split(os.pathsep)[0] == "/some/budget"


def test_the_load_is_read_from_the_log(tmp_path: Path) -> None:
    folder = prepare(tmp_path / "budget", 2)
    now = time.time()
    lines = [
        {"event": "granted", "asked": now, "granted": now + 1.5},
        {"event": "released", "granted": now + 1.5, "released": now + 3},
        {"event": "granted", "asked": now, "granted": now},
        {"event": "released", "granted": now, "released": now + 2},
        {"event": "overrun", "asked": now, "granted": now + 120},
    ]
    (folder / "log.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    load = read_load(folder, 2, 5)
    assert (load.started, load.overruns, load.peak_starting, load.peak_flow_runs_alive) == (3, 1, 2, 5)
    assert "1 started without a slot" in load.describe()
