"""Bounded waits: the only way the harness waits for anything, as strategies in the manner of testcontainers'
``wait_strategies``.

There are no fixed sleeps used as synchronisation in this project. Every wait names what it awaits, has a
deadline scaled by ``--timeout-scale``, and when the deadline passes says what was awaited, what was last seen,
and ends with a ``Hint:``. The strategies:

* :func:`wait_until` - the core: a condition polled until it holds;
* :func:`wait_for_health` - a server answers ``GET /health`` with ``true`` (reference, containers, preflight);
* :func:`wait_for_stable` - a collection stops changing for a while (runs a scheduler creates);
* :func:`wait_for_final_state` / :func:`wait_for_deployment` - a real client acts on the target;
* the actor guard, :func:`actor_can_still_act` - ends such a wait at once when the client that should act has
  died or keeps being refused, and says whose fault that is (:func:`died`).

May import :mod:`harness.target`; actors and API clients are passed in.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import time
from typing import TYPE_CHECKING, Any, Callable, Sized, TypeVar

import httpx

from harness.target.errors import (
    ActorCouldNotStart,
    Hopeless,
    Unsupported,
    WaitTimeout,
    means_not_implemented,
    websocket_means_not_implemented,
)
from harness.target.tls import tls_context

if TYPE_CHECKING:  # only for annotations: the guard duck-types actors, so this layer imports no clients
    from harness.clients.actors import Actor
    from harness.target.api import ApiClient

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
PREFECT_SERVICE_LOOPS = {"pause_expirations": 5.0, "foreman": 15.0, "cancellation_cleanup": 20.0, "repossessor": 15.0,
                         "concurrency_slot_wait": 30.0, "deployment_last_polled_timeout": 60.0,
                         "work_queue_last_polled_timeout": 60.0}
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
    (or the last falsy value) is quoted in the timeout message. A :class:`~harness.target.errors.Hopeless` from the
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
            raise WaitTimeout(f"Timed out after {limit:.1f}s waiting for {awaiting}. Last seen: {_excerpt(last)}. "
                              f"Hint: {hint or DEFAULT_HINT}")
        sleep(min(interval, max(0.0, deadline - clock())) or interval)


def wait_for_instant(instant: dt.datetime, *, awaiting: str) -> None:
    """Until the harness's clock reads ``instant`` (aware): a wait for time itself to pass, which a timeout scale
    neither shortens nor lengthens; ``awaiting`` says what the time is for."""
    remaining = (instant - dt.datetime.now(dt.timezone.utc)).total_seconds()
    wait_until(lambda: dt.datetime.now(dt.timezone.utc) >= instant, awaiting=awaiting,
               timeout=(max(0.0, remaining) + 5.0) / timeout_scale(), interval=0.2)


def _excerpt(value: object, limit: int = 400) -> str:
    text = repr(value) if not isinstance(value, str) else value
    return text if len(text) <= limit else text[: limit - 3] + "..."

def wait_for_health(
    api_url: str,
    *,
    timeout: float,
    what: str = "the server",
    alive: Callable[[], None] | None = None,
    interval: float = 0.1,
    hint: str = DEFAULT_HINT,
) -> None:
    """``GET {api_url}/health`` answers ``true``. ``alive`` raises when the server can no longer come up (its
    process exited), which ends the wait at once with that exception."""
    url = api_url.rstrip("/") + "/health"
    with httpx.Client(timeout=2.0, verify=tls_context()) as http:

        def probe() -> bool:
            if alive is not None:
                alive()
            try:
                response = http.get(url)
            except httpx.HTTPError as exc:
                raise AssertionError(f"GET /health: {type(exc).__name__}") from None
            if response.status_code == 200 and response.text.strip() == "true":
                return True
            raise AssertionError(f"GET /health answered {response.status_code} {_excerpt(response.text, 120)}")

        wait_until(probe, awaiting=f"{what} to answer GET {url} with true", timeout=timeout, interval=interval, hint=hint)


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

    return wait_until(stable, awaiting=f"{awaiting} to stay unchanged for {window:.0f}s", timeout=timeout + stable_for,
                      interval=interval, hint=hint)


# --- while a real client acts: final states, and the actor guard ------------------------------------------------

FINAL_STATE_TYPES = frozenset({"COMPLETED", "FAILED", "CRASHED", "CANCELLED"})


#: Refused polls after which a run can no longer be picked up: the wait for it ends early.
REFUSED_POLLS_LIMIT = 3


#: Non-2xx answers that real clients expect and shrug off (Prefect answers 422 to the CSRF probe when CSRF is off).
BENIGN_REFUSALS = frozenset({"/csrf-token"})


def refused_requests(actor: "Actor", limit: int = 3) -> str:
    """The actor's last requests the target refused, as "METHOD path -> status body" for failure messages.

    A GET answered 404 that more successful traffic followed was a lookup that found nothing, as clients make
    before they create (a Runner asks for its deployment by name first): not a refusal. Nor is a request the
    target refused and later accepted (a 503 the client retried). A final refusal (4xx) is what a client gives up
    on, so those are quoted before transient ones (502, 503, 504)."""
    exchanges = actor.recorder.transcript()
    last_ok = max((i for i, e in enumerate(exchanges) if 200 <= e.status < 400), default=-1)
    accepted_last = {(e.method, e.path): i for i, e in enumerate(exchanges) if 200 <= e.status < 400}
    refused = [
        e for i, e in enumerate(exchanges)
        if not (200 <= e.status < 400) and e.path not in BENIGN_REFUSALS and not e.websocket
        and not (e.method == "GET" and e.status == 404 and i < last_ok)
        and accepted_last.get((e.method, e.path), -1) < i
    ]
    final = [e for e in refused if e.status not in (502, 503, 504)]
    return "; ".join(f"{e.method} {e.path} -> {e.status} {e.response_summary}" for e in (final or refused)[-limit:])


def refused_websockets(actor: "Actor", limit: int = 3) -> str:
    """The websockets the target refused the actor (a handshake not answered 101), as "WS path -> status detail":
    a client may die of a refused websocket with every HTTP answer 2xx (Prefect issue #21005: a 3.6.21 Runner)."""
    refused = [e for e in actor.recorder.transcript() if e.websocket and e.status != 101]
    return "; ".join(f"WS {e.path} -> {e.status} {e.response_summary}" for e in refused[-limit:])


#: Lines in a client's log that mean it could not start for a reason on this machine, not the target's answer.
LOCAL_START_FAILURES = re.compile(
    r"can't open file|No module named|ModuleNotFoundError|ImportError|Address already in use|Permission denied"
)


def died(actor: "Actor") -> Exception:
    """What a real client's death means: the target's failure (:class:`Hopeless`) when the target had a part in
    it, a harness error (:class:`ActorCouldNotStart`) when the client died for a local reason.

    The target had no part when no request of the client reached it, or when the client's log shows a local
    start-up failure and the target refused nothing. Otherwise the client talked to the target and died:
    the same client runs against the reference, so the target's answers are the cause, and they are quoted.
    """
    code, log = actor.process.popen.returncode, actor.log_tail()
    refused = refused_requests(actor) or refused_websockets(actor)
    if refused:
        return Hopeless(f"the {actor.name} exited with code {code} after the target answered: {refused}; its last "
                        f"log lines:\n{log}")
    if not actor.recorder.transcript() or LOCAL_START_FAILURES.search(log):
        return ActorCouldNotStart(
            f"the {actor.name} exited with code {code} before the target had any part in it (a harness or machine "
            f"fault, not the target's); its last log lines ({actor.process.log_path}):\n{log}"
        )
    return Hopeless(f"the {actor.name} exited with code {code} while talking to the target (every answer was 2xx); "
                    f"its last log lines:\n{log}")


def actor_can_still_act(actor: "Actor | None", poll_path: str = "", *, since: float = 0.0) -> None:
    """Raise if the actor died (see :func:`died`), or :class:`Hopeless` if the target refused its last polls of
    ``poll_path`` (those sent from ``since``, a wall-clock time, on: polls refused while a target restarted do not
    count)."""
    if actor is None:
        return
    if not actor.is_running():
        raise died(actor)
    if poll_path:
        polls = [e for e in actor.recorder.requests_to("POST", poll_path) if e.started >= since]
        recent = polls[-REFUSED_POLLS_LIMIT:]
        if len(recent) == REFUSED_POLLS_LIMIT and all(not 200 <= e.status < 300 for e in recent):
            missing = all(means_not_implemented(e.status, e.response_summary) for e in recent)
            raise (Unsupported if missing else Hopeless)(
                f"the {actor.name} polled POST {poll_path} and the target refused it {len(polls)} times "
                f"(last: {recent[-1].status} {recent[-1].response_summary}), so it can never get the run. "
                f"Hint: implement POST {poll_path}"
            )


def subscriber_can_still_act(actor: "Actor", subscription: str) -> None:
    """The actor guard for a client that lives on one websocket (a task worker): when it has exited after the
    target refused ``subscription``, say so (:class:`Unsupported` when the refusal means the route is missing);
    otherwise as :func:`actor_can_still_act`."""
    if actor.is_running():
        return
    refused = [e for e in actor.recorder.transcript() if e.websocket and e.path == subscription and e.status != 101]
    if refused:
        missing = all(websocket_means_not_implemented(e.status) for e in refused)
        raise (Unsupported if missing else Hopeless)(
            f"the {actor.name} exited with code {actor.process.popen.returncode} after the target refused WS "
            f"{subscription} with {refused[-1].status} ({refused[-1].response_summary}). Hint: implement the websocket "
            f"{subscription}; it is the only way a {actor.name} gets its runs"
        )
    raise died(actor)


def describe_state(run: dict[str, Any]) -> str:
    """A run's state as a failure message quotes it: type/name, the run's name, and the state's message if any (a
    CRASHED run's message says why, which is what a server author needs to tell a server's fault from a client's)."""
    state = run.get("state") or {}
    message = " ".join(str(state.get("message") or "").split())
    said = f": {message[:200]!r}" if message else ""
    return f"{state.get('type')}/{state.get('name')} (run {run.get('name')!r}{said})"


def wait_for_final_state(
    api: "ApiClient", run_id: str, *, actor: "Actor | None", timeout: float, poll_path: str = "", hint: str = "",
    since: float = 0.0,
) -> dict[str, Any]:
    """Poll ``GET /flow_runs/{id}`` until the run reaches a final state; return the run.

    Ends early if the actor dies or the target keeps refusing the actor's ``poll_path`` (from ``since`` on).
    """
    def probe() -> dict[str, Any] | None:
        run = api.get(f"/flow_runs/{run_id}")
        if (run.get("state") or {}).get("type") in FINAL_STATE_TYPES:
            return run
        actor_can_still_act(actor, poll_path, since=since)
        # A client gives up on a run when the target still refuses a request about it after the client's own
        # retries (a worker that got 503 six times for PATCH /flow_runs/{id}/labels leaves the run PENDING).
        refused = refused_requests(actor) if actor else ""
        raise AssertionError(f"run is {describe_state(run)}"
                             + (f"; the target refused the {actor.name}'s last requests: {refused}" if refused else ""))

    who = f" by the {actor.name}" if actor else ""
    return wait_until(probe, awaiting=f"flow run {run_id} to be executed{who} and reach a final state", timeout=timeout,
                      interval=0.25, hint=hint)


def wait_for_deployment(api: "ApiClient", flow_name: str, deployment_name: str, *, actor: "Actor", timeout: float) -> dict[str, Any]:
    """Poll ``GET /deployments/name/{flow}/{deployment}`` until the actor has created the deployment."""
    def probe() -> dict[str, Any] | None:
        answer = api.request("GET", f"/deployments/name/{flow_name}/{deployment_name}")
        if answer.status == 200:
            return answer.json()
        actor_can_still_act(actor)
        raise AssertionError(answer.describe())

    return wait_until(probe, awaiting=f"the {actor.name} to create deployment {flow_name}/{deployment_name}",
                      timeout=timeout, interval=0.25)
