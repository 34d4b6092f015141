"""Lists: the pages and counts of the filter endpoints that Prefect's UI and clients page through.

Real-client behaviour relied on (Prefect 3.9.1): the UI and ``prefect flow ls``, ``flow-run ls``, ``deployment ls``
and ``work-pool ls`` read ``POST /{objects}/filter`` with a filter, a ``sort``, ``limit`` and ``offset``, one page
after another, and show ``POST /{objects}/count`` for the same filter as the total. Prefect's server applies the
filter, then the sort, then ``offset`` and ``limit``, so consecutive pages hold every selected object exactly once,
in sort order, and the count is the number of objects the filter selects (``models/*.py``; work pools are always
ordered by name).

The page and count checks make seven objects of their own, named so that their creation order is not their name
order, and page through them three at a time, sorted by name. The filter checks select across related objects
(runs by their deployment, queue, tag or state name; deployments by their runs; flows by their deployments) among
two flows, two deployments and three runs of their own.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any, Callable

import pytest

from harness.checks.objects import (
    Created,
    create_deployment,
    create_flow,
    create_task_run,
    create_work_pool,
    create_work_queue,
    scheduled_state,
    send_heartbeat,
)
from harness.checks.timestamps import utc_now
from harness.errors import UnexpectedAnswer
from harness.target.api import ApiClient

pytestmark = pytest.mark.lists

#: The objects' numbers in the order they are made: neither ascending nor descending.
CREATION_ORDER = (4, 1, 7, 2, 6, 3, 5)
PAGE = 3


@dataclass(frozen=True)
class Listing:
    """One filter endpoint: what it lists, how the checks select their own objects and sort them by name."""

    objects: str  # "flow_runs": POST /flow_runs/filter and /flow_runs/count
    sort: str | None  # the sort by name, or None where the endpoint always sorts by name

    def selection(self, prefix: str, names: list[str]) -> dict[str, Any]:
        if self.objects == "work_pools":  # its name filter has no like_
            return {"work_pools": {"name": {"any_": names}}}
        return {self.objects: {"name": {"like_": prefix}}}

    def body(self, prefix: str, names: list[str], **page: Any) -> dict[str, Any]:
        return {**self.selection(prefix, names), **({"sort": self.sort} if self.sort else {}), **page}


LISTINGS = [
    Listing("flows", "NAME_ASC"),
    Listing("flow_runs", "NAME_ASC"),
    Listing("task_runs", "NAME_ASC"),
    Listing("deployments", "NAME_ASC"),
    Listing("work_pools", None),
]


@dataclass
class Made:
    listing: Listing
    prefix: str
    names: list[str]  # in creation order


def make_objects(api: ApiClient, created: Created, listing: Listing, prefix: str) -> list[str]:
    """Seven objects of the listing's kind named ``{prefix}-{n}``, made in :data:`CREATION_ORDER`: their names."""
    names = [f"{prefix}-{n}" for n in CREATION_ORDER]
    if listing.objects == "work_pools":
        for name in names:
            create_work_pool(api, created, name)
        return names
    flow = create_flow(api, created, names[0] if listing.objects == "flows" else f"{prefix}-flow")
    if listing.objects == "flows":
        for name in names[1:]:
            create_flow(api, created, name)
    elif listing.objects == "deployments":
        for name in names:
            created.add(f"/deployments/{create_deployment(api, flow['id'], name)['id']}")
    else:
        runs = (
            [api.post("/flow_runs/", {"flow_id": flow["id"], "name": name}) for name in names]
            if listing.objects == "flow_runs"
            else [api.post("/flow_runs/", {"flow_id": flow["id"], "name": f"{prefix}-run"})]
        )
        if listing.objects == "task_runs":
            for name in names:
                create_task_run(api, runs[0]["id"], name)
    return names


@pytest.fixture(scope="module", params=LISTINGS, ids=lambda listing: listing.objects)
def made(
    request: pytest.FixtureRequest, api: ApiClient, module_created: Created, module_names: Callable[..., str]
) -> Made:
    listing: Listing = request.param
    prefix = module_names(listing.objects.replace("_", "-"))
    return Made(listing, prefix, make_objects(api, module_created, listing, prefix))


def listed(api: ApiClient, path: str, body: dict[str, Any]) -> list[str]:
    answer = api.post(path, body)
    if not isinstance(answer, list):
        raise UnexpectedAnswer(f"POST {path} answered {str(answer)[:300]}, not a list")
    return [item.get("name") for item in answer]


