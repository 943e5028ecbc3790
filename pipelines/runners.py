"""Which runs are local, which run on Dask, and which the launcher waits for and judges.

Standard library only: the ``predjoin`` command reads it before it imports anything else.
"""

from __future__ import annotations

import os

# Run by Beam's FnApiRunner (``pipelines.job.local_runner``): the launcher waits for them and
# judges the run by its summary.
LOCAL_RUNNERS = (None, 'DirectRunner', 'direct', 'SwitchingDirectRunner')

# Beam's DaskRunner runs the job on a dask.distributed cluster. Beam's registry of runner names
# does not list it (only its full path resolves), so predjoin makes it for these names too
# (``pipelines.job.dask_runner``), compared as Beam compares names: without case.
DASK_RUNNER = 'apache_beam.runners.dask.dask_runner.DaskRunner'
DASK_NAMES = ('daskrunner', 'dask', DASK_RUNNER.lower())
DASK_OPTION_PREFIX = '--dask_'  # Beam's DaskOptions: --dask_client_address, ...


def is_dask(runner: str | None) -> bool:
  """Whether ``--runner`` names Beam's DaskRunner (``DaskRunner``, ``dask``, its full path)."""
  return runner is not None and runner.lower() in DASK_NAMES


def launcher_judges(runner: str | None) -> bool:
  """Whether the launcher waits for the job and judges it by its summary and outputs (the exit
  code says how it went), so the job itself need not fail on too many bad shards: the local
  runner and the DaskRunner. Elsewhere (Dataflow) no launcher waits, and the job fails itself."""
  return runner in LOCAL_RUNNERS or is_dask(runner)


def asks_for_dask(argv: list[str]) -> bool:
  """Whether a command line selects the DaskRunner or gives one of its options, read without
  Beam's parser (``--runner X`` or ``--runner=X``), so Dask's options are only loaded (and Dask
  imported) for runs that need them."""
  for i, arg in enumerate(argv):
    if arg.startswith(DASK_OPTION_PREFIX):
      return True
    if arg == '--runner' and i + 1 < len(argv) and is_dask(argv[i + 1]):
      return True
    if arg.startswith('--runner=') and is_dask(arg.split('=', 1)[1]):
      return True
  return False


def sdk_processes(runner: str | None, running_mode: str | None, num_workers: int) -> int:
  """How many SDK worker processes a local run starts (0: none, its SDK work runs in the
  launcher's process, or the runner is not local)."""
  if runner not in LOCAL_RUNNERS or running_mode != 'multi_processing':
    return 0
  return num_workers if num_workers > 0 else os.cpu_count() or 1
