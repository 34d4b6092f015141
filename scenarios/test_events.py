"""Events: what clients emit and what the server records of a run's life are kept, and reach subscribers.

Real-client behaviour relied on (Prefect 3.9.1): every flow run's process emits events over the websocket
``/events/in`` (``emit_event``), and Runners subscribe over ``/events/out`` (the ``prefect`` subprotocol, an
``auth`` message, then a ``filter``) to learn of cancellations. The server itself emits an event for every state a
run enters (``prefect.flow-run.Pending``, ``...Running``, ``...Completed``, the run as the resource, ``occurred`` the
state's timestamp). Users read them in the UI's event feed and through ``POST /events/filter``; automations and
``prefect events stream`` subscribe. Prefect persists events in batches (every 5 s by default,
``PREFECT_SERVER_SERVICES_EVENT_PERSISTER_FLUSH_INTERVAL``), so reading them back is waited for.

A target without events (no ``/events/filter`` route, websockets refused with 403, 404, 405 or 501) is
``unsupported`` for this feature.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pytest

from harness.checks.events import read_events
from harness.checks.objects import Created, create_flow, create_scheduled_run, set_state
from harness.checks.timestamps import describe_instant, read_instant, utc_now
from harness.clients.actors import Actor, start_events_client
from harness.clients.progress import subscriber_can_still_act
from harness.errors import Unsupported, websocket_means_not_implemented
from harness.target.api import ApiClient
from harness.waits import timeout_scale, wait_until

pytestmark = pytest.mark.events

STATES = ("PENDING", "RUNNING", "COMPLETED")
STATE_EVENTS = tuple(f"prefect.flow-run.{state.capitalize()}" for state in STATES)
OWN_EVENT = "prefect-conformance.emitted"
#: How long the events may take to be readable: Prefect's persister flushes every 5 s by default.
PERSIST_TIMEOUT = 30.0
#: How long the events client may take: import Prefect, subscribe, and receive what it expects.
CLIENT_TIMEOUT = 60.0


@dataclass
class EventsOutcome:
    client: Actor
    run: dict[str, Any]
    own: dict[str, Any]  # the event the client emitted (event, resource, payload, occurred)
    states: dict[str, dict[str, Any]]  # state type -> the state the set_state answer carried
    streamed: list[dict[str, Any]] = field(default_factory=list)
    read_back: list[dict[str, Any]] = field(default_factory=list)
    failure: AssertionError | None = None

    def must_have_run(self) -> None:
        if self.failure is not None:
            raise self.failure


def names_of(events: list[dict[str, Any]]) -> list[str]:
    return [event.get("event") for event in events]


@pytest.fixture(scope="module")
def events_seen(
    api: ApiClient,
    actors: Callable[..., Actor],
    module_names: Callable[..., str],
    module_created: Created,
    scenario_dir: Path,
) -> EventsOutcome:
    """A run, a real events client subscribed to it and to its own event, the run moved through PENDING, RUNNING
    and COMPLETED, and what reached the subscriber and what ``POST /events/filter`` gives back."""
    flow = create_flow(api, module_created, module_names("flow"))
    run = create_scheduled_run(api, flow["id"], module_names("run"), utc_now())
    run_resource = f"prefect.flow-run.{run['id']}"
    own = {
        "event": OWN_EVENT,
        "payload": {"text": "Grüße, 日本語 🚀", "n": 1},
        "resource": {
            "prefect.resource.id": f"prefect-conformance.{module_names('event')}",
            "prefect.resource.name": "the events check's own resource",
        },
        "occurred": describe_instant(utc_now().replace(microsecond=123456) - dt.timedelta(seconds=1)),
    }
    ready, out = scenario_dir / "events-client.ready", scenario_dir / "events-client.jsonl"
    ready.unlink(missing_ok=True)
    out.unlink(missing_ok=True)
    client = actors(
        start_events_client,
        resource_ids=[run_resource, own["resource"]["prefect.resource.id"]],
        own_event=own,
        expected=[OWN_EVENT, *STATE_EVENTS],
        timeout=CLIENT_TIMEOUT * timeout_scale(),
        out=out,
        ready=ready,
    )
    outcome = EventsOutcome(client, run, own, {})
    try:

        def subscribed() -> bool:
            subscriber_can_still_act(client, "/events/out")
            return ready.exists()

        wait_until(
            subscribed,
            awaiting="the events client to subscribe over WS /events/out",
            timeout=CLIENT_TIMEOUT,
            interval=0.1,
            hint="the client subscribes with Prefect's own subscriber, as a Runner does",
        )
        for state_type in STATES:
            outcome.states[state_type] = set_state(api, run["id"], state_type)["state"]
        wait_until(
            lambda: not client.is_running(),
            awaiting="the events client to receive the run's state events and its own event",
            timeout=CLIENT_TIMEOUT + 10,
            interval=0.1,
            hint="it exits once every expected event arrived, or after its own deadline",
        )
        wanted = {OWN_EVENT, *STATE_EVENTS}

        def persisted() -> list[dict[str, Any]]:
            events = read_events(api, run_resource) + read_events(api, own["resource"]["prefect.resource.id"])
            assert wanted <= set(names_of(events)), f"POST /events/filter gave {names_of(events)}"
            return events

        try:
            outcome.read_back = wait_until(
                persisted,
                awaiting=f"POST /events/filter to give back {sorted(wanted)}",
                timeout=PERSIST_TIMEOUT,
                interval=0.25,
                hint="events must be kept and readable; Prefect writes them within its "
                "persister's flush interval (5 s)",
            )
        except AssertionError as exc:
            outcome.failure = exc
    except AssertionError as exc:
        outcome.failure = exc
    client.stop()
    outcome.streamed = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
    return outcome


def websocket_sessions(client: Actor, path: str) -> list[Any]:
    return [e for e in client.recorder.transcript() if e.websocket and e.path == path]


def test_clients_events_websockets_are_accepted(events_seen: EventsOutcome) -> None:
    """Prefect's own events clients are accepted on both websockets: ``WS /events/out`` (a subscription, as Runners
    open) and ``WS /events/in`` (what every flow run's process emits on), each answered 101."""
    for path in ("/events/out", "/events/in"):
        sessions = websocket_sessions(events_seen.client, path)
        assert sessions, f"the events client never opened WS {path} (its log: {events_seen.client.log_tail(5)}); " + (
            str(events_seen.failure) if events_seen.failure else ""
        )
        refused = [s for s in sessions if s.status != 101]
        if refused and all(websocket_means_not_implemented(s.status) for s in refused):
            raise Unsupported(
                f"the target refused WS {path} with {refused[-1].status} ({refused[-1].response_summary}). "
                f"Hint: implement the websocket {path}; Prefect's clients emit and subscribe through it"
            )
        assert not refused, f"the target refused WS {path}: {refused[-1].status} {refused[-1].response_summary}"


def test_a_clients_event_is_read_back(events_seen: EventsOutcome) -> None:
    """An event a client emitted over ``WS /events/in`` is read back through ``POST /events/filter`` by its
    resource: its name, resource, payload (non-ASCII too) and the ``occurred`` it was sent with (the same instant,
    to the microsecond; the format of datetimes is ``timestamps/output_format``'s to judge)."""
    events_seen.must_have_run()
    own = events_seen.own
    found = [e for e in events_seen.read_back if e.get("event") == OWN_EVENT]
    assert len(found) == 1, f"POST /events/filter gave the client's event {len(found)} times: {found}"
    event = found[0]
    problems = [
        f"{field} is {event.get(field)!r}, the client sent {own[field]!r}"
        for field in ("payload",)
        if event.get(field) != own[field]
    ]
    problems += [
        f"resource[{key!r}] is {(event.get('resource') or {}).get(key)!r}, the client sent {value!r}"
        for key, value in own["resource"].items()
        if (event.get("resource") or {}).get(key) != value
    ]
    if read_instant(event.get("occurred"), "occurred") != read_instant(own["occurred"], "the client's occurred"):
        problems.append(f"occurred is {event.get('occurred')!r}, the client sent {own['occurred']!r}")
    assert not problems, "the client's event, read back through POST /events/filter, differs: " + "; ".join(problems)


def test_state_changes_are_events(events_seen: EventsOutcome) -> None:
    """Each state the run entered is an event the server recorded: ``prefect.flow-run.Pending``, ``Running`` and
    ``Completed``, once each, the run as the resource (its id and name), ``occurred`` the state's own timestamp (the
    same instant), in order."""
    events_seen.must_have_run()
    run = events_seen.run
    problems: list[str] = []
    for state_type, name in zip(STATES, STATE_EVENTS):
        found = [e for e in events_seen.read_back if e.get("event") == name]
        if len(found) != 1:
            problems.append(f"{name}: {len(found)} events, expected 1")
            continue
        event, state = found[0], events_seen.states[state_type]
        resource = event.get("resource") or {}
        if (
            resource.get("prefect.resource.id") != f"prefect.flow-run.{run['id']}"
            or resource.get("prefect.resource.name") != run["name"]
        ):
            problems.append(
                f"{name}: resource is {resource!r}, expected the run (prefect.flow-run.{run['id']}, {run['name']!r})"
            )
        if read_instant(event.get("occurred"), f"{name} occurred") != read_instant(
            state.get("timestamp"), "the state's timestamp"
        ):
            problems.append(
                f"{name}: occurred is {event.get('occurred')!r}, but the {state_type} state's timestamp is "
                f"{state.get('timestamp')!r} (Prefect's event occurs at the state's timestamp)"
            )
    assert not problems, "the run's state events, read back through POST /events/filter: " + "; ".join(problems)
    occurred = [
        read_instant(e.get("occurred"), "occurred")
        for name in STATE_EVENTS
        for e in events_seen.read_back
        if e.get("event") == name
    ]
    assert occurred == sorted(occurred) and len(set(occurred)) == len(occurred), (
        f"the state events' occurred times are not strictly increasing in the order the states were entered: "
        f"{[describe_instant(o) for o in occurred]}"
    )


def test_events_stream_to_subscribers(events_seen: EventsOutcome) -> None:
    """A client subscribed over ``WS /events/out`` to the run and to its own resource receives the run's state
    events and its own event, each once, as the ``POST /events/filter`` gives them (same ids)."""
    if events_seen.failure is not None and not events_seen.streamed:
        raise events_seen.failure
    streamed = {e.get("event"): e for e in events_seen.streamed}
    missing = [name for name in (OWN_EVENT, *STATE_EVENTS) if name not in streamed]
    assert not missing, (
        f"the subscriber of WS /events/out did not receive {missing}; it received "
        f"{names_of(events_seen.streamed)}. Hint: publish every event to the subscriptions it matches"
    )
    twice = [name for name in streamed if names_of(events_seen.streamed).count(name) > 1]
    assert not twice, f"the subscriber received {twice} more than once: {names_of(events_seen.streamed)}"
    stored = {e.get("event"): e.get("id") for e in events_seen.read_back}
    differ = [name for name, event in streamed.items() if name in stored and stored[name] != event.get("id")]
    assert not differ, f"{differ}: the subscriber got other ids than POST /events/filter gives back"
