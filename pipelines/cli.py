"""The ``predjoin`` command: readies a local run's SDK workers, then runs the job.

Importing Beam takes 2-3 s of CPU per process. On Linux the launcher imports the workers' code
and forks them before anything else, so Beam is imported once instead of three times; elsewhere
the workers start first and import it while the launcher does (``pipelines/workers.py``).
"""

from __future__ import annotations

import logging
import sys

from pipelines import workers


def main(argv: list[str] | None = None) -> None:
  argv = sys.argv[1:] if argv is None else argv
  pool = workers.prewarm(argv, fork=True)  # nothing else has started yet: safe to fork
  try:
    logging.basicConfig(level=logging.WARNING)
    from pipelines.enrich import run
    code = run(argv)
  finally:
    if pool is not None:
      pool.close()
  # Everything is written, read back and printed by now; the local runner's gRPC servers and
  # thread pools would take another 1-1.5 s of interpreter teardown.
  workers.exit_now(code)


if __name__ == '__main__':
  main()
