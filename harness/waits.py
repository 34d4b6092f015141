"""Bounded polling: the only way the harness waits for anything.

There are no fixed sleeps used as synchronisation in this project. Every wait names what it awaits, has a
deadline, and reports the last thing it saw when the deadline passes, in the manner of testcontainers'
wait strategies.
"""

from __future__ import annotations

import os
import time
from typing import Callable, TypeVar

from harness.target.errors import Hopeless, WaitTimeout

T = TypeVar("T")

#: Multiplies every timeout in the suite; raise it for slow targets (``PREFECT_CONFORMANCE_TIMEOUT_SCALE``).
TIMEOUT_SCALE_ENV = "PREFECT_CONFORMANCE_TIMEOUT_SCALE"


def timeout_scale() -> float:
    """The factor applied to every documented timeout; 1.0 unless the user set one for a slow target."""
    raw = os.environ.get(TIMEOUT_SCALE_ENV, "1")
    try:
        scale = float(raw)
    except ValueError:
        return 1.0
    return scale if scale > 0 else 1.0


def wait_until(
    probe: Callable[[], T],
    *,
    awaiting: str,
    timeout: float,
    interval: float = 0.2,
    hint: str = "",
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> T:
    """Call ``probe`` until it returns something truthy, and return that.

    ``probe`` may also raise :class:`AssertionError` to mean "not yet, and here is why"; the last such message
    (or the last falsy value) is quoted in the timeout message. A :class:`~harness.target.errors.Hopeless` from the
    probe ends the wait at once. ``timeout`` is scaled by
    :func:`timeout_scale`.
    """
    limit = timeout * timeout_scale()
    deadline = clock() + limit
    last: object = None
    while True:
        try:
            value = probe()
        except Hopeless:
            raise
        except AssertionError as exc:  # the probe explains why the condition does not hold yet
            last = str(exc)
        else:
            if value:
                return value
            last = value
        if clock() >= deadline:
            message = f"Timed out after {limit:.1f}s waiting for {awaiting}. Last seen: {_excerpt(last)}."
            if hint:
                message += f" Hint: {hint}"
            raise WaitTimeout(message)
        sleep(min(interval, max(0.0, deadline - clock())) or interval)


def _excerpt(value: object, limit: int = 400) -> str:
    text = repr(value) if not isinstance(value, str) else value
    return text if len(text) <= limit else text[: limit - 3] + "..."
