"""Cloud Composer / Airflow DAG: one run of the predjoin Flex Template per day.

Which batch prediction a run processes (the rule the Workflows schedule follows too): the one
named for the UTC date on which the run is scheduled to start, ``YYYYMMDD``. The DAG's
timetable is a ``CronTriggerTimetable`` in UTC, so a run's logical date is the moment the
schedule fires, on Airflow 2 and 3 alike (Airflow 2's default cron timetable would make it the
start of the day before, and Airflow 3's the fire time); ``run_date`` takes its UTC date. A run
triggered by hand processes the batch prediction of the logical date it is given (Airflow 2:
``airflow dags trigger predjoin_daily -e 2025-01-01``; Airflow 3: ``--logical-date``).

Each run is named ``predjoin-<date>`` and reads the batch prediction
``<batch_prediction_prefix><date>``, writing under ``<predjoin_output_root><date>/``. The name
is not given a random suffix (``append_job_name=False``): Dataflow refuses a second *running*
job of the same name, so a rerun of a day cannot overlap the job still running for it, and the
job list reads by date. The task waits for the job and fails when the job fails
(``wait_until_finished=True``). ``deferrable=False`` is said outright: where operators default
to deferrable (``[operators] default_deferrable``), the operator refuses
``wait_until_finished=True`` and the DAG would not import.

Deployment settings are Airflow Variables, read when the task runs (not when the file is parsed):

    predjoin_project          GCP project of the job
    predjoin_region           Dataflow region, e.g. europe-west1
    predjoin_template         gs:// path of the template spec (gcloud dataflow flex-template build)
    predjoin_image            the image built from deploy/Dockerfile (workers run it too)
    predjoin_worker_sa        service account of the launcher VM and the workers
    predjoin_temp_location    gs:// prefix for temporary files
    predjoin_output_location  the batch predictions' OutputUri
    predjoin_output_root      gs:// prefix; each day writes under <root><YYYYMMDD>/

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
  """The date a run processes: the UTC date of the moment it is scheduled to start, YYYYMMDD."""
  if fire_time is None:  # an Airflow 3 run triggered without a logical date
    raise ValueError('trigger predjoin_daily with a logical date: it names the batch prediction')
  return fire_time.astimezone(datetime.UTC).strftime('%Y%m%d')


RUN_DATE = '{{ run_date(logical_date) }}'  # under CronTriggerTimetable: the fire time

# Job parameters, named as in deploy/metadata.json (tests/test_deploy.py checks the names).
PARAMETERS = {
  'output_location': '{{ var.value.predjoin_output_location }}',
  'batch_prediction_id': '{{ params.batch_prediction_prefix }}' + RUN_DATE,
  'output': '{{ var.value.predjoin_output_root }}' + RUN_DATE + '/',
  'format': 'parquet',
  'max_bad_shards': '0',
}

with DAG(
  dag_id='predjoin_daily',
  description="Joins the day's Amazon ML batch prediction with its inputs on Dataflow.",
  schedule=CronTriggerTimetable('0 6 * * *', timezone='UTC'),
  start_date=pendulum.datetime(2025, 1, 1, tz='UTC'),
  catchup=False,
  max_active_runs=1,
  params={'batch_prediction_prefix': 'bp-'},
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
