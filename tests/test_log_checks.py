"""The logs checks pass on the reference and fail on targets that lose, reorder, change or mis-page log lines.

Each deviation is a mistake a server author could make: accepting ``POST /logs/`` and storing nothing (an
in-memory store that is never read), sorting by the timestamp string, mangling non-ASCII text, keeping
milliseconds of the client's timestamps, ignoring ``offset``.
"""

from __future__ import annotations

import pytest

from tests.conftest import DeviationCase as Case
from tests.deviating_proxy import ProxyRequest, ProxyResponse
from tests.deviations.framework import AcceptsWithout, Deviation, RewritesJson, RewritesResponses, map_strings
from tests.deviations.timestamps import truncate_to_millis

API_CHECKS = {
    "logs/logs_are_read_back_complete_in_order_and_unchanged",
    "logs/logs_are_filtered_by_task_run_and_level",
    "logs/logs_page_without_loss[TIMESTAMP_ASC]",
    "logs/logs_page_without_loss[TIMESTAMP_DESC]",
}
REAL_CLIENT = "logs/a_flow_runs_logs_are_read_back"
READ_BACK = "logs/logs_are_read_back_complete_in_order_and_unchanged"
#: The logs module's API checks only: "logs_are" alone also matches its real client's check and the serve and worker
#: modules' ``*_run_logs_are_read_back``, whose flow process, Runner and worker cost most of a minute per run.
API_ONLY = "test_logs and (logs_are_read_back_complete or logs_are_filtered or logs_page)"
PAGING = {"logs/logs_page_without_loss[TIMESTAMP_ASC]", "logs/logs_page_without_loss[TIMESTAMP_DESC]"}


class DropsLogs(Deviation):
    """Answers ``POST /logs/`` 201, as Prefect does, and stores nothing."""

    def on_request(self, request: ProxyRequest) -> ProxyResponse | None:
        if request.method == "POST" and request.path.endswith("/logs/"):
            return ProxyResponse.of_json(201, None)
        return None


def ascii_only(logs: list) -> list:
    return map_strings(
        logs, lambda key, value: value.encode("ascii", "replace").decode() if key == "message" else value
    )


CASES = [
    # Only the checks that send their own lines: the real client's lines are dropped alike (non-ascii-mangled shows
    # that check failing), and each run of it starts a flow process.
    Case("logs-dropped", DropsLogs, API_CHECKS, r"0 lines, fewer than the \d+ expected", keywords=API_ONLY),
    Case(
        "logs-sorted-as-strings",
        lambda: RewritesJson("POST", r"/logs/filter$", lambda logs: sorted(logs, key=lambda log: log["timestamp"])),
        {READ_BACK, "logs/logs_page_without_loss[TIMESTAMP_DESC]"},
        r"differs in instant, name, level, message",
        keywords="read_back_complete or page",
    ),
    # -k logs selects the logs checks of the Runner's and the worker's runs too (their flows log non-ASCII)
    Case(
        "non-ascii-mangled",
        lambda: RewritesJson("POST", r"/logs/filter$", ascii_only),
        {
            READ_BACK,
            "logs/logs_are_filtered_by_task_run_and_level",
            REAL_CLIENT,
            "serve/served_run_logs_are_read_back",
            "worker/worker_run_logs_are_read_back",
        },
        r"differs in message:",
        keywords="logs",
    ),
    Case(
        "timestamps-kept-to-milliseconds",
        lambda: RewritesResponses(truncate_to_millis, path=r"/logs/filter$", keys=frozenset({"timestamp"})),
        {READ_BACK, REAL_CLIENT},
        r"differs in instant:",
        keywords="read_back_complete or a_flow_runs",
    ),
    Case(
        "offset-ignored",
        lambda: AcceptsWithout("POST", r"/logs/filter$", "offset"),
        PAGING,
        r"differs in|more than",
        keywords=API_ONLY,
        passes={READ_BACK, "logs/logs_are_filtered_by_task_run_and_level"},
    ),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_deviation_fails_the_checks_it_should(case: Case, deviating, suite) -> None:
    proxy = deviating(case.deviation())
    case.assert_caught(suite("--target", proxy.api_url, *case.options()))
