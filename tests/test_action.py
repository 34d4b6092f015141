"""The GitHub Action (action.yml): its steps after the install run here as the script they call, with the inputs
as GitHub passes them, against the bundled reference and a deviating target; no GitHub needed."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

from tests.conftest import PROJECT_ROOT
from tests.deviations.framework import RewritesResponses
from tests.deviations.timestamps import drop_offset

SCRIPT = PROJECT_ROOT / "action" / "run.sh"


def run_action(tmp_path: Path, **inputs: str) -> tuple[subprocess.CompletedProcess, str]:
    summary = tmp_path / "step-summary.md"
    env = {
        **os.environ,
        "GITHUB_STEP_SUMMARY": str(summary),
        "INPUT_REPORT_DIR": str(tmp_path / "reports"),
        "PREFECT_CONFORMANCE": str(Path(sys.executable).parent / "prefect-conformance"),
        **{f"INPUT_{name.upper()}": value for name, value in inputs.items()},
    }
    done = subprocess.run(["bash", str(SCRIPT)], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    return done, summary.read_text() if summary.exists() else ""


def test_the_action_passes_its_inputs_to_the_script_it_runs() -> None:
    action = yaml.safe_load((PROJECT_ROOT / "action.yml").read_text())
    assert action["runs"]["using"] == "composite"
    assert {"target", "expectations", "args", "client-version", "profiles"} <= set(action["inputs"])
    run = next(step for step in action["runs"]["steps"] if step.get("id") == "run")
    assert "action/run.sh" in run["run"]
    script = SCRIPT.read_text()
    for name in run["env"]:
        assert name in script, f"action.yml passes {name}, which action/run.sh does not read"


def test_the_action_script_writes_the_summary_and_exits_with_the_verdict(reference, tmp_path: Path) -> None:
    done, summary = run_action(tmp_path, target=reference.api_url, args='-m "handshake or labels"')
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert done.stdout.rstrip().endswith("prefect-conformance action: verdict 0 — passed")
    assert summary.startswith("## Prefect conformance: PASS (exit 0)"), summary
    assert re.search(
        r"^> Prefect 3\.\d+\.\d+ \(API [\d.]+\), prefect-conformance [\d.]+: conformant for core and records",
        summary,
        re.M,
    )
    assert "| labels | 3 |" in summary and len(summary.splitlines()) < 40
    assert (tmp_path / "reports" / "latest" / "report.html").exists()


def test_the_action_fails_on_conformance_failures_and_says_what_failed(deviating, tmp_path: Path) -> None:
    proxy = deviating(RewritesResponses(drop_offset))
    done, summary = run_action(tmp_path, target=proxy.api_url, args="-k output_format")
    assert done.returncode == 1, done.stdout[-2000:] + done.stderr[-2000:]
    assert "verdict 1 — conformance failures" in done.stdout.splitlines()[-1]
    assert summary.startswith("## Prefect conformance: FAIL (exit 1)") and "core: not conformant (0 of 4)" in summary
    assert "**Failures** (4 checks, 1 causes):" in summary and "Naive datetimes" in summary, summary


def test_the_action_without_a_target_is_no_verdict(tmp_path: Path) -> None:
    done, _ = run_action(tmp_path, target="")
    assert done.returncode == 2 and "the 'target' input is required" in done.stderr
