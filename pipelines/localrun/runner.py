"""The local runner: Beam's FnApiRunner, with predjoin's SDK worker command.

``--runner DirectRunner`` (the default) runs here. With ``--direct_running_mode
multi_processing`` the FnApiRunner starts each SDK worker as ``python -m
apache_beam.runners.worker.sdk_worker_main``; ``LocalRunner`` starts ``python -I -S
pipelines/localrun/handover.py`` instead, which hands the harness to a warm worker (forked from the
launcher, or started before it imported Beam) when there is one, else runs it as ``python -m
pipelines.localrun.workers``; either exits as soon as the harness returns (``pipelines/localrun/workers.py`` says
why and measures it).
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
    for env in pipeline_proto.components.environments.values():
      if env.urn == python_urns.SUBPROCESS_SDK:
        command = env.payload.decode('utf-8')
        if command.endswith(BEAM_WORKER):
          env.payload = (command[:-len(BEAM_WORKER)] + OUR_WORKER).encode('utf-8')
    return super().run_via_runner_api(pipeline_proto, options)


# What every local multi-processing run's workers log at WARNING, relayed by the runner, that
# says nothing about the run: the workers see predjoin's own options, which Beam's parser does
# not know; Beam's local workers have no staging directory; the dead-letter sink had nothing.
HARMLESS_WORKER_WARNINGS = (
    'Discarding unparseable args',
    'No semi_persistent_directory found',
    'No shards found to finalize',
)
WORKER_LOGGER = 'apache_beam.runners.portability.local_job_service'


class HarmlessWorkerWarnings(logging.Filter):
  """Drops the relayed worker warnings above; every other worker message passes."""

  def filter(self, record: logging.LogRecord) -> bool:
    if record.levelno > logging.WARNING:
      return True
    message = record.getMessage()
    return not any(known in message for known in HARMLESS_WORKER_WARNINGS)


def quiet_harmless_worker_warnings() -> None:
  logger = logging.getLogger(WORKER_LOGGER)
  if not any(isinstance(f, HarmlessWorkerWarnings) for f in logger.filters):
    logger.addFilter(HarmlessWorkerWarnings())
