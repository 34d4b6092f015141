"""What a real client has done so far, while a check waits on it: a run's final state, a deployment it creates, and the
actor guard that ends such a wait at once when the client has died or keeps being refused, saying whose fault that is
(:func:`died`)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from harness.errors import (
    ActorCouldNotStart,
    Hopeless,
    Unsupported,
    means_not_implemented,
    websocket_means_not_implemented,
)
from harness.waits import wait_until

if TYPE_CHECKING:
    from harness.clients.actors import Actor
    from harness.target.api import ApiClient


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
        e
        for i, e in enumerate(exchanges)
        if not (200 <= e.status < 400)
        and e.path not in BENIGN_REFUSALS
        and not e.websocket
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
        return Hopeless(
            f"the {actor.name} exited with code {code} after the target answered: {refused}; its last log lines:\n{log}"
        )
    if not actor.recorder.transcript() or LOCAL_START_FAILURES.search(log):
        return ActorCouldNotStart(
            f"the {actor.name} exited with code {code} before the target had any part in it (a harness or machine "
            f"fault, not the target's); its last log lines ({actor.process.log_path}):\n{log}"
        )
    return Hopeless(
        f"the {actor.name} exited with code {code} while talking to the target (every answer was 2xx); "
        f"its last log lines:\n{log}"
    )


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
    api: "ApiClient",
    run_id: str,
    *,
    actor: "Actor | None",
    timeout: float,
    poll_path: str = "",
    hint: str = "",
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
        raise AssertionError(
            f"run is {describe_state(run)}"
            + (f"; the target refused the {actor.name}'s last requests: {refused}" if refused else "")
        )

    who = f" by the {actor.name}" if actor else ""
    return wait_until(
        probe,
        awaiting=f"flow run {run_id} to be executed{who} and reach a final state",
        timeout=timeout,
        interval=0.25,
        hint=hint,
    )


def wait_for_deployment(
    api: "ApiClient", flow_name: str, deployment_name: str, *, actor: "Actor", timeout: float
) -> dict[str, Any]:
    """Poll ``GET /deployments/name/{flow}/{deployment}`` until the actor has created the deployment."""

    def probe() -> dict[str, Any] | None:
        answer = api.request("GET", f"/deployments/name/{flow_name}/{deployment_name}")
        if answer.status == 200:
            return answer.json()
        actor_can_still_act(actor)
        raise AssertionError(answer.describe())

    return wait_until(
        probe,
        awaiting=f"the {actor.name} to create deployment {flow_name}/{deployment_name}",
        timeout=timeout,
        interval=0.25,
    )
