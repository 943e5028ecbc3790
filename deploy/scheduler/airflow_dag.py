"""Cloud Composer / Airflow DAG: one incremental run of the predjoin Flex Template per day.

Each run joins whatever batch predictions finished since the last one (``incremental=true``):
the launcher lists every manifest under ``<predjoin_output_location>batch-prediction/``, skips
each one already joined (its ``<predjoin_output_root><id>/summary.json`` is complete and
records the same manifest content), joins the new ones, and joins again one whose earlier run
failed or whose manifest changed. Each batch prediction goes to its own prefix,
``<predjoin_output_root><batch prediction id>/``, and the run's own summary (what it joined,
skipped and joined again) to ``<predjoin_output_root>runs/<run id>.json``. No batch
prediction ID is guessed: Amazon ML's are random (``bp-sp7EvkPwfHS``). A missed day, a rerun,
or a run that overlaps the one before (each batch prediction is claimed by one run) joins
every batch prediction exactly once.

The timetable is a ``CronTriggerTimetable`` in UTC, so a run's logical date is the moment the
schedule fires, on Airflow 2 and 3 alike; ``run_date`` takes its UTC date, which names the
Dataflow job (``predjoin-<date>``; the job list reads by date). The name is not given a random
suffix (``append_job_name=False``): Dataflow refuses a second *running* job of the same name,
so a rerun of a day does not start while the day's job still runs. The task waits for the job
and fails when the job fails (``wait_until_finished=True``). ``deferrable=False`` is said
outright: where operators default to deferrable (``[operators] default_deferrable``), the
operator refuses ``wait_until_finished=True`` and the DAG would not import.

Deployment settings are Airflow Variables, read when the task runs (not when the file is parsed):

    predjoin_project          GCP project of the job
    predjoin_region           Dataflow region, e.g. europe-west1
    predjoin_template         gs:// path of the template spec (gcloud dataflow flex-template build)
    predjoin_image            the image built from deploy/Dockerfile (workers run it too)
    predjoin_worker_sa        service account of the launcher VM and the workers
    predjoin_temp_location    gs:// prefix for temporary files
    predjoin_output_location  the batch predictions' OutputUri
    predjoin_output_root      gs:// prefix; each batch prediction is written under <root><id>/

Copy this file into the environment's dags/ folder (gcloud composer environments storage dags
import).
"""

from __future__ import annotations

import datetime

import pendulum

try:
  from airflow.sdk import DAG  # Airflow 3
except ImportError:
  from airflow import DAG  # Airflow 2
from airflow.providers.google.cloud.operators.dataflow import DataflowStartFlexTemplateOperator
from airflow.timetables.trigger import CronTriggerTimetable


def run_date(fire_time: datetime.datetime | None) -> str:
  """The date that names a run's job: the UTC date of the moment it is scheduled to start,
  YYYYMMDD."""
  if fire_time is None:  # an Airflow 3 run triggered without a logical date
    raise ValueError('trigger predjoin_daily with a logical date: it names the Dataflow job')
  return fire_time.astimezone(datetime.UTC).strftime('%Y%m%d')


RUN_DATE = '{{ run_date(logical_date) }}'  # under CronTriggerTimetable: the fire time

# Job parameters, named as in deploy/metadata.json (tests/test_deploy.py checks the names).
PARAMETERS = {
  'output_location': '{{ var.value.predjoin_output_location }}',
  'incremental': 'true',
  'output': '{{ var.value.predjoin_output_root }}',
  'format': 'parquet',
  'max_bad_shards': '0',
}

with DAG(
  dag_id='predjoin_daily',
  description='Joins every Amazon ML batch prediction not joined yet on Dataflow.',
  schedule=CronTriggerTimetable('0 6 * * *', timezone='UTC'),
  start_date=pendulum.datetime(2025, 1, 1, tz='UTC'),
  catchup=False,
  max_active_runs=1,
  user_defined_macros={'run_date': run_date},
  default_args={'retries': 0},
  tags=['predjoin', 'dataflow'],
) as dag:
  DataflowStartFlexTemplateOperator(
    task_id='run_predjoin',
    project_id='{{ var.value.predjoin_project }}',
    location='{{ var.value.predjoin_region }}',
    body={
      'launchParameter': {
        'jobName': 'predjoin-' + RUN_DATE,
        'containerSpecGcsPath': '{{ var.value.predjoin_template }}',
        'parameters': PARAMETERS,
        'environment': {
          'sdkContainerImage': '{{ var.value.predjoin_image }}',
          'serviceAccountEmail': '{{ var.value.predjoin_worker_sa }}',
          'tempLocation': '{{ var.value.predjoin_temp_location }}',
        },
      },
    },
    append_job_name=False,
    wait_until_finished=True,
    deferrable=False,
  )