def test_pages_hold_each_object_once_in_order(api: ApiClient, made: Made) -> None:
    """Pages of three (``limit`` 3, ``offset`` 0, 3, 6, 9) sorted by name hold the seven objects the filter selects,
    each exactly once, in name order, and the page past the end is empty."""
    path = f"/{made.listing.objects}/filter"
    pages = [
        listed(api, path, made.listing.body(made.prefix, made.names, limit=PAGE, offset=offset))
        for offset in range(0, len(made.names) + PAGE, PAGE)
    ]
    wanted = sorted(made.names)
    got = [name for page in pages for name in page]
    assert got == wanted and pages[-1] == [], (
        f"POST {path} sorted by name ({made.listing.sort or 'its only order'}) in pages of {PAGE} gave "
        f"{[[n.removeprefix(made.prefix + '-') for n in page] for page in pages]} for the objects numbered "
        f"{[n.removeprefix(made.prefix + '-') for n in wanted]} (made in the order {list(CREATION_ORDER)}); Prefect "
        "filters, sorts, then pages, so every object comes once, in order, and the page past the end is empty"
    )


def test_count_agrees_with_the_list(api: ApiClient, made: Made) -> None:
    """``POST /{objects}/count`` with the filter of the list gives the number of objects the list holds: seven."""
    path = f"/{made.listing.objects}/count"
    listing = listed(api, f"/{made.listing.objects}/filter", made.listing.body(made.prefix, made.names))
    count = api.post(path, made.listing.selection(made.prefix, made.names))
    assert count == len(listing) == len(made.names), (
        f"POST {path} answered {count!r} for the filter under which POST /{made.listing.objects}/filter lists "
        f"{len(listing)} objects (seven were made); Prefect counts what the same filter selects"
    )


# --- filters across related objects ----------------------------------------------------------------------------


@dataclass
class Related:
    """Two flows: A with a deployment on a pool's queue and two runs of it (one tagged, one Late), B with a
    deployment of no pool and one run of it."""

    flows: dict[str, str]  # "A", "B" -> id
    deployments: dict[str, str]  # "A", "B" -> id
    runs: dict[str, str]  # "tagged", "late", "b" -> id
    queue: str
    tag: str

    def ours(self) -> dict[str, Any]:
        """A flow filter that keeps every selection to these objects."""
        return {"flows": {"id": {"any_": list(self.flows.values())}}}


@pytest.fixture(scope="module")
def related(api: ApiClient, module_created: Created, module_names: Callable[..., str]) -> Related:
    pool, queue, tag = module_names("related-pool"), module_names("related-queue"), module_names("related-tag")
    create_work_pool(api, module_created, pool)
    create_work_queue(api, pool, queue)
    flows = {key: create_flow(api, module_created, module_names("related-flow", key))["id"] for key in ("A", "B")}
    deployments = {
        "A": create_deployment(
            api, flows["A"], module_names("related-deployment", "A"), work_pool_name=pool, work_queue_name=queue
        )["id"],
        "B": create_deployment(api, flows["B"], module_names("related-deployment", "B"))["id"],
    }
    for deployment in deployments.values():
        module_created.add(f"/deployments/{deployment}")

    def run(deployment: str, name: str, **fields: Any) -> str:
        return api.post(
            f"/deployments/{deployment}/create_flow_run", {"name": module_names("related", name), **fields}
        )["id"]

    soon = scheduled_state(utc_now() + dt.timedelta(hours=1))
    runs = {
        "tagged": run(deployments["A"], "tagged", tags=[tag], state=soon),
        "late": run(deployments["A"], "late", state={**soon, "name": "Late"}),
        "b": run(deployments["B"], "b", state=soon),
    }
    return Related(flows, deployments, runs, queue, tag)


def assert_selects(api: ApiClient, path: str, body: dict[str, Any], wanted: dict[str, str], what: str) -> None:
    """``POST path`` with ``body`` lists exactly the objects ``wanted`` names (label -> id)."""
    answer = api.post(path, body)
    if not isinstance(answer, list):
        raise UnexpectedAnswer(f"POST {path} answered {str(answer)[:300]}, not a list")
    names = {id_: label for label, id_ in wanted.items()}
    got = sorted(names.get(item.get("id"), f"another ({item.get('name')})") for item in answer)
    assert got == sorted(wanted), f"POST {path} with {body} ({what}) listed {got}; Prefect lists {sorted(wanted)}"


