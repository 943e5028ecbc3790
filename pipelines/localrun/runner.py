"""The local runner of the ``predjoin`` command: Beam's FnApiRunner, with its own worker command.

With ``--direct_running_mode multi_processing`` the FnApiRunner starts each SDK worker as
``python -m apache_beam.runners.worker.sdk_worker_main``; ``LocalRunner`` starts
``python -I -S pipelines/localrun/handover.py`` instead, which hands the harness to a warm worker
(forked from the launcher, or started before it imported Beam) when there is one, else runs it
as ``python -m pipelines.localrun.workers``; either exits as soon as the harness returns
(``pipelines/localrun/workers.py``).

This rewrites the command in the pipeline's SUBPROCESS_SDK environment, which Beam's
FnApiRunner builds from ``--direct_running_mode``; a Beam whose command differs is left to
start its own workers (slower, and said in a warning), and ``tests/test_workers.py`` fails.
"""

from __future__ import annotations

import logging
import shlex

from apache_beam.portability import python_urns
from apache_beam.runners.portability.fn_api_runner import fn_runner

from pipelines.localrun import handover

BEAM_WORKER = '-m apache_beam.runners.worker.sdk_worker_main'
# Isolated (-I) and without site (-S): standard modules only, started in ~15 ms.
OUR_WORKER = f'-I -S {shlex.quote(handover.__file__)}'


class LocalRunner(fn_runner.FnApiRunner):
  """FnApiRunner whose subprocess SDK workers are started by ``pipelines/localrun/handover.py``."""

  def run_via_runner_api(self, pipeline_proto, options):
    use_our_worker(pipeline_proto)
    return super().run_via_runner_api(pipeline_proto, options)


def use_our_worker(pipeline_proto) -> int:
  """Replaces Beam's worker command in the pipeline's subprocess environments by ours; returns
  how many it replaced."""
  replaced = 0
  for env in pipeline_proto.components.environments.values():
    if env.urn == python_urns.SUBPROCESS_SDK:
      command = env.payload.decode('utf-8')
      if command.endswith(BEAM_WORKER):
        env.payload = (command[:-len(BEAM_WORKER)] + OUR_WORKER).encode('utf-8')
        replaced += 1
      else:
        logging.getLogger(__name__).warning(
            'Beam starts its SDK workers with %r, not the command predjoin expects; they '
            'start the usual way (slower)', command)
  return replaced
