"""The CI gate: expectation files, unsupported endpoints, regression comparison, reruns and the reports."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from harness import __version__
from harness.reporting.html import render_html
from harness.reporting.results import CheckResult, RunInfo
from tests.conftest import run_suite
from tests.deviations.framework import Deviation, Refuses, RewritesResponses
from tests.deviations.timestamps import drop_offset

OUTPUT = sorted(f"timestamps/output_format[{k}]" for k in ("deployment", "flow", "flow_run", "work_pool"))


@pytest.fixture(scope="module")
def naive_target(reference):
    """A target that returns naive timestamps: every output_format check fails on it."""
    from tests.deviating_proxy import DeviatingProxy

    with DeviatingProxy(reference.api_url, actor="naive-target", deviation=RewritesResponses(drop_offset)) as proxy:
        yield proxy


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_listed_failures_pass_the_gate_and_are_reported_as_expected(naive_target, tmp_path: Path) -> None:
    unlisted = run_suite("--target", naive_target.api_url, "-k", "output_format", report_dir=tmp_path / "a")
    assert unlisted.code == 1 and unlisted.failed() == set(OUTPUT), unlisted.explain()

    expectations = write(
        tmp_path / "naive.toml",
        '[expected."timestamps/output_format[*]"]\noutcome = "fail"\nreason = "naive timestamps, tracked in #7"\n',
    )
    listed = run_suite(
        "--target",
        naive_target.api_url,
        "-k",
        "output_format",
        "--expectations",
        str(expectations),
        report_dir=tmp_path / "b",
    )
    assert listed.code == 0, listed.explain()
    assert listed.with_status("expected-failure") == set(OUTPUT)
    junit = ET.parse(listed.report_dir / "junit.xml").getroot()
    skipped = [s.get("message") for s in junit.iter("skipped")]
    assert len(skipped) == 4 and all(m == "expected failure: naive timestamps, tracked in #7" for m in skipped)
    assert not list(junit.iter("failure"))
    report = (listed.report_dir / "report.md").read_text()
    assert "# Prefect conformance: PASS" in report and "## Expected failures" in report and "tracked in #7" in report


def test_listed_failure_that_passes_is_an_unexpected_pass(reference, tmp_path: Path) -> None:
    expectations = write(
        tmp_path / "stale.toml",
        '[expected."timestamps/output_format[flow]"]\noutcome = "fail"\nreason = "was broken"\n',
    )
    run = run_suite(
        "--target",
        reference.api_url,
        "-k",
        "output_format",
        "--expectations",
        str(expectations),
        report_dir=tmp_path / "a",
    )
    assert run.code == 0, run.explain()
    assert run.with_status("unexpected-pass") == {"timestamps/output_format[flow]"}
    assert "UNEXPECTED PASS timestamps/output_format[flow] (listed as failing: was broken)" in run.stdout
    assert "## Unexpected passes" in (run.report_dir / "report.md").read_text()
    strict = run_suite(
        "--target",
        reference.api_url,
        "-k",
        "output_format",
        "--expectations",
        str(expectations),
        "--strict-expectations",
        report_dir=tmp_path / "b",
    )
    assert strict.code == 1, strict.explain()


def test_missing_endpoint_is_unsupported_never_a_pass(deviating, tmp_path: Path) -> None:
    proxy = deviating(Refuses("POST", r"/api/work_pools/$", 404))
    run = run_suite("--target", proxy.api_url, "-k", "output_format", report_dir=tmp_path / "a")
    assert run.code == 1, run.explain()
    assert run.status("timestamps/output_format[work_pool]") == "unsupported"
    assert "the target does not implement POST /work_pools/" in run.message("timestamps/output_format[work_pool]")
    assert run.status("timestamps/output_format[flow]") == "passed"
    expectations = write(
        tmp_path / "e.toml",
        '[expected."timestamps/output_format[work_pool]"]\noutcome = "unsupported"\nreason = "no work pools yet"\n',
    )
    listed = run_suite(
        "--target", proxy.api_url, "-k", "output_format", "--expectations", str(expectations), report_dir=tmp_path / "b"
    )
    assert listed.code == 0 and listed.status("timestamps/output_format[work_pool]") == "expected-failure", (
        listed.explain()
    )


def test_update_expectations_lists_failures_and_keeps_reasons(naive_target, tmp_path: Path) -> None:
    path = write(
        tmp_path / "target.toml",
        (
            '[expected."timestamps/output_format[flow]"]\noutcome = "fail"\nreason = "kept reason"\nlink = "https://t/1"\n\n'
            '[expected."timestamps/input_format_in_filter[utc-z]"]\noutcome = "fail"\nreason = "fixed since"\n'
        ),
    )
    # Filters compare the stored instants, so naive *output* leaves them passing: that entry must go.
    run = run_suite(
        "--target",
        naive_target.api_url,
        "-k",
        "output_format or in_filter",
        "--expectations",
        str(path),
        "--update-expectations",
        report_dir=tmp_path / "a",
    )
    assert run.code == 1, run.explain()  # this run still judged by the old file
    import tomllib

    written = tomllib.loads(path.read_text())["expected"]
    assert sorted(written) == OUTPUT
    assert written["timestamps/output_format[flow]"] == {
        "outcome": "fail",
        "reason": "kept reason",
        "link": "https://t/1",
    }
    assert written["timestamps/output_format[work_pool]"]["reason"].startswith("TODO: explain. First seen: ")
    again = run_suite(
        "--target",
        naive_target.api_url,
        "-k",
        "output_format or in_filter",
        "--expectations",
        str(path),
        report_dir=tmp_path / "b",
    )
    assert again.code == 0, again.explain()


def test_compare_and_rerun_failed(deviating, reference, tmp_path: Path) -> None:
    reports = tmp_path / "reports"
    server = deviating(RewritesResponses(drop_offset))
    broken = run_suite("--target", server.api_url, "-k", "output_format or in_filter", report_dir=reports)
    assert broken.code == 1
    old = shutil.copy(broken.report_dir / "results.json", tmp_path / "broken.json")
    # A run against another server in between is no baseline for this one.
    other = run_suite("--target", reference.api_url, "-k", "output_format and flow_run", report_dir=reports)
    assert other.code == 0 and "Since the previous run" not in (other.report_dir / "report.md").read_text(), (
        other.explain()
    )
    server.deviation = Deviation()  # the server is fixed, at the same address
    rerun = run_suite("--target", server.api_url, "--rerun-failed", str(old), report_dir=reports)
    assert rerun.code == 0, rerun.explain()
    assert set(rerun.checks) == set(OUTPUT), "only the failed checks should run again"
    report = (rerun.report_dir / "report.md").read_text()
    assert "**Fixed** (4): " in report and "`timestamps/output_format[flow]`" in report, report
    assert f"against {server.api_url})" in report, report  # the broken run, not the one against the reference
    # The standalone comparison: going from the fixed run back to the broken one is a regression (exit 1).
    cmd = [sys.executable, "-m", "harness.commands.cli", "compare", str(rerun.report_dir / "results.json"), str(old)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=Path(__file__).parent.parent)
    assert proc.returncode == 1 and "new failures: 4" in proc.stdout, proc.stdout + proc.stderr


def test_unknown_expectations_file_is_a_usage_error(reference, tmp_path: Path) -> None:
    run = run_suite(
        "--target", reference.api_url, "--expectations", str(tmp_path / "missing.toml"), report_dir=tmp_path / "a"
    )
    assert run.code == 2 and "Cannot read expectations file" in run.stderr


# --- the HTML report, in a real browser -----------------------------------------------------------------------

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def sample_report() -> str:
    run = RunInfo(
        "http://127.0.0.1:4200/api",
        "url",
        "3.9.1",
        "0.1.0",
        "3.9.1",
        "pc-20261126t101742-abcdef",
        "2026-11-26T10:17:42+00:00",
        duration=31.4,
        expectations_file="expectations/zig.toml",
    )
    results = [
        CheckResult(
            "timestamps/output_format[flow]",
            "timestamps",
            "s",
            "failed",
            message="POST /flows/ returned timestamps a Prefect client mis-reads:\n  $.created = "
            "'2026-11-26T10:00:00': has no timezone offset",
        ),
        CheckResult(
            "worker/worker_polls_work_pool_endpoint",
            "worker",
            "s",
            "unsupported",
            message="the target does not implement POST /work_pools/p/get_scheduled_flow_runs",
        ),
        CheckResult(
            "serve/served_run_completes",
            "serve",
            "s",
            "failed",
            status="expected-failure",
            message="m",
            expectation="known, #3",
        ),
        CheckResult(
            "scheduling/deployment_poll_limit",
            "scheduling",
            "s",
            "passed",
            status="unexpected-pass",
            expectation="was broken",
        ),
        CheckResult("scheduler/no_duplicate_runs", "scheduler", "s", "passed"),
    ]
    return render_html(run, results)


@pytest.mark.skipif(
    CHROMIUM is None or shutil.which("pdftotext") is None,
    reason="needs Debian's chromium and poppler-utils (.ci/run installs them)",
)
def test_html_report_renders_in_a_real_browser(tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    page.write_text(sample_report())
    assert "<script" not in page.read_text() and "http://" not in page.read_text().split("<main>", 1)[0].replace(
        "http://127.0.0.1:4200/api", ""
    )
    pdf, png = tmp_path / "report.pdf", tmp_path / "report.png"
    base = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-pdf-header-footer"]
    subprocess.run(base + [f"--print-to-pdf={pdf}", page.as_uri()], capture_output=True, timeout=120, check=True)
    subprocess.run(
        base + [f"--screenshot={png}", "--window-size=1200,1400", page.as_uri()],
        capture_output=True,
        timeout=120,
        check=True,
    )
    text = subprocess.run(["pdftotext", "-layout", str(pdf), "-"], capture_output=True, text=True, check=True).stdout
    for visible in (
        "Prefect conformance",
        "FAIL",
        "Summary by feature",
        "timestamps/output_format[flow]",
        "has no timezone offset",
        "(unsupported)",
        "Unexpected passes",
        "scheduling/deployment_poll_limit",
        "Expected failures",
        "known, #3",
    ):
        assert visible in text, f"{visible!r} is not visible in the rendered report:\n{text[:2000]}"
    assert png.stat().st_size > 20_000, "the screenshot is (nearly) blank"
    Path("/tmp/prefect-conformance-report.png").write_bytes(png.read_bytes())  # for a person to look at


class Switchable(Deviation):
    """A deviation the test can swap while the proxy (and so the target's URL, its identity in the report
    history) stays the same: the same server fixed, then regressed."""

    def __init__(self, inner: Deviation) -> None:
        self.inner = inner

    def on_request(self, request):
        return self.inner.on_request(request)

    def on_response(self, request, response):
        return self.inner.on_response(request, response)


#: An expectations file as suite 0.1.0's --update-expectations wrote it (no [suite] table: that came in 0.2.0).
WRITTEN_BY_0_1_0 = """# Known failures of prefect-conformance against http://port.example/api.
# Written by --update-expectations; reasons are kept when an entry stays. Check ids: see README.

