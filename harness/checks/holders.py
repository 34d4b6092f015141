"""A concurrency limit's holders kept apart, proven from the flows' own ledgers: when each run held its slot, and
what the target answered each ask for one."""

from __future__ import annotations

import datetime as dt
from typing import Any

from harness.checks.lifecycle import CLIENTS, RUN_TIMEOUT, Lifecycle
from harness.checks.timestamps import describe_instant
from harness.clients.lifecycle import (
    decided,
    limit_asks,
    read_ledger,
)
from harness.clients.progress import describe_state, wait_for_final_state
from harness.errors import HarnessError
from harness.target.api import ApiClient


def ledger_span(lifecycle: Lifecycle, run_id: str, begin: str, end: str) -> tuple[float, float] | None:
    """When the run's flow code wrote ``begin`` and ``end`` (seconds since the epoch), or None if it did not."""
    entries = {e["event"]: e["time"] for e in read_ledger(lifecycle.flows_dir, run_id)}
    return (entries[begin], entries[end]) if begin in entries and end in entries else None


def assert_holders_apart(lifecycle: Lifecycle, api: ApiClient, purpose: str, name: str, what: str) -> None:
    """The two runs made for ``purpose`` (one per client) completed, and their flows' holds of ``what`` never
    overlapped."""
    runs = {client: lifecycle.runs[client][purpose] for client in CLIENTS}
    finals = {
        client: wait_for_final_state(
            api, run["id"], actor=lifecycle.actors[client], timeout=RUN_TIMEOUT, poll_path=lifecycle.poll_path(client)
        )
        for client, run in runs.items()
    }
    spans = {client: ledger_span(lifecycle, run["id"], "acquired", "releasing") for client, run in runs.items()}
    assert all(final["state"]["type"] == "COMPLETED" for final in finals.values()) and all(spans.values()), (
        f"the two runs holding {what} {name!r} ended "
        f"{', '.join(f'{c}: {describe_state(f)}' for c, f in finals.items())}; each takes its slot and completes"
    )
    (first, first_span), (second, second_span) = sorted(spans.items(), key=lambda item: item[1][0])
    asks = limit_asks(lifecycle.flows_dir, name)
    # Decided (granted, or refused as taken) before the first holder let go; a busy server's 503 decides nothing.
    during = [ask for ask in asks if ask["answered"] <= first_span[1] and decided(ask)]
    granted = [ask for ask in during if 200 <= ask["status"] < 300]
    assert len(granted) <= 1, (
        f"the target granted {what} {name!r} {len(granted)} times while the {first}'s run held it: its answers to "
        f"the asks for a slot (POST .../increment) were {describe_asks(asks, first_span[0])}, and the {first}'s run "
        f"let the slot go at +{first_span[1] - first_span[0]:.2f} s. Prefect answers 423 (Locked) while the limit's "
        "one "
        "slot is taken (the client asks again after Retry-After)"
    )
    if len(during) < len(runs):  # the holder's own ask and the other's, or the check proved nothing
        raise HarnessError(
            f"the {second}'s run asked for {what} {name!r} only after the {first}'s run had let it go (the answers: "
            f"{describe_asks(asks, first_span[0])}; let go at +{first_span[1] - first_span[0]:.2f} s): a holder keeps "
            "its slot up to a minute for the other's ask, so the machine was too loaded to test the limit"
        )
    overlap = first_span[1] - second_span[0]
    assert overlap <= 0, (
        f"the {second}'s run took {what} {name!r} {overlap:.2f} s before the {first}'s run let it go (at "
        f"{describe_instant(dt.datetime.fromtimestamp(second_span[0], dt.timezone.utc))}): the target granted a slot "
        "it did not have. Prefect refuses a slot while the limit's one slot is taken (the client retries)"
    )


def describe_asks(asks: list[dict[str, Any]], since: float) -> str:
    """The target's answers to the asks for a slot, each with when it came, relative to ``since`` (the first hold)."""
    return ", ".join(f"{ask['status']} at {ask['answered'] - since:+.2f} s" for ask in asks) or "none"
