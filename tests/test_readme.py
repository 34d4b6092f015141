"""The README's commands, executed exactly as written, in a fresh clone of the committed HEAD.

The user's path is the product: the opening block of the README is parsed (never copied here), so when a
command there changes, this test runs the new one. Three paths are walked, each asserting the exit code and
the four report files:

* every ``make conformance`` line of the opening block, in the clone (creates ``.venv``, starts the bundled
  reference, runs the whole suite). This is also the project's one proof that the bundled reference passes every
  check of every feature, with a transcript of each real client;
* the README's "Against your own server" command, with its example URL replaced by a running reference, and
  one feature selected through the Makefile's documented ``ARGS`` (the whole suite was just run);
* the installed CLI from another working directory, with a relative ``--report-dir``.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import PROJECT_ROOT, REPORT_FILES, user_environment

EXAMPLE_URL = re.compile(r"http://[\w.]+:\d+/api")

#: The suite's checks per feature. A check that silently stops being collected fails here.
CHECKS_PER_FEATURE = {
    "handshake": 1,
    "timestamps": 41,
    "scheduling": 49,
    "schema": 17,
    "bad_input": 15,
    "statuses": 8,
    "upserts": 5,
    "labels": 3,
    "lists": 25,
    "logs": 5,
    "events": 4,
    "variables": 15,
    "scheduler": 45,
    "serve": 9,
    "worker": 9,
    "task_worker": 5,
    "lifecycle": 24,
    "durability": 4,
}

#: Real clients whose recorded traffic every whole run keeps, as the proof of which path ran.
TRANSCRIBED_ACTORS = ("runner", "scheduled-runner", "worker", "task-worker", "task-submitter")

#: Tests of this module share one expensive setup (one worker runs them in order).
pytestmark = pytest.mark.xdist_group("readme")


def opening_commands(readme: str) -> list[str]:
    """The commands of the README's first ``sh`` block, without their comments."""
    block = re.search(r"```sh\n(.*?)```", readme, re.S)
    assert block, "the README must open with a ```sh block of the commands that set up and run everything"
    return [line.split("#", 1)[0].strip() for line in block.group(1).splitlines() if line.split("#", 1)[0].strip()]


def own_server_command(readme: str) -> str:
    """The README's command for running against your own server (the first ``make conformance TARGET=...``)."""
    found = re.search(r"`(make conformance TARGET=\S+?)`", readme)
    assert found, "the README must say how to run against your own server: `make conformance TARGET=...`"
    return found.group(1)


def cli_command(readme: str) -> str:
    """The README's one-feature CLI example (``prefect-conformance run --target URL -m timestamps``)."""
    found = re.search(r"^(prefect-conformance run --target \S+ -m timestamps)\b", readme, re.M)
    assert found, "the README's 'Running it' block must show `prefect-conformance run --target URL -m timestamps`"
    return found.group(1)


