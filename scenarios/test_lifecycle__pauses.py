"""Lifecycle: pauses and suspends, with real clients. A paused run waits in its process and carries on when
resumed, also with the input it waits for (validated against the schema it stored); a suspended run leaves its
process and runs again from the top when resumed; a suspended run never resumed fails when its pause expires
(Prefect's pause-expirations service). The behaviour relied on is described in ``test_lifecycle.py``; the runs are
built by :mod:`harness.checks.lifecycle` for this module's checks.
"""

from __future__ import annotations

from typing import Any

import pytest

from harness.checks.lifecycle import (
    CANCEL_TIMEOUT,
    CLIENTS,
    RUN_TIMEOUT,
    Lifecycle,
    await_started,
    lifecycle,
    process_gone,
    second_wave,
)
from harness.checks.orchestration import (
    orchestration_result,
    proposal_outcome,
    resume,
    state_history,
)
from harness.checks.timestamps import describe_instant, read_instant, utc_now
from harness.clients.lifecycle import PAUSE_TIMEOUT, read_ledger
from harness.clients.progress import actor_can_still_act, describe_state, wait_for_final_state
from harness.target.api import ApiClient
from harness.waits import service_loop, timeout_scale, wait_until

pytestmark = pytest.mark.lifecycle
__all__ = ["lifecycle"]  # the module-scoped fixture these checks share, imported from harness.checks.lifecycle


@pytest.mark.parametrize("client", CLIENTS)
def test_a_paused_run_resumes_and_completes(client: str, lifecycle: Lifecycle, api: ApiClient) -> None:
    """A {client}'s flow calls ``pause_flow_run(timeout=300)``: the run is PAUSED/Paused with its ``pause_timeout``
    300 s after the pause, its process waiting; ``POST /flow_runs/{{id}}/resume`` is accepted (RUNNING) and the same
    process carries on to COMPLETED."""
    run = lifecycle.runs[client]["pausing"]
    started, paused = await_started(
        api,
        lifecycle,
        client,
        run["id"],
        "PAUSED",
        "Paused",
        hint="the flow's own process proposes PAUSED/Paused, which Prefect accepts",
    )
    state = paused["state"]
    details = state.get("state_details") or {}
    at = read_instant(state.get("timestamp"), "timestamp of the Paused state")
    until = (
        read_instant(details.get("pause_timeout"), "state_details.pause_timeout of the Paused state")
        if details.get("pause_timeout")
        else None
    )
    assert until is not None and abs((until - at).total_seconds() - PAUSE_TIMEOUT) <= 30, (
        f"the Paused state at {describe_instant(at)} has pause_timeout {details.get('pause_timeout')!r}; the flow "
        f"paused with timeout={PAUSE_TIMEOUT}, and Prefect keeps the pause_timeout its client sets"
    )
    result = resume(api, run["id"])
    assert result.get("status") == "ACCEPT", (
        f"POST /flow_runs/{{id}}/resume of the paused run got {proposal_outcome(result)}; Prefect accepts it and the "
        "run is RUNNING again"
    )
    final = wait_for_final_state(
        api,
        run["id"],
        actor=lifecycle.actors[client],
        timeout=RUN_TIMEOUT,
        hint="the paused flow's process polls its run (GET /flow_runs/{id}) every second "
        "and carries on once it reads RUNNING",
    )
    resumed = [e for e in read_ledger(lifecycle.flows_dir, run["id"]) if e["event"] == "resumed"]
    assert final["state"]["type"] == "COMPLETED" and [e["pid"] for e in resumed] == [started["pid"]], (
        f"the resumed run ended {describe_state(final)}; its flow code resumed in processes "
        f"{[e['pid'] for e in resumed]}, not once in the process that paused ({started['pid']})"
    )


