"""The harness's own exceptions.

Two families matter to users because they map to different exit codes:

* :class:`TargetUnavailable` and :class:`HarnessError` mean "no verdict could be reached" (exit 2);
* :class:`UnexpectedAnswer` and :class:`WaitTimeout` are raised inside a scenario when the target did not
  behave like Prefect; pytest reports them as failures (exit 1).
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
