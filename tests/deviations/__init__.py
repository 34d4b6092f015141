"""Deliberately non-conforming targets: the reference behind a proxy (:mod:`tests.deviating_proxy`) that gets one
thing wrong. The framework (:mod:`.framework`) and one module per feature.

Each deviation models a mistake a real server author could make (storing milliseconds, dropping the input offset,
comparing timestamp strings, ...) and is named for what the wrong server does, in the third person
(``IgnoresCancellation``, ``RefusesResume``, ``RewritesResponses``). The project's own tests run the conformance
checks against them to show that every check can fail, and fails with a message that names the problem.
"""
