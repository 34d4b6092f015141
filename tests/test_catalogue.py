"""The catalogue of checks, the claim a run ends with, and the gate's statuses for `should`, pending and
intermittent checks (issue 27)."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from harness import __version__
from harness.commands.checks import collect_checks
from harness.reporting.catalogue import load_catalogue, render_catalogue_markdown
from harness.reporting.claims import make_claim, render_badge
from harness.reporting.diagnoses import diagnose
from harness.reporting.expectations import Expectation, apply, render, updated, written_by
from harness.reporting.results import CheckResult
from tests.conftest import PROJECT_ROOT

DOCS = PROJECT_ROOT / "docs" / "checks.md"


@pytest.fixture(scope="module")
def checks():
    return collect_checks()


def test_every_check_has_a_profile_a_severity_a_since_a_reference_and_a_description(checks) -> None:
    catalogue = load_catalogue()
    assert len(checks) > 250
    lacking = {
        c.id: [
            name
            for name in ("profile", "severity", "since", "reference", "description", "applies_to")
            if not getattr(c, name)
        ]
        for c in checks
    }
    assert not {cid: missing for cid, missing in lacking.items() if missing}
    assert all(c.since in catalogue.versions for c in checks)
    assert all(c.severity in ("must", "should") and len(c.severity_reason) > 40 for c in checks)
    # Every pattern of the catalogue names a check that exists: a renamed check cannot leave its entry behind.
    ids = [c.id for c in checks]
    patterns = [p for _, ps in catalogue.should + catalogue.since + catalogue.check_references for p in ps]
    patterns += [p for profile in catalogue.profiles for p in profile.checks]
    from harness.reporting.catalogue import matches

    assert [p for p in patterns if not any(matches(cid, p) for cid in ids)] == []


def test_the_suite_version_is_the_catalogues_newest_and_pyprojects() -> None:
    project = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert load_catalogue().version == __version__ == project


def test_docs_checks_md_is_generated_and_current(checks) -> None:
    assert DOCS.read_text() == render_catalogue_markdown(checks), (
        "docs/checks.md is stale: regenerate it with `prefect-conformance checks --format md > docs/checks.md`"
    )


def test_the_checks_command_prints_the_catalogue_as_json(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "harness.commands.cli", "checks", "--format", "json", "--profiles", "concurrency"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert document["suite_version"] == __version__
    assert {c["id"] for c in document["checks"]} == set(load_catalogue().profile("concurrency").checks)
    bad = subprocess.run(
        [sys.executable, "-m", "harness.commands.cli", "checks", "--profiles", "nope"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert bad.returncode == 2 and bad.stderr.startswith("prefect-conformance: --profiles 'nope': unknown profile nope")


def result(cid: str, outcome: str, **kwargs) -> CheckResult:
    catalogue = load_catalogue()
    feature = cid.split("/")[0]
    return CheckResult(
        cid,
        feature,
        "s",
        outcome,
        profile=catalogue.profile_of(cid, feature),
        severity=catalogue.severity_of(cid)[0],
        since=catalogue.since_of(cid),
        **kwargs,
    )


def test_a_should_check_that_fails_warns_unless_strict() -> None:
    warned = [result("timestamps/input_format[naive]", "failed"), result("timestamps/input_format[utc-z]", "failed")]
    apply([], warned)
    assert [r.status for r in warned] == ["warning", "failed"]
    assert warned[0].expectation.startswith("should, not must: No Prefect client sends such a time")
    strict = [result("timestamps/input_format[naive]", "failed")]
    apply([], strict, strict=True)
    assert strict[0].status == "failed"


def test_a_check_newer_than_the_expectations_file_is_pending_until_it_has_passed_once() -> None:
    results = [
        result("labels/a_flow_run_carries_its_flows_labels_and_the_flow_id", "failed"),
        result("lists/count_agrees_with_the_list[flows]", "failed"),
        result("timestamps/output_format[flow]", "failed"),
    ]
    apply([], results, written_by="0.1.0", passed_before=frozenset({"lists/count_agrees_with_the_list[flows]"}))
    assert [r.status for r in results] == ["pending", "failed", "failed"]
    assert "new in suite 0.2.0, after the expectations file's 0.1.0" in results[0].expectation
    current = [result("labels/a_flow_run_carries_its_flows_labels_and_the_flow_id", "failed")]
    apply([], current, written_by="0.2.0")
    assert current[0].status == "failed"


def test_an_expectations_file_says_which_suite_wrote_it(tmp_path: Path) -> None:
    written = tmp_path / "new.toml"
    written.write_text(render([Expectation("worker/*", "fail", "no pools")], "http://x/api"))
    assert written_by(written) == __version__
    old = tmp_path / "old.toml"
    old.write_text('[expected."worker/*"]\noutcome = "fail"\nreason = "written before the field"\n')
    assert written_by(old) == "0.1.0"


def test_an_intermittent_check_passes_the_gate_either_way_and_its_flaps_are_counted() -> None:
    entries = [Expectation("worker/*", "intermittent", "a race in our heartbeats")]
    results = [
        result("worker/worker_run_completes", "failed"),
        result("worker/worker_polls_work_pool_endpoint", "passed"),
    ]
    apply(entries, results, history={"worker/worker_run_completes": ["passed", "failed", "passed"]})
    assert [r.status for r in results] == ["expected-failure", "passed"]
    assert results[0].expectation == (
        "intermittent, failed in 2 of the last 4 runs against this target: a race in our heartbeats"
    )
    assert [e.pattern for e in updated(entries, results)] == ["worker/*"]


def test_the_claim_says_each_profile_and_never_waives_core() -> None:
    results = [
        result("timestamps/output_format[flow]", "failed"),
        result("timestamps/output_format[deployment]", "passed"),
        result("worker/worker_run_completes", "passed"),
        result("worker/worker_registers_with_its_pool", "failed"),
        result("serve/served_run_completes", "passed"),
        result("events/a_clients_event_is_read_back", "failed"),
        result("timestamps/input_format[naive]", "failed"),
        result("scheduler/x", "n/a"),
    ]
    apply([Expectation("timestamps/output_format[*]", "fail", "known")], results)
    claim = make_claim(results, "0.2.0", "3.9.1")
    assert {p.profile: p.text for p in claim.profiles} == {
        "core": "not conformant (2 of 3; 1 known failure)",
        "serve": "conformant",
        "workers": "partial (1 of 2)",
        "events": "not supported (0 of 1)",
    }
    assert (
        claim.line.startswith("Prefect 3.9.1 (API ")
        and "prefect-conformance 0.2.0: conformant for serve; core: " in claim.line
    )
    badge = json.loads(render_badge(claim))
    assert badge == {
        "schemaVersion": 1,
        "label": "Prefect 3.9.1 conformance",
        "message": "core not conformant (2 of 3; 1 known failure)",
        "color": "red",
    }
    clean = make_claim(
        [result("serve/served_run_completes", "passed"), result("timestamps/input_format[naive]", "warning")],
        "0.2.0",
        "3.9.1",
    )
    assert [p.text for p in clean.profiles] == ["conformant (1 warning)", "conformant"]
    assert json.loads(render_badge(clean))["color"] == "brightgreen"


# --- diagnoses: each read from a message a deviating target of make test gave (copied from their runs) -----------

DIAGNOSED = {
    "An offset dropped": "sent '2026-12-08T02:17:42.123456-08:00'; POST /flow_runs/ expected_start_time is "
    "'2026-12-08T02:17:42.123456Z' = 2026-12-08T02:17:42.123456Z, expected the instant 2026-12-08T10:17:42.123456Z "
    "(off by -28800000000 µs)",
    "A time without offset read in a local zone": "sent '2026-12-08T10:17:42.123456'; POST /flow_runs/ "
    "expected_start_time is '2026-12-08T10:17:42.123456-08:00' = 2026-12-08T18:17:42.123456Z, expected the instant "
    "2026-12-08T10:17:42.123456Z (off by +28800000000 µs)",
    "Precision truncated to milliseconds": "POST /flow_runs/ expected_start_time is '2026-12-08T10:17:42.123Z' = "
    "2026-12-08T10:17:42.123000Z, expected the instant 2026-12-08T10:17:42.123456Z (off by -456 µs)",
    "Precision truncated to whole seconds": "the times the server set on a deployment: 7 problem(s):\n    - POST "
    "/deployments/ updated is '2026-12-07T05:10:41Z', 0.565 s before the request was sent: the server set it while it "
    "handled POST /deployments/",
    "Times stored in a local zone": "the times the server set on a deployment: 5 problem(s):\n    - POST /deployments/ "
    "updated is '2026-12-07T00:10:29.737118Z', 17999.961 s before the request was sent: the server set it",
    "A clock skew": "the target's clock is +3600.004 s from the harness's (more than 3 s), by the created "
    "'2026-12-07T06:10:49.858484Z' of POST /flows/ (± 0.008 s); its Date header says +3599.1 s to +3601.2 s.",
    "Instants compared as strings": "POST /flow_runs/filter with expected_start_time after_ = before_ = "
    "'2026-12-08T10:17:42.123456+00:00' (the instant 2026-12-08T10:17:42.123456Z) should return the run scheduled at "
    "exactly that instant (stored as '2026-12-08T10:17:42.123456Z'); it returned 0 runs. Hint: compare parsed instants",
    "Naive datetimes": "POST /flow_runs/ returned timestamps a Prefect client mis-reads:\n    "
    "$.state.state_details.scheduled_time = '2026-12-08T10:17:42.123456': has no timezone offset (naive)",
    "A schedule's daylight saving time ignored": "runs of {'cron': '30 1 * * *', 'timezone': 'America/New_York'} from "
    "2027-11-06T00:00:00Z to 2027-11-09T00:00:00Z (wall clock in America/New_York): first difference at position 0 "
    "(expected 3 runs, got 3):\n    expected [11-06 01:30:00.000000EDT@2027-11-06T05:30:00Z]\n    actual   "
    "[11-06 02:30:00.000000EDT@2027-11-06T06:30:00Z]",
    "A schedule's time zone ignored": "runs of {'cron': '@daily', 'timezone': 'Europe/Berlin'} from "
    "2027-03-20T00:00:00Z to 2027-04-05T00:00:00Z (wall clock in Europe/Berlin): first difference at position 0 "
    "(expected 16 runs, got 16):\n    expected [03-21 00:00:00.000000CET@2027-03-20T23:00:00Z]\n    actual   "
    "[03-21 01:00:00.000000CET@2027-03-21T00:00:00Z]",
}

UNDIAGNOSED = [
    # An offset ignored in a filter looks like a string comparison, but only in a form a string could not match:
    "POST /flow_runs/filter with expected_start_time after_ = before_ = '2026-12-08T02:17:42.123456-08:00' (the "
    "instant "
    "2026-12-08T10:17:42.123456Z) should return the run scheduled at exactly that instant (stored as "
    "'2026-12-08T10:17:42.123456Z'); it returned 0 runs.",
    # A series shifted by an ignored anchor lands on whole quarter hours too, but not on the zone's offset:
    "runs of {'interval': 86400, 'anchor_date': '2027-01-01T09:00:00-05:00', 'timezone': 'America/New_York'} from "
    "2027-11-06T00:00:00Z to 2027-11-09T00:00:00Z (wall clock in America/New_York): first difference at position 0 "
    "(expected 3 runs, got 3):\n    expected [11-06 09:00:00.000000EDT@2027-11-06T13:00:00Z]\n    actual   "
    "[11-06 23:00:00.000000EDT@2027-11-07T03:00:00Z]",
    "the target's created times and its Date header disagree by more than 3 s: the target's clock is -7.250 s from "
    "the harness's, by the created '...' of POST /flows/ (± 0.008 s); its Date header says -1.2 s to +0.9 s.",
    # A server that keeps durations in whole seconds, on a clock as right as can be measured: no skew (issue 36).
    "total_run_time is 0.0, but the run was RUNNING for 0.058680 s (the target's clock is -0.012 s from the harness's, "
    "by the created '2026-12-07T06:10:49.858484Z' of POST /flows/ (± 0.008 s); its Date header says -0.9 s to +0.2 s)",
    "POST /flow_runs/ with scheduled_time '' should be rejected with 4xx like Prefect does (422); got POST /flow_runs/ "
    '-> 500 {"detail": "Internal Server Error"}',
]


@pytest.mark.parametrize("line", DIAGNOSED)
def test_a_diagnosis_names_the_mistake_its_evidence_proves(line: str) -> None:
    found = diagnose(DIAGNOSED[line])
    assert found is not None and found.line.startswith(line), found


def test_the_skew_diagnosis_has_the_clock_checks_threshold() -> None:
    from harness.checks.server_times import MAX_CLOCK_OFFSET
    from harness.reporting.diagnoses import SKEW_SECONDS

    assert SKEW_SECONDS == MAX_CLOCK_OFFSET


@pytest.mark.parametrize("message", UNDIAGNOSED)
def test_no_diagnosis_without_the_evidence(message: str) -> None:
    assert diagnose(message) is None
