"""Answers that break Prefect's response schemas, and what the differential checks must find."""

from __future__ import annotations

from tests.deviating_proxy import ProxyRequest, ProxyResponse
from tests.deviations.framework import RewritesObjects


def is_flow_run(value: dict) -> bool:
    return "flow_id" in value and "next_scheduled_start_time" in value


def wrong_types(value: dict) -> dict:
    """Every object's ``created`` a number, an orchestration result's ``status`` a word Prefect does not know."""
    if "created" in value:
        value = {**value, "created": 1764316800}
    if "status" in value and "state" in value:
        value = {**value, "status": "OK"}
    return value


def without_flow_id_with_an_extra_field(value: dict) -> dict:
    """Flow runs lose the required ``flow_id``; every model object (one with an ``id``; not a map such as
    ``labels``) gains a field Prefect's document does not list."""
    if "id" in value:
        value = {**value, "x_port_extension": {"shard": 3}}
    return {k: v for k, v in value.items() if k != "flow_id"} if is_flow_run(value) else value


def renamed_next_scheduled_start_time(value: dict) -> dict:
    """Flow runs call ``next_scheduled_start_time`` ``next_start_time``: a rename no hand-written check names."""
    if not is_flow_run(value):
        return value
    return {("next_start_time" if k == "next_scheduled_start_time" else k): v for k, v in value.items()}


class AnswersEverythingSlightlyOff(RewritesObjects):
    """Times of handling sent as epoch numbers (``created``, a state's ``timestamp``), and a run in a state type
    Prefect does not know accepted instead of refused."""

    def __init__(self) -> None:
        super().__init__(
            lambda value: {k: (1764316800 if k in ("created", "timestamp") else v) for k, v in value.items()}
        )

    def on_request(self, request: ProxyRequest) -> ProxyResponse | None:
        if request.method == "POST" and request.path.endswith("/flow_runs/") and b"NOT_A_STATE" in request.body:
            return ProxyResponse.of_json(201, {"id": "00000000-0000-0000-0000-000000000000", "state": None})
        return None


def epoch_created(value: dict) -> dict:
    """``created`` as epoch seconds: Prefect's clients read it (pydantic takes a number for a datetime), but it
    breaks the schema every other client of the API was written against."""
    return {**value, "created": 1764316800} if "created" in value else value
