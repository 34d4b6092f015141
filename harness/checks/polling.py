"""The two polling queries, asked the way real clients ask them, and runs at crafted instants to ask about.

``POST /deployments/get_scheduled_flow_runs`` (what a ``.serve()`` Runner polls) answers flow runs;
``POST /work_pools/{name}/get_scheduled_flow_runs`` (what a worker polls) answers ``{work_pool_id,
work_queue_id, flow_run}`` items. Instants in answers are read the way Prefect's client reads them
(:func:`~harness.checks.timestamps.read_instant`), so ordering checks reach a verdict on any client-readable format.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from harness.checks.objects import scheduled_state, set_state
from harness.checks.sequences import Entry, sequence_message
from harness.checks.timestamps import UTC, read_instant
from harness.errors import UnexpectedAnswer
from harness.target.api import ApiClient

US = dt.timedelta(microseconds=1)
DEPLOYMENT_POLL = "/deployments/get_scheduled_flow_runs"


def base_instant() -> dt.datetime:
    """Two days ahead at 10:00:00 UTC exactly: a whole second, and +14:00 puts it on the next local date."""
    return (dt.datetime.now(UTC) + dt.timedelta(days=2)).replace(hour=10, minute=0, second=0, microsecond=0)


@dataclass
class Dataset:
    """Runs at crafted instants, with a readable label per run id for failure messages."""

    t0: dt.datetime
    labels: dict[str, str] = field(default_factory=dict)
    instants: dict[str, dt.datetime] = field(default_factory=dict)

    def add(self, run: dict[str, Any], label: str, instant: dt.datetime) -> dict[str, Any]:
        self.labels[run["id"]] = label
        self.instants[run["id"]] = instant
        return run

    def entries(self, runs: list[dict[str, Any]]) -> list[Entry]:
        """(label, instant) of runs as the target returned them (unknown runs are labelled by name)."""
        out = []
        for run in runs:
            if not isinstance(run, dict) or "id" not in run:
                raise UnexpectedAnswer(f"the answer holds something that is not a flow run: {str(run)[:200]}")
            when = run.get("next_scheduled_start_time")
            label = self.labels.get(run["id"], f"foreign:{run.get('name')}")
            where = f"next_scheduled_start_time of run {run.get('name')!r}"
            out.append((label, read_instant(when, where) if when is not None else dt.datetime.min.replace(tzinfo=UTC)))
        return out

    def expected(self, labels: list[str]) -> list[Entry]:
        by_label = {label: self.instants[run_id] for run_id, label in self.labels.items()}
        return [(label, by_label[label]) for label in labels]


def create_run(api: ApiClient, deployment_id: str, name: str, instant: dt.datetime, **fields: Any) -> dict[str, Any]:
    """A SCHEDULED run of the deployment at ``instant`` (``POST /deployments/{id}/create_flow_run``), with any other
    ``fields`` of the body (``parameters``)."""
    return api.post(
        f"/deployments/{deployment_id}/create_flow_run", {"name": name, "state": scheduled_state(instant), **fields}
    )


def create_runs(
    api: ApiClient, deployment_id: str, named_instants: list[tuple[str, dt.datetime]]
) -> list[dict[str, Any]]:
    """:func:`create_run` for each (name, instant), one at a time; the runs in the order given.

    Not a few at a time: Prefect 3.2.15 on SQLite resets connections under four concurrent creates and then leaves
    a later request unanswered for over 30 s (measured; 3.4.25 and 3.6.29 did so at times), and the checks that
    create many runs are about the queries, not about concurrent writes. 65 runs take about a second."""
    return [create_run(api, deployment_id, *item) for item in named_instants]


def assert_sequence(what: str, expected: list[Entry], actual: list[Entry]) -> None:
    """The target answered ``expected`` in that order, or a message up to the first difference."""
    message = sequence_message(what, expected, actual)
    assert message is None, message


def poll_deployments(api: ApiClient, deployment_ids: list[str], **body: Any) -> list[dict[str, Any]]:
    """The runs ``POST /deployments/get_scheduled_flow_runs`` hands out for ``deployment_ids`` (a Runner's poll)."""
    return api.post(DEPLOYMENT_POLL, {"deployment_ids": deployment_ids, **body})


def pool_items(api: ApiClient, pool_name: str, **body: Any) -> list[Any]:
    """The items ``POST /work_pools/{name}/get_scheduled_flow_runs`` answers (a worker's poll), unjudged."""
    items = api.post(
        f"/work_pools/{pool_name}/get_scheduled_flow_runs", body, expect=200, what="polling the work pool failed"
    )
    if not isinstance(items, list):
        raise UnexpectedAnswer(
            f"POST /work_pools/{{name}}/get_scheduled_flow_runs answered {str(items)[:200]}, not a list"
        )
    return items


def poll_pool(api: ApiClient, pool_name: str, **body: Any) -> list[dict[str, Any]]:
    """The flow runs of a worker's poll, once each item is shown to be ``{..., flow_run}``."""
    items = pool_items(api, pool_name, **body)
    bare = [item for item in items if not isinstance(item, dict) or not isinstance(item.get("flow_run"), dict)]
    if bare:
        raise UnexpectedAnswer(
            "POST /work_pools/{name}/get_scheduled_flow_runs items must be {work_pool_id, work_queue_id, flow_run}; "
            f"got {str(bare[0])[:200]}"
        )
    return [item["flow_run"] for item in items]


def page_like_a_runner(
    api: ApiClient, deployment_id: str, *, before: dt.datetime, page_size: int, max_pages: int
) -> list[list[tuple[str, dt.datetime]]]:
    """Poll ``limit`` runs at a time and move each page's runs to PENDING before the next poll, as a Runner does
    (it sends ``scheduled_before`` in the space-separated form); the pages as (run id, instant) until one is empty."""
    pages: list[list[tuple[str, dt.datetime]]] = []
    for number in range(max_pages):
        page = poll_deployments(api, [deployment_id], scheduled_before=str(before), limit=page_size)
        if not page:
            break
        pages.append(
            [
                (
                    run["id"],
                    read_instant(
                        run.get("next_scheduled_start_time"),
                        f"page {number}: next_scheduled_start_time of run {run.get('name')!r}",
                    ),
                )
                for run in page
            ]
        )
        for run in page:  # the Runner proposes PENDING for each run it got (one at a time, as create_runs)
            set_state(api, run["id"], "PENDING")
    return pages
