"""Timestamps a server writes, reads or compares wrongly: offsets dropped, precision lost, strings compared, a wrong
clock."""

from __future__ import annotations

import datetime as dt
import re

from harness.checks.timestamps import RFC3339, parse_instant
from tests.deviating_proxy import ProxyRequest, ProxyResponse
from tests.deviations.framework import Deviation, Rewrite, RewritesResponses


class WritesUnusualTimestamps(Deviation):
    """Readable but non-conforming timestamps everywhere: flow-run routes (and so both polling endpoints) answer
    naive ones, as the seed notes' port did; every other route answers them with a space instead of 'T'."""

    def __init__(self) -> None:
        self.naive = RewritesResponses(drop_offset, path="flow_run")
        self.spaced = RewritesResponses(space_separator, path=r"^(?!.*flow_run)")

    def on_response(self, request: ProxyRequest, response: ProxyResponse) -> ProxyResponse:
        return self.spaced.on_response(request, self.naive.on_response(request, response))


class ComparesFiltersAsStrings(Deviation):
    """Emulates a server that filters ``expected_start_time`` by comparing the stored string with the bound."""

    def on_request(self, request: ProxyRequest) -> ProxyResponse | None:
        if request.path.endswith("/flow_runs/filter") and request.body:
            body = request.json()
            bounds = (body.get("flow_runs") or {}).pop("expected_start_time", None)
            request.set_json(body)
            request.bounds = bounds  # type: ignore[attr-defined]
        return None

    def on_response(self, request: ProxyRequest, response: ProxyResponse) -> ProxyResponse:
        bounds = getattr(request, "bounds", None)
        if bounds and response.status == 200:
            kept = [
                run
                for run in response.json()
                if (bounds.get("after_") is None or run["expected_start_time"] >= bounds["after_"])
                and (bounds.get("before_") is None or run["expected_start_time"] <= bounds["before_"])
            ]
            response.set_json(kept)
        return response


def _instant(value: str) -> dt.datetime | None:
    try:
        return parse_instant(value)
    except ValueError:
        return None


def drop_offset(value: str) -> str:
    """'2026-11-26T10:00:00Z' -> '2026-11-26T10:00:00' (naive output)."""
    return re.sub(r"(Z|[+-]\d{2}:?\d{2})$", "", value) if RFC3339.match(value) else value


def space_separator(value: str) -> str:
    return value.replace("T", " ", 1)


def to_offset(minutes: int) -> Rewrite:
    """The same instant, written with a non-UTC offset (so only the format is wrong)."""
    tz = dt.timezone(dt.timedelta(minutes=minutes))

    def rewrite(value: str) -> str:
        instant = _instant(value)
        return instant.astimezone(tz).isoformat() if instant else value

    return rewrite


def truncate_to_millis(value: str) -> str:
    return re.sub(r"\.(\d{3})\d*", r".\1", value) if RFC3339.match(value) else value


def drop_fraction(value: str) -> str:
    return re.sub(r"\.\d+", "", value) if RFC3339.match(value) else value


def shifted(seconds: float) -> Rewrite:
    """The instant ``seconds`` later (earlier when negative), written as Prefect writes it."""

    def rewrite(value: str) -> str:
        instant = _instant(value)
        if instant is None:
            return value
        return (instant + dt.timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")

    return rewrite


#: The fields Prefect's server sets from its own clock (a log's ``timestamp`` is the client's, a state's the server's).
SERVER_SET_FIELDS = frozenset(
    {"created", "updated", "timestamp", "start_time", "end_time", "last_polled", "last_heartbeat_time"}
)


class KeepsAWrongClock(RewritesResponses):
    """A server whose clock is ``seconds`` ahead: every time it sets itself, and its ``Date`` header, are that far
    off; what clients sent comes back as they sent it."""

    def __init__(self, seconds: float) -> None:
        super().__init__(shifted(seconds), keys=SERVER_SET_FIELDS)
        self.seconds = seconds

    def on_response(self, request: ProxyRequest, response: ProxyResponse) -> ProxyResponse:
        import email.utils

        response.headers = [
            (
                k,
                email.utils.format_datetime(
                    dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=self.seconds), usegmt=True
                )
                if k.lower() == "date"
                else v,
            )
            for k, v in response.headers
        ]
        return super().on_response(request, response)


def offset_ignored(value: str) -> str:
    """Input '10:00+05:30' read as '10:00Z': the server drops the offset instead of converting."""
    return re.sub(r"([+-]\d{2}:?\d{2})$", "Z", value) if not re.search(r"[+-]00:?00$", value) else value


def naive_as_local(value: str) -> str:
    """A naive input read in the server's local zone (UTC-08:00) instead of UTC."""
    return value + "-08:00" if re.match(r"^\d{4}-\d{2}-\d{2}[T ][\d:.]+$", value) else value


def garbage_to_now(value: str) -> str:
    """A server that swallows unparsable input and stores the current time instead."""
    if _instant(value.replace(" ", "T", 1)) is None and not re.match(r"^\d{4}-\d{2}-\d{2}[T ][\d:.]+$", value):
        return dt.datetime.now(dt.timezone.utc).isoformat()
    return value
