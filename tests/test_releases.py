"""Clients of another Prefect release: installed once into the cache, run as the actors, proven by their traffic."""

from __future__ import annotations

import json
from importlib.metadata import version as installed_version
from pathlib import Path

import pytest

from harness.reference.releases import Release, pins, pinned, release
from harness.target.errors import HarnessError

#: A release before the worker's websocket channel (3.7.1) and before stdlib datetimes replaced pendulum's in
#: some client paths: old enough to differ, new enough that Prefect supports it against a 3.9.1 server.
OLDER = "3.4.25"


def test_the_pinned_release_needs_no_environment(tmp_path: Path) -> None:
    for version in (None, "", installed_version("prefect")):
        assert release(version, cache=tmp_path) == pinned()
    assert pinned().is_pinned and Path(pinned().prefect).name == "prefect"
    assert list(tmp_path.iterdir()) == []


def test_a_version_that_is_not_a_release_number_is_refused_before_anything_is_installed(tmp_path: Path) -> None:
    with pytest.raises(HarnessError, match=r"'3\.4' is not a Prefect release number\. Hint: write it as X\.Y\.Z"):
        release("3.4", cache=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_pins_come_by_exact_version_then_by_minor_series(tmp_path: Path) -> None:
    data = tmp_path / "releases.toml"
    data.write_text('[pins]\n"3.0" = ["pydantic<2.10"]\n"3.0.11" = ["sqlalchemy<2.1"]\n')
    assert pins("3.0.11", data) == ["sqlalchemy<2.1"]
    assert pins("3.0.4", data) == ["pydantic<2.10"]
    assert pins("3.4.25", data) == []


def test_another_release_is_a_separate_interpreter() -> None:
    other = Release(OLDER, "/cache/releases/prefect-3.4.25/bin/python")
    assert not other.is_pinned and other.prefect == "/cache/releases/prefect-3.4.25/bin/prefect"


@pytest.mark.long
def test_clients_of_another_release_run_the_worker_and_task_worker_checks(reference, suite) -> None:
    """``--client-version`` runs every actor from that release (installed on first use, one line saying so), the
    reports name it, and each actor's transcript proves it: Prefect's clients send ``prefect/X.Y.Z`` as their
    User-Agent."""
    run = suite("--target", reference.api_url, "-m", "worker or task_worker", "--client-version", OLDER)
    assert run.code == 0 and len(run.passed()) == 11, run.explain()
    installed = [line for line in run.stdout.splitlines() if "installed Prefect" in line]
    assert all(f"Prefect {OLDER} in" in line and " MB, " in line for line in installed), run.explain()
    results = json.loads((run.report_dir / "results.json").read_text())
    assert results["run"]["client_version"] == OLDER, results["run"]
    for actor in ("worker/worker", "task_worker/task-submitter"):
        transcript = (run.report_dir / "artifacts" / f"{actor}.transcript.jsonl").read_text()
        agents = {json.loads(line)["user_agent"] for line in transcript.splitlines()}
        assert f"prefect/{OLDER} (API 0.8.4)" in agents, f"{actor}: {agents}"
    assert f"clients from Prefect {OLDER}" in (run.report_dir / "report.md").read_text()
