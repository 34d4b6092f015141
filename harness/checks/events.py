"""Reading events back through ``POST /events/filter``, as the ``events`` and ``durability`` scenarios do."""

from __future__ import annotations

import datetime as dt
from typing import Any

from harness.checks.timestamps import describe_instant, utc_now
from harness.errors import UnexpectedAnswer
from harness.target.api import ApiClient


def read_events(api: ApiClient, resource_id: str) -> list[dict[str, Any]]:
    """``POST /events/filter``: the events about ``resource_id`` (a day either side of now, so a target's clock
    that is off does not hide them), oldest first."""
    window = {
        "since": describe_instant(utc_now() - dt.timedelta(days=1)),
        "until": describe_instant(utc_now() + dt.timedelta(days=1)),
    }
    body = {"filter": {"any_resource": {"id": [resource_id]}, "order": "ASC", "occurred": window}, "limit": 50}
    page = api.post("/events/filter", body, expect=200, what="reading events back failed")
    events = page.get("events") if isinstance(page, dict) else None
    if not isinstance(events, list):
        raise UnexpectedAnswer(
            f"POST /events/filter answered {str(page)[:300]}; Prefect answers a page: "
            '{"events": [...], "total": N, "next_page": ...}'
        )
    return events