def test_a_paused_run_resumes_with_the_input_it_waits_for(lifecycle: Lifecycle, api: ApiClient) -> None:
    """A served flow calls ``pause_flow_run(wait_for_input=str)``: the Paused state names the run input it waits for
    (``run_input_keyset``); a resume without that input is refused (REJECT: Prefect validates ``run_input`` against
    the schema the flow stored), and one with ``{"run_input": {"value": ...}}`` is accepted and the flow receives
    exactly that value in its process and completes."""
    second_wave(lifecycle)
    run = lifecycle.runs["runner"]["asking"]
    started, paused = await_started(
        api,
        lifecycle,
        "runner",
        run["id"],
        "PAUSED",
        "Paused",
        hint="the flow's own process proposes PAUSED/Paused, which Prefect accepts",
    )
    keyset = (paused["state"].get("state_details") or {}).get("run_input_keyset")
    assert isinstance(keyset, dict) and keyset.get("schema") and keyset.get("response"), (
        f"the Paused state of a flow waiting for input has run_input_keyset {keyset!r}; Prefect keeps the keys the "
        "flow gave (schema, response, description), which tell a resume what input to validate and where to store it"
    )
    # The flow stores its input's schema only once its PAUSED was accepted; until then Prefect refuses every resume
    # ("Run input schema not found."), so a user's form, and this check, wait for it.
    schema_path = f"/flow_runs/{run['id']}/input/{keyset['schema']}"

    def schema_stored() -> bool:
        answer = api.request("GET", schema_path)
        if answer.status == 200:
            return True
        raise AssertionError(f"GET {schema_path} answers {answer.describe()}")

    wait_until(
        schema_stored,
        awaiting=f"the paused flow's input schema to be readable at GET {schema_path}",
        timeout=RUN_TIMEOUT,
        interval=0.25,
        hint="the paused flow's process stores its input's schema (POST /flow_runs/{id}/input) once the target "
        "accepted PAUSED; the UI reads it from there to show the form",
    )
    refused = resume(api, run["id"])
    assert refused.get("status") == "REJECT", (
        f"POST /flow_runs/{{id}}/resume without the input the run waits for got {proposal_outcome(refused)}; Prefect "
        "rejects it (the input fails the schema the flow stored) and the run stays paused"
    )
    answer = f"answer-{run['id'][:8]}"
    result = orchestration_result(api, f"/flow_runs/{run['id']}/resume", {"run_input": {"value": answer}})
    assert result.get("status") == "ACCEPT", (
        f"POST /flow_runs/{{id}}/resume with run_input {{'value': {answer!r}}} got {proposal_outcome(result)}; Prefect "
        "accepts an input that fits the schema and the run is RUNNING again"
    )
    final = wait_for_final_state(
        api,
        run["id"],
        actor=lifecycle.actors["runner"],
        timeout=RUN_TIMEOUT,
        hint="the paused flow's process polls its run every second and, once RUNNING, reads "
        "its input (GET /flow_runs/{id}/input/{key})",
    )
    resumed = [e for e in read_ledger(lifecycle.flows_dir, run["id"]) if e["event"] == "resumed"]
    assert final["state"]["type"] == "COMPLETED" and [e.get("answer") for e in resumed] == [answer], (
        f"the run resumed with {answer!r} ended {describe_state(final)} and its flow received "
        f"{[e.get('answer') for e in resumed]}; Prefect stores the input under the keyset's response key and the flow "
        "reads it back"
    )
    assert [e["pid"] for e in resumed] == [started["pid"]], (
        "the flow resumed in another process than the one that paused"
    )


