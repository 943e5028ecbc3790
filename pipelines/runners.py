"""Which runs are local: the runner names predjoin runs on Beam's FnApiRunner in its own process.

Standard library only: the ``predjoin`` command reads it before it imports anything else.
"""

from __future__ import annotations

import os

# Run by Beam's FnApiRunner (``pipelines.job.local_runner``): the launcher waits for them and
# judges the run by its summary.
LOCAL_RUNNERS = (None, 'DirectRunner', 'direct', 'SwitchingDirectRunner')


def sdk_processes(runner: str | None, running_mode: str | None, num_workers: int) -> int:
  """How many SDK worker processes a local run starts (0: none, its SDK work runs in the
  launcher's process, or the runner is not local)."""
  if runner not in LOCAL_RUNNERS or running_mode != 'multi_processing':
    return 0
  return num_workers if num_workers > 0 else os.cpu_count() or 1
