"""A server that serves only so many runs at once."""

from __future__ import annotations

import re
import time

from tests.deviating_proxy import ProxyRequest, ProxyResponse
from tests.deviations.framework import Deviation


class RefusesRunsBeyond(Deviation):
    """Admits at most ``n`` flow runs into RUNNING a minute: a run's proposal of RUNNING within a minute of ``n``
    admitted ones is answered 500, as a server that runs out of a resource per run and frees it slowly would (the
    engine then crashes the run). Counted over a window, not over runs alive at once, so the verdict does not depend
    on how the machine's load spreads the runs' starts. ``n`` 0 admits none."""

    WINDOW = 60.0

    def __init__(self, n: int) -> None:
        self.n, self.admitted = n, {}

    def on_request(self, request: ProxyRequest) -> ProxyResponse | None:
        match = re.search(r"/flow_runs/([0-9a-f-]{36})/set_state$", request.path)
        if request.method != "POST" or not match:
            return None
        run, kind = match.group(1), ((request.json() or {}).get("state") or {}).get("type")
        if kind == "RUNNING" and run not in self.admitted:
            now = time.monotonic()
            if sum(1 for at in self.admitted.values() if now - at < self.WINDOW) >= self.n:
                return ProxyResponse(500, [("content-type", "application/json")], b'{"detail": "out of run slots"}')
            self.admitted[run] = now
        return None
