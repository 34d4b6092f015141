"""Logs: what a flow run logs is stored, and read back complete, in order and unchanged.

Real-client behaviour relied on (Prefect 3.9.1): the process that runs a flow (a Runner's or a worker's flow-run
process, or a flow called as a script) sends what ``get_run_logger()`` logs in batches, ``POST /logs/`` with a list
of ``{name, level, message, timestamp, flow_run_id, task_run_id}``; the ``timestamp`` is the client's, the moment
the line was logged (UTC, microseconds). Users read them back in the UI and with ``prefect flow-run logs``, both
through ``POST /logs/filter`` by ``logs.flow_run_id`` (or ``task_run_id``, ``level``) with ``sort``
``TIMESTAMP_ASC`` (Prefect's default) and ``limit``/``offset`` pages. Prefect answers 201 to ``POST /logs/``,
stores every line as sent, and sorts by the instant, so ``...T10:00:00Z`` (a whole second, written without a
fraction) comes before ``...T10:00:00.500000Z``, which sorts first as a string.

Prefect has no route that deletes logs: the lines these checks send stay on the target, attached to runs that are
deleted with the run's other objects.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest

from harness.checks.logs import Line, assert_run_logs_read_back, difference, has_sent, read_logs, sent_lines
from harness.checks.objects import Created, create_flow, create_scheduled_run, create_task_run
from harness.checks.timestamps import describe_instant, utc_now
from harness.clients.actors import Actor, read_submission, start_logging_flow
from harness.clients.flow_scripts import await_output
from harness.errors import HarnessError
from harness.target.api import ApiClient

pytestmark = pytest.mark.logs

FLOW_LOGGER, TASK_LOGGER = "prefect.flow_runs", "prefect.task_runs"

#: (logger, level, message, seconds after the first line, of the task?): the kinds of line users log. The
#: instants put whole seconds (written without a fraction) next to fractions of the same second, so string order
#: is not time order; they are sent in two batches, the later lines first.
LINES: list[tuple[str, int, str, float, bool]] = [
    (FLOW_LOGGER, 20, "plain ASCII", 0.000001, False),
    (FLOW_LOGGER, 30, "Grüße, 日本語, emoji 🚀, a tab\tand \"quotes\" 'too'", 0.5, False),
    (FLOW_LOGGER, 40, "a multi-line message\nsecond line\n  third, indented\n", 1.0, False),
    (TASK_LOGGER, 20, "from the task: ü", 1.25, True),
    (TASK_LOGGER, 50, "critical, from the task\nwith a second line", 2.0, True),
    ("my.own.logger", 10, "debug, from a user's own logger", 2.000001, False),
    (FLOW_LOGGER, 20, "a long line: " + "0123456789" * 400, 2.5, False),
]
#: Lines per page when paging as the UI does (every page but the last full).
PAGE = 3
#: How long the flow script may take: import Prefect, run the flow and its task, send its logs, exit.
FLOW_TIMEOUT = 60.0


@dataclass
class SentLogs:
    flow_run_id: str
    task_run_id: str
    lines: list[Line]  # in time order


@pytest.fixture
def sent_logs(api: ApiClient, created: Created, names: Callable[..., str]) -> SentLogs:
    """A flow run and a task run of it, and :data:`LINES` sent for them through ``POST /logs/`` in two batches."""
    flow = create_flow(api, created, names("flow"))
    run = create_scheduled_run(api, flow["id"], names("run"), utc_now())
    task_run = create_task_run(api, run["id"], names("task"))
    first = utc_now().replace(microsecond=0) - dt.timedelta(seconds=30)
    logs = [
        {
            "name": name,
            "level": level,
            "message": message,
            "timestamp": describe_instant(first + dt.timedelta(seconds=after)),
            "flow_run_id": run["id"],
            "task_run_id": task_run["id"] if of_task else None,
        }
        for name, level, message, after, of_task in LINES
    ]
    half = len(logs) // 2
    for batch in (logs[half:], logs[:half]):
        api.call("POST", "/logs/", batch, expect=(200, 201), what="POST /logs/ with a batch of log lines was refused")
    return SentLogs(run["id"], task_run["id"], [Line.of(log, "sent") for log in logs])


def test_logs_are_read_back_complete_in_order_and_unchanged(api: ApiClient, sent_logs: SentLogs) -> None:
    """Log lines sent in batches (non-ASCII, multi-line, long, every level) are read back by their flow run's id,
    all of them, in time order, with name, level, message, task run and the client's timestamp (to the
    microsecond) as sent."""
    for options in ({"sort": "TIMESTAMP_ASC"}, {}):
        found = read_logs(api, {"flow_run_id": {"any_": [sent_logs.flow_run_id]}}, **options)
        problem = difference(
            f"POST /logs/filter by flow_run_id {options or '(no sort: Prefect sorts by timestamp)'}",
            sent_logs.lines,
            found,
        )
        assert problem is None, problem + "\nHint: store every line as sent, and sort by the instant, not the string"


def test_logs_are_filtered_by_task_run_and_level(api: ApiClient, sent_logs: SentLogs) -> None:
    """``task_run_id`` finds exactly the task's lines, and ``level`` ``ge_`` exactly the lines at or above it."""
    by_task = read_logs(api, {"task_run_id": {"any_": [sent_logs.task_run_id]}}, sort="TIMESTAMP_ASC")
    problem = difference(
        "POST /logs/filter by task_run_id", [line for line in sent_logs.lines if line.task_run_id], by_task
    )
    assert problem is None, problem
    severe = read_logs(
        api, {"flow_run_id": {"any_": [sent_logs.flow_run_id]}, "level": {"ge_": 40}}, sort="TIMESTAMP_ASC"
    )
    problem = difference(
        "POST /logs/filter by flow_run_id and level ge_ 40",
        [line for line in sent_logs.lines if line.level >= 40],
        severe,
    )
    assert problem is None, problem


