"""The building blocks of checks: what a conformant timestamp is, ordered sequences and their first difference,
the run's own objects on the target and their names, the proofs drawn from real clients' transcripts, and the
response schemas of Prefect's OpenAPI document.

May import :mod:`harness.target`, :mod:`harness.clients` and :mod:`harness.waits`; scenarios import these.
"""
