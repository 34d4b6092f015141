"""The events checks fail (or say ``unsupported``) on targets that get events wrong; the ones a deviation leaves
alone must still pass behind the same proxy (websockets included), and all of them pass on the reference in the
README's full run.

The deviations: a server without events at all (the notes of the Zig port: an in-memory broker, or none), one that
accepts events and never makes them readable, and one that records another ``occurred`` than the event's own.
"""

from __future__ import annotations

from tests.conftest import SuiteRun
from tests.deviations.framework import Refuses, RewritesJson, RewritesResponses
from tests.deviations.timestamps import shifted

CHECKS = {
    "events/clients_events_websockets_are_accepted",
    "events/a_clients_event_is_read_back",
    "events/state_changes_are_events",
    "events/events_stream_to_subscribers",
}
READ_BACK = {"events/a_clients_event_is_read_back", "events/state_changes_are_events"}
STREAMED = {"events/clients_events_websockets_are_accepted", "events/events_stream_to_subscribers"}


def test_a_target_without_events_is_unsupported(deviating, suite) -> None:
    """No ``/events/filter`` route and both websockets refused (403, as Prefect's own server refuses a websocket
    route it lacks): every events check is ``unsupported``, never an error, and says which endpoint is missing."""
    proxy = deviating(Refuses("POST", r"/events/filter$", 404, websocket_path=r"/events/(in|out)$"))
    run: SuiteRun = suite("--target", proxy.api_url, "-m", "events")
    assert run.code == 1 and run.with_status("unsupported") == CHECKS, run.explain()
    assert all("/events/" in run.message(check) for check in CHECKS), run.explain()


def test_events_that_are_never_readable_fail(deviating, suite) -> None:
    """Events accepted on the websockets but never given back by ``POST /events/filter``: the checks that read them
    back fail after the (scaled) wait, naming what was awaited; the subscriber still got them, and passes."""
    proxy = deviating(RewritesJson("POST", r"/events/filter$", lambda page: {**page, "events": [], "total": 0}))
    run: SuiteRun = suite("--target", proxy.api_url, "-m", "events", "--timeout-scale", "0.3")
    run.assert_deviation_caught(
        "events-never-readable",
        READ_BACK,
        STREAMED,
        r"waiting for POST /events/filter to give back .*prefect-conformance.emitted",
    )


def test_events_with_another_occurred_fail(deviating, suite) -> None:
    """``occurred`` read back a second later than the client sent it and than the state's timestamp: both named."""
    proxy = deviating(RewritesResponses(shifted(1), path=r"/events/filter$", keys=frozenset({"occurred"})))
    run: SuiteRun = suite("--target", proxy.api_url, "-m", "events")
    run.assert_deviation_caught(
        "events-occurred-shifted", READ_BACK, STREAMED, r"occurred is '[^']+', (the client sent|but the)"
    )
