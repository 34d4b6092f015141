"""The server under test: the harness's HTTP client for it, the preflight that decides whether it can be tested,
the credentials it gets, and the exceptions (with the one rule of who is at fault, :func:`errors.outcome_of`).

May import nothing else of the harness but :mod:`harness.waits` (which imports only the errors and the TLS context
from here):
every other layer builds on this one.
"""
