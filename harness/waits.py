"""Bounded waits: the only way the harness waits for anything, as strategies in the manner of testcontainers'
``wait_strategies``.

There are no fixed sleeps used as synchronisation in this project. Every wait names what it awaits, has a
deadline scaled by ``--timeout-scale``, and when the deadline passes says what was awaited, what was last seen,
and ends with a ``Hint:``. The strategies:

* :func:`wait_until` - the core: a condition polled until it holds;
* :func:`wait_for_stable` - a collection stops changing for a while (runs a scheduler creates);
* :func:`wait_for_instant` - the harness's clock reaches an instant.

How long the target's own loops take (its scheduler's, its services') is set here too, since every wait on them
derives from those settings. Waits on a server's health live in :mod:`harness.target.health`, waits on real
clients in :mod:`harness.clients.progress`.

May import :mod:`harness.errors` only: every other layer builds on this one.
"""

from __future__ import annotations

import datetime as dt
import os
import time
from typing import Any, Callable, Sized, TypeVar

from harness.errors import Hopeless, WaitTimeout

T = TypeVar("T")
S = TypeVar("S", bound=Sized)

#: Multiplies every timeout in the suite; raise it for slow targets (``PREFECT_CONFORMANCE_TIMEOUT_SCALE``).
TIMEOUT_SCALE_ENV = "PREFECT_CONFORMANCE_TIMEOUT_SCALE"
#: How often the target's scheduler loops, in seconds (``--scheduler-interval``); Prefect's default is 60
#: (``PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS``), the bundled reference's 1.
SCHEDULER_INTERVAL_ENV = "PREFECT_CONFORMANCE_SCHEDULER_INTERVAL"
PREFECT_SCHEDULER_INTERVAL = 60.0
#: The hint of a wait that has no more specific one.
DEFAULT_HINT = "the target (or this machine) may be slow; raise --timeout-scale if it is"


def timeout_scale() -> float:
    """The factor applied to every documented timeout; 1.0 unless the user set one for a slow target."""
    raw = os.environ.get(TIMEOUT_SCALE_ENV, "1")
    try:
        scale = float(raw)
    except ValueError:
        return 1.0
    return scale if scale > 0 else 1.0


def scheduler_interval() -> float:
    """Seconds between two loops of the target's scheduler: what the scheduler waits are sized by, instead of by
    ``--timeout-scale`` (a server can be fast and still loop every minute)."""
    try:
        interval = float(os.environ.get(SCHEDULER_INTERVAL_ENV, PREFECT_SCHEDULER_INTERVAL))
    except ValueError:
        return PREFECT_SCHEDULER_INTERVAL
    return interval if interval > 0 else PREFECT_SCHEDULER_INTERVAL


#: How often the target's other services loop, by name (``--service-loops``), where the lifecycle checks wait for
#: their work: Prefect's defaults (``PREFECT_SERVER_SERVICES_<NAME>_LOOP_SECONDS``) unless the user says otherwise.
#: ``concurrency_slot_wait`` is not a loop but is waited on alike: how long a run refused its deployment's
#: concurrency slot waits before it is handed out again (``PREFECT_SERVER_DEPLOYMENTS_CONCURRENCY_SLOT_WAIT_SECONDS``);
#: nor are the foreman's two timeouts, after which what no one polled is NOT_READY (the statuses checks).
SERVICE_LOOPS_ENV = "PREFECT_CONFORMANCE_SERVICE_LOOPS"
PREFECT_SERVICE_LOOPS = {
    "pause_expirations": 5.0,
    "foreman": 15.0,
    "cancellation_cleanup": 20.0,
    "repossessor": 15.0,
    "concurrency_slot_wait": 30.0,
    "deployment_last_polled_timeout": 60.0,
    "work_queue_last_polled_timeout": 60.0,
}
#: The Prefect server setting behind each of :data:`PREFECT_SERVICE_LOOPS`.
SERVICE_LOOP_SETTINGS = {name: f"PREFECT_SERVER_SERVICES_{name.upper()}_LOOP_SECONDS" for name in PREFECT_SERVICE_LOOPS}
SERVICE_LOOP_SETTINGS["concurrency_slot_wait"] = "PREFECT_SERVER_DEPLOYMENTS_CONCURRENCY_SLOT_WAIT_SECONDS"
for _timeout in ("deployment_last_polled_timeout", "work_queue_last_polled_timeout"):
    SERVICE_LOOP_SETTINGS[_timeout] = f"PREFECT_SERVER_SERVICES_FOREMAN_{_timeout.upper()}_SECONDS"