def test_flow_runs_are_selected_by_their_deployment(api: ApiClient, related: Related) -> None:
    """``POST /flow_runs/filter`` with ``deployments.id``: the runs of that deployment, and no other."""
    assert_selects(
        api,
        "/flow_runs/filter",
        {"deployments": {"id": {"any_": [related.deployments["A"]]}}},
        {"tagged": related.runs["tagged"], "late": related.runs["late"]},
        "the runs of deployment A",
    )


def test_flow_runs_are_selected_by_their_work_queue(api: ApiClient, related: Related) -> None:
    """``POST /flow_runs/filter`` with ``work_pool_queues.name``: the runs of that queue's deployment."""
    assert_selects(
        api,
        "/flow_runs/filter",
        {"work_pool_queues": {"name": {"any_": [related.queue]}}},
        {"tagged": related.runs["tagged"], "late": related.runs["late"]},
        "the runs on deployment A's queue",
    )


def test_flow_runs_are_selected_by_tag(api: ApiClient, related: Related) -> None:
    """``POST /flow_runs/filter`` with ``flow_runs.tags.all_``: the run that has the tag."""
    assert_selects(
        api,
        "/flow_runs/filter",
        {**related.ours(), "flow_runs": {"tags": {"all_": [related.tag]}}},
        {"tagged": related.runs["tagged"]},
        "the run with the tag",
    )


def test_flow_runs_are_selected_by_state_name(api: ApiClient, related: Related) -> None:
    """``POST /flow_runs/filter`` with ``flow_runs.state.name.any_`` ["Late"]: the SCHEDULED run named Late, not its
    SCHEDULED siblings named Scheduled."""
    assert_selects(
        api,
        "/flow_runs/filter",
        {**related.ours(), "flow_runs": {"state": {"name": {"any_": ["Late"]}}}},
        {"late": related.runs["late"]},
        "the run whose state is named Late",
    )


def test_deployments_are_selected_by_their_flow_runs(api: ApiClient, related: Related) -> None:
    """``POST /deployments/filter`` with ``flow_runs.id``: the deployment of that run."""
    assert_selects(
        api,
        "/deployments/filter",
        {"flow_runs": {"id": {"any_": [related.runs["b"]]}}},
        {"B": related.deployments["B"]},
        "the deployment of run b",
    )


def test_flows_are_selected_by_their_deployments(api: ApiClient, related: Related) -> None:
    """``POST /flows/filter`` with ``deployments.id``: the flow of that deployment."""
    assert_selects(
        api,
        "/flows/filter",
        {"deployments": {"id": {"any_": [related.deployments["B"]]}}},
        {"B": related.flows["B"]},
        "the flow of deployment B",
    )


# --- the sorts of flow runs ---------------------------------------------------------------------------------------

#: (name, seconds after the base instant, how the scheduled time is written): name order, time order and the
#: written strings' order all differ; two runs half a second apart, the earlier at a whole second (written without a
#: fraction, so it sorts after the later one as a string).
SORTED_RUNS = [
    ("c", 7200.0, "+05:00"),
    ("a", 0.0, "Z"),
    ("e", 0.5, "Z"),
    ("b", 10800.0, "-03:00"),
    ("d", 3600.0, "+00:00"),
]
#: Each time sort Prefect offers for flow runs, with the field it sorts by and whether it is descending. For a run
#: that has not started, START_TIME sorts by its expected start time (Prefect's coalesce).
TIME_SORTS = {
    "EXPECTED_START_TIME_ASC": False,
    "EXPECTED_START_TIME_DESC": True,
    "NEXT_SCHEDULED_START_TIME_ASC": False,
    "START_TIME_ASC": False,
    "START_TIME_DESC": True,
}
NAME_SORTS = {"NAME_ASC": False, "NAME_DESC": True}


@dataclass
class SortedRuns:
    flow_id: str
    ids: dict[str, str]  # name letter -> id


@pytest.fixture(scope="module")
def sorted_runs(api: ApiClient, module_created: Created, module_names: Callable[..., str]) -> SortedRuns:
    flow = create_flow(api, module_created, module_names("sorted-flow"))
    base = (utc_now() + dt.timedelta(days=1)).replace(microsecond=0)
    ids = {}
    for letter, seconds, offset in SORTED_RUNS:
        instant = base + dt.timedelta(seconds=seconds)
        zone = (
            dt.timezone.utc
            if offset in ("Z", "+00:00")
            else dt.timezone(dt.timedelta(hours=int(offset[:3]), minutes=int(offset[4:])))
        )
        written = instant.astimezone(zone).isoformat()
        written = written.replace("+00:00", "Z") if offset == "Z" else written
        ids[letter] = api.post(
            "/flow_runs/",
            {"flow_id": flow["id"], "name": module_names("sorted", letter), "state": scheduled_state(written)},
        )["id"]
    return SortedRuns(flow["id"], ids)


