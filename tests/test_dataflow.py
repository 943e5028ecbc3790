"""The job translates to a Dataflow job: DataflowRunner's dry run, no credentials, no network."""

import os

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.runner import PipelineState

from pipelines.enrich import build_pipeline

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
  for label in ('Enrich/JoinShards', 'Enrich/SpreadShards', 'WriteDeadLetters/WriteJsonLines',
                'WriteSummary/WriteSummaryJson', f'WriteRecords/Write{fmt.capitalize()}'):
    assert any(name == label or name.startswith(label + '/') for name in labels), label
  # Every DoFn was pickled into the job: the join's carries the plan and the storage settings.
  join = next(t for t in proto.components.transforms.values()
              if t.unique_name == 'Enrich/JoinShards/ParDo(JoinShardFn)')
  assert join.spec.payload
