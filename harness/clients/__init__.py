"""Real Prefect clients as child processes (Runner, worker, task worker), the recording relay in front of each, their
transcripts, the start budget, and waiting on runs while a client works.

May import :mod:`harness.reference` (a client runs from a release's environment), :mod:`harness.processes`,
:mod:`harness.target` and the layers below.
"""
