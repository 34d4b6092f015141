"""Labels a server gives wrongly: no inherited labels, no system labels."""

from __future__ import annotations

import re

from tests.deviating_proxy import ProxyRequest, ProxyResponse
from tests.deviations.framework import Deviation


class KeepsOwnLabelsOnly(Deviation):
    """Flow runs keep only the labels their create sent and the server's own ``prefect.*`` ones: a server that
    inherits nothing from the run's flow or deployment."""

    CREATES = re.compile(r"/flow_runs/$|/deployments/[0-9a-f-]{36}/create_flow_run$")

    def __init__(self) -> None:
        self.sent: dict[str, dict] = {}

    def on_response(self, request: ProxyRequest, response: ProxyResponse) -> ProxyResponse:
        if request.method == "POST" and self.CREATES.search(request.path) and response.status in (200, 201):
            self.sent[response.json()["id"]] = (request.json() or {}).get("labels") or {}
        match = re.search(r"/flow_runs/([0-9a-f-]{36})$", request.path)
        if request.method == "GET" and match and match.group(1) in self.sent and response.status == 200:
            body = response.json()
            system = {k: v for k, v in (body.get("labels") or {}).items() if k.startswith("prefect.")}
            response.set_json({**body, "labels": {**system, **self.sent[match.group(1)]}})
        return response


class LacksSystemLabels(Deviation):
    """Deployments read back without the server's own ``prefect.*`` labels: a server that adds none."""

    def on_response(self, request: ProxyRequest, response: ProxyResponse) -> ProxyResponse:
        if (
            request.method == "GET"
            and re.search(r"/deployments/[0-9a-f-]{36}$", request.path)
            and response.status == 200
        ):
            body = response.json()
            labels = {k: v for k, v in (body.get("labels") or {}).items() if not k.startswith("prefect.")}
            response.set_json({**body, "labels": labels})
        return response
