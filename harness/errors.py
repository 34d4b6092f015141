"""The harness's own exceptions.

Two families matter to users because they map to different exit codes:

* :class:`TargetUnavailable` and :class:`HarnessError` mean "no verdict could be reached" (exit 2);
* :class:`UnexpectedAnswer` and :class:`WaitTimeout` are raised inside a scenario when the target did not
  behave like Prefect; pytest reports them as failures (exit 1);
* :class:`Unsupported` is raised when the target lacks an endpoint a check needs; it is reported as
  ``unsupported``, never as a pass, and fails the gate unless an expectations file lists the check.
"""

from __future__ import annotations


class HarnessError(Exception):
    """The harness itself could not do its job (bad usage, a reference server that would not start, ...)."""


class TargetUnavailable(HarnessError):
    """The target cannot be tested at all: unreachable, wrong URL, not a Prefect API, unhealthy."""


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
    return status == 404 and (" ".join(body.split()).replace(" ", "") in {b.replace(" ", "") for b in ROUTE_NOT_FOUND_BODIES}
                              or body.lstrip().lower().startswith(("<!doctype", "<html")))
