"""Waiting on flow runs and deployments while a real client works, with failure messages that say why.

When a wait runs out, the message names what was awaited, the run's last state as the target reports it, and
whether the actor that should have acted is still alive (with its last log lines if not).
"""

from __future__ import annotations

import re
from typing import Any

from harness.clients.actors import Actor
from harness.target.api import ApiClient
from harness.target.errors import ActorCouldNotStart, Hopeless, Unsupported, means_not_implemented
from harness.waits import wait_until

FINAL_STATE_TYPES = frozenset({"COMPLETED", "FAILED", "CRASHED", "CANCELLED"})


#: Refused polls after which a run can no longer be picked up: the wait for it ends early.
REFUSED_POLLS_LIMIT = 3


#: Non-2xx answers that real clients expect and shrug off (Prefect answers 422 to the CSRF probe when CSRF is off).
BENIGN_REFUSALS = frozenset({"/csrf-token"})


def refused_requests(actor: Actor, limit: int = 3) -> str:
    """The actor's last requests the target refused, as "METHOD path -> status body" for failure messages."""
    refused = [
        e for e in actor.recorder.transcript()
        if not (200 <= e.status < 400) and e.path not in BENIGN_REFUSALS and not e.websocket
    ]
    return "; ".join(f"{e.method} {e.path} -> {e.status} {e.response_summary}" for e in refused[-limit:])


#: Lines in a client's log that mean it could not start for a reason on this machine, not the target's answer.
LOCAL_START_FAILURES = re.compile(
    r"can't open file|No module named|ModuleNotFoundError|ImportError|Address already in use|Permission denied"
)


def died(actor: Actor) -> Exception:
    """What a real client's death means: the target's failure (:class:`Hopeless`) when the target had a part in
    it, a harness error (:class:`ActorCouldNotStart`) when the client died for a local reason.

    The target had no part when no request of the client reached it, or when the client's log shows a local
    start-up failure and the target refused nothing. Otherwise the client talked to the target and died:
    the same client runs against the reference, so the target's answers are the cause, and they are quoted.
    """
    code, log = actor.process.popen.returncode, actor.log_tail()
    refused = refused_requests(actor)
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


def actor_can_still_act(actor: Actor | None, poll_path: str = "") -> None:
    """Raise if the actor died (see :func:`died`), or :class:`Hopeless` if the target refused its last polls of
    ``poll_path``."""
    if actor is None:
        return
    if not actor.is_running():
        raise died(actor)
    if poll_path:
        polls = actor.recorder.requests_to("POST", poll_path)
        recent = polls[-REFUSED_POLLS_LIMIT:]
        if len(recent) == REFUSED_POLLS_LIMIT and all(not 200 <= e.status < 300 for e in recent):
            missing = all(means_not_implemented(e.status, e.response_summary) for e in recent)
            raise (Unsupported if missing else Hopeless)(
                f"the {actor.name} polled POST {poll_path} and the target refused it {len(polls)} times "
                f"(last: {recent[-1].status} {recent[-1].response_summary}), so it can never get the run. "
                f"Hint: implement POST {poll_path}"
            )


def describe_state(run: dict[str, Any]) -> str:
    state = run.get("state") or {}
    return f"{state.get('type')}/{state.get('name')} (run {run.get('name')!r})"


def wait_for_final_state(
    api: ApiClient, run_id: str, *, actor: Actor | None, timeout: float, poll_path: str = "", hint: str = ""
) -> dict[str, Any]:
    """Poll ``GET /flow_runs/{id}`` until the run reaches a final state; return the run.

    Ends early if the actor dies or the target keeps refusing the actor's ``poll_path``.
    """
    def probe() -> dict[str, Any] | None:
        run = api.get(f"/flow_runs/{run_id}")
        if (run.get("state") or {}).get("type") in FINAL_STATE_TYPES:
            return run
        actor_can_still_act(actor, poll_path)
        raise AssertionError(f"run is {describe_state(run)}")

    who = f" by the {actor.name}" if actor else ""
    return wait_until(probe, awaiting=f"flow run {run_id} to be executed{who} and reach a final state", timeout=timeout,
                      interval=0.25, hint=hint)


def wait_for_deployment(api: ApiClient, flow_name: str, deployment_name: str, *, actor: Actor, timeout: float) -> dict[str, Any]:
    """Poll ``GET /deployments/name/{flow}/{deployment}`` until the actor has created the deployment."""
    def probe() -> dict[str, Any] | None:
        answer = api.request("GET", f"/deployments/name/{flow_name}/{deployment_name}")
        if answer.status == 200:
            return answer.json()
        actor_can_still_act(actor)
        raise AssertionError(answer.describe())

    return wait_until(probe, awaiting=f"the {actor.name} to create deployment {flow_name}/{deployment_name}",
                      timeout=timeout, interval=0.25)
