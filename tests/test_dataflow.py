"""The job translates to a Dataflow job: DataflowRunner's dry run, no credentials, no network; and a
Flex Template launch, run as the launcher runs it, writes the job to a GCS emulator on loopback."""

import json
import os
import re
import subprocess
import sys

import apache_beam as beam
import pytest
from apache_beam.internal import pickler
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.portability.api import beam_runner_api_pb2
from apache_beam.runners.runner import PipelineState

from pipelines.job import build_pipeline, launch_message, run
from tests import s3_fixtures as fx
from transforms.io import bigquery
from transforms.join import record_schema

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLES = os.path.join(ROOT, 'samples')


def dataflow_args(fmt, *extra):
  return ['--runner', 'DataflowRunner', '--dry_run=True', '--project', 'demo-project',
          '--region', 'us-central1', '--temp_location', 'gs://demo-bucket/tmp',
          '--manifest', f'{SAMPLES}/output/batch-prediction/bp-sample-multiclass.manifest',
          '--rebase_uri', f's3://predjoin-samples/={SAMPLES}/',
          '--output', 'gs://demo-bucket/enriched/', '--format', fmt, *extra]


def _translate(args):
  options = PipelineOptions(args)
  p = beam.Pipeline(options=options)
  build_pipeline(p, options)
  result = p.run()
  return result, p.runner.proto_pipeline


@pytest.mark.parametrize('fmt', ['avro', 'parquet', 'jsonl'])
def test_translates_to_a_dataflow_job(fmt):
  result, proto = _translate(dataflow_args(fmt))
  assert result.state == PipelineState.DONE
  assert result.job.proto.type_.name == 'JOB_TYPE_BATCH'
  labels = {t.unique_name for t in proto.components.transforms.values()}
  for label in ('Enrich/JoinShards', 'Enrich/SpreadShards', 'Enrich/SpreadRanges',
                'Enrich/JoinRanges', 'Enrich/MergeRanges', 'WriteSummary/WriteSummaryJson'):
    assert any(name == label or name.startswith(label + '/') for name in labels), label
  # Records, dead letters and resubmit lines are files the join writes per shard: no sink of
  # their own, and no count of records between stages.
  assert not any(name.startswith(('WriteRecords', 'WriteDeadLetters', 'WriteResubmit',
                                  'WriteSummary/CountRecords')) for name in labels), labels
  # Every DoFn was pickled into the job: the join's carries the plan, the storage settings and
  # where and how it writes the records.
  join = next(t for t in proto.components.transforms.values()
              if t.unique_name == 'Enrich/JoinShards/ParDo(JoinShardFn)')
  fn = pickler.loads(beam_runner_api_pb2.ParDoPayload.FromString(join.spec.payload)
                     .do_fn.payload)[0]
  assert (fn._record_format, fn._output) == (fmt, 'gs://demo-bucket/enriched/')
  assert fn._plan.layout.model_type == 'multiclass'



def test_a_sagemaker_job_translates_with_its_shards_listed_at_launch():
  result, proto = _translate([
      '--runner', 'DataflowRunner', '--dry_run=True', '--project', 'demo-project',
      '--region', 'us-central1', '--temp_location', 'gs://demo-bucket/tmp',
      '--transform_job', f'{SAMPLES}/sagemaker/bt-sample-churn.json', '--model_type', 'binary',
      '--rebase_uri', f's3://predjoin-samples/={SAMPLES}/',
      '--output', 'gs://demo-bucket/enriched/', '--format', 'parquet'])
  assert result.state == PipelineState.DONE
  labels = {t.unique_name for t in proto.components.transforms.values()}
  assert any(name.startswith('ListShards') for name in labels), labels
  assert not any(name.startswith(('ListManifests', 'Enrich/ReadManifests')) for name in labels)
  fn = _unpickled(proto, 'Enrich/JoinShards/ParDo(JoinShardFn)')[0]
  # The worker gets the output format learned at launch: the id each line repeats is checked.
  assert [check.input_name for check in fn._plan.checks] == ['col_1']
  assert fn._plan.result_format.leading_lines(False) == 0

def _unpickled(proto, name):
  """The DoFn and its extra arguments of the transform ``name`` in the translated job."""
  transform = next(t for t in proto.components.transforms.values() if t.unique_name == name)
  return pickler.loads(beam_runner_api_pb2.ParDoPayload.FromString(transform.spec.payload)
                       .do_fn.payload)


