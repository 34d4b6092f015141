"""The calls the lifecycle checks make on runs and limits, as Prefect's clients and UI make them: a proposed
CANCELLING and a resume with their orchestration results, a run's state history, child runs and task runs, a
worker as its pool lists it, and concurrency limits with their active slots."""

from __future__ import annotations

from typing import Any

from harness.checks.objects import Created
from harness.checks.timestamps import read_instant
from harness.errors import UnexpectedAnswer
from harness.target.api import ApiClient

#: What ``prefect flow-run cancel`` proposes (``State(type=CANCELLING)``, unforced).
CANCEL_REQUEST = {"state": {"type": "CANCELLING", "name": "Cancelling"}, "force": False}


def create_limit(
    api: ApiClient, created: Created, path: str, body: dict[str, Any], size_key: str, delete_path: str
) -> None:
    """A concurrency limit of one slot, ``POST {path}`` with ``body``, checked to say so under ``size_key``; deleted
    with the module's objects."""
    answer = api.post(path, body, expect=(200, 201))
    if not isinstance(answer, dict) or answer.get(size_key) != 1:
        raise UnexpectedAnswer(f"POST {path} answered {str(answer)[:300]}, not the limit of 1 it created")
    created.add(delete_path)


def create_tag_limit(api: ApiClient, created: Created, tag: str) -> str:
    """A task-run concurrency limit (v1) of one slot on ``tag``, as ``prefect concurrency-limit create TAG 1`` makes
    it: the tag."""
    create_limit(
        api,
        created,
        "/concurrency_limits/",
        {"tag": tag, "concurrency_limit": 1},
        "concurrency_limit",
        f"/concurrency_limits/tag/{tag}",
    )
    return tag


def create_global_limit(api: ApiClient, created: Created, name: str) -> str:
    """A global concurrency limit (v2) of one slot, as ``prefect gcl create NAME --limit 1`` makes it: its name."""
    create_limit(
        api, created, "/v2/concurrency_limits/", {"name": name, "limit": 1}, "limit", f"/v2/concurrency_limits/{name}"
    )
    return name


def orchestration_result(api: ApiClient, path: str, body: dict[str, Any]) -> dict[str, Any]:
    """``POST path`` (a set_state or a resume) answered with an orchestration result ``{status, state, details}``."""
    result = api.post(path, body, expect=(200, 201))
    if not isinstance(result, dict) or "status" not in result:
        raise UnexpectedAnswer(
            f"POST {path} answered {str(result)[:300]}, not an orchestration result {{status, state, details}}"
        )
    return result


def cancel(api: ApiClient, run_id: str) -> dict[str, Any]:
    """Propose CANCELLING as ``prefect flow-run cancel`` does; the orchestration result."""
    return orchestration_result(api, f"/flow_runs/{run_id}/set_state", CANCEL_REQUEST)


def proposal_outcome(result: dict[str, Any]) -> str:
    state = result.get("state") or {}
    reason = (result.get("details") or {}).get("reason")
    return f"{result.get('status')} with state {state.get('type')}/{state.get('name')}" + (
        f" ({reason})" if reason else ""
    )


def resume(api: ApiClient, run_id: str) -> dict[str, Any]:
    """``POST /flow_runs/{id}/resume``, as ``prefect flow-run resume`` and the UI send it: the orchestration result."""
    return orchestration_result(api, f"/flow_runs/{run_id}/resume", {})


def listed_worker(api: ApiClient, pool_name: str, worker_name: str) -> dict[str, Any]:
    workers = api.post(f"/work_pools/{pool_name}/workers/filter", {})
    if not isinstance(workers, list):
        raise UnexpectedAnswer(f"POST /work_pools/{{name}}/workers/filter answered {str(workers)[:300]}, not a list")
    return next((w for w in workers if isinstance(w, dict) and w.get("name") == worker_name), {})


def state_history(api: ApiClient, run_id: str) -> list[dict[str, Any]]:
    states = api.get(f"/flow_run_states/?flow_run_id={run_id}")
    if not isinstance(states, list):
        raise UnexpectedAnswer(f"GET /flow_run_states/ answered {str(states)[:300]}, not a list of states")
    return sorted(states, key=lambda s: read_instant(s.get("timestamp"), "timestamp of a flow run state"))


def describe_history(states: list[dict[str, Any]]) -> str:
    return ", ".join(f"{s.get('type')}/{s.get('name')}" for s in states)


def child_runs(api: ApiClient, deployment_id: str, known: set[str]) -> list[dict[str, Any]]:
    """The runs of a deployment that this module did not create itself: those a flow created as its subflows."""
    runs = api.post("/flow_runs/filter", {"flow_runs": {"deployment_id": {"any_": [deployment_id]}}})
    if not isinstance(runs, list):
        raise UnexpectedAnswer(f"POST /flow_runs/filter answered {str(runs)[:300]}, not a list of flow runs")
    return [run for run in runs if isinstance(run, dict) and run.get("id") not in known]


def active_slots(api: ApiClient, name: str) -> int:
    """``GET /v2/concurrency_limits/{name}``'s ``active_slots``."""
    limit = api.get(f"/v2/concurrency_limits/{name}")
    if not isinstance(limit, dict) or not isinstance(limit.get("active_slots"), int):
        raise UnexpectedAnswer(
            f"GET /v2/concurrency_limits/{name} answered {str(limit)[:300]}, not a limit with its active_slots"
        )
    return limit["active_slots"]


def task_runs_of(api: ApiClient, flow_run_id: str) -> list[dict[str, Any]]:
    runs = api.post("/task_runs/filter", {"flow_runs": {"id": {"any_": [flow_run_id]}}})
    if not isinstance(runs, list):
        raise UnexpectedAnswer(f"POST /task_runs/filter answered {str(runs)[:300]}, not a list of task runs")
    return runs
