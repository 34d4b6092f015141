"""Unit tests of the harness's own logic (no server needed)."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from freezegun import freeze_time

from harness.checks.naming import PREFIX_PATTERN, new_run_prefix, unique_name
from harness.checks.timestamps import (
    EXTRA_DATETIME_KEYS,
    INPUT_FORMATS,
    UTC,
    check_timestamp,
    datetime_keys,
    iter_timestamps,
    parse_instant,
    schema_datetime_keys,
)
from harness.commands.conformance import exit_code
from harness.errors import WaitTimeout
from harness.processes import spawn
from harness.reporting.history import prepare_report_dir
from harness.reporting.results import check_id
from harness.waits import wait_until

INSTANT = dt.datetime(2026, 11, 26, 10, 17, 42, 123456, tzinfo=UTC)


@pytest.mark.parametrize("fmt", INPUT_FORMATS, ids=lambda f: f.id)
def test_every_input_format_names_its_expected_instant(fmt) -> None:
    text = fmt.render(INSTANT)
    parsed = dt.datetime.fromisoformat(text.replace(" ", "T").replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    assert abs(parsed - fmt.expected(INSTANT)) <= fmt.tolerance


def test_parse_instant_compares_instants_not_strings() -> None:
    assert parse_instant("2026-11-26T10:00:00Z") == parse_instant("2026-11-26T15:30:00+05:30")
    assert parse_instant("2026-11-26T10:00:00.123456789Z").microsecond == 123456
    for bad in ("2026-11-26 10:00:00Z", "2026-11-26T10:00:00", "2026-11-26", "yesterday"):
        with pytest.raises(ValueError):
            parse_instant(bad)


@pytest.mark.parametrize(
    "value, reason",
    [
        ("2026-11-26T10:00:00", "no timezone offset"),
        ("2026-11-26 10:00:00Z", "space instead of 'T'"),
        ("2026-11-26T10:00:00+05:30", "not in UTC"),
        ("2026-11-26T10:00:00-00:00", "not in UTC"),
        ("2026-11-26T25:00:00Z", "not a valid date or time"),
        (1764151200, "must be an ISO 8601 string"),
    ],
)
def test_check_timestamp_names_the_problem(value, reason) -> None:
    problem = check_timestamp("$.x", value, require_utc=True)
    assert problem is not None and reason in problem.reason


def test_conforming_timestamps_have_no_problem() -> None:
    for value in ("2026-11-26T10:00:00Z", "2026-11-26T10:00:00.5Z", "2026-11-26T10:00:00.123456+00:00"):
        assert check_timestamp("$.x", value, require_utc=True) is None


def test_timestamp_walk_finds_known_keys_and_date_like_values() -> None:
    document = {
        "created": "2026-11-26T10:00:00Z",
        "total_run_time": 0.0,  # a duration, not a timestamp
        "name": "pc-run",
        "state": {"state_details": {"scheduled_time": None}, "timestamp": 5},
        "brand_new_field": "2026-11-26T10:00:00",
        "items": ["2026-11-26T10:00:00Z", "text"],
    }
    found = dict(iter_timestamps(document))
    assert found == {
        "$.created": "2026-11-26T10:00:00Z",
        "$.state.timestamp": 5,
        "$.brand_new_field": "2026-11-26T10:00:00",
        "$.items[0]": "2026-11-26T10:00:00Z",
    }


def test_wait_until_times_out_with_what_was_awaited_and_last_seen() -> None:
    with freeze_time("2026-11-26 10:00:00") as frozen:
        calls = []

        def probe():
            calls.append(1)
            raise AssertionError(f"run is still SCHEDULED (poll {len(calls)})")

        with pytest.raises(WaitTimeout) as excinfo:
            wait_until(
                probe,
                awaiting="the run to be COMPLETED",
                timeout=5,
                interval=1,
                hint="is anything polling?",
                sleep=frozen.tick,
                clock=time.monotonic,
            )
    message = str(excinfo.value)
    assert "Timed out after 5.0s waiting for the run to be COMPLETED" in message
    assert "Last seen: run is still SCHEDULED (poll 6)" in message
    assert message.endswith("Hint: is anything polling?")


def test_wait_until_returns_the_first_truthy_value_and_scales(monkeypatch) -> None:
    monkeypatch.setenv("PREFECT_CONFORMANCE_TIMEOUT_SCALE", "3")
    with freeze_time("2026-11-26 10:00:00") as frozen:
        values = iter([None, [], ["run"]])
        assert wait_until(lambda: next(values), awaiting="x", timeout=1, interval=1, sleep=frozen.tick) == ["run"]
        with pytest.raises(WaitTimeout, match="Timed out after 3.0s"):
            wait_until(lambda: False, awaiting="x", timeout=1, interval=0.5, sleep=frozen.tick)


def test_run_prefix_is_dated_and_unique() -> None:
    with freeze_time("2026-11-26 10:17:42"):
        a, b = new_run_prefix(), new_run_prefix()
    assert a.startswith("pc-20261126t101742-") and PREFIX_PATTERN.match(a) and a != b
    assert unique_name(a, "test_serve", "Flow Run").startswith(a + "-test-serve-flow-run-")


def test_check_ids_are_derived_from_module_and_test_names() -> None:
    assert check_id("scenarios/test_lifecycle__lease.py::test_a_lease") == ("lifecycle/a_lease", "lifecycle")
    assert check_id("scenarios/test_timestamps.py::test_input_format[utc-z]") == (
        "timestamps/input_format[utc-z]",
        "timestamps",
    )


def test_a_renamed_check_keeps_its_pinned_id() -> None:
    renamed = "scenarios/test_time_formats.py::test_accepts_input_format[utc-z]"
    assert check_id(renamed, "timestamps/input_format") == ("timestamps/input_format[utc-z]", "timestamps")


@pytest.mark.parametrize(
    "pytest_code, counts, expected",
    [
        (0, {"passed": 3, "failed": 0, "error": 0, "skipped": 1}, 0),
        (1, {"passed": 3, "failed": 1, "error": 0, "skipped": 0}, 1),
        (1, {"passed": 3, "failed": 1, "error": 1, "skipped": 0}, 2),
        (5, {"passed": 0, "failed": 0, "error": 0, "skipped": 0}, 2),
        (3, {"passed": 1, "failed": 0, "error": 0, "skipped": 0}, 2),
    ],
)
def test_exit_codes(pytest_code, counts, expected) -> None:
    assert exit_code(pytest_code, counts) == expected


def test_report_dir_keeps_previous_run_in_a_dated_folder(tmp_path: Path) -> None:
    first = prepare_report_dir(tmp_path)
    (first / "results.json").write_text(json.dumps({"run": {"started": "2026-11-26T10:17:42+00:00"}}))
    second = prepare_report_dir(tmp_path)
    assert second == tmp_path / "latest" and not any(second.iterdir())
    assert (tmp_path / "20261126-101742" / "results.json").exists()


def test_stopping_a_process_kills_its_whole_group(tmp_path: Path) -> None:
    """A flow-run process started by a runner must not outlive the runner."""
    pidfile = tmp_path / "grandchild.pid"
    script = (
        "import subprocess,sys,time; p=subprocess.Popen([sys.executable,'-c','import time; time.sleep(300)']); "
        f"open({str(pidfile)!r},'w').write(str(p.pid)); time.sleep(300)"
    )
    proc = spawn("parent", [sys.executable, "-c", script], log_path=tmp_path / "parent.log")
    wait_until(pidfile.exists, awaiting="the grandchild to start", timeout=10, interval=0.05)
    wait_until(lambda: pidfile.read_text(), awaiting="the grandchild's pid", timeout=5, interval=0.05)
    grandchild = int(pidfile.read_text())
    proc.stop(sigint_wait=1, sigterm_wait=1)
    gone = subprocess.run(["ps", "-o", "stat=", "-p", str(grandchild)], capture_output=True, text=True).stdout.strip()
    # A zombie may carry ps's flags too ("ZN" under nice): dead all the same.
    assert gone[:1] in ("", "Z"), f"grandchild {grandchild} survived with state {gone!r}"


def test_expectation_patterns_treat_only_star_as_special() -> None:
    from harness.reporting.expectations import matches

    assert matches("timestamps/output_format[flow]", "timestamps/output_format[*]")
    assert matches("worker/worker_run_completes", "worker/*")
    assert matches("timestamps/input_format[naive]", "timestamps/input_format[naive]")
    assert not matches("timestamps/input_format[naive]", "timestamps/input_format[n]")
    assert not matches("timestamps/output_format[flow]", "timestamps/output_format")


def test_failures_of_one_cause_are_grouped_and_long_lists_fold() -> None:
    from harness.reporting.html import render_html
    from harness.reporting.markdown import render_markdown
    from harness.reporting.results import CheckResult, RunInfo

    run = RunInfo("http://t/api", "url", "3.9.1", "0.1.0", "3.9.1", "pc-x", "2026-11-26T10:17:42+00:00")
    kinds = [f"kind{i}" for i in range(10)]
    same = [
        CheckResult(
            f"timestamps/output_format[{k}]",
            "timestamps",
            "s",
            "failed",
            description=f"about {k}",
            message=f"POST /{k}/ returned timestamps a Prefect client mis-reads:\n"
            f"  $.created = '2026-11-27 20:22:3{i}.1Z': uses a space instead of 'T'",
        )
        for i, k in enumerate(kinds)
    ]
    other = CheckResult(
        "scheduling/deployment_poll_limit", "scheduling", "s", "failed", message="limit 201: expected 422"
    )
    markdown = render_markdown(run, same + [other])
    assert "## Failures (11 checks, 2 causes)" in markdown
    assert "### 10 checks, one cause (failed): `timestamps/output_format[kind0]` and 9 more" in markdown
    assert "<details><summary>10 checks</summary>" in markdown and "`timestamps/output_format[kind9]`" in markdown
    assert markdown.count("uses a space instead of 'T'") == 1, "one cause is shown once"
    assert "_about kind0_" in markdown and "### `scheduling/deployment_poll_limit` (failed)" in markdown
    page = render_html(run, same + [other])
    assert (
        "10 checks, one cause: timestamps/output_format[kind0] and 9 more" in page and page.count("uses a space") == 1
    )


def test_a_check_description_fills_in_its_parameters() -> None:
    from types import SimpleNamespace

    from harness.checks.timestamps import INPUT_FORMATS
    from harness.reporting.results import describe

    def check(fmt) -> None:
        """A scheduled time sent as {fmt.description} is stored as the instant it names.

        Details that are not the description.
        """

    def braces() -> None:
        """Each item is ``{work_pool_id, flow_run}``."""

    naive = next(f for f in INPUT_FORMATS if f.id == "naive")
    item = SimpleNamespace(function=check, callspec=SimpleNamespace(params={"fmt": naive}))
    assert (
        describe(item)
        == "A scheduled time sent as no offset; Prefect reads it as UTC is stored as the instant it names."
    )
    assert describe(SimpleNamespace(function=braces)) == "Each item is ``{work_pool_id, flow_run}``."


def test_recorder_overhead_is_a_paired_ratio_with_an_interval() -> None:
    """A machine that slows down halfway (both paths alike) must not show up as recorder overhead."""
    from harness.commands.bench import paired_ratio

    direct = [10.0] * 100 + [30.0] * 100
    recorded = [d * 1.04 for d in direct]
    ratio, low, high = paired_ratio(direct, recorded)
    assert abs(ratio - 1.04) < 1e-9 and low <= ratio <= high
    noisy = [d * (1.04 + (0.02 if i % 2 else -0.02)) for i, d in enumerate(direct)]
    ratio, low, high = paired_ratio(direct, noisy)
    assert 1.01 < low <= ratio <= high < 1.07


def test_unavoidable_waits_follow_the_settings_and_the_measured_start_up() -> None:
    from harness.commands.bench import unavoidable_waits

    fast, slow = unavoidable_waits(1.0), unavoidable_waits(3.0)
    assert (
        slow["worker"][1] - fast["worker"][1] == 2.0 and slow["serve"][1] - fast["serve"][1] == 4.0
    )  # two Runners, in turn
    assert fast["scheduler"] == slow["scheduler"] and fast["timestamps"][1] == 0.0
    assert "(3.0 s)" in slow["worker"][0]


def test_scheduler_waits_follow_the_scheduler_interval(monkeypatch) -> None:
    """--scheduler-interval (or its variable) sizes the window in which a scheduler's runs must stop changing: one
    whole loop and 3 s more, at least 5 s; Prefect's own 60 s when nothing says otherwise."""
    from harness.waits import SCHEDULER_INTERVAL_ENV, scheduler_interval, stability_window

    monkeypatch.delenv(SCHEDULER_INTERVAL_ENV, raising=False)
    assert scheduler_interval() == 60.0 and stability_window(scheduler_interval()) == 63.0
    monkeypatch.setenv(SCHEDULER_INTERVAL_ENV, "30")
    assert stability_window(scheduler_interval()) == 33.0
    monkeypatch.setenv(SCHEDULER_INTERVAL_ENV, "2")
    assert stability_window(scheduler_interval()) == 5.0
    monkeypatch.setenv(SCHEDULER_INTERVAL_ENV, "soon")
    assert scheduler_interval() == 60.0