@pytest.mark.parametrize('disposition', ['replace', 'append', 'truncate'])
def test_bigquery_format_stages_the_records_and_publishes_them_with_the_summary(disposition):
  result, proto = _translate(dataflow_args(
      'bigquery', '--bigquery_table', 'demo-project:warehouse.predictions',
      '--write_disposition', disposition))
  assert result.state == PipelineState.DONE
  labels = {t.unique_name for t in proto.components.transforms.values()}
  assert any(name.startswith('LoadRecords/LoadIntoStaging/') for name in labels), labels
  assert not any(name.startswith('WriteRecords') for name in labels)
  assert any(name.startswith('WriteSummary/CountRecords') for name in labels), labels
  # The summary still goes to --output (and so do the join's dead-letter files), and the same
  # step publishes the staged records: it carries the run's TableLoad.
  [summary_plan] = _unpickled(proto, 'WriteSummary/WriteSummaryJson')[1]
  load = summary_plan.table_load
  assert isinstance(load, bigquery.TableLoad)
  assert (load.table, load.disposition) == ('demo-project:warehouse.predictions', disposition)
  # The load's settings reach the job: into the run's own staging table, appending (a retried
  # load job reuses its ID), partitioned and clustered like a new table.
  fn = _unpickled(proto, 'LoadRecords/LoadIntoStaging/BigQueryBatchFileLoads/'
                  'TriggerLoadJobsWithoutTempTables/ParDo(TriggerLoadJobs)')[0]
  assert (fn.source_format, fn.write_disposition, fn.create_disposition) == (
      'AVRO', 'WRITE_APPEND', 'CREATE_IF_NEEDED')
  assert fn.additional_bq_parameters == {'timePartitioning': {'type': 'DAY'},
                                         'clustering': {'fields': ['batch_prediction_id']}}
  destination = _unpickled(proto, 'LoadRecords/LoadIntoStaging/BigQueryBatchFileLoads/'
                           'AppendDestination')[0]
  table = destination.destination(None)  # the table of each element: the run's staging table
  assert f'{table.projectId}:{table.datasetId}.{table.tableId}' == load.staging
  plan = build_pipeline(beam.Pipeline(options=PipelineOptions(dataflow_args('avro'))),
                        PipelineOptions(dataflow_args('avro'))).plan
  assert fn.schema == {'fields': record_schema.bigquery_schema(plan.schema)} == {'fields': list(
      load.schema)}
  scores = next(f for f in fn.schema['fields'] if f['name'] == 'scores')
  assert (scores['type'], scores['mode']) == ('RECORD', 'REPEATED')


def test_a_dry_run_translates_the_job_and_neither_submits_nor_waits(capsys):
  # Waiting, or reading gs://demo-bucket/enriched/summary.json, would fail here: no credentials.
  # (The real hand-over is a Flex Template launch: see the test below.)
  assert run(dataflow_args('parquet')) == 0
  out = capsys.readouterr().out
  assert 'dry run: the job was translated for Dataflow and not submitted' in out
  assert 'submitted to' not in out and 'rows in' not in out


# A Flex Template launch, run as the launcher runs it, against a GCS emulator on loopback ---------

# The arguments the Flex Template launcher adds to the template's parameters: the launch
# request's environment, as Beam options (the launcher writes the job to template_location and
# the Dataflow service starts it from there).
LAUNCH_ID = '2025-01-01_06_00_00-1234567890'
LAUNCHER_ARGS = [
    '--runner=DataflowRunner', '--project=demo-project', '--region=europe-west1',
    '--job_name=predjoin-daily-20250101-060000',
    '--temp_location=gs://flex-staging/tmp', '--staging_location=gs://flex-staging/staging',
    f'--template_location=gs://flex-staging/staging/template_launches/{LAUNCH_ID}/job_object',
    '--sdk_container_image=europe-west1-docker.pkg.dev/demo-project/predjoin/predjoin:1',
    '--service_account_email=predjoin-worker@demo-project.iam.gserviceaccount.com',
    '--labels={"goog-dataflow-provided-template-type":"flex"}',
    '--max_num_workers=10', '--num_workers=1', '--machine_type=n2-standard-2',
    '--autoscaling_algorithm=THROUGHPUT_BASED', '--disk_size_gb=50', '--no_use_public_ips',
    '--network=default', '--subnetwork=regions/europe-west1/subnetworks/default',
    '--worker_region=europe-west1', '--dataflow_kms_key=projects/p/locations/l/keyRings/r/'
    'cryptoKeys/k', '--experiments=shuffle_mode=service', '--dataflow_service_options=x',
    '--flexrs_goal=COST_OPTIMIZED',
]


