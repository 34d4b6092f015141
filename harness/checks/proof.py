"""Assertions that prove from recorded traffic which polling path a real client used.

Shared by the serve, worker, task worker and scheduler scenarios; every message quotes the transcript or the run as the
target returned it.
"""

from __future__ import annotations

from typing import Any, Iterable

from harness.clients.actors import Actor
from harness.clients.progress import refused_websockets
from harness.clients.transcript import condense
from harness.errors import Unsupported, means_not_implemented, websocket_means_not_implemented

WORKER_LABELS = ("prefect.worker.name", "prefect.worker.type", "prefect.work-pool.name", "prefect.work-pool.id")


def transcript_digest(actor: Actor, limit: int = 25) -> str:
    rows = condense(actor.recorder.transcript())
    lines = [f"    {endpoint} -> {statuses}" for endpoint, statuses, _ in rows[:limit]]
    more = f"\n    ... {len(rows) - limit} more endpoints" if len(rows) > limit else ""
    return "\n".join(lines) + more if lines else "    (no requests at all)"


def assert_polled(actor: Actor, path_suffix: str, *, must_mention: str = "") -> None:
    """``actor`` sent ``POST ...path_suffix`` at least once, it answered 2xx, and (optionally) named
    ``must_mention``."""
    polls = actor.recorder.requests_to("POST", path_suffix)
    assert polls, f"the {actor.name} never sent POST {path_suffix}. Its transcript:\n{transcript_digest(actor)}"
    ok = [e for e in polls if 200 <= e.status < 300]
    if not ok and all(means_not_implemented(e.status, e.response_summary) for e in polls):
        raise Unsupported(
            f"the target does not implement POST {path_suffix}: the {actor.name} polled it {len(polls)} times and got "
            f"{polls[-1].status} {polls[-1].response_summary}. Hint: implement this endpoint; it is how the "
            f"{actor.name} finds its runs"
        )
    assert ok, (
        f"the {actor.name} polled POST {path_suffix} {len(polls)} times and the target never answered 2xx: "
        f"last answer {polls[-1].status} {polls[-1].response_summary}. Hint: implement this endpoint; it is how the "
        f"{actor.name} finds its runs"
    )
    if must_mention:
        mentioned = [e for e in polls if must_mention in e.request_summary]
        assert mentioned, (
            f"the {actor.name}'s POST {path_suffix} requests never named {must_mention}: {polls[0].request_summary}"
        )


def assert_never_used(actor: Actor, path_prefix: str, why: str, *, own_poll: str) -> None:
    """``actor`` polled (``POST ...own_poll``, whatever the answer) and sent no request whose path starts with
    ``path_prefix``. Without the first part a client that never got going would "prove" anything."""
    assert actor.recorder.requests_to("POST", own_poll), (
        f"the {actor.name} never sent POST {own_poll}, so its not using {path_prefix} proves nothing. Its "
        f"transcript:\n{transcript_digest(actor)}"
    )
    used = [e for e in actor.recorder.transcript() if e.path.startswith(path_prefix)]
    assert not used, (
        f"the {actor.name} used {', '.join(sorted({f'{e.method} {e.path}' for e in used}))}, but {why}: the "
        "recorded traffic contradicts the client path this scenario is about"
    )


def assert_subscribed(actor: Actor, subscription: str) -> None:
    """``actor`` opened ``WS subscription`` and the target accepted it at least once."""
    tried = [e for e in actor.recorder.transcript() if e.websocket and e.path == subscription]
    assert tried, f"the {actor.name} never opened WS {subscription}. Its transcript:\n{transcript_digest(actor)}"
    if any(e.status == 101 for e in tried):
        return
    last = tried[-1]
    if all(websocket_means_not_implemented(e.status) for e in tried):
        raise Unsupported(
            f"the target does not implement WS {subscription}: it refused the {actor.name}'s {len(tried)} upgrade(s) "
            f"with {last.status} ({last.response_summary}). Hint: implement this websocket; it is how the "
            f"{actor.name} gets its runs"
        )
    raise AssertionError(
        f"the target refused every WS {subscription} the {actor.name} opened ({len(tried)}): last {last.status} "
        f"({last.response_summary})"
    )


def assert_final_state(final: dict[str, Any] | None, failure: AssertionError | None, expected: str) -> None:
    """The run reached ``expected``; if the scenario's wait failed, re-raise that failure (keeping its kind)."""
    if final is None:
        raise failure or AssertionError("the run never reached a final state")
    state = final.get("state") or {}
    assert state.get("type") == expected, (
        f"the run ended {state.get('type')}/{state.get('name')} instead of {expected}: {state.get('message')!r}"
    )


def assert_reported_states(actor: Actor, run_id: str, states: Iterable[str]) -> None:
    """The actor itself (not some other client) moved the run through ``states`` via set_state."""
    sent = [e.request_summary for e in actor.recorder.requests_to("POST", f"/flow_runs/{run_id}/set_state")]
    for state in states:
        assert any(f'"type":"{state}"' in body for body in sent), (
            f"the {actor.name} never reported {state} for run {run_id} through POST /flow_runs/{{id}}/set_state; "
            f"it sent: {sent or 'nothing'}"
        )


def assert_not_worker_run(run: dict[str, Any]) -> None:
    labels = run.get("labels") or {}
    problems = [f"{k} = {run.get(k)!r}" for k in ("work_pool_name", "work_queue_id") if run.get(k)]
    problems += [f"label {k} = {labels[k]!r}" for k in WORKER_LABELS if k in labels]
    assert not problems, "the served run looks like a worker ran it: " + "; ".join(problems)


def registration_attempts(actor: Actor, pool_name: str) -> str:
    """How a worker tried to register with its pool, as "METHOD path -> status" (websocket first, then HTTP)."""
    paths = (f"/work_pools/{pool_name}/workers/connect", f"/work_pools/{pool_name}/workers/heartbeat")
    tried = [e for e in actor.recorder.transcript() if e.path in paths]
    return (
        ", ".join(f"{e.method} {e.path} -> {e.status}" for e in tried)
        or "neither the websocket nor the heartbeat endpoint"
    )


def runs_created_by(actor: Actor) -> list[str]:
    """Paths of the flow-run creations the actor sent (``POST /flow_runs/``, ``.../create_flow_run``)."""
    return [
        e.path
        for e in actor.recorder.transcript()
        if e.method == "POST" and (e.path == "/flow_runs/" or e.path.endswith("/create_flow_run"))
    ]


def quiet_degradation(actor: Actor, what: str) -> str:
    """What the report says when ``actor`` did ``what`` though the target refused some of its websockets (a server
    without the events websockets, say): the client degrades quietly there, which is information, not a failure."""
    refused = refused_websockets(actor)
    return f"the target refused the {actor.name}'s websockets: {refused}; it {what} without them" if refused else ""
