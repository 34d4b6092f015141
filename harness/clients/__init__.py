"""Real Prefect clients as child processes (Runner, worker, task worker), the recording proxy in front of each, their
transcripts, the process registry that lets nothing outlive a run, and waiting on runs while a client works.

May import :mod:`harness.target`, :mod:`harness.reference.environment` and :mod:`harness.waits`.
"""