@pytest.mark.parametrize("sort", ["TIMESTAMP_ASC", "TIMESTAMP_DESC"])
def test_logs_page_without_loss(sort: str, api: ApiClient, sent_logs: SentLogs) -> None:
    """Read {sort} in pages of 3 (``limit``, ``offset``) as the UI pages, the lines come once each, in order."""
    paged: list[Line] = []
    while len(paged) <= len(LINES):
        page = read_logs(
            api, {"flow_run_id": {"any_": [sent_logs.flow_run_id]}}, sort=sort, limit=PAGE, offset=len(paged)
        )
        paged += page
        if len(page) < PAGE:
            break
    expected = sent_logs.lines if sort == "TIMESTAMP_ASC" else sent_logs.lines[::-1]
    problem = difference(f"{sort} in pages of {PAGE} (offset 0, {PAGE}, ...)", expected, paged)
    assert problem is None, problem + "\nHint: apply sort before limit and offset"


# --- a real flow run's logs ---------------------------------------------------------------------------------------

#: What the flow logs with ``get_run_logger()`` (level, message), and what its task logs.
FLOW_LINES = [(20, "flow line: plain"), (30, "flow line: Grüße, 日本語 🚀"), (40, "flow line: two\nlines")]
TASK_LINES = [(20, "task line: ü"), (50, "task line: critical\nand a second line")]


@dataclass
class LoggedRun:
    client: Actor
    ids: dict[str, str] | None
    batches: list[Any]  # the POST /logs/ bodies the client sent and the target accepted
    failure: AssertionError | None = None


@pytest.fixture(scope="module")
def logged_run(
    actors: Callable[..., Actor],
    module_names: Callable[..., str],
    module_created: Created,
    scenario_dir: Path,
    api: ApiClient,
) -> LoggedRun:
    """Run the logging flow as a script to its end; what it sent through ``POST /logs/`` is in its recorder."""
    out = scenario_dir / "flow-run.json"
    flow_name = module_names("flow")
    client = actors(
        start_logging_flow,
        flow_name=flow_name,
        task_name=module_names("task"),
        flow_lines=FLOW_LINES,
        task_lines=TASK_LINES,
        out=out,
    )

    try:
        await_output(
            client,
            out,
            awaiting="the flow run's process to run its flow and send its logs",
            timeout=FLOW_TIMEOUT,
            hint="the flow's process exits once its flow has run and its logs are sent",
        )
        failure = None
    except AssertionError as exc:
        failure = exc
    client.stop()
    for flow in api.post("/flows/filter", {"flows": {"name": {"any_": [flow_name]}}}):
        module_created.add(f"/flows/{flow['id']}")
    return LoggedRun(client, read_submission(out), client.recorder.accepted_bodies("POST", "/logs/"), failure)


def test_a_flow_runs_logs_are_read_back(api: ApiClient, logged_run: LoggedRun) -> None:
    """A flow run by a real client logs with ``get_run_logger()`` in the flow and in a task: the target accepts
    its ``POST /logs/`` batches, and every line it sent is read back by the run's id, in time order and unchanged,
    its task's lines by the task run's id."""
    if logged_run.failure is not None:
        raise logged_run.failure
    flow_run_id, task_run_id = (logged_run.ids or {}).get("flow_run_id"), (logged_run.ids or {}).get("task_run_id")
    assert_run_logs_read_back(api, logged_run.client, flow_run_id, FLOW_LINES[0][1], who="the flow script")
    if not has_sent(logged_run.batches, flow_run_id, TASK_LINES[0][1]):  # the target accepted every batch
        raise HarnessError(
            f"the client never sent its task's line {TASK_LINES[0][1]!r}, though the target accepted "
            f"every POST /logs/; see {logged_run.client.process.log_path}"
        )
    ours = sent_lines(logged_run.batches, flow_run_id)
    by_task = read_logs(api, {"task_run_id": {"any_": [task_run_id]}}, sort="TIMESTAMP_ASC")
    problem = difference(
        "its task's lines, read back by task_run_id",
        [line for line in ours if line.task_run_id == task_run_id],
        by_task,
    )
    assert problem is None, problem
