"""Every timestamp check passes on the reference and fails on a target that gets timestamps wrong.

Each case is a mistake a server author could plausibly make; the run must exit 1, the named checks must fail
with a message that explains the mistake, and the named unaffected checks must still pass (a check that fails
on everything is as useless as one that never fails).
"""

from __future__ import annotations

import re

import pytest

from tests.conftest import SCHEDULED_RUNNER_CHECKS, SuiteRun
from tests.conftest import DeviationCase as Case
from tests.deviating_proxy import ProxyRequest, ProxyResponse
from tests.deviations.framework import Deviation, RejectsRequests, RewritesRequests, RewritesResponses
from tests.deviations.timestamps import (
    ComparesFiltersAsStrings,
    KeepsAWrongClock,
    WritesUnusualTimestamps,
    drop_fraction,
    drop_offset,
    garbage_to_now,
    naive_as_local,
    offset_ignored,
    shifted,
    space_separator,
    to_offset,
    truncate_to_millis,
)

KINDS = ("flow", "flow_run", "deployment", "work_pool")
OUTPUT = {f"timestamps/output_format[{k}]" for k in KINDS}
ROUND_TRIP = {f"timestamps/microsecond_round_trip[{m}]" for m in (1, 123456, 999999)}
OFFSETS = ("positive-offset", "negative-offset", "offset-without-colon", "offset-crossing-midnight")


SERVER_SET = {
    f"timestamps/server_set_times[{k}]" for k in ("flow", "flow_run", "task_run", "deployment", "work_pool", "log")
}
STATE_TIMES = {f"timestamps/state_times_follow_the_states[{k}]" for k in ("flow_run", "task_run")}
CLOCK = "timestamps/target_clock_agrees_with_the_harness"
SERVER_TIMES = "clock or server_set_times or state_times"


def input_format(*ids: str) -> set[str]:
    return {f"timestamps/input_format[{i}]" for i in ids}


def in_filter(*ids: str) -> set[str]:
    return {f"timestamps/input_format_in_filter[{i}]" for i in ids}


class WritesEpochCreated(Deviation):
    """Returns ``created`` as a Unix epoch number, as a server storing integers might."""

    def on_response(self, request: ProxyRequest, response: ProxyResponse) -> ProxyResponse:
        document = response.json() if "json" in dict(response.headers).get("content-type", "") else None
        if isinstance(document, dict) and "created" in document:
            document["created"] = 1764151200
            response.set_json(document)
        return response


