"""The job translates to a Dataflow job: DataflowRunner's dry run, no credentials, no network."""

import os

import apache_beam as beam
import pytest
from apache_beam.internal import pickler
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.portability.api import beam_runner_api_pb2
from apache_beam.runners.runner import PipelineState

from pipelines.enrich import build_pipeline, run
from transforms import layout

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
  for label in ('Enrich/JoinShards', 'Enrich/SpreadShards', 'WriteSummary/WriteSummaryJson'):
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


def test_bigquery_format_translates_to_a_dataflow_job_with_avro_file_loads():
  result, proto = _translate(dataflow_args(
      'bigquery', '--bigquery_table', 'demo-project:warehouse.predictions',
      '--write_disposition', 'truncate'))
  assert result.state == PipelineState.DONE
  labels = {t.unique_name for t in proto.components.transforms.values()}
  assert any(name.startswith('LoadRecords/LoadIntoBigQuery/') for name in labels), labels
  assert not any(name.startswith('WriteRecords') for name in labels)
  assert any(name.startswith('WriteSummary/CountRecords') for name in labels), labels
  # The summary still goes to --output (and so do the join's dead-letter files).
  assert any(name.startswith('WriteSummary/WriteSummaryJson') for name in labels), labels
  # The load's settings reach the job: unpickle the load DoFn that the job would run.
  load = next(t for t in proto.components.transforms.values() if t.unique_name.endswith(
      'TriggerLoadJobsWithoutTempTables/ParDo(TriggerLoadJobs)'))
  fn = pickler.loads(beam_runner_api_pb2.ParDoPayload.FromString(load.spec.payload)
                     .do_fn.payload)[0]
  assert (fn.source_format, fn.write_disposition) == ('AVRO', 'WRITE_TRUNCATE')
  assert fn.additional_bq_parameters == {'timePartitioning': {'type': 'DAY'}}
  plan = build_pipeline(beam.Pipeline(options=PipelineOptions(dataflow_args('avro'))),
                        PipelineOptions(dataflow_args('avro')))['plan']
  assert fn.schema == {'fields': layout.bigquery_schema(plan.schema)}
  scores = next(f for f in fn.schema['fields'] if f['name'] == 'scores')
  assert (scores['type'], scores['mode']) == ('RECORD', 'REPEATED')


def test_the_launcher_returns_once_the_job_is_submitted(capsys):
  # Waiting, or reading gs://demo-bucket/enriched/summary.json, would fail here: no credentials.
  assert run(dataflow_args('parquet')) == 0
  out = capsys.readouterr().out
  assert 'submitted to Dataflow' in out and 'gs://demo-bucket/enriched/summary.json' in out
  assert 'rows in' not in out
