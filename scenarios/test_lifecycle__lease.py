"""Lifecycle, leases: a dead holder's global concurrency slot is freed once its lease expires (the ``lifecycle``
feature; what Prefect does is told in ``test_lifecycle.py``).

A module of its own, with a Runner alone: its wait, the lease's minute, is the feature's longest, and pytest starts it
first and runs the rest of the suite beside it.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from harness.checks.lifecycle import REVOKE_GRACE, RUN_TIMEOUT, Lifecycle, ledger_events, lifecycle
from harness.checks.orchestration import active_slots
from harness.clients.lifecycle import LEASE_SECONDS, lease_set_times, read_ledger
from harness.clients.progress import actor_can_still_act, describe_state
from harness.target.api import ApiClient
from harness.waits import service_loop, timeout_scale, wait_until

pytestmark = pytest.mark.lifecycle
__all__ = ["lifecycle"]  # the module-scoped fixture these checks share, imported from harness.checks.lifecycle


def test_a_dead_holders_global_slot_is_freed_when_its_lease_expires(lifecycle: Lifecycle, api: ApiClient) -> None:
    """A served run takes the one slot of a global concurrency limit with ``concurrency(name, occupy=1,
    lease_duration=60)`` (``POST /v2/concurrency_limits/increment-with-lease``) and its process dies at once
    (SIGKILL, by its own hand), so no one releases the slot, and the lease is renewed at most once, as the client
    takes it (its renewal thread renews at once): the target frees the slot once the lease has expired, 60 s after
    the last answer that set it (Prefect's repossessor service, every ``--service-loops repossessor`` seconds: 15 by
    default), so the limit does not stay full for ever."""
    if isinstance(lifecycle.lease_limit, Exception):
        raise lifecycle.lease_limit
    name, run_id, actor = lifecycle.lease_limit, lifecycle.runs["runner"]["leasing"]["id"], lifecycle.actors["runner"]

    def acquired() -> dict[str, Any]:
        entries = [e for e in read_ledger(lifecycle.flows_dir, run_id) if e["event"] == "acquired"]
        if entries:
            return entries[0]
        actor_can_still_act(actor, lifecycle.poll_path("runner"))
        raise AssertionError(
            f"run is {describe_state(api.get(f'/flow_runs/{run_id}'))}, its flow code wrote "
            f"{ledger_events(lifecycle, run_id)}"
        )

    taken = wait_until(
        acquired,
        awaiting=f"served run {run_id} to take the slot of global concurrency limit {name!r}",
        timeout=RUN_TIMEOUT,
        interval=0.25,
        hint="the flow calls concurrency(name, occupy=1, lease_duration=60), which asks POST "
        "/v2/concurrency_limits/increment-with-lease for a slot until it gets one",
    )
    loop = service_loop("repossessor")

    def expiry() -> tuple[float, str]:
        """When the lease expires at the latest, and why: LEASE_SECONDS after the last answer that set it."""
        sets = lease_set_times(actor.recorder, name)
        what, when = max(sets, key=lambda s: s[1], default=("the flow's note that it held the slot", taken["time"]))
        return max(when, taken["time"]) + LEASE_SECONDS, what

    def freed() -> bool:
        slots = active_slots(api, name)
        if slots == 0:
            return True
        expires, why = expiry()
        raise AssertionError(
            f"GET /v2/concurrency_limits/{name} answers active_slots {slots}, "
            f"{time.time() - expires:.0f} s after the dead holder's {LEASE_SECONDS}-s lease expired "
            f"({LEASE_SECONDS} s after {why})"
        )

    # The lease's own minute is the client's, not the target's: --timeout-scale leaves it whole. The repossessor
    # only finds the expired lease each loop and hands its revocation to the server's task queue (docket), which
    # runs it beside the other services' loops: REVOKE_GRACE allows for that queue.
    wait_until(
        freed,
        awaiting=f"the target to free the slot of limit {name!r} whose holder died",
        timeout=max(0.0, expiry()[0] - time.time()) / timeout_scale() + 2 * loop + REVOKE_GRACE,
        interval=0.5,
        hint=f"Prefect's repossessor service frees the slots of expired leases (a living holder renews its "
        f"lease) every loop ({loop:g} s here: --service-loops repossessor)",
    )