@pytest.mark.parametrize("client", CLIENTS)
def test_a_suspended_run_resumes_and_runs_again(client: str, lifecycle: Lifecycle, api: ApiClient) -> None:
    """A {client}'s flow calls ``suspend_flow_run(timeout=300)``: its process exits and the run is PAUSED/Suspended
    (``pause_reschedule``); resumed, it is rescheduled (SCHEDULED/Resuming) and the {client} runs it again, in a new
    process, to COMPLETED."""
    run = lifecycle.runs[client]["suspending"]
    started, suspended = await_started(
        api,
        lifecycle,
        client,
        run["id"],
        "PAUSED",
        "Suspended",
        hint="the flow's own process proposes PAUSED/Suspended, which Prefect accepts",
    )
    details = suspended["state"].get("state_details") or {}
    assert details.get("pause_reschedule") is True, (
        f"the Suspended state has state_details {details}: Prefect keeps pause_reschedule true, which tells a resume "
        "to reschedule the run"
    )
    wait_until(
        lambda: process_gone(started["pid"]),
        awaiting=f"the suspended run's process {started['pid']} to exit",
        timeout=CANCEL_TIMEOUT,
        interval=0.2,
        hint="a suspended flow's process exits",
    )
    result = resume(api, run["id"])
    state = result.get("state") or {}
    assert result.get("status") == "ACCEPT" and (state.get("type"), state.get("name")) == ("SCHEDULED", "Resuming"), (
        f"POST /flow_runs/{{id}}/resume of the suspended run got {proposal_outcome(result)}; Prefect reschedules it "
        "(ACCEPT, SCHEDULED/Resuming) for its client to run again"
    )
    final = wait_for_final_state(
        api,
        run["id"],
        actor=lifecycle.actors[client],
        timeout=RUN_TIMEOUT,
        poll_path=lifecycle.poll_path(client),
        hint=f"the {client} runs the rescheduled run as it runs any due one",
    )
    entries = read_ledger(lifecycle.flows_dir, run["id"])
    starts = [e["pid"] for e in entries if e["event"] == "started"]
    assert final["state"]["type"] == "COMPLETED" and len(starts) == 2 and len(set(starts)) == 2, (
        f"the resumed run ended {describe_state(final)}; its flow code started in processes {starts} (Prefect: twice, "
        "the second time in a new process after the resume)"
    )


def test_a_suspended_run_never_resumed_fails_when_its_pause_expires(lifecycle: Lifecycle, api: ApiClient) -> None:
    """A served flow calls ``suspend_flow_run(timeout=3)`` and nobody resumes it: its process exits, and the target
    fails the run once the pause has expired (Prefect's pause-expirations service, every
    ``--service-loops pause_expirations`` seconds: 5 by default), not before."""
    run = lifecycle.runs["runner"]["expiring"]
    actor = lifecycle.actors["runner"]

    def suspended() -> dict[str, Any]:
        found = [s for s in state_history(api, run["id"]) if (s.get("type"), s.get("name")) == ("PAUSED", "Suspended")]
        if found:
            return found[-1]
        actor_can_still_act(actor, lifecycle.poll_path("runner"))
        current = api.get(f"/flow_runs/{run['id']}")
        raise AssertionError(f"run is {describe_state(current)}")

    state = wait_until(
        suspended,
        awaiting=f"the served run {run['id']} to be suspended (PAUSED/Suspended)",
        timeout=RUN_TIMEOUT,
        interval=0.25,
        hint="the flow's own process proposes PAUSED/Suspended",
    )
    expired = read_instant(
        (state.get("state_details") or {}).get("pause_timeout"), "state_details.pause_timeout of the Suspended state"
    )
    loop = service_loop("pause_expirations")
    allowed = (2 * loop + 10) * timeout_scale()  # after the expiry: two loops of the service, and a pass in flight
    remaining = (expired - utc_now()).total_seconds() + allowed
    final = wait_for_final_state(
        api,
        run["id"],
        actor=None,
        timeout=max(1.0, remaining) / timeout_scale(),
        hint=f"Prefect's pause-expirations service fails a PAUSED run past its pause_timeout within a loop ({loop:g} s "
        "here: --service-loops pause_expirations)",
    )
    assert final["state"]["type"] == "FAILED", (
        f"the suspended run nobody resumed ended {describe_state(final)}, not FAILED; Prefect fails it once its pause "
        'expires ("The flow was paused and never resumed.")'
    )
    failed = read_instant(final["state"].get("timestamp"), "timestamp of the FAILED state")
    late = (failed - expired).total_seconds()
    assert 0 <= late <= allowed, (
        f"the suspended run's pause expired at {describe_instant(expired)} and the target failed it at "
        f"{describe_instant(failed)}, {late:.1f} s later; Prefect fails it within a loop of its pause-expirations "
        f"service once expired ({loop:g} s here: --service-loops pause_expirations), and never before"
    )
