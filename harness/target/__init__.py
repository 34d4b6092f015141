"""The server under test: the harness's HTTP client for it, the preflight that decides whether it can be tested,
the credentials it gets, the wait for its health, and the TLS context every connection to it uses.

May import :mod:`harness.waits`, :mod:`harness.errors` and :mod:`harness.locations`.
"""
