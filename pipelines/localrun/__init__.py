"""Faster local multi-process runs: SDK workers forked from the launcher after one import of
Beam, and processes that end as soon as their work is done. Only the ``predjoin`` command uses
it, on the local runner; the job's output is the same with it or without it.
"""
