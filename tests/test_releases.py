"""Clients of another Prefect release: installed once into the cache, run as the actors, proven by their traffic."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from importlib.metadata import version as installed_version
from pathlib import Path

import pytest

from harness.commands.matrix import Column, ColumnResult
from harness.commands.matrix import render_html as render_matrix
from harness.errors import HarnessError
from harness.reference.releases import Release, not_applicable, pinned, pins, release, storage_of
from tests.conftest import PROJECT_ROOT, SCHEDULED_RUNNER_CHECKS
from tests.deviations.framework import RewritesJson, RewritesPolls
from tests.test_gate import CHROMIUM

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


def test_not_applicable_rules_match_check_client_and_server(tmp_path: Path) -> None:
    data = tmp_path / "releases.toml"
    data.write_text(
        '[[not_applicable]]\nchecks = ["serve/served_*"]\nclients = "<3.2"\nservers = ">3.4.25"\nreason = "r"\n'
    )
    assert not_applicable("serve/served_run_completes", "3.0.11", "3.9.1", data) == "r"
    assert not_applicable("serve/served_run_completes", "3.0.11", "3.4.25", data) is None  # server outside the range
    assert not_applicable("serve/served_run_completes", "3.9.1", "3.9.1", data) is None  # client outside the range
    assert not_applicable("serve/runner_polls_deployments_endpoint", "3.0.11", "3.9.1", data) is None
    assert not_applicable("serve/served_run_completes", "3.0.11", "zig-0.4", data) is None  # a port's own version


def test_a_storage_rule_holds_on_that_storage_and_where_the_storage_is_unknown(tmp_path: Path) -> None:
    data = tmp_path / "releases.toml"
    data.write_text(
        '[[not_applicable]]\nchecks = ["scheduling/many_*"]\nservers = "<3.3"\nstorage = "sqlite"\nreason = "r"\n'
    )
    check = "scheduling/many_runs_paged_like_a_runner_lose_nothing"
    assert not_applicable(check, "3.2.15", "3.2.15", data, storage=storage_of("reference-local")) == "r"
    assert not_applicable(check, "3.2.15", "3.2.15", data, storage=storage_of("reference-docker")) == "r"
    assert not_applicable(check, "3.2.15", "3.2.15", data, storage=storage_of("url")) == "r"
    assert not_applicable(check, "3.2.15", "3.2.15", data, storage=storage_of("reference-docker-postgres")) is None
    assert not_applicable(check, "3.2.15", "3.2.15", data, storage=storage_of("reference-local-postgres")) is None


def test_another_release_is_a_separate_interpreter() -> None:
    other = Release(OLDER, "/cache/releases/prefect-3.4.25/bin/python")
    assert not other.is_pinned and other.prefect == "/cache/releases/prefect-3.4.25/bin/prefect"


def nulled_after_the_first(body: dict, items: list) -> list:
    """A deployments poll whose answer has a null next_scheduled_start_time on every run but the first: harmless
    to Runners from 3.6.22, fatal to older ones, which sort the answer with ``or datetime.max`` (naive against
    aware instants). Runs are handed out two or more at a time, so the mix reaches the Runner whatever the timing."""
    if len(items) < 2:
        return []
    return items[:1] + [{**run, "next_scheduled_start_time": None} for run in items[1:]]


@pytest.mark.long
def test_matrix_shows_a_target_that_breaks_only_old_clients_red_in_their_column(deviating, tmp_path: Path) -> None:
    """``matrix --target URL --clients OLD,PINNED``: one column per client release, each a run with that release's
    actors (installed on first use, one line saying so); a target that only old Runners choke on is red in the old
    column alone, and each actor's transcript proves its release by the User-Agent it sent.

    The scheduled Runner (``serve(interval=1)``) is the actor: its poll looks 10 s ahead, so answers hold several
    runs."""
    proxy = deviating(RewritesPolls(nulled_after_the_first))
    current = pinned().version
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "harness.commands.cli",
            "matrix",
            "--target",
            proxy.api_url,
            "--clients",
            f"{OLDER},{current}",
            "-m",
            "serve",
            "-k",
            SCHEDULED_RUNNER_CHECKS,
            "--jobs",
            "2",
            "--report-dir",
            str(tmp_path),
        ],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    explain = f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert proc.returncode == 1, explain
    assert all(
        f"Prefect {OLDER} in" in line and " MB, " in line
        for line in proc.stdout.splitlines()
        if "installed Prefect" in line
    ), explain
    root = tmp_path / "matrix"
    document = json.loads((root / "matrix.json").read_text())
    old, new = f"server-target_clients-{OLDER}", f"server-target_clients-{current}"
    red = {
        (check, column)
        for check, row in document["checks"].items()
        for column, cell in row["cells"].items()
        if cell["status"] != "passed"
    }
    assert red == {("serve/runner_executes_server_scheduled_runs", old)}, explain
    message = document["checks"]["serve/runner_executes_server_scheduled_runs"]["cells"][old]["message"]
    assert "can't compare offset-naive and offset-aware datetimes" in message, message
    assert len(document["checks"]) == 2 and document["works_with_clients"] == [current], document["columns"]
    for column, version in ((old, OLDER), (new, current)):
        latest = root / column / "latest"
        assert json.loads((latest / "results.json").read_text())["run"]["client_version"] == version
        transcript = (latest / "artifacts" / "serve" / "scheduled-runner.transcript.jsonl").read_text()
        agents = {json.loads(line)["user_agent"] for line in transcript.splitlines()}
        assert any(agent.startswith(f"prefect/{version} ") for agent in agents), f"{column}: {agents}"
    assert f"clients {OLDER}" in (root / "matrix.html").read_text()


def test_a_server_column_runs_the_bundled_reference_of_that_release(tmp_path: Path) -> None:
    """``matrix --clients "" --servers OLD``: the reference of that release (``--reference-version``), installed and
    migrated on first use, answers as that release, and is gone when the column ends."""
    import os
    import uuid

    from tests.test_reliability import processes_with_marker

    marker = f"server-column-{uuid.uuid4().hex[:8]}"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "harness.commands.cli",
            "matrix",
            "--clients",
            "",
            "--servers",
            OLDER,
            "-m",
            "handshake",
            "--report-dir",
            str(tmp_path),
        ],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PREFECT_CONFORMANCE_RUN_ID": marker},
    )
    explain = f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert proc.returncode == 0, explain
    column = f"server-{OLDER}_clients-{OLDER}"
    document = json.loads((tmp_path / "matrix" / "matrix.json").read_text())
    assert (
        document["checks"]["handshake/admin_version_is_a_release_prefect_3_clients_accept"]["cells"][column]["status"]
        == "passed"
    ), explain
    run = json.loads((tmp_path / "matrix" / column / "latest" / "results.json").read_text())["run"]
    assert (run["target_version"], run["client_version"], run["target_kind"]) == (OLDER, OLDER, "reference-local"), run
    assert processes_with_marker(marker) == [], "the column's reference server outlived it"


@pytest.mark.skipif(
    CHROMIUM is None or shutil.which("pdftotext") is None,
    reason="needs Debian's chromium and poppler-utils (.ci/run installs them)",
)
def test_matrix_html_renders_in_a_real_browser(tmp_path: Path) -> None:
    columns = [
        ColumnResult(Column("target", "3.4.25"), 1, 14.0, {"passed": 4, "failed": 1}),
        ColumnResult(Column("target", "3.9.1"), 0, 15.0, {"passed": 5}),
    ]
    cell = {"status": "passed", "message": ""}
    checks = {
        "serve/served_run_completes": {
            "feature": "serve",
            "description": "d",
            "cells": {
                columns[0].column.id: {"status": "failed", "message": "the runner exited with code 1"},
                columns[1].column.id: cell,
            },
        },
        "worker/worker_run_carries_pool_and_worker_labels": {
            "feature": "worker",
            "description": "d",
            "cells": {
                columns[0].column.id: {"status": "n/a", "message": "workers label runs from 3.1.2 on"},
                columns[1].column.id: cell,
            },
        },
    }
    page = tmp_path / "matrix.html"
    page.write_text(render_matrix(columns, checks))
    assert "<script" not in page.read_text()
    pdf = tmp_path / "matrix.pdf"
    subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-pdf-header-footer",
            f"--print-to-pdf={pdf}",
            page.as_uri(),
        ],
        capture_output=True,
        timeout=120,
        check=True,
    )
    text = subprocess.run(["pdftotext", "-layout", str(pdf), "-"], capture_output=True, text=True, check=True).stdout
    for visible in (
        "prefect-conformance matrix",
        "works with clients: 3.9.1",
        "clients 3.4.25",
        "clients 3.9.1",
        "1 failed",
        "serve/served_run_completes",
        "failed",
        "n/a",
        "worker",
    ):
        assert visible in text, f"{visible!r} is not visible in the rendered matrix:\n{text[:2000]}"


def test_a_check_skipped_as_not_applicable_is_reported_n_a_with_its_reason() -> None:
    from types import SimpleNamespace

    from harness.reporting.results import NOT_APPLICABLE_PREFIX, ResultCollector, summarize

    collector = ResultCollector()
    for name, reason in (
        ("test_a", NOT_APPLICABLE_PREFIX + "workers label runs from 3.1.2 on"),
        ("test_b", "no docker"),
    ):
        collector.pytest_runtest_logreport(
            SimpleNamespace(
                nodeid=f"scenarios/test_worker.py::{name}",
                user_properties=[],
                duration=0.0,
                skipped=True,
                failed=False,
                longrepr=("scenarios/test_worker.py", 1, f"Skipped: {reason}"),
            )
        )
    a, b = collector.ordered()
    assert (a.status, a.message) == ("n/a", "workers label runs from 3.1.2 on")
    assert (b.status, b.message) == ("skipped", "no docker")
    assert summarize([a, b])["n/a"] == 1


def test_handshake_fails_on_a_version_prefect_3_clients_refuse(deviating, suite) -> None:
    """A port that answers its own version ("0.1.0") is refused by every Prefect 3 client; the check says so."""
    proxy = deviating(RewritesJson("GET", r"/admin/version$", lambda _: "0.1.0"))
    run = suite("--target", proxy.api_url, "-m", "handshake")
    run.assert_deviation_caught(
        "own-version",
        {"handshake/admin_version_is_a_release_prefect_3_clients_accept"},
        set(),
        r"answered '0\.1\.0', major version 0; Prefect 3 clients refuse it",
    )
