"""Requests Prefect rejects that a server answers with a 5xx, or stores."""

from __future__ import annotations

import re

from tests.deviating_proxy import ProxyRequest, ProxyResponse
from tests.deviations.framework import Deviation


class AnswersServerErrorsForBadInput(Deviation):
    """A server whose validation errors escape as unhandled exceptions: every 422 becomes a bare 500."""

    def on_response(self, request: ProxyRequest, response: ProxyResponse) -> ProxyResponse:
        if response.status != 422:
            return response
        return ProxyResponse(500, [("content-type", "text/plain; charset=utf-8")], b"Internal Server Error")


#: The state types Prefect knows; a server that checks none of them stores whatever a client sends.
STATE_TYPES = frozenset(
    {"SCHEDULED", "PENDING", "RUNNING", "COMPLETED", "FAILED", "CANCELLED", "CRASHED", "PAUSED", "CANCELLING"}
)


class StoresUnknownStateTypes(Deviation):
    """A server that takes any string as a state type: a run created or moved into a state type Prefect does not
    know is stored (here as PENDING, the nearest thing the reference behind the proxy can store)."""

    PATH = re.compile(r"/flow_runs/([0-9a-f-]{36}/set_state)?$")

    def on_request(self, request: ProxyRequest) -> ProxyResponse | None:
        if request.method != "POST" or not self.PATH.search(request.path) or not request.body:
            return None
        try:
            body = request.json()
        except ValueError:
            return None
        state = body.get("state") if isinstance(body, dict) else None
        if isinstance(state, dict) and isinstance(state.get("type"), str) and state["type"] not in STATE_TYPES:
            request.set_json({**body, "state": {**state, "type": "PENDING"}})
        return None
