"""The harness's own HTTP client for the target's REST API.

Scenarios act through real Prefect clients where the behaviour under test is the client's; everything else
(creating fixtures, reading results back) goes through :class:`ApiClient`, which

* retries transient answers for as long as Prefect's own client would (the real Prefect server answers 503
  when its database is busy, e.g. SQLite lock contention under load, and real clients retry through it; so a
  503 only becomes a verdict once a real client would have given up too), and
* turns every unexpected answer into an :class:`~harness.errors.UnexpectedAnswer` that quotes the method,
  path, status and body excerpt, so a failing scenario always shows what the server actually said.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, Mapping

import httpx

from harness.errors import UnexpectedAnswer, Unsupported, means_not_implemented
from harness.target.tls import tls_context

#: Answers worth retrying: the server said "not now", not "no".
TRANSIENT_STATUSES = frozenset({502, 503, 504})
TRANSIENT_ERRORS = (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)

#: How long a real Prefect client keeps retrying a transient answer: PREFECT_CLIENT_MAX_RETRIES (5) retries with
#: a back-off of 2**n seconds, 2 + 4 + 8 + 16 + 32 s (prefect/client/base.py). The harness retries sooner and
#: more often (a busy server is usually free again within a second) but gives up no earlier than they do.
PREFECT_CLIENT_PATIENCE = 62.0
#: How long a refused or dropped connection is retried. Shorter: a server that is busy answers 503, while one
#: that accepts no connection for this long has gone away, and the run should say so without a minute's wait.
NO_ANSWER_PATIENCE = 10.0
#: The longest pause between two tries. Prefect's SQLite "database is locked" 503s (a transaction that read and
#: then wants to write while another one wrote) clear within milliseconds, so a pause of seconds only wastes the
#: run's time: with the earlier cap of 4 s, one check under load once waited 10.8 s on six quick 503s.
MAX_BACKOFF = 1.0


class Document(dict):
    """A JSON object as the target sent it, which knows where it came from.

    Reading a field the target left out raises :class:`UnexpectedAnswer` quoting the answer, so a missing field
    fails the check that needed it instead of crashing the harness with a ``KeyError``.
    """

    def __init__(self, data: dict, source: str) -> None:
        super().__init__(data)
        self.source = source

    def __missing__(self, key: str) -> Any:
        raise UnexpectedAnswer(f"{self.source} answered without the field {key!r}: {excerpt(json.dumps(self))}")


@dataclass(frozen=True)
class Answer:
    """One response of the target, kept with the request that produced it."""

    method: str
    path: str
    status: int
    text: str
    content_type: str
    #: Seconds spent retrying transient answers before this one (0 when the first answer was final).
    retried_for: float = 0.0
    #: The answer's ``Date`` header, if any: the target's clock to the second (see harness.checks.server_times).
    date: str = ""

    def json(self) -> Any:
        """The parsed body (objects as :class:`Document`); a non-JSON body is itself a conformance failure, so it
        raises UnexpectedAnswer."""
        source = f"{self.method} {self.path}"
        try:
            return json.loads(self.text, object_hook=lambda data: Document(data, source))
        except ValueError:
            raise UnexpectedAnswer(
                f"{self.method} {self.path} answered {self.status} with a body that is not JSON "
                f"({self.content_type or 'no content-type'}): {excerpt(self.text)}"
            ) from None

    def expect(self, status: int | tuple[int, ...] = (200, 201), *, what: str = "", request_body: Any = None) -> Any:
        """The parsed body of an answer that must have one of ``status``, as Prefect's would.

        Otherwise :class:`Unsupported` when the answer says the route is missing, else :class:`UnexpectedAnswer`
        quoting it (after ``what``, a description of the request's purpose, when given).
        """
        allowed = (status,) if isinstance(status, int) else status
        if self.status not in allowed and means_not_implemented(self.status, self.text):
            raise Unsupported(
                f"the target does not implement {self.method} {self.path}: it answered {self.status} "
                f"{excerpt(self.text, 120)}. Hint: this check needs that endpoint; list the check as unsupported in an "
                "expectations file until it exists"
            )
        if self.status not in allowed:
            raise UnexpectedAnswer(
                (f"{what}: " if what else "")
                + f"expected {'/'.join(map(str, allowed))} from {self.describe()}"
                + (f" (request body: {excerpt(json.dumps(request_body), 200)})" if request_body is not None else "")
            )
        if self.status == 204 or not self.text:
            return None
        return self.json()

    def describe(self) -> str:
        """One line for failure messages: what was asked and what came back."""
        retried = f" (still {self.status} after {self.retried_for:.0f}s of retries)" if self.retried_for else ""
        return f"{self.method} {self.path} -> {self.status} {excerpt(self.text)}{retried}"


def retry_after(header: str | None, *, default: float) -> float:
    """Seconds a ``Retry-After`` header asks for (only the delta-seconds form; Prefect's server sends no other)."""
    try:
        return max(0.0, float(header)) if header else default
    except ValueError:
        return default


def excerpt(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


class ApiClient:
    """A small synchronous client bound to one target's API root (the value of ``PREFECT_API_URL``)."""

    #: Requests every client of this process has sent, retries included: ``make bench`` counts them per check
    #: (the harness's own setup and polls are most of what a target answers in a run).
    sent: int = 0

    def __init__(
        self,
        api_url: str,
        *,
        timeout: float = 30.0,
        patience: float = PREFECT_CLIENT_PATIENCE,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.api_url = api_url.rstrip("/")
        self.patience = patience
        self._connect = lambda: httpx.Client(timeout=timeout, headers=dict(headers or {}), verify=tls_context())
        self._http = self._connect()

    def close(self) -> None:
        self._http.close()

    def close_connections(self) -> None:
        """Close the kept-alive connections (the next request opens new ones). Before a server restarts: a
        connection the server closes holds its port for a minute (TIME_WAIT), and some releases will not start on
        a held port."""
        self._http.close()
        self._http = self._connect()

    def __enter__(self) -> "ApiClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(
        self, method: str, path: str, *, json_body: Any = None, params: Mapping[str, Any] | None = None
    ) -> Answer:
        """Send one request, retrying transient failures for up to ``patience`` seconds; never raises on status.

        No answer at all (a timeout, a connection refused or dropped until patience ran out) raises
        UnexpectedAnswer: like any answer, it is the target's, and the check that sent the request fails quoting it.

        The back-off doubles from 0.1 s to at most :data:`MAX_BACKOFF`, or follows the answer's ``Retry-After`` as
        Prefect's
        client does, and the request is always tried once more when patience runs out.
        """
        url = self.api_url + path
        delay = 0.1
        started = time.monotonic()
        attempts = 0
        while True:
            attempts += 1
            waited = time.monotonic() - started
            ApiClient.sent += 1
            try:
                response = self._http.request(method, url, json=json_body, params=params)
            except httpx.TimeoutException as exc:  # not retried: a stuck server stays stuck
                raise UnexpectedAnswer(
                    f"{method} {path}: the target did not answer within {self._http.timeout.read:.0f}s "
                    f"({type(exc).__name__})"
                ) from None
            except TRANSIENT_ERRORS as exc:
                budget = min(self.patience, NO_ANSWER_PATIENCE)
                if waited >= budget:  # what the target failed to answer is its failure, quoted like an answer
                    raise UnexpectedAnswer(
                        f"{method} {path}: the target did not answer after {attempts} attempts in {waited:.0f}s "
                        f"({type(exc).__name__}: {excerpt(str(exc), 160)})"
                    ) from None
                pause = delay
            else:
                budget = self.patience
                if response.status_code not in TRANSIENT_STATUSES or waited >= budget:
                    return Answer(
                        method=method,
                        path=path,
                        status=response.status_code,
                        text=response.text,
                        content_type=response.headers.get("content-type", ""),
                        retried_for=waited if attempts > 1 else 0.0,
                        date=response.headers.get("date", ""),
                    )
                pause = retry_after(response.headers.get("retry-after"), default=delay)
            # back-off between retries of a transient answer, not synchronisation; never past the budget
            time.sleep(max(0.0, min(pause, budget - (time.monotonic() - started))))
            delay = min(delay * 2, MAX_BACKOFF)

    def call(
        self,
        method: str,
        path: str,
        json_body: Any = None,
        *,
        expect: int | tuple[int, ...] = (200, 201),
        what: str = "",
    ) -> Any:
        """Send a request that must succeed as it does on Prefect, and return the parsed JSON body."""
        answer = self.request(method, path, json_body=json_body)
        return answer.expect(expect, what=what, request_body=json_body)

    def reject(self, method: str, path: str, json_body: Any = None, *, what: str) -> Answer:
        """Send a request Prefect rejects as a client error, and insist the target does too (4xx, never 2xx or 5xx).

        A missing route rejects everything, good or bad, so it proves nothing: :class:`Unsupported`.
        """
        answer = self.request(method, path, json_body=json_body)
        if means_not_implemented(answer.status, answer.text):
            raise Unsupported(f"the target does not implement {method} {path}: it answered {answer.describe()}")
        if not 400 <= answer.status < 500:
            raise UnexpectedAnswer(
                f"{what} should be rejected with 4xx like Prefect does (422); got {answer.describe()}"
            )
        return answer

    def get(self, path: str) -> Any:
        return self.call("GET", path)

    def post(self, path: str, body: Any = None, *, expect: int | tuple[int, ...] = (200, 201), what: str = "") -> Any:
        return self.call("POST", path, body, expect=expect, what=what)