CASES = [
    Case(
        "updated-lags-five-hours",
        lambda: RewritesResponses(shifted(-5 * 3600), keys=frozenset({"updated"})),
        SERVER_SET,
        r"updated is '[^']+', 1799\d\.\d+ s before the request was sent: the server set it while it handled",
        keywords=SERVER_TIMES,
        passes={CLOCK} | STATE_TIMES,
        diagnosis="Times stored in a local zone",
    ),
    Case(
        "updated-truncated-to-seconds",
        lambda: RewritesResponses(drop_fraction, keys=frozenset({"updated"})),
        SERVER_SET,
        r"updated is '[^']+', (equal to|[\d.]+ s before)",
        keywords="server_set_times",
        diagnosis="Precision truncated to whole seconds",
    ),
    Case(
        "state-timestamps-collide",
        lambda: RewritesResponses(drop_fraction, keys=frozenset({"timestamp", "start_time", "end_time"})),
        STATE_TIMES,
        r"state's timestamp is '[^']+', equal to .* it must be after it",
        keywords="state_times",
        diagnosis="Precision truncated to whole seconds",
    ),
    Case(
        "created-in-local-time",
        lambda: RewritesResponses(shifted(-5 * 3600), keys=frozenset({"created"})),
        {CLOCK},
        r"the target's created times and its Date header disagree by more than 3 s: the target's clock is "
        r"-(1799\d|1800\d)\.\d+ s",
        keywords="clock",
        diagnosis="Times stored in a local zone",
    ),
    Case(
        "wrong-clock",
        lambda: KeepsAWrongClock(3600),
        {CLOCK},
        r"the target's clock is \+(3599\.9|3600\.0)\d+ s from the harness's \(more than 3 s\), by the created",
        keywords="clock or server_set_times",
        passes=SERVER_SET,
        diagnosis="A clock skew",
    ),
    Case(
        "naive-output",
        lambda: RewritesResponses(drop_offset),
        OUTPUT,
        "has no timezone offset",
        keywords="output_format",
        diagnosis="Naive datetimes",
    ),
    Case(
        "space-separator-output",
        lambda: RewritesResponses(space_separator),
        OUTPUT,
        "uses a space",
        keywords="output_format",
    ),
    Case(
        "non-utc-output",
        lambda: RewritesResponses(to_offset(330)),
        OUTPUT,
        "is not in UTC",
        keywords="output_format or microsecond_round_trip",
        passes=ROUND_TRIP,
    ),
    Case("epoch-created", WritesEpochCreated, {"timestamps/output_format[flow]"}, "got int", keywords="output_format"),
    Case(
        "naive-nested-scheduled-time",
        lambda: RewritesResponses(drop_offset, keys=frozenset({"scheduled_time"})),
        {"timestamps/output_format[flow_run]"},
        "state_details.scheduled_time",
        keywords="output_format",
        passes={"timestamps/output_format[flow]", "timestamps/output_format[work_pool]"},
        diagnosis="Naive datetimes",
    ),
    Case(
        "millisecond-storage",
        lambda: RewritesResponses(truncate_to_millis),
        ROUND_TRIP,
        "off by",
        keywords="microsecond_round_trip",
        diagnosis="Precision truncated to milliseconds",
    ),
    Case(
        "whole-second-storage",
        lambda: RewritesResponses(drop_fraction),
        ROUND_TRIP,
        "off by",
        keywords="microsecond_round_trip",
        diagnosis="Precision truncated to whole seconds",
    ),
    Case(
        "input-offset-ignored",
        lambda: RewritesRequests(offset_ignored),
        input_format(*OFFSETS) | in_filter(*OFFSETS),
        "expected the instant|should return the run scheduled at exactly that instant",
        keywords="input_format",
        passes=input_format("utc-z", "utc-offset", "space-separator", "naive"),
        diagnosis="An offset dropped",
    ),
    Case(
        "space-separator-rejected",
        lambda: RejectsRequests(r"^\d{4}-\d{2}-\d{2} \d"),
        input_format("space-separator") | in_filter("space-separator"),
        "rejected",
        keywords="input_format",
        passes=input_format("utc-z", "positive-offset"),
    ),
    Case(
        "z-designator-rejected",
        lambda: RejectsRequests(r"^\d{4}-\d{2}-\d{2}T.*Z$"),
        input_format("utc-z", "utc-z-no-fraction", "utc-z-millis", "utc-z-nanos"),
        "rejected",
        keywords="input_format and not filter",
        passes=input_format("utc-offset", "negative-offset"),
    ),
    Case(
        "nanoseconds-rejected",
        lambda: RejectsRequests(r"\.\d{7,}"),
        input_format("utc-z-nanos"),
        "rejected",
        keywords="input_format and not filter",
        passes=input_format("utc-z", "utc-z-millis"),
    ),
    Case(
        "naive-read-as-local-time",
        lambda: RewritesRequests(naive_as_local),
        input_format("naive") | in_filter("naive"),
        "off by|should return the run scheduled at exactly that instant",
        keywords="input_format",
        passes=input_format("utc-z", "space-separator"),
        diagnosis="A time without offset read in a local zone",
    ),
    Case(
        "filters-compare-strings",
        ComparesFiltersAsStrings,
        in_filter("utc-offset", "utc-z-millis", "space-separator", "naive", *OFFSETS),
        "compare parsed instants",
        keywords="input_format_in_filter",
        passes=in_filter("utc-z"),
        diagnosis="Instants compared as strings",
    ),
    Case(
        "invalid-input-accepted",
        lambda: RewritesRequests(garbage_to_now, keys=frozenset({"scheduled_time"})),
        {f"timestamps/invalid_input_rejected[{c}]" for c in ("garbage", "month-13", "hour-25", "empty")},
        "-> 201",
        keywords="invalid_input",
    ),
    Case(
        "invalid-input-crashes",
        lambda: RejectsRequests(
            r"^(not-a-timestamp|2026-13-.*|.*T25:.*|)$", status=500, detail="Internal Server Error"
        ),
        {f"timestamps/invalid_input_rejected[{c}]" for c in ("garbage", "month-13", "hour-25", "empty")},
        "-> 500",
        keywords="invalid_input",
    ),
]


