"""The recording relay every real client talks through: bytes pass unchanged (a named target gets its own name in
``Host``), and the transcript records what the proxy's did, websockets and refusals included."""

from __future__ import annotations

import asyncio
import json
import socket
import threading

import httpx
import pytest

from harness.clients.relay import RecordingRelay
from harness.waits import wait_until


@pytest.mark.parametrize("rewrite_host", [False, True], ids=["bytes-as-sent", "host-rewritten"])
def test_the_relay_records_requests_answers_and_websockets(reference, rewrite_host: bool) -> None:
    name = f"relay-test-flow-{rewrite_host}"
    with (
        RecordingRelay(reference.api_url, actor="client", keep_answers=True, rewrite_host=rewrite_host) as relay,
        httpx.Client(timeout=10) as http,
    ):
        created = http.post(relay.api_url + "/flows/", json={"name": name})
        streamed = http.post(
            relay.api_url + "/flows/filter",
            headers={"content-type": "application/json"},
            content=iter([b'{"flows": {"id": {"any_": ["', created.json()["id"].encode(), b'"]}}}']),
        )
        assert streamed.status_code == 200 and streamed.json()[0]["name"] == name  # a chunked request
        assert http.get(relay.api_url + "/no/such/route").status_code == 404

        async def websockets() -> list[str]:
            from websockets.asyncio.client import connect

            async with connect(relay.api_url.replace("http", "ws", 1) + "/events/out", subprotocols=["prefect"]) as ws:
                await ws.send(json.dumps({"type": "auth", "token": None}))
                return [await ws.recv()]

        assert asyncio.run(websockets()) == ['{"type":"auth_success"}']
        http.delete(reference.api_url + f"/flows/{created.json()['id']}")
        # A websocket session is recorded when the relay has seen both sides close, a moment after the client has:
        # under make test's load the transcript was read before (2026-12-06).
        seen = wait_until(
            lambda: (lambda t: t if len(t) >= 4 else None)(relay.transcript()),
            awaiting="the relay to record the websocket session after it closed",
            timeout=10,
        )
    assert [(e.method, e.path, e.status) for e in seen] == [
        ("POST", "/flows/", 201),
        ("POST", "/flows/filter", 200),
        ("GET", "/no/such/route", 404),
        ("WS", "/events/out", 101),
    ]
    assert seen[0].request_summary == json.dumps({"name": name}, separators=(",", ":"))
    assert f'"name":"{name}"' in seen[1].response_summary
    assert seen[1].request_summary.startswith('{"flows":{"id":{"any_":[') and seen[1].user_agent.startswith(
        "python-httpx/"
    )
    assert (
        seen[3].websocket and seen[3].subprotocol == "prefect" and seen[3].request_summary == "subprotocols=['prefect']"
    )
    assert [(e.path, json.loads(body)["name"]) for e, body in relay.answers()[:1]] == [("/flows/", name)]


def test_a_named_target_is_asked_by_its_own_name_and_a_dead_one_answers_502() -> None:
    """A fake upstream that answers each request with the ``Host`` it was sent (the harness's own unit test)."""
    heads: list[bytes] = []
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            head = b""
            while b"\r\n\r\n" not in head:
                head += conn.recv(4096)
            heads.append(head)
            host = next(line.split(b": ", 1)[1] for line in head.split(b"\r\n") if line.lower().startswith(b"host:"))
            conn.sendall(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: %d\r\n\r\n%s" % (len(host), host)
            )

    assert RecordingRelay(f"http://prefect.example.com:{port}/api")._rewrites_host
    assert not RecordingRelay(f"http://localhost:{port}/api")._rewrites_host
    threading.Thread(target=serve, daemon=True).start()
    # As for a named target (no name but localhost resolves on every machine, and localhost is not rewritten).
    with RecordingRelay(f"http://127.0.0.1:{port}/api", actor="client", rewrite_host=True) as relay:
        answer = httpx.get(relay.api_url + "/health", timeout=10)
    listener.close()
    assert answer.text == f"127.0.0.1:{port}", heads
    assert [(e.method, e.path, e.status, e.response_summary) for e in relay.transcript()] == [
        ("GET", "/health", 200, f"127.0.0.1:{port}")
    ]

    with RecordingRelay(f"http://127.0.0.1:{port}/api", actor="client") as relay:  # nothing listens there now
        dead = httpx.get(relay.api_url + "/health", timeout=10)
    assert dead.status_code == 502 and "relay could not reach the target" in dead.text
    assert [(e.path, e.status) for e in relay.transcript()] == [("/health", 502)]
