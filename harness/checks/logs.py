"""Log lines as the logs checks compare them, read back through ``POST /logs/filter``, and what differs.

Used by the ``logs`` scenarios and by the real clients' scenarios (``serve``, ``worker``), whose flow-run processes
send their lines through the same recorder as their Runner or worker.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from harness.checks.timestamps import describe_instant, read_instant
from harness.clients.actors import Actor
from harness.errors import HarnessError, UnexpectedAnswer, WaitTimeout
from harness.target.api import ApiClient
from harness.waits import wait_until

#: How long a flow-run process may take to send its last lines after its run is final (it sends them as it exits).
LAST_LINES_TIMEOUT = 15.0


@dataclass(frozen=True)
class Line:
    """One log line as the checks compare it: the instant, and every field exactly as sent."""

    instant: dt.datetime
    name: str
    level: int
    message: str
    flow_run_id: str | None
    task_run_id: str | None

    @classmethod
    def of(cls, log: dict[str, Any], where: str) -> "Line":
        return cls(
            read_instant(log.get("timestamp"), f"{where} timestamp"),
            log.get("name"),
            log.get("level"),
            log.get("message"),
            log.get("flow_run_id"),
            log.get("task_run_id"),
        )

    def __str__(self) -> str:
        message = self.message if len(self.message or "") <= 60 else self.message[:57] + "..."
        task = f", task run {self.task_run_id[:8]}" if self.task_run_id else ""
        return f"{describe_instant(self.instant)} {self.name} level {self.level}{task}: {message!r}"


def read_logs(api: ApiClient, logs_filter: dict[str, Any], **options: Any) -> list[Line]:
    """``POST /logs/filter`` with ``{"logs": logs_filter, **options}``, as clients read logs."""
    body = {"logs": logs_filter, **options}
    answer = api.post("/logs/filter", body, expect=200, what="reading logs back failed")
    if not isinstance(answer, list) or not all(isinstance(log, dict) for log in answer):
        raise UnexpectedAnswer(f"POST /logs/filter answered {str(answer)[:300]}; Prefect answers a list of log objects")
    return [Line.of(log, f"POST /logs/filter {body}") for log in answer]


def difference(what: str, expected: list[Line], actual: list[Line]) -> str | None:
    """None when equal; otherwise where the two lists first differ, both lines quoted."""
    for index, (want, got) in enumerate(zip(expected, actual)):
        if want != got:
            fields = [
                f
                for f in ("instant", "name", "level", "message", "flow_run_id", "task_run_id")
                if getattr(want, f) != getattr(got, f)
            ]
            return (
                f"{what}: line {index} of {len(expected)} differs in {', '.join(fields)}:\n"
                f"  expected {want}\n  actual   {got}"
                + (f"\n  (the expected line is the target's line {actual.index(want)})" if want in actual else "")
            )
    if len(expected) != len(actual):
        more = actual[len(expected) :] or expected[len(actual) :]
        kind = "more" if len(actual) > len(expected) else "fewer"
        return (
            f"{what}: {len(actual)} lines, {kind} than the {len(expected)} expected; "
            f"{'first extra' if kind == 'more' else 'first missing'}: {more[0]}"
        )
    return None


def sent_lines(batches: list[Any], flow_run_id: str) -> list["Line"]:
    """The lines of ``flow_run_id`` in what a client sent through ``POST /logs/`` (batches of lines), in time order."""
    lines = [
        Line.of(log, "POST /logs/ (the client's)")
        for batch in batches
        for log in batch
        if log.get("flow_run_id") == flow_run_id
    ]
    return sorted(lines, key=lambda line: line.instant)


def has_sent(batches: list[Any], flow_run_id: str, message: str) -> bool:
    """Whether a client's accepted ``POST /logs/`` batches hold the line ``message`` of ``flow_run_id``."""
    return any(line.message == message for line in sent_lines(batches, flow_run_id))


def read_back_problem(api: ApiClient, batches: list[Any], flow_run_id: str, who: str) -> str | None:
    """Why the lines ``who`` sent for ``flow_run_id`` (its accepted ``POST /logs/`` batches) are not read back by
    the run's id complete, in time order and unchanged; None when they are (or when it sent none)."""
    sent = sent_lines(batches, flow_run_id)
    found = read_logs(api, {"flow_run_id": {"any_": [flow_run_id]}}, sort="TIMESTAMP_ASC")
    problem = difference(f"the {len(sent)} lines {who} sent for flow run {flow_run_id}, read back", sent, found)
    return problem and problem + "\nHint: store every line as the client sent it, and sort by the instant"


def await_line(actor: Actor, flow_run_id: str, message: str) -> None:
    """Wait (bounded) until ``actor``'s recorder has seen the target accept the line ``message`` of ``flow_run_id``,
    so the client is not stopped before its flow-run process sent its logs; no verdict here if it never does."""
    try:
        wait_until(
            lambda: has_sent(actor.recorder.accepted_bodies("POST", "/logs/"), flow_run_id, message),
            awaiting=f"the {actor.name}'s flow-run process to send its logs",
            timeout=LAST_LINES_TIMEOUT,
            interval=0.1,
        )
    except WaitTimeout:
        pass


def assert_run_logs_read_back(api: ApiClient, actor: Actor, flow_run_id: str, message: str, who: str = "") -> None:
    """What a real client's flow-run process (``who``) logged for ``flow_run_id`` (``message`` among it), sent
    through the client's recorder, was accepted and is read back complete, in order and unchanged."""
    who = who or f"the {actor.name}'s flow-run process"
    refused = [e for e in actor.recorder.requests_to("POST", "/logs/") if not 200 <= e.status < 300]
    assert not refused, (
        f"the target refused the {actor.name}'s POST /logs/: {refused[0].status} "
        f"{refused[0].response_summary}. Hint: accept log batches (Prefect answers 201)"
    )
    batches = actor.recorder.accepted_bodies("POST", "/logs/")
    if not has_sent(batches, flow_run_id, message):  # every POST /logs/ was accepted: the target had no part in it
        raise HarnessError(
            f"{who} never sent the line {message!r} of run {flow_run_id}, "
            f"though the target accepted every POST /logs/; see {actor.process.log_path}"
        )
    problem = read_back_problem(api, batches, flow_run_id, who)
    assert problem is None, problem
