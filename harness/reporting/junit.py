"""``junit.xml`` for CI systems: one test suite per feature.

Expected failures, warnings (``should`` checks) and pending checks are skipped with their reason; ``unsupported``
is a failure; ``error`` is an error.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from harness.reporting.claims import Claim
from harness.reporting.results import CheckResult, RunInfo, by_feature, summarize


def render_junit(run: RunInfo, results: list[CheckResult], claim: Claim | None = None) -> str:
    """One <testsuite> per feature. Expected failures, warnings and pending checks are skipped with their reason;
    unsupported is a failure. Every suite carries the run's claim as properties (``claim``, ``claim.<profile>``)."""
    suites = ET.Element("testsuites", name="prefect-conformance")
    for feature, items in by_feature(results):
        c = summarize(items)
        suite = ET.SubElement(
            suites,
            "testsuite",
            name=feature,
            tests=str(len(items)),
            failures=str(c["failed"] + c["unsupported"]),
            errors=str(c["error"]),
            skipped=str(c["skipped"] + c["n/a"] + c["expected-failure"] + c["warning"] + c["pending"]),
            time=f"{sum(r.duration for r in items):.3f}",
        )
        properties = ET.SubElement(suite, "properties")
        claimed = [("claim", claim.line)] + [(f"claim.{p.profile}", p.text) for p in claim.profiles] if claim else []
        for name, value in (
            ("target", run.target_url),
            ("target_version", run.target_version),
            ("suite_version", run.suite_version),
            *claimed,
        ):
            ET.SubElement(properties, "property", name=name, value=value)
        for r in items:
            case = ET.SubElement(
                suite, "testcase", classname=f"prefect-conformance.{feature}", name=r.id, time=f"{r.duration:.3f}"
            )
            first = (r.message.splitlines() or [""])[0][:300]
            if r.status in ("failed", "unsupported"):
                ET.SubElement(case, "failure", type=r.status, message=first).text = r.message
            elif r.status == "error":
                ET.SubElement(case, "error", type="harness-error", message=first).text = r.message
            elif r.status == "expected-failure":
                ET.SubElement(
                    case, "skipped", type="expected-failure", message=f"expected failure: {r.expectation}"
                ).text = r.message
            elif r.status in ("warning", "pending"):
                ET.SubElement(case, "skipped", type=r.status, message=f"{r.status}: {r.expectation}").text = r.message
            elif r.status in ("skipped", "n/a"):
                ET.SubElement(case, "skipped", message=first if r.status == "skipped" else f"n/a: {first}")
            elif r.status == "unexpected-pass":
                ET.SubElement(case, "system-out").text = f"unexpected pass: listed as failing ({r.expectation})"
    ET.indent(suites)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"
