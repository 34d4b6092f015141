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
    lacking = {c.id: [name for name in ("profile", "severity", "since", "reference", "description", "applies_to")
                      if not getattr(c, name)] for c in checks}
    assert not {cid: missing for cid, missing in lacking.items() if missing}
    assert all(c.since in catalogue.versions for c in checks)
    assert all(c.severity == "must" or len(c.severity_reason) > 40 for c in checks)
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
        "docs/checks.md is stale: regenerate it with `prefect-conformance checks --format md > docs/checks.md`")


def test_the_checks_command_prints_the_catalogue_as_json(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "harness.commands.cli", "checks", "--format", "json", "--profiles",
                           "concurrency"], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    assert document["suite_version"] == __version__
    assert {c["id"] for c in document["checks"]} == set(load_catalogue().profile("concurrency").checks)
    bad = subprocess.run([sys.executable, "-m", "harness.commands.cli", "checks", "--profiles", "nope"],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert bad.returncode == 2 and bad.stderr.startswith("prefect-conformance: --profiles 'nope': unknown profile nope")


def result(cid: str, outcome: str, **kwargs) -> CheckResult:
    catalogue = load_catalogue()
    feature = cid.split("/")[0]
    return CheckResult(cid, feature, "s", outcome, profile=catalogue.profile_of(cid, feature),
                       severity=catalogue.severity_of(cid)[0], since=catalogue.since_of(cid), **kwargs)


def test_a_should_check_that_fails_warns_unless_strict() -> None:
    warned = [result("timestamps/input_format[naive]", "failed"), result("timestamps/input_format[utc-z]", "failed")]
    apply([], warned)
    assert [r.status for r in warned] == ["warning", "failed"]
    assert warned[0].expectation.startswith("should, not must: No Prefect client sends such a time")
    strict = [result("timestamps/input_format[naive]", "failed")]
    apply([], strict, strict=True)
    assert strict[0].status == "failed"


def test_a_check_newer_than_the_expectations_file_is_pending_until_it_has_passed_once() -> None:
    results = [result("labels/a_flow_run_carries_its_flows_labels_and_the_flow_id", "failed"),
               result("lists/count_agrees_with_the_list[flows]", "failed"),
               result("timestamps/output_format[flow]", "failed")]
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
    results = [result("worker/worker_run_completes", "failed"), result("worker/worker_polls_work_pool_endpoint", "passed")]
    apply(entries, results, history={"worker/worker_run_completes": ["passed", "failed", "passed"]})
    assert [r.status for r in results] == ["expected-failure", "passed"]
    assert results[0].expectation == ("intermittent, failed in 2 of the last 4 runs against this target: a race in "
                                      "our heartbeats")
    assert [e.pattern for e in updated(entries, results)] == ["worker/*"]


def test_the_claim_says_each_profile_and_never_waives_core() -> None:
    results = [result("timestamps/output_format[flow]", "failed"), result("timestamps/output_format[deployment]", "passed"),
               result("worker/worker_run_completes", "passed"), result("worker/worker_registers_with_its_pool", "failed"),
               result("serve/served_run_completes", "passed"), result("events/a_clients_event_is_read_back", "failed"),
               result("timestamps/input_format[naive]", "failed"), result("scheduler/x", "n/a")]
    apply([Expectation("timestamps/output_format[*]", "fail", "known")], results)
    claim = make_claim(results, "0.2.0", "3.9.1")
    assert {p.profile: p.text for p in claim.profiles} == {
        "core": "not conformant (2 of 3; 1 known failure)", "serve": "conformant", "workers": "partial (1 of 2)",
        "events": "not supported (0 of 1)"}
    assert claim.line.startswith("Prefect 3.9.1 (API ") and "prefect-conformance 0.2.0: conformant for serve; core: " in claim.line
    badge = json.loads(render_badge(claim))
    assert badge == {"schemaVersion": 1, "label": "Prefect 3.9.1 conformance",
                     "message": "core not conformant (2 of 3; 1 known failure)", "color": "red"}
    clean = make_claim([result("serve/served_run_completes", "passed"), result("timestamps/input_format[naive]", "warning")],
                       "0.2.0", "3.9.1")
    assert [p.text for p in clean.profiles] == ["conformant (1 warning)", "conformant"]
    assert json.loads(render_badge(clean))["color"] == "brightgreen"
