"""The building blocks of checks: what a conformant timestamp is, ordered sequences and their first difference,
the run's own objects on the target and their names, the proofs drawn from real clients' transcripts, the
response schemas of Prefect's OpenAPI document, the coverage probe, and the lifecycle's world of runs.

May import every layer below it (reporting, clients, reference, target, waits); scenarios import these.
"""
