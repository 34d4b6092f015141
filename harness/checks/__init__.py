"""The building blocks of checks: what a conformant timestamp is, ordered sequences and their first difference,
the run's own objects on the target and their names, and the proofs drawn from real clients' transcripts.

May import :mod:`harness.target`, :mod:`harness.clients` and :mod:`harness.waits`; scenarios import these.
"""
