"""The local runner: Beam's FnApiRunner, with SDK workers that exit as soon as their work is done.

``--runner DirectRunner`` (the default) runs here. With ``--direct_running_mode
multi_processing`` the FnApiRunner starts each SDK worker as ``python -m
apache_beam.runners.worker.sdk_worker_main`` and, at the end of the job, waits for the workers
one after another. Each of those processes spends 1-1.5 s in interpreter teardown (gRPC and
Arrow thread pools, module finalizers) after its harness has returned, so a 2-worker job lost
about 2.5 s per run doing nothing. ``LocalRunner`` starts the same harness through
``python -m pipelines.local``, which ends the process right after the harness returns: its
work is done and its logs are flushed by then (Beam's log handler closes in the harness's
``finally``). A harness that fails still exits non-zero with its traceback.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback

from apache_beam.portability import python_urns
from apache_beam.runners.portability.fn_api_runner import fn_runner

BEAM_WORKER = '-m apache_beam.runners.worker.sdk_worker_main'
OUR_WORKER = '-m pipelines.local'


class LocalRunner(fn_runner.FnApiRunner):
  """FnApiRunner whose subprocess SDK workers are started by ``python -m pipelines.local``."""

  def run_via_runner_api(self, pipeline_proto, options):
    for env in pipeline_proto.components.environments.values():
      if env.urn == python_urns.SUBPROCESS_SDK:
        command = env.payload.decode('utf-8')
        if command.endswith(BEAM_WORKER):
          env.payload = (command[:-len(BEAM_WORKER)] + OUR_WORKER).encode('utf-8')
    return super().run_via_runner_api(pipeline_proto, options)


def worker_main(argv: list[str]) -> int:
  """Runs Beam's SDK harness (configured by the runner through the environment); its exit code."""
  from apache_beam.runners.worker import sdk_worker_main
  try:
    sdk_worker_main.main(argv)
  except SystemExit as e:
    return e.code if isinstance(e.code, int) else 1
  except BaseException:  # noqa: BLE001  # the harness logged it; say it on stderr too
    traceback.print_exc()
    return 1
  return 0


def exit_now(code: int) -> None:
  """Ends the process now, after flushing logs and standard streams (no interpreter teardown)."""
  logging.shutdown()
  sys.stdout.flush()
  sys.stderr.flush()
  os._exit(code)


if __name__ == '__main__':
  exit_now(worker_main(sys.argv))