@pytest.mark.parametrize("sort", [*TIME_SORTS, *NAME_SORTS])
def test_flow_runs_are_sorted_as_prefect_sorts_them(sort: str, api: ApiClient, sorted_runs: SortedRuns) -> None:
    """``POST /flow_runs/filter`` with each sort by time or name Prefect offers: five runs in the sort's order,
    times compared as instants (their scheduled times were written with different offsets, two half a second
    apart, the earlier at a whole second)."""
    letters = {id_: letter for letter, id_ in sorted_runs.ids.items()}
    answer = api.post("/flow_runs/filter", {"flows": {"id": {"any_": [sorted_runs.flow_id]}}, "sort": sort})
    if not isinstance(answer, list):
        raise UnexpectedAnswer(f"POST /flow_runs/filter answered {str(answer)[:300]}, not a list")
    got = [letters.get(item.get("id"), "?") for item in answer]
    if sort in TIME_SORTS:
        wanted = [letter for letter, _, _ in sorted(SORTED_RUNS, key=lambda run: run[1], reverse=TIME_SORTS[sort])]
        how = "by instant (the runs a to e in time order are a, e, d, c, b)"
    else:
        wanted = sorted(sorted_runs.ids, reverse=NAME_SORTS[sort])
        how = "by name"
    assert got == wanted, (
        f"POST /flow_runs/filter with sort {sort} listed the runs {got}; Prefect lists {wanted}, sorted {how}"
    )


# --- a pool's queues and workers ----------------------------------------------------------------------------------

#: The priorities of a pool's seven queues of the check's own, in the order they are made (its default queue has 1).
QUEUE_PRIORITIES = (5, 2, 8, 3, 7, 4, 6)


def paged(api: ApiClient, path: str, total: int) -> list[list[str]]:
    """``POST path`` in pages of :data:`PAGE` until one past the end: each page's names."""
    return [listed(api, path, {"limit": PAGE, "offset": offset}) for offset in range(0, total + PAGE, PAGE)]


def test_a_pools_queues_are_paged_by_priority(api: ApiClient, created: Created, names: Callable[..., str]) -> None:
    """``POST /work_pools/{name}/queues/filter`` in pages of three: the pool's default queue (priority 1) and seven
    queues made in a shuffled order of priority, each once, by priority (Prefect's only order for them)."""
    pool = names("pool")
    create_work_pool(api, created, pool)
    queues = {priority: names("queue", str(priority)) for priority in QUEUE_PRIORITIES}
    for priority, queue in queues.items():
        create_work_queue(api, pool, queue, priority=priority)
    path = f"/work_pools/{pool}/queues/filter"
    pages = paged(api, path, len(queues) + 1)
    got = [name for page in pages for name in page]
    wanted = ["default", *(queues[p] for p in sorted(queues))]
    short = {"default": "default", **{queue: f"priority {p}" for p, queue in queues.items()}}
    assert got == wanted and pages[-1] == [], (
        f"POST {path} in pages of {PAGE} gave {[[short.get(n, n) for n in page] for page in pages]}; Prefect gives "
        f"{[short[n] for n in wanted]} (the queues by priority, each once) and an empty page past the end"
    )


def test_a_pools_workers_are_paged_by_their_last_heartbeat(
    api: ApiClient, created: Created, names: Callable[..., str]
) -> None:
    """``POST /work_pools/{name}/workers/filter`` in pages of three: seven workers that sent one heartbeat each, one
    after another, newest heartbeat first (Prefect's only order for them), each once."""
    pool = names("pool")
    create_work_pool(api, created, pool)
    workers = [names("worker", str(n)) for n in range(1, 8)]
    for worker in workers:
        send_heartbeat(api, pool, worker)
    path = f"/work_pools/{pool}/workers/filter"
    pages = paged(api, path, len(workers))
    got = [name for page in pages for name in page]
    wanted = list(reversed(workers))
    short = {worker: str(n) for n, worker in enumerate(workers, 1)}
    assert got == wanted and pages[-1] == [], (
        f"POST {path} in pages of {PAGE} gave {[[short.get(n, n) for n in page] for page in pages]} for workers 1 to 7 "
        f"that sent their heartbeats in that order; Prefect gives {[short[n] for n in wanted]} (newest heartbeat "
        "first, each once) and an empty page past the end"
    )