@pytest.fixture
def gcs(tmp_path):
  emulator = fx.GcsEmulator(str(tmp_path))
  client = emulator.client()
  samples = client.create_bucket('predjoin-samples')
  for dirpath, _, files in os.walk(SAMPLES):
    for name in files:
      if not name.endswith('.py'):
        path = os.path.join(dirpath, name)
        samples.blob(os.path.relpath(path, SAMPLES)).upload_from_filename(path)
  client.create_bucket('flex-staging')
  client.create_bucket('flex-out')
  yield emulator
  emulator.stop()


@pytest.mark.parametrize('name, source', [
    ('bp-sample-multiclass', ['--output_location=gs://predjoin-samples/output/',
                              '--batch_prediction_id=bp-sample-multiclass']),
    # A SageMaker job: its inputs and .out objects are listed in the emulator at launch.
    ('bt-sample-churn', ['--transform_job=gs://predjoin-samples/sagemaker/bt-sample-churn.json',
                         '--model_type=binary']),
])
def test_a_flex_template_launch_writes_the_job_and_exits_0(gcs, name, source):
  parameters = [*source, '--rebase_uri=s3://predjoin-samples/=gs://predjoin-samples/',
                f'--output=gs://flex-out/{name}/', '--format=parquet']
  launch = subprocess.run(
      [sys.executable, os.path.join(ROOT, 'deploy', 'flex_main.py'), *LAUNCHER_ARGS,
       *parameters], cwd=ROOT, env=fx.aws_env(gcs.env()), capture_output=True, text=True,
      timeout=150)
  assert launch.returncode == 0, launch.stderr
  assert 'Traceback' not in launch.stderr
  # What the command prints reaches the launcher's log, though the process ends with os._exit.
  job_uri = f'gs://flex-staging/staging/template_launches/{LAUNCH_ID}/job_object'
  assert f'wrote the Dataflow job to {job_uri}' in launch.stdout
  assert f'gs://flex-out/{name}/summary.json' in launch.stdout
  client = gcs.client()
  job = json.loads(client.bucket('flex-staging').blob(
      f'staging/template_launches/{LAUNCH_ID}/job_object').download_as_bytes())
  assert (job['name'], job['type']) == ('predjoin-daily-20250101-060000', 'JOB_TYPE_BATCH')
  options = job['environment']['sdkPipelineOptions']['options']
  assert (options['output'], options['format']) == (f'gs://flex-out/{name}/', 'parquet')
  [pool] = job['environment']['workerPools']
  assert pool['workerHarnessContainerImage'] == LAUNCHER_ARGS[7].split('=', 1)[1]
  # The job's pipeline, staged beside it, holds predjoin's steps.
  [staged] = {m for m in re.findall(r'gs://flex-staging/[^"]*/pipeline\.pb', json.dumps(job))}
  proto = beam_runner_api_pb2.Pipeline.FromString(client.bucket('flex-staging').blob(
      staged[len('gs://flex-staging/'):]).download_as_bytes())
  labels = {t.unique_name for t in proto.components.transforms.values()}
  assert {'Enrich/JoinShards', 'WriteSummary/WriteSummaryJson'} <= labels, labels
  # The launch read the manifest (or listed the job's objects) and a shard's first lines, and
  # wrote nothing under the output.
  assert not list(client.list_blobs('flex-out'))


