"""Faster local multi-process runs, for the ``predjoin`` command only.

Beam's FnApiRunner starts each multi-processing SDK worker only when the first stage runs, as
a new interpreter that spends 2.5-3 s importing Beam, and at the end waits for each worker to
tear its interpreter down. For a local run with ``--direct_running_mode multi_processing``,
:func:`start` instead imports the workers' code once in the launcher and forks them from it
(Linux, while the launcher runs no other thread; elsewhere they start as new interpreters
ahead of time), and the runner's worker command hands over to them (``runner``, ``handover``,
``workers``). Every process of a local run exits as soon as its work is done.

This halves a local run's CPU and wall time against Beam's own worker start, and beats Beam's
in-process multi-threaded mode (``benchmarks/README.md`` has the measurements). Nothing in the
data path imports this package, and the job's output is the same without it: set
``PREDJOIN_FORK_WORKERS=0`` to run with Beam's own workers.
"""

from __future__ import annotations

import os
import sys

# The modules of this package are imported when used, not here: ``python -m
# pipelines.localrun.workers`` (a worker started anew) imports this package first.

SWITCH_ENV = 'PREDJOIN_FORK_WORKERS'


class Session:
  """A local run's warm workers and runner; ``close`` stops the workers nobody claimed."""

  def __init__(self, pool):
    self._pool = pool

  @property
  def runner_class(self):
    """The FnApiRunner subclass whose worker command hands over to the warm workers."""
    from pipelines.localrun.runner import LocalRunner
    return LocalRunner

  def close(self) -> None:
    if self._pool is not None:
      self._pool.close()
      self._pool = None

  def exit(self, code: int) -> None:
    """Ends the process: everything is written, read back and printed by now, and the local
    runner's gRPC servers and thread pools would take seconds to tear down."""
    from pipelines.localrun.workers import exit_now
    self.close()
    exit_now(code)


def start(argv: list[str]) -> Session | None:
  """Readies a local multi-processing run of ``argv`` before anything else has started (no
  thread, no import of Beam yet). None for any other run, or with ``PREDJOIN_FORK_WORKERS=0``.
  """
  from pipelines.localrun import workers
  from pipelines.localrun.handover import quiet_grpc
  if os.environ.get(SWITCH_ENV, '1') == '0' or not workers.local_workers(argv):
    return None
  quiet_grpc()  # before gRPC is imported here and in the workers forked from here
  pool = workers.prewarm(argv, fork=sys.platform.startswith('linux'),
                         warm_up=lambda: workers.warm_up(argv))
  return Session(pool)
