"""Cloud Composer / Airflow DAG: one run of the predjoin Flex Template per day.

Each run is named ``predjoin-<logical date>`` (``{{ ds_nodash }}``) and reads the batch prediction
of that day, ``<batch_prediction_prefix><logical date>``, writing under
``<predjoin_output_root><logical date>/``. The name is not given a random suffix
(``append_job_name=False``): Dataflow refuses a second *running* job of the same name, so a rerun
of a day cannot overlap the job still running for it, and the job list reads by date.

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
import). Trigger one day by hand with ``airflow dags trigger predjoin_daily -e 2025-01-01``.
"""

from __future__ import annotations

import pendulum

try:
  from airflow.sdk import DAG  # Airflow 3
except ImportError:
  from airflow import DAG  # Airflow 2
from airflow.providers.google.cloud.operators.dataflow import DataflowStartFlexTemplateOperator

# Job parameters, named as in deploy/metadata.json (tests/test_deploy.py checks the names).
PARAMETERS = {
  'output_location': '{{ var.value.predjoin_output_location }}',
  'batch_prediction_id': '{{ params.batch_prediction_prefix }}{{ ds_nodash }}',
  'output': '{{ var.value.predjoin_output_root }}{{ ds_nodash }}/',
  'format': 'parquet',
  'max_bad_shards': '0',
}

with DAG(
  dag_id='predjoin_daily',
  description="Joins the day's Amazon ML batch prediction with its inputs on Dataflow.",
  schedule='0 6 * * *',
  start_date=pendulum.datetime(2025, 1, 1, tz='UTC'),
  catchup=False,
  max_active_runs=1,
  params={'batch_prediction_prefix': 'bp-'},
  default_args={'retries': 0},
  tags=['predjoin', 'dataflow'],
) as dag:
  DataflowStartFlexTemplateOperator(
    task_id='run_predjoin',
    project_id='{{ var.value.predjoin_project }}',
    location='{{ var.value.predjoin_region }}',
    body={
      'launchParameter': {
        'jobName': 'predjoin-{{ ds_nodash }}',
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
  )
