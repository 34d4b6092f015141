"""The proofs drawn from real clients' transcripts (harness/checks/proof.py), shown failing on transcripts of the
other kind of client."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from harness.checks.proof import assert_never_used, assert_polled, assert_subscribed
from harness.clients.transcript import Exchange
from harness.errors import Unsupported

# --- client-side proofs: shown failing on transcripts of the other kind of client ------------------------------


def fake_actor(name: str, *requests: tuple[str, str, int]) -> SimpleNamespace:
    exchanges = [Exchange(name, m, p, s, 0.0, 1.0, '{"deployment_ids":["d-1"]}') for m, p, s in requests]
    return SimpleNamespace(
        name=name,
        recorder=SimpleNamespace(
            transcript=lambda: exchanges,
            requests_to=lambda method, suffix: [e for e in exchanges if e.method == method and e.path.endswith(suffix)],
        ),
    )


def test_never_used_fails_on_a_transcript_that_used_the_other_path() -> None:
    worker_like = fake_actor(
        "runner",
        ("POST", "/deployments/get_scheduled_flow_runs", 200),
        ("POST", "/work_pools/p/get_scheduled_flow_runs", 200),
    )
    with pytest.raises(AssertionError, match=r"the runner used POST /work_pools/p/get_scheduled_flow_runs"):
        assert_never_used(
            worker_like,
            "/work_pools/",
            "a .serve() Runner has no work pool",
            own_poll="/deployments/get_scheduled_flow_runs",
        )


def test_never_used_fails_when_the_client_never_polled_at_all() -> None:
    """An idle client "never used" anything: that proves nothing, so the check fails instead of passing."""
    idle = fake_actor("runner", ("GET", "/health", 200))
    with pytest.raises(
        AssertionError, match=r"never sent POST /deployments/get_scheduled_flow_runs, so .* proves nothing"
    ):
        assert_never_used(
            idle, "/work_pools/", "a .serve() Runner has no work pool", own_poll="/deployments/get_scheduled_flow_runs"
        )
    refused = fake_actor("runner", ("POST", "/deployments/get_scheduled_flow_runs", 404))
    assert_never_used(
        refused, "/work_pools/", "a .serve() Runner has no work pool", own_poll="/deployments/get_scheduled_flow_runs"
    )


def test_polled_fails_without_the_poll_or_with_only_refusals_or_for_another_deployment() -> None:
    with pytest.raises(AssertionError, match="never sent POST /deployments/get_scheduled_flow_runs"):
        assert_polled(fake_actor("runner", ("GET", "/health", 200)), "/deployments/get_scheduled_flow_runs")
    with pytest.raises(AssertionError, match="never answered 2xx: last answer 500"):
        assert_polled(
            fake_actor("runner", ("POST", "/deployments/get_scheduled_flow_runs", 500)),
            "/deployments/get_scheduled_flow_runs",
        )
    with pytest.raises(Unsupported, match="the target does not implement POST /deployments/get_scheduled_flow_runs"):
        assert_polled(
            fake_actor("runner", ("POST", "/deployments/get_scheduled_flow_runs", 405)),
            "/deployments/get_scheduled_flow_runs",
        )
    with pytest.raises(AssertionError, match="never named d-2"):
        assert_polled(
            fake_actor("runner", ("POST", "/deployments/get_scheduled_flow_runs", 200)),
            "/deployments/get_scheduled_flow_runs",
            must_mention="d-2",
        )


def fake_subscriber(*statuses: int) -> SimpleNamespace:
    exchanges = [
        Exchange("task-worker", "WS", "/task_runs/subscriptions/scheduled", s, 0.0, 1.0, "", "", True) for s in statuses
    ]
    return SimpleNamespace(name="task-worker", recorder=SimpleNamespace(transcript=lambda: exchanges))


def test_subscribed_fails_without_an_accepted_subscription_and_is_unsupported_only_for_a_missing_route() -> None:
    path = "/task_runs/subscriptions/scheduled"
    assert_subscribed(fake_subscriber(403, 101), path)
    with pytest.raises(AssertionError, match=r"never opened WS /task_runs/subscriptions/scheduled"):
        assert_subscribed(fake_subscriber(), path)
    with pytest.raises(Unsupported, match=r"does not implement WS .* 2 upgrade\(s\) with 404"):
        assert_subscribed(fake_subscriber(403, 404), path)
    with pytest.raises(AssertionError, match=r"refused every WS .* last 500") as caught:
        assert_subscribed(fake_subscriber(500), path)
    assert not isinstance(caught.value, Unsupported)