def test_datetime_fields_are_read_from_prefect_once_and_cached_per_release(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("PREFECT_CONFORMANCE_CACHE_DIR", str(tmp_path))
    expected = frozenset(schema_datetime_keys()) | EXTRA_DATETIME_KEYS
    assert {"next_scheduled_start_time", "expected_start_time", "created"} <= expected
    datetime_keys.cache_clear()
    try:
        assert datetime_keys() == expected
        (cached,) = tmp_path.glob("datetime-fields-*-prefect-*.json")
        cached.write_text("{half a fi")  # a damaged cache is read again from Prefect, and rewritten
        datetime_keys.cache_clear()
        assert datetime_keys() == expected and json.loads(cached.read_text())
    finally:
        datetime_keys.cache_clear()


def test_a_dead_clients_refusals_quote_what_it_gave_up_on_not_what_it_retried() -> None:
    """A Runner that died of a 404 on its poll, among 503s it retried (one of them later accepted)."""
    from types import SimpleNamespace

    from harness.clients.progress import refused_requests
    from harness.clients.transcript import Exchange

    def exchange(method: str, path: str, status: int) -> Exchange:
        return Exchange("runner", method, path, status, 0.0, 1.0, "", f"answer {status}")

    seen = [
        exchange("GET", "/deployments/name/f/d", 404),
        exchange("POST", "/deployments/", 201),
        exchange("PATCH", "/deployments/1", 503),
        exchange("POST", "/deployments/get_scheduled_flow_runs", 404),
        exchange("PATCH", "/deployments/1", 503),
        exchange("PATCH", "/deployments/2", 503),
        exchange("PATCH", "/deployments/1", 204),
    ]
    actor = SimpleNamespace(recorder=SimpleNamespace(transcript=lambda: seen))
    assert refused_requests(actor) == "POST /deployments/get_scheduled_flow_runs -> 404 answer 404"
    only_transient = SimpleNamespace(recorder=SimpleNamespace(transcript=lambda: seen[:3] + seen[4:6]))
    assert refused_requests(only_transient) == (
        "PATCH /deployments/1 -> 503 answer 503; PATCH /deployments/1 -> 503 "
        "answer 503; PATCH /deployments/2 -> 503 answer 503"
    )


def test_a_run_the_worker_gave_up_on_times_out_quoting_the_refusals() -> None:
    """The CI failure of 2026-11-28: the target answered a worker's PATCH of the run's labels 503 through all of
    Prefect's retries, the worker left the run PENDING, and the wait's message only said "run is PENDING"."""
    from types import SimpleNamespace

    from harness.clients.progress import wait_for_final_state
    from harness.clients.transcript import Exchange
    from harness.errors import WaitTimeout

    seen = [Exchange("worker", "POST", "/flow_runs/r1/set_state", 201, 0.0, 1.0, "", "ACCEPT")]
    seen += [Exchange("worker", "PATCH", "/flow_runs/r1/labels", 503, 0.0, 1.0, "", "Service Unavailable")] * 6
    worker = SimpleNamespace(name="worker", recorder=SimpleNamespace(transcript=lambda: seen), is_running=lambda: True)
    api = SimpleNamespace(get=lambda path: {"name": "armored-chimera", "state": {"type": "PENDING", "name": "Pending"}})
    with pytest.raises(WaitTimeout) as caught:
        wait_for_final_state(api, "r1", actor=worker, timeout=0.3)
    assert (
        "run is PENDING/Pending (run 'armored-chimera'); the target refused the worker's last requests: "
        "PATCH /flow_runs/r1/labels -> 503 Service Unavailable"
    ) in str(caught.value)


def test_the_bench_counts_the_harness_requests_per_module_and_names_the_busiest_checks(tmp_path) -> None:
    from harness.commands.timeline import requests_by_module

    timeline = tmp_path / "timeline.jsonl"
    rows = [
        ("scenarios/test_scheduling.py::test_a", 120),
        ("scenarios/test_scheduling.py::test_b", 3),
        ("scenarios/test_worker.py::test_c", 40),
        ("scenarios/test_handshake.py::test_d", 1),
    ]
    timeline.write_text(
        "".join(json.dumps({"worker": "gw0", "nodeid": n, "start": 0, "end": 1, "requests": r}) + "\n" for n, r in rows)
    )
    modules, busiest = requests_by_module(timeline)
    assert modules == {"scheduling": 123, "worker": 40, "handshake": 1}
    assert busiest[:2] == [("scenarios/test_scheduling.py::test_a", 120), ("scenarios/test_worker.py::test_c", 40)]


def test_the_bench_names_the_critical_path_through_the_quiet_point(tmp_path) -> None:
    """The chain that decided the wall time: gw1's lease module, then its short module; the durability checks
    waited for the last other module to end (gw1's), not for gw0's."""
    from harness.commands.timeline import critical_path, describe_path

    timeline = tmp_path / "timeline.jsonl"
    rows = [
        ("gw0", "scenarios/test_scheduler.py::test_a", 0, 30),
        ("gw0", "scenarios/test_lists.py::test_b", 30, 40),
        ("gw1", "scenarios/test_lifecycle__lease.py::test_c", 0, 70),
        ("gw1", "scenarios/test_logs.py::test_d", 70, 75),
        ("gw0", "scenarios/test_durability.py::test_e", 40, 90),
    ]
    timeline.write_text(
        "".join(json.dumps({"worker": w, "nodeid": n, "start": a, "end": b}) + "\n" for w, n, a, b in rows)
    )
    assert describe_path(critical_path(timeline)) == (
        "gw1 lifecycle__lease 0.0-70.0 s -> gw1 logs 70.0-75.0 s -> gw0 durability 40.0-90.0 s"
    )


@pytest.mark.parametrize(
    "markers, selection, cores, expected",
    [
        (None, None, 2, 3),  # one process per core and one more
        (None, None, 32, 25),  # never more processes than selected modules
        ("handshake", None, 2, 1),  # one module: serially, no pytest workers to start
        ("lifecycle", None, 2, 3),  # one feature in four modules
        ("timestamps or scheduling", None, 8, 4),  # two features of two modules each
        (
            None,
            ["scenarios/test_worker.py::test_a", "scenarios/test_serve.py::test_b"],
            4,
            2,
        ),  # a --rerun-failed selection
    ],
)
def test_auto_starts_a_process_per_core_and_none_without_a_module(
    markers, selection, cores, expected, monkeypatch
) -> None:
    from harness.commands.scenarios_run import selected_features, selected_modules, worker_count

    monkeypatch.setattr("os.cpu_count", lambda: cores)
    monkeypatch.setattr("os.getloadavg", lambda: (0.5, 0.5, 0.5))  # an idle machine: one process more than the cores
    assert worker_count("auto", selected_modules(selected_features(markers, selection))) == expected
    monkeypatch.setattr("os.getloadavg", lambda: (float(cores), 1.0, 1.0))  # a busy one: no more than the cores
    assert worker_count("auto", selected_modules(selected_features(markers, selection))) <= max(1, cores)
    assert worker_count("3", selected_modules(selected_features(markers, selection))) == 3  # a number is taken as given


def test_the_differential_feature_counts_only_when_asked_for() -> None:
    from harness.commands.scenarios_run import selected_features

    assert "differential" not in selected_features(None)
    assert selected_features("differential", differential=True) == ["differential"]


def test_the_bench_reports_the_median_run_whole_and_the_spread() -> None:
    from harness.commands.bench import SuiteRun, median_run, spread

    runs = [SuiteRun(wall, 0.0, {}, 0.0, [], Path(f"run-{wall}")) for wall in (31.4, 21.8, 26.0)]
    assert median_run(runs).report_dir == Path("run-26.0")  # the profile shown is one real run's, not a blend
    assert median_run(runs[:2]).wall == 21.8  # the lower middle of an even count
    assert spread(runs) == "median of 3: 21.8, 26.0, 31.4 s" and spread(runs[:1]) == "one run"


def test_every_scenario_module_has_a_place_in_the_dispatch_order() -> None:
    """xdist hands the modules out in DISPATCH_ORDER (``--no-loadscope-reorder``): the scheduler's quiet waits first,
    the real clients after the API-heavy modules. A module left out would run last, wherever its waits fall."""
    from types import SimpleNamespace

    from harness.features import FEATURES
    from harness.locations import scenarios_dir
    from harness.plugin import DISPATCH_ORDER, dispatch_rank

    modules = {path.stem.removeprefix("test_") for path in scenarios_dir().glob("test_*.py")}
    assert modules == set(DISPATCH_ORDER)
    assert {module.split("__")[0] for module in modules} == set(FEATURES)  # a feature's parts: test_<feature>__<part>
    items = [
        SimpleNamespace(nodeid=f"scenarios/test_{name}.py::test_{i}", name=f"{name}-{i}")
        for name in ("serve", "timestamps", "lifecycle", "scheduler", "lifecycle__lease")
        for i in range(2)
    ]
    assert [item.name for item in sorted(items, key=dispatch_rank)] == [
        "scheduler-0",
        "scheduler-1",
        "lifecycle__lease-0",
        "lifecycle__lease-1",
        "timestamps-0",
        "timestamps-1",
        "serve-0",
        "serve-1",
        "lifecycle-0",
        "lifecycle-1",
    ]


# --- the scheduler's horizon: the limits a target's author states, and what a deviating series gets ----------------


def test_scheduler_limits_read_as_prefect_names_them() -> None:
    from harness.checks.horizon import parse_limits, prefect_limits

    defaults = prefect_limits()
    assert (defaults.min_runs, defaults.max_runs) == (3, 100)
    assert (defaults.min_scheduled_time, defaults.max_scheduled_time) == (dt.timedelta(hours=1), dt.timedelta(days=100))
    limits = parse_limits("min_runs=5, max_scheduled_time=30d,min_scheduled_time=90m", defaults)
    assert (limits.min_runs, limits.max_runs) == (5, 100)
    assert limits.describe() == "min_runs=5, max_runs=100, min_scheduled_time=90m, max_scheduled_time=30d"
    for bad, says in (
        ("min_runs=0", "at least 1"),
        ("max_runs=two", "whole number"),
        ("min_time=1h", "unknown limit"),
        ("max_scheduled_time=soon", "such as 3600"),
        ("min_runs=200", "more than max_runs"),
    ):
        with pytest.raises(ValueError, match=says):
            parse_limits(bad, defaults)


def test_horizon_is_judged_by_the_limits_the_author_states() -> None:
    """Prefect's three runs of an hourly schedule pass with Prefect's limits, and fail for a target whose author says
    it keeps five: the message names the rule and the limits."""
    from harness.checks.horizon import horizon_problem, parse_limits, prefect_limits, prefect_pass

    hourly, created = {"cron": "0 * * * *", "timezone": "UTC"}, dt.datetime(2027, 1, 10, 9, 20, tzinfo=UTC)
    observed, second = created + dt.timedelta(seconds=2), dt.timedelta(seconds=1)
    runs = prefect_pass(hourly, created + second, prefect_limits())
    assert len(runs) == 3
    judge = dict(created=created, observed=observed, lag=dt.timedelta(seconds=12), tolerance=second)
    assert horizon_problem(hourly, runs, limits=prefect_limits(), **judge) is None
    problem = horizon_problem(hourly, runs, limits=parse_limits("min_runs=5", prefect_limits()), **judge)
    assert problem and "Prefect's scheduler keeps 5 runs" in problem and "min_runs=5, max_runs=100" in problem, problem
    assert "scheduled more than once" in horizon_problem(hourly, runs + runs[-1:], limits=prefect_limits(), **judge)
    early = [created - dt.timedelta(hours=1)] + runs
    assert "due before the deployment was created" in horizon_problem(hourly, early, limits=prefect_limits(), **judge)
    off = runs[:-1] + [runs[-1] + dt.timedelta(minutes=1)]
    assert "not occurrences of the schedule" in horizon_problem(hourly, off, limits=prefect_limits(), **judge)


def test_bad_scheduler_limits_are_a_usage_error(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "harness.commands.cli",
            "run",
            "--scheduler-limits",
            "min_runs=many",
            "--target",
            "http://127.0.0.1:9/api",
            "--report-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (
        proc.returncode == 2 and "--scheduler-limits 'min_runs=many': min_runs must be a whole number" in proc.stderr
    ), proc.stderr
    assert "Traceback" not in proc.stderr


def test_service_loops_read_as_prefect_names_them() -> None:
    from harness.reference.environment import FAST_SERVICE_SETTINGS
    from harness.waits import PREFECT_SERVICE_LOOPS, SERVICE_LOOP_SETTINGS, parse_service_loops

    defaults = {
        "pause_expirations": 5.0,
        "foreman": 15.0,
        "cancellation_cleanup": 20.0,
        "repossessor": 15.0,
        "concurrency_slot_wait": 30.0,
        "deployment_last_polled_timeout": 60.0,
        "work_queue_last_polled_timeout": 60.0,
    }
    assert parse_service_loops("") == PREFECT_SERVICE_LOOPS == defaults
    assert parse_service_loops("foreman=30, pause_expirations=0.5") == {
        **defaults,
        "pause_expirations": 0.5,
        "foreman": 30.0,
    }
    # The defaults are the pinned release's, and the bundled reference sets each of them.
    from prefect.settings.models.server import deployments, services

    pinned = {
        "pause_expirations": services.ServerServicesPauseExpirationsSettings.model_fields["loop_seconds"].default,
        "foreman": services.ServerServicesForemanSettings.model_fields["loop_seconds"].default,
        "cancellation_cleanup": services.ServerServicesCancellationCleanupSettings.model_fields["loop_seconds"].default,
        "repossessor": services.ServerServicesRepossessorSettings.model_fields["loop_seconds"].default,
        "concurrency_slot_wait": deployments.ServerDeploymentsSettings.model_fields[
            "concurrency_slot_wait_seconds"
        ].default,
        **{
            name: services.ServerServicesForemanSettings.model_fields[f"{name}_seconds"].default
            for name in ("deployment_last_polled_timeout", "work_queue_last_polled_timeout")
        },
    }
    assert pinned == defaults
    assert set(SERVICE_LOOP_SETTINGS) == set(defaults)
    assert all(setting in FAST_SERVICE_SETTINGS for setting in SERVICE_LOOP_SETTINGS.values())
    for bad, says in (
        ("scheduler=5", "unknown service"),
        ("foreman=soon", "a number of seconds"),
        ("foreman=0", "more than 0"),
    ):
        with pytest.raises(ValueError, match=says):
            parse_service_loops(bad)


def test_slot_asks_notes_each_answer_once_for_its_limit(tmp_path: Path) -> None:
    """The watcher behind the limit checks: an answer to an ask naming a watched limit (or ``tag:`` it) is noted
    once, however often the traffic is read, and asks for other limits are not."""
    from types import SimpleNamespace

    from harness.clients.lifecycle import SlotAsks, limit_asks

    answers: list[tuple[int, float, bytes]] = []
    recorder = SimpleNamespace(answered=lambda method, suffixes: list(answers))
    asks = SlotAsks(tmp_path, [SimpleNamespace(recorder=recorder)])  # type: ignore[list-item]
    asks.names = ["pc-x-limit", "pc-x-tag"]  # watched without the thread: read by hand below
    answers += [
        (200, 2.0, b'{"names": ["pc-x-limit"], "slots": 1}'),
        (423, 1.0, b'{"names": ["tag:pc-x-tag"]}'),
        (200, 3.0, b'{"names": ["pc-x-lease-limit"]}'),
    ]
    asks.note_new_answers()
    answers.append((423, 4.0, b'{"names": ["pc-x-limit"]}'))
    asks.note_new_answers()
    assert [(a["status"], a["answered"]) for a in limit_asks(tmp_path, "pc-x-limit")] == [(200, 2.0), (423, 4.0)]
    assert [(a["status"], a["answered"]) for a in limit_asks(tmp_path, "pc-x-tag")] == [(423, 1.0)]