[expected."timestamps/output_format[*]"]
outcome = "fail"
reason = "naive timestamps, tracked in #7"
"""
NEW_CHECK = "labels/a_deployment_carries_its_flows_labels_and_the_flow_id"  # came in 0.2.0


def test_an_older_suites_expectations_keep_the_gate_green_after_an_upgrade(reference, tmp_path: Path) -> None:
    """A port's CI pinned its known failures with suite 0.1.0; upgrading to this suite adds checks it fails too. The
    gate stays green (the new check is pending) until the new check has passed once against the port, and
    --update-expectations records the new suite version. The claim tells the truth throughout."""
    from tests.deviating_proxy import DeviatingProxy
    from tests.deviations.framework import Together
    from tests.deviations.labels import LacksSystemLabels

    broken = Together(RewritesResponses(drop_offset), LacksSystemLabels())
    deviation = Switchable(broken)
    with DeviatingProxy(reference.api_url, actor="upgraded-port", deviation=deviation) as port:
        expectations = write(tmp_path / "port.toml", WRITTEN_BY_0_1_0)
        args = (
            "--target",
            port.api_url,
            "-k",
            "output_format or a_deployment_carries",
            "--expectations",
            str(expectations),
        )
        upgraded = run_suite(*args, report_dir=tmp_path / "reports")
        assert upgraded.code == 0, upgraded.explain()
        assert upgraded.with_status("expected-failure") == set(OUTPUT) and upgraded.with_status("pending") == {
            NEW_CHECK
        }
        claim = json.loads((upgraded.report_dir / "results.json").read_text())["claim"]
        assert {p["profile"]: p["text"] for p in claim["profiles"]} == {
            "core": "not conformant (0 of 4; 4 known failures)",
            "records": "not supported (0 of 1; 1 pending)",
        }
        assert "## Pending (1)" in (upgraded.report_dir / "report.md").read_text()
        junit = ET.parse(upgraded.report_dir / "junit.xml").getroot()
        properties = {p.get("name"): p.get("value") for p in junit.iter("property")}
        assert (
            properties["claim.records"] == "not supported (0 of 1; 1 pending)" and properties["claim"] == claim["line"]
        )

        deviation.inner = RewritesResponses(drop_offset)  # the port fixes its labels: the new check passes once...
        fixed = run_suite(*args, report_dir=tmp_path / "reports")
        assert fixed.code == 0 and fixed.status(NEW_CHECK) == "passed", fixed.explain()
        deviation.inner = broken  # ...and from then on it gates
        regressed = run_suite(*args, report_dir=tmp_path / "reports")
        assert regressed.code == 1 and regressed.failed() == {NEW_CHECK}, regressed.explain()

        recorded = run_suite(*args, "--update-expectations", report_dir=tmp_path / "recorded")
        assert recorded.code == 0 and recorded.with_status("pending") == {NEW_CHECK}, recorded.explain()
        rewritten = expectations.read_text()  # the new version and the new check's entry: from now on it is known
        assert f'[suite]\nversion = "{__version__}"' in rewritten and f'[expected."{NEW_CHECK}"]' in rewritten


def test_the_api_coverage_map_shows_a_missing_route_the_real_clients_used(deviating, suite) -> None:
    """A target without ``POST /logs/``: the coverage map probes every route of Prefect's document without side
    effects, finds that one missing, and names it among the routes the real clients called."""
    proxy = deviating(Refuses("POST", r"/api/logs/$"))
    run = suite("--target", proxy.api_url, "-m", "logs", "-k", "a_flow_runs_logs_are_read_back")
    coverage = json.loads((run.report_dir / "results.json").read_text())["coverage"]
    missing = [(r["method"], r["route"]) for r in coverage["routes"] if r["verdict"] == "missing"]
    assert missing == [("POST", "/logs/")], coverage["line"]
    logs = next(r for r in coverage["routes"] if (r["method"], r["route"]) == ("POST", "/logs/"))
    assert logs["used"] > 0 and set(logs["used_statuses"]) == {"404"}, logs
    assert coverage["summary"]["used_but_missing"] == 1 and coverage["summary"]["present"] > 150, coverage["summary"]
    assert (
        "1 of them missing" in run.stdout
        and "(**used by the real clients**)" in (run.report_dir / "report.md").read_text()
    )
    # Nothing was created by the probes: the target's document's every DELETE and body-less POST was left alone.
    assert all(r["verdict"] == "not probed" for r in coverage["routes"] if r["method"] == "DELETE")
