"""The ``predjoin`` command: starts a local run's SDK workers, then imports Beam and runs the job.

Importing Beam takes the launcher 2.5-3 s and each SDK worker as long again; started here, before
the launcher's own import, the workers' imports overlap it (``pipelines/workers.py``).
"""

from __future__ import annotations

import logging
import sys

from pipelines import workers


def main(argv: list[str] | None = None) -> None:
  argv = sys.argv[1:] if argv is None else argv
  pool = workers.prewarm(argv)
  try:
    logging.basicConfig(level=logging.WARNING)
    from pipelines.enrich import run  # Beam's import, while the workers do theirs
    code = run(argv)
  finally:
    if pool is not None:
      pool.close()
  # Everything is written, read back and printed by now; the local runner's gRPC servers and
  # thread pools would take another 1-1.5 s of interpreter teardown.
  workers.exit_now(code)


if __name__ == '__main__':
  main()