def test_pass_through_proxy_is_transparent(deviating, suite) -> None:
    """The proxy itself changes nothing: every check still passes behind it."""
    proxy = deviating(Deviation())
    run = suite("--target", proxy.api_url, "-m", "timestamps")
    assert run.code == 0, run.explain()


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_deviation_fails_the_checks_it_should(case: Case, deviating, suite) -> None:
    """``--strict``: a ``should`` check's failure fails the gate too, so each check is shown failing as it can."""
    proxy = deviating(case.deviation())
    case.assert_caught(suite("--target", proxy.api_url, *case.options(), "--strict"))


def test_a_should_checks_failure_is_a_warning_without_strict(deviating, suite) -> None:
    """Invalid times no Prefect client can send, accepted: four ``should`` checks fail, the gate stays green, and
    the report lists them as warnings with the catalogue's reason."""
    proxy = deviating(RewritesRequests(garbage_to_now, keys=frozenset({"scheduled_time"})))
    run: SuiteRun = suite("--target", proxy.api_url, "-k", "invalid_input")
    assert run.code == 0, run.explain()
    assert run.with_status("warning") == {
        f"timestamps/invalid_input_rejected[{c}]" for c in ("garbage", "month-13", "hour-25", "empty")
    }
    report = (run.report_dir / "report.md").read_text()
    assert "## Warnings (4)" in report and "conformant (4 warnings)" in report, report


# --- unusual but client-readable timestamps: a verdict for the whole suite, never "no verdict" -----------------

#: What each output_format check must quote from WritesUnusualTimestamps: the reason and the value it saw.
NAIVE = ("has no timezone offset", r"'\d{4}-\d{2}-\d{2}T[\d:.]+'")
SPACED = ("uses a space instead of 'T'", r"'\d{4}-\d{2}-\d{2} \d{2}:")


@pytest.mark.long
def test_unusual_timestamp_output_gets_failures_not_errors(deviating, suite) -> None:
    """A server that writes timestamps without an offset (the seed notes' port did) on its flow runs and with a
    space on everything else gets exit 1: failures in `timestamps` that quote what it sent, and a verdict from
    every other check, which reads instants the way Prefect's client does (the Runner and the worker read naive
    runs from their polls). An `error` could not be listed in an expectations file. The scheduled Runner reads
    the same poll as the first one, so it is left out, and so are the lifecycle checks (their load)."""
    proxy = deviating(WritesUnusualTimestamps())
    # Not the lifecycle checks: they read no timestamps the proxy rewrites in a way the others do not, and their
    # twenty-odd flow-run processes beside the rest of make test left the SQLite reference answering 503.
    run: SuiteRun = suite("--target", proxy.api_url, "-m", "not lifecycle", "-k", f"not ({SCHEDULED_RUNNER_CHECKS})")
    assert run.code == 1, run.explain()
    assert not run.with_status("error"), f"errors: {sorted(run.with_status('error'))}\n{run.explain()}"
    assert OUTPUT <= run.failed(), run.explain()
    assert all(cid.startswith("timestamps/") for cid in run.failed()), f"outside timestamps: {sorted(run.failed())}"
    for kind in KINDS:
        cid = f"timestamps/output_format[{kind}]"
        reason, quoted = NAIVE if kind == "flow_run" else SPACED
        assert reason in run.message(cid) and re.search(quoted, run.message(cid)), run.message(cid)
    others = {cid for cid in run.checks if not cid.startswith(("timestamps/", "durability/"))}  # durability: no restart
    assert others and others <= run.passed(), f"did not pass: {sorted(others - run.passed())}"
