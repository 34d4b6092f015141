"""The harness's own exceptions, and the one rule that says who is at fault (:func:`outcome_of`).

* :class:`UnexpectedAnswer` and :class:`WaitTimeout` (``AssertionError`` s) are raised when the *target* did not
  behave like Prefect: it answered something else, answered nothing, or a real client it served died of it.
  The check is ``failed`` (exit 1), with the target's answer quoted.
* :class:`Unsupported` is raised when the target lacks an endpoint a check needs: ``unsupported``, never a pass,
  and fails the gate unless an expectations file lists the check.
* :class:`HarnessError` (and anything that is not an ``AssertionError``) means the harness or its machine broke:
  the check is an ``error`` and the run has no verdict (exit 2). :class:`TargetUnavailable` is the one case
  about the target: it cannot be tested at all (unreachable, not a Prefect API, gone mid-run).

A server author must be able to list every known deviation of their server in an expectations file and get a
green gate, so a target's deviation is never an ``error``, and a harness fault is never blamed on the target.
"""

from __future__ import annotations


class HarnessError(Exception):
    """The harness itself could not do its job (bad usage, a reference server that would not start, ...)."""


class TargetUnavailable(HarnessError):
    """The target cannot be tested at all: unreachable, wrong URL, not a Prefect API, unhealthy."""


class ActorCouldNotStart(HarnessError):
    """A real client died for a local reason before the target had any part in it (its file, an import, a port)."""


class UnexpectedAnswer(AssertionError):
    """The target answered a request differently from how Prefect answers it.

    An ``AssertionError`` so pytest reports it as a conformance failure, not as a crash of the harness.
    """


class WaitTimeout(AssertionError):
    """A bounded wait for a condition on the target ran out; the message names what was awaited."""


class Hopeless(AssertionError):
    """Raised by a wait's probe when the awaited condition can no longer become true (the actor died, or the
    target refused every poll): the wait ends at once instead of running out its timeout."""


class Unsupported(UnexpectedAnswer, Hopeless):
    """The target does not implement an endpoint a check needs (405, 501, or a route-level 404).

    Also :class:`Hopeless`: a missing endpoint will not appear while a wait is running.
    """


#: Bodies of a 404 that means "no such route" rather than "no such object" (FastAPI's default, and bare ones).
ROUTE_NOT_FOUND_BODIES = frozenset({'{"detail":"Not Found"}', "Not Found", "", "404 page not found", "404 Not Found"})


def means_not_implemented(status: int, body: str) -> bool:
    """True when an answer says the endpoint itself is missing, not that an object was not found."""
    if status in (405, 501):
        return True
    return status == 404 and (
        " ".join(body.split()).replace(" ", "") in {b.replace(" ", "") for b in ROUTE_NOT_FOUND_BODIES}
        or body.lstrip().lower().startswith(("<!doctype", "<html"))
    )


def websocket_means_not_implemented(status: int) -> bool:
    """True when a refused websocket handshake says the route is missing. Starlette, and so Prefect's own server,
    answers 403 to a websocket path it has no route for; other servers answer 404, 405 or 501."""
    return status in (403, 404, 405, 501)


def outcome_of(error: BaseException, phase: str) -> str:
    """The outcome of a check that raised ``error`` during ``phase`` (setup, call or teardown of pytest).

    The one place that decides who is at fault: see the module docstring.
    """
    if isinstance(error, Unsupported):
        return "unsupported"
    if phase != "teardown" and isinstance(error, AssertionError):
        return "failed"
    return "error"