def run_shell(command: str, cwd: Path, env: dict[str, str], timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def explain(command: str, proc: subprocess.CompletedProcess) -> str:
    return f"`{command}` exited {proc.returncode}\nstdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"


def assert_reports(folder: Path, command: str, proc: subprocess.CompletedProcess) -> None:
    missing = [name for name in REPORT_FILES if not (folder / name).is_file()]
    assert not missing, f"`{command}` wrote no {missing} in {folder}\n{explain(command, proc)}"


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh clone of the committed HEAD, as a new user gets it."""
    folder = tmp_path_factory.mktemp("readme") / "prefect-conformance"
    subprocess.run(["git", "clone", "-q", str(PROJECT_ROOT), str(folder)], check=True, capture_output=True)
    return folder


def test_readme_opening_commands_work_in_a_fresh_clone(clone: Path) -> None:
    readme = (clone / "README.md").read_text()
    commands = opening_commands(readme)
    assert any(c.startswith("make conformance") for c in commands), commands
    ci = (clone / ".ci" / "run").read_text()
    for command in commands:
        if command.startswith("make test"):  # running it here would recurse; CI runs it: .ci/run must say it
            assert re.search(rf"^{re.escape(command)}\s*$", ci, re.M), f".ci/run does not run the README's `{command}`"
            continue
        # The whole suite runs here beside three other test workers on 2 cores, a machine far busier than a user's:
        # Prefect's SQLite reference then answers real clients 503 for tens of seconds (docs/releases.md, row 25),
        # so the waits get what the README offers a slow machine (--timeout-scale, here through its variable).
        proc = run_shell(command, clone, {**user_environment(), "PREFECT_CONFORMANCE_TIMEOUT_SCALE": "2"})
        assert proc.returncode == 0, explain(command, proc)
        assert "verdict: 0 — passed" in proc.stdout, explain(command, proc)
        latest = clone / "reports" / "latest"
        assert_reports(latest, command, proc)
        assert_every_check_passed(latest)


def assert_every_check_passed(latest: Path) -> None:
    """The bundled reference passes every check, and the report shows each real client's transcript."""
    checks = json.loads((latest / "results.json").read_text())["checks"]
    not_passed = {c["id"]: c["status"] for c in checks if c["status"] != "passed"}
    assert not not_passed, f"on the bundled reference: {not_passed}"
    assert Counter(c["feature"] for c in checks) == CHECKS_PER_FEATURE
    claim = json.loads((latest / "results.json").read_text())["claim"]
    assert claim["complete"] and all(p["verdict"] == "conformant" for p in claim["profiles"]), claim
    assert {p["profile"] for p in claim["profiles"]} >= {
        "core",
        "records",
        "serve",
        "workers",
        "lifecycle",
        "concurrency",
    }
    report = (latest / "report.md").read_text()
    assert f"> {claim['line']}" in report and ": conformant for core, records, serve, workers" in claim["line"], claim
    coverage = json.loads((latest / "results.json").read_text())["coverage"]["summary"]
    assert coverage["missing"] == 0 and coverage["used_by_clients"] > 20, (
        coverage
    )  # Prefect has every route it documents
    for actor in TRANSCRIBED_ACTORS:
        assert f"{actor}, " in report, f"the report shows no transcript of the {actor}"
        assert any((latest / "artifacts").glob(f"*/{actor}.transcript.jsonl")), f"no transcript file of the {actor}"


def test_readme_command_against_a_running_server(clone: Path, reference) -> None:
    command = EXAMPLE_URL.sub(reference.api_url, own_server_command((clone / "README.md").read_text()))
    proc = run_shell(command, clone, {**user_environment(), "ARGS": "-m timestamps"})
    assert proc.returncode == 0, explain(command, proc)
    passed = CHECKS_PER_FEATURE["timestamps"]
    assert f"prefect-conformance: {passed} passed, 0 failed" in proc.stdout, explain(command, proc)
    assert_reports(clone / "reports" / "latest", command, proc)


def test_cli_from_another_directory_with_a_relative_report_dir(clone: Path, reference, tmp_path: Path) -> None:
    """Installed tools are run from wherever the user is; relative paths mean relative to that place."""
    elsewhere = tmp_path / "somewhere-else"
    elsewhere.mkdir()
    env = user_environment()
    if not (clone / ".venv" / "bin" / "prefect-conformance").exists():  # when this test runs on its own
        subprocess.run(["make", "venv"], cwd=clone, env=env, check=True, capture_output=True)
    env["PATH"] = os.pathsep.join([str(clone / ".venv" / "bin"), env["PATH"]])  # as after `source .venv/bin/activate`
    command = re.sub(r"(?<=--target )\S+", reference.api_url, cli_command((clone / "README.md").read_text()))
    command += " --report-dir " + shlex.quote("relative/reports")
    proc = run_shell(command, elsewhere, env)
    assert proc.returncode == 0, explain(command, proc)
    assert_reports(elsewhere / "relative" / "reports" / "latest", command, proc)
    assert not (clone / "relative").exists()


def test_pytest_runs_the_scenarios_in_a_checkout(clone: Path, reference) -> None:
    """The thin top-level conftest.py: ``pytest scenarios --target URL -m handshake`` in a checkout, with the plugin
    autoloaded (the venv's install of the suite) and without (``PYTEST_DISABLE_PLUGIN_AUTOLOAD``: conftest.py loads
    it then)."""
    env = user_environment()
    if not (clone / ".venv" / "bin" / "python").exists():  # when this test runs before the others of the module
        subprocess.run(["make", "venv"], cwd=clone, env=env, check=True, capture_output=True)
    for extra in ({}, {"PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}):
        command = [
            str(clone / ".venv" / "bin" / "python"),
            "-m",
            "pytest",
            "scenarios",
            "--target",
            reference.api_url,
            "-m",
            "handshake",
            "-p",
            "no:cacheprovider",
            "-q",
        ]
        proc = subprocess.run(command, cwd=clone, env={**env, **extra}, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0 and "1 passed" in proc.stdout, (
            f"{extra}: {proc.stdout[-2000:]}{proc.stderr[-2000:]}"
        )
