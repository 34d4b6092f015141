"""A target that cannot be tested ends the run in one readable line with exit 2, within seconds."""

from __future__ import annotations

import time

import pytest

from harness.target.api import ApiClient
from tests.deviating_proxy import ProxyRequest, ProxyResponse
from tests.deviations.framework import Deviation


class AnswersCanned(Deviation):
    """Answers every request itself: a server that is not (or no longer) a working Prefect API."""

    def __init__(self, status: int, body: bytes, content_type: str) -> None:
        self.status, self.body, self.content_type = status, body, content_type

    def on_request(self, request: ProxyRequest) -> ProxyResponse:
        return ProxyResponse(self.status, [("content-type", self.content_type)], self.body)


def assert_one_line_exit_2(run, *, says: str, within: float, elapsed: float) -> None:
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert run.code == 2, run.explain()
    assert len(lines) == 1, f"expected one line on stderr:\n{run.stderr}"
    assert lines[0].startswith("prefect-conformance: "), lines[0]
    assert says in lines[0], lines[0]
    assert "Traceback" not in run.stdout + run.stderr
    assert elapsed < within, f"took {elapsed:.1f}s"


def timed(suite, *args):
    started = time.monotonic()
    run = suite(*args)
    return run, time.monotonic() - started


def test_unreachable_target(suite) -> None:
    run, elapsed = timed(suite, "--target", "http://127.0.0.1:9/api")
    assert_one_line_exit_2(
        run, says="Cannot reach target http://127.0.0.1:9/api: connection refused", within=10, elapsed=elapsed
    )


def test_url_without_api_suffix(reference, suite) -> None:
    root = reference.api_url.removesuffix("/api")
    run, elapsed = timed(suite, "--target", root)
    assert_one_line_exit_2(run, says=f"Hint: TARGET must be the API root, e.g. {root}/api", within=10, elapsed=elapsed)


def test_not_a_url(suite) -> None:
    run, elapsed = timed(suite, "--target", "localhost:4200")
    assert_one_line_exit_2(run, says="is not an http(s) URL", within=10, elapsed=elapsed)


@pytest.mark.parametrize(
    "status, body, content_type, says",
    [
        (200, b"<!doctype html><html><body>Prefect UI</body></html>", "text/html", "answered an HTML page"),
        (500, b"Internal Server Error", "text/plain", "answered 500 to GET /health"),
        (200, b"OK", "text/plain", "a body that is not JSON"),
        (200, b"false", "application/json", "is not healthy"),
        (404, b'{"detail":"Not Found"}', "application/json", "it is not a Prefect API root"),
    ],
    ids=["html-page", "http-500", "non-json", "unhealthy", "not-found"],
)
def test_target_that_is_not_a_working_prefect_api(status, body, content_type, says, deviating, suite) -> None:
    proxy = deviating(AnswersCanned(status, body, content_type))
    run, elapsed = timed(suite, "--target", proxy.api_url)
    assert_one_line_exit_2(run, says=says, within=10, elapsed=elapsed)


@pytest.mark.long
def test_target_stuck_answering_503_is_bounded(deviating, suite) -> None:
    """503 is retried (a starting server says that), but only until preflight's deadline."""
    proxy = deviating(AnswersCanned(503, b'{"detail":"busy"}', "application/json"))
    run, elapsed = timed(suite, "--target", proxy.api_url)
    assert_one_line_exit_2(run, says="answered 503 to GET /health", within=20, elapsed=elapsed)


class FlakyThenFine(Deviation):
    """503 for the first ``n`` requests, then the reference's real answers."""

    def __init__(self, n: int) -> None:
        self.remaining = n

    def on_request(self, request: ProxyRequest) -> ProxyResponse | None:
        if self.remaining > 0:
            self.remaining -= 1
            return ProxyResponse.of_json(503, {"detail": "database is locked"})
        return None


def test_api_client_retries_transient_answers(deviating) -> None:
    proxy = deviating(FlakyThenFine(3))
    with ApiClient(proxy.api_url) as api:
        assert api.get("/admin/version")
    assert [e.status for e in proxy.transcript()] == [503, 503, 503, 200]


def test_api_client_gives_up_after_bounded_retries(deviating) -> None:
    proxy = deviating(FlakyThenFine(100))
    with ApiClient(proxy.api_url, patience=0.3) as api:
        answer = api.request("GET", "/admin/version")
    assert answer.status == 503 and answer.retried_for >= 0.3 and len(proxy.transcript()) >= 3
    assert "-> 503" in answer.describe() and "(still 503 after 0s of retries)" in answer.describe()


class BusyWithRetryAfter(FlakyThenFine):
    """503 with ``Retry-After: 0`` (retry at once) for the first ``n`` requests."""

    def on_request(self, request: ProxyRequest) -> ProxyResponse | None:
        answer = super().on_request(request)
        if answer is not None:
            answer.headers.append(("retry-after", "0"))
        return answer


def test_api_client_follows_retry_after(deviating) -> None:
    """Twenty busy answers that ask for an immediate retry cost no back-off, as with Prefect's client."""
    proxy = deviating(BusyWithRetryAfter(20))
    with ApiClient(proxy.api_url, patience=1.5) as api:
        answer = api.request("GET", "/admin/version")
    assert answer.status == 200 and len(proxy.transcript()) == 21
