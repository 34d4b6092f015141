"""Variables a server keeps wrongly: values stored as strings, overwrites and unsets ignored, any name accepted, tags
left out of its filters."""

from __future__ import annotations

import json
import re
import uuid

from tests.deviating_proxy import ProxyRequest, ProxyResponse
from tests.deviations.framework import Deviation

CREATE = re.compile(r"/variables/$")
BY_NAME = re.compile(r"/variables/name/[^/]+$")


class StoresValuesAsJsonText(Deviation):
    """Keeps every value as its JSON text (a string as '"a value"'): a server whose value column is a text column that
    it never decodes."""

    def on_request(self, request: ProxyRequest) -> ProxyResponse | None:
        if request.body and (
            (request.method == "POST" and CREATE.search(request.path))
            or (request.method == "PATCH" and BY_NAME.search(request.path))
        ):
            body = request.json() or {}
            if "value" in body and body["value"] is not None:
                request.set_json({**body, "value": json.dumps(body["value"])})
        return None


class IgnoresOverwrite(Deviation):
    """Answers an update of a variable 204 and changes nothing."""

    def on_request(self, request: ProxyRequest) -> ProxyResponse | None:
        if request.method == "PATCH" and BY_NAME.search(request.path):
            return ProxyResponse(204, [], b"")
        return None


class IgnoresUnset(Deviation):
    """Answers a deletion of a variable 204 and keeps it."""

    def on_request(self, request: ProxyRequest) -> ProxyResponse | None:
        if request.method == "DELETE" and BY_NAME.search(request.path):
            return ProxyResponse(204, [], b"")
        return None


class AcceptsAnyVariableName(Deviation):
    """Answers 201 to a variable Prefect refuses (its name, or a name in use), as a server without the name's rule
    and the unique constraint would: the answer describes a variable that is then not found."""

    def on_response(self, request: ProxyRequest, response: ProxyResponse) -> ProxyResponse:
        if request.method == "POST" and CREATE.search(request.path) and response.status in (409, 422):
            body = request.json() or {}
            return ProxyResponse.of_json(201, {"id": str(uuid.uuid4()), "tags": [], **body})
        return response


class IgnoresVariableTags(Deviation):
    """Lists variables as if the filter named no tags."""

    def on_request(self, request: ProxyRequest) -> ProxyResponse | None:
        if request.method == "POST" and request.path.endswith("/variables/filter") and request.body:
            body = request.json() or {}
            variables = {k: v for k, v in (body.get("variables") or {}).items() if k != "tags"}
            request.set_json({**body, "variables": variables})
        return None
