"""The ``predjoin`` command: help and version, then the job (``pipelines/job.py``).

A local multi-processing run starts its SDK workers before anything else happens
(``pipelines/localrun``): they are forked from the launcher once it has imported their code.
"""

from __future__ import annotations

import logging
import sys

from pipelines import localrun

# The arguments that print help or the version and exit (``pipelines.options.command_parser``).
HELP_ARGUMENTS = ('-h', '--help', '--version', '--help-beam')


def main(argv: list[str] | None = None) -> None:
  argv = sys.argv[1:] if argv is None else argv
  if any(arg in HELP_ARGUMENTS for arg in argv):  # print and exit before any worker starts
    from pipelines.options import command_parser
    command_parser().parse_known_args(argv)
  session = localrun.start(argv)  # None unless a local multi-processing run
  try:
    logging.basicConfig(level=logging.WARNING)
    from pipelines.job import run
    code = run(argv, runner_class=session.runner_class if session else None)
  except BaseException:
    if session is not None:
      session.close()
    raise
  if session is not None:
    session.exit(code)
  sys.exit(code)


if __name__ == '__main__':
  main()
