"""The ``predjoin`` command: readies a local run's SDK workers, then runs the job.

Importing Beam takes 2-3 s of CPU per process. On Linux the launcher imports the workers' code
and forks them before anything else, so Beam is imported once instead of three times; elsewhere
the workers start first and import it while the launcher does (``pipelines/localrun/workers.py``).
"""

from __future__ import annotations

import argparse
import functools
import logging
import sys

from pipelines.localrun import workers
from pipelines.localrun.handover import quiet_grpc

# The arguments that print help or the version and exit (``pipelines.options.command_parser``).
HELP_ARGUMENTS = ('-h', '--help', '--version', '--help-beam')


def warm_up(argv: list[str]) -> None:
  """What each forked worker does while the launcher builds the pipeline: imports what its
  first bundle would otherwise import: ``numpy.ma`` (pyarrow looks it up on the first
  ``pa.array`` of a NumPy array: 0.01 s) and the record sink's encoder (polars for Avro and
  JSON Lines, 0.3 s).

  ``--format`` is read with predjoin's own argument definitions on a plain parser: Beam's
  option parsing logs through the root logger, which would give the worker a stderr handler.
  """
  import numpy.ma  # noqa: F401

  from pipelines.options import PredjoinOptions
  from transforms.io import sinks
  parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False, exit_on_error=False)
  PredjoinOptions._add_argparse_args(parser)
  try:
    fmt = parser.parse_known_args(argv)[0].format
  except argparse.ArgumentError:  # the launcher reports it
    return
  sinks.preload(fmt)


def main(argv: list[str] | None = None) -> None:
  argv = sys.argv[1:] if argv is None else argv
  if any(arg in HELP_ARGUMENTS for arg in argv):  # print and exit before any worker starts
    from pipelines.options import command_parser
    command_parser().parse_known_args(argv)
  quiet_grpc()  # before gRPC is imported here and in the workers forked from here
  # Nothing else has started yet: safe to fork.
  pool = workers.prewarm(argv, fork=True, warm_up=functools.partial(warm_up, argv))
  try:
    logging.basicConfig(level=logging.WARNING)
    from pipelines.job import run
    code = run(argv)
  finally:
    if pool is not None:
      pool.close()
  # Everything is written, read back and printed by now; the local runner's gRPC servers and
  # thread pools would take another 1-1.5 s of interpreter teardown.
  workers.exit_now(code)


if __name__ == '__main__':
  main()