def parse_service_loops(text: str) -> dict[str, float]:
    """``"foreman=30,pause_expirations=2"``: seconds per service, over Prefect's defaults. Raises ValueError naming
    what it could not read."""
    loops = dict(PREFECT_SERVICE_LOOPS)
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, raw = part.partition("=")
        name = name.strip().lower()
        if name not in loops:
            raise ValueError(f"unknown service {name!r}: the services are {', '.join(sorted(loops))}")
        try:
            loops[name] = float(raw)
        except ValueError:
            raise ValueError(f"{name} must be a number of seconds; got {raw.strip()!r}") from None
        if loops[name] <= 0:
            raise ValueError(f"{name} must be more than 0 seconds; got {raw.strip()!r}")
    return loops


def service_loop(name: str) -> float:
    """Seconds between two loops of the target's service ``name`` (a key of :data:`PREFECT_SERVICE_LOOPS`)."""
    try:
        return parse_service_loops(os.environ.get(SERVICE_LOOPS_ENV, ""))[name]
    except ValueError:
        return PREFECT_SERVICE_LOOPS[name]


def stability_window(interval: float) -> float:
    """How long the runs a scheduler makes must stay unchanged to count as complete: one whole loop of
    ``interval`` seconds and then some (a duplicate would come from a later loop), and at least 5 s."""
    return max(5.0, interval + 3.0)


def _excerpt(value: object, limit: int = 400) -> str:
    text = repr(value) if not isinstance(value, str) else value
    return text if len(text) <= limit else text[: limit - 3] + "..."


def wait_until(
    probe: Callable[[], T],
    *,
    awaiting: str,
    timeout: float,
    interval: float = 0.2,
    hint: str = DEFAULT_HINT,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> T:
    """Call ``probe`` until it returns something truthy, and return that.

    ``probe`` may also raise :class:`AssertionError` to mean "not yet, and here is why"; the last such message
    (or the last falsy value) is quoted in the timeout message. A :class:`~harness.errors.Hopeless` from the
    probe ends the wait at once; any other exception propagates (a harness fault is not "not yet"). ``timeout``
    is scaled by :func:`timeout_scale`.
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
            raise WaitTimeout(
                f"Timed out after {limit:.1f}s waiting for {awaiting}. Last seen: {_excerpt(last)}. "
                f"Hint: {hint or DEFAULT_HINT}"
            )
        sleep(min(interval, max(0.0, deadline - clock())) or interval)


def wait_for_instant(instant: dt.datetime, *, awaiting: str) -> None:
    """Until the harness's clock reads ``instant`` (aware): a wait for time itself to pass, which a timeout scale
    neither shortens nor lengthens; ``awaiting`` says what the time is for."""
    remaining = (instant - dt.datetime.now(dt.timezone.utc)).total_seconds()
    wait_until(
        lambda: dt.datetime.now(dt.timezone.utc) >= instant,
        awaiting=awaiting,
        timeout=(max(0.0, remaining) + 5.0) / timeout_scale(),
        interval=0.2,
    )


def wait_for_stable(
    probe: Callable[[], S],
    *,
    awaiting: str,
    stable_for: float,
    timeout: float,
    interval: float = 0.5,
    hint: str = DEFAULT_HINT,
    clock: Callable[[], float] = time.monotonic,
) -> S:
    """What ``probe`` returns once its length has not changed for ``stable_for`` seconds (scaled like every
    timeout: a target whose loops are slower needs a longer window), e.g. the runs a scheduler creates."""
    window = stable_for * timeout_scale()
    seen: dict[str, Any] = {"count": -1, "since": clock()}

    def stable() -> S | None:
        value = probe()
        if len(value) != seen["count"]:
            seen.update(count=len(value), since=clock())
            raise AssertionError(f"{len(value)}, still changing")
        held = clock() - seen["since"]
        if held < window:
            raise AssertionError(f"{len(value)}, unchanged for {held:.0f}s")
        return value

    return wait_until(
        stable,
        awaiting=f"{awaiting} to stay unchanged for {window:.0f}s",
        timeout=timeout + stable_for,
        interval=interval,
        hint=hint,
    )