def test_an_incremental_flex_template_launch_claims_the_new_batch_predictions(gcs):
  # As the schedules launch it: every manifest under output_location, each to its own prefix.
  parameters = ['--incremental=true', '--output_location=gs://predjoin-samples/output/',
                '--rebase_uri=s3://predjoin-samples/=gs://predjoin-samples/',
                '--output=gs://flex-out/enriched/', '--format=parquet']
  launch = subprocess.run(
      [sys.executable, os.path.join(ROOT, 'deploy', 'flex_main.py'), *LAUNCHER_ARGS,
       *parameters], cwd=ROOT, env=fx.aws_env(gcs.env()), capture_output=True, text=True,
      timeout=150)
  assert launch.returncode == 0, launch.stderr
  bps = ['bp-sample-binary', 'bp-sample-multiclass', 'bp-sample-regression']
  for bp in bps:
    assert f'{bp}: join: not joined before' in launch.stdout
  client = gcs.client()
  job = json.loads(client.bucket('flex-staging').blob(
      f'staging/template_launches/{LAUNCH_ID}/job_object').download_as_bytes())
  [staged] = {m for m in re.findall(r'gs://flex-staging/[^"]*/pipeline\.pb', json.dumps(job))}
  proto = beam_runner_api_pb2.Pipeline.FromString(client.bucket('flex-staging').blob(
      staged[len('gs://flex-staging/'):]).download_as_bytes())
  labels = {t.unique_name for t in proto.components.transforms.values()}
  assert {f'Join {bp}/WriteSummary/WriteSummaryJson' for bp in bps} <= labels, labels
  # The launch claimed each batch prediction for the job (which releases them once each
  # summary is written) and wrote the run's own summary; nothing else under the output.
  written = sorted(b.name for b in client.list_blobs('flex-out'))
  [report] = [name for name in written if name.startswith('enriched/runs/')]
  assert written == sorted([report, *(f'enriched/{bp}/_predjoin_claim.json' for bp in bps)])
  run_id = json.loads(client.bucket('flex-out').blob(report).download_as_bytes())['run_id']
  for bp in bps:
    claim = json.loads(client.bucket('flex-out').blob(
        f'enriched/{bp}/_predjoin_claim.json').download_as_bytes())
    assert claim['owner'] == run_id
  # A second launch meanwhile leaves them to the first run's job: a job with nothing to join.
  again = subprocess.run(
      [sys.executable, os.path.join(ROOT, 'deploy', 'flex_main.py'), *LAUNCHER_ARGS,
       *parameters], cwd=ROOT, env=fx.aws_env(gcs.env()), capture_output=True, text=True,
      timeout=150)
  assert again.returncode == 0, again.stderr
  for bp in bps:
    assert f'{bp}: claimed_elsewhere: another run holds its claim ({run_id})' in again.stdout


def test_the_launch_message_names_the_template_file_or_the_job():
  options = PipelineOptions(['--template_location=gs://b/job_object'])
  assert launch_message(None, options, 'gs://o/summary.json').startswith(
      'wrote the Dataflow job to gs://b/job_object;')

  class Submitted:
    has_job = True

    def job_id(self):
      return '2025-01-01_00_00_00-1'

  message = launch_message(Submitted(), PipelineOptions([]), 'gs://o/summary.json')
  assert message.startswith('submitted to Dataflow as job 2025-01-01_00_00_00-1;')


def test_a_flex_template_launch_with_watch_true_writes_a_streaming_job(gcs):
  launcher = [a for a in LAUNCHER_ARGS if not a.startswith('--flexrs_goal')]  # batch only
  parameters = ['--watch=true', '--manifest=gs://predjoin-samples/output/batch-prediction/'
                '*.manifest', '--watch_interval=300',
                '--rebase_uri=s3://predjoin-samples/=gs://predjoin-samples/',
                '--output=gs://flex-out/watch/', '--format=parquet']
  launch = subprocess.run(
      [sys.executable, os.path.join(ROOT, 'deploy', 'flex_main.py'), *launcher, *parameters],
      cwd=ROOT, env=fx.aws_env(gcs.env()), capture_output=True, text=True, timeout=150)
  assert launch.returncode == 0, launch.stderr
  assert 'Traceback' not in launch.stderr
  assert 'writes gs://flex-out/watch/<id>/summary.json for each batch prediction' in launch.stdout
  job = json.loads(gcs.client().bucket('flex-staging').blob(
      f'staging/template_launches/{LAUNCH_ID}/job_object').download_as_bytes())
  assert job['type'] == 'JOB_TYPE_STREAMING'
  options = job['environment']['sdkPipelineOptions']['options']
  assert (options['watch'], options['streaming'], options['output']) == (
      'true', True, 'gs://flex-out/watch/')
  # Nothing was joined at launch: the job does that on Dataflow.
  assert not list(gcs.client().list_blobs('flex-out', prefix='watch/'))
