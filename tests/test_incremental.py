"""Incremental runs (``--incremental``): each batch prediction a glob finds is joined to its own
prefix exactly once, on the real DirectRunner, read back by value; a BigQuery run as Dataflow
translates it; and two runs started at once against moto's S3 server and the GCS emulator."""

import glob
import json
import os
import subprocess
import sys

import apache_beam as beam
import pytest
from apache_beam.internal import pickler
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.portability.api import beam_runner_api_pb2

from pipelines.job import build_pipeline, run
from tests import s3_fixtures as fx
from tests.builders import check_predictions, read_records, write_bp
from transforms.io import claims
from transforms.report import prior_runs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _shard(bp: str, rows: int, seed: int):
  """A shard of ``rows`` rows whose ids and scores name their batch prediction and row."""
  inputs = [f'{bp}-r{seed}-{k},name {k},{k * seed}' for k in range(rows)]
  results = ['' if k == 2 else f'{k % 2},0.{seed}{k:02d}' for k in range(rows)]
  return inputs, results


def _write(data, bp: str, shards: int = 1, broken: bool = False) -> str:
  parts = [_shard(bp, 4 + i, i + 1) for i in range(shards)]
  if broken:  # a result a line short: the shard is refused, the run fails
    inputs, results = parts[0]
    parts[0] = (inputs, results[:-1])
  return write_bp(data, bp, parts)


def _args(data, out, fmt, *extra):
  return ['--incremental', '--manifest', f'{data}/out/batch-prediction/*.manifest',
          '--allowed_prefix', f'{data}/', '--output', str(out), '--format', fmt, *extra]


def _report(out) -> dict:
  [latest] = sorted(glob.glob(os.path.join(out, 'runs', '*.json')))[-1:]
  with open(latest) as f:
    return json.load(f)


def _unit_summary(out, bp) -> dict:
  with open(os.path.join(out, bp, 'summary.json')) as f:
    return json.load(f)


def _check_unit(out, bp, manifest):
  """Every row of the unit's manifest, once, with its own prediction; nothing else."""
  check_predictions(read_records(os.path.join(out, bp)), manifest)


@pytest.mark.parametrize('fmt', ['avro', 'parquet', 'jsonl'])
def test_three_then_a_fourth_and_a_changed_one_each_joined_once(tmp_path, fmt, capsys):
  data, out = tmp_path / 'data', tmp_path / 'out'
  manifests = {bp: _write(data, bp) for bp in ('bp-a', 'bp-b')}
  manifests['bp-c'] = _write(data, 'bp-c', broken=True)
  # Run 1: all three joined, each to its own prefix; bp-c's shard is refused, so it fails.
  assert run(_args(data, out, fmt)) == 1
  first = _report(out)
  assert (first['joined'], first['skipped'], first['refused']) == (
      ['bp-a', 'bp-b', 'bp-c'], [], [])
  for bp in ('bp-a', 'bp-b'):
    _check_unit(out, bp, manifests[bp])
    summary = _unit_summary(out, bp)
    assert summary['ok'] and summary['batch_prediction_ids'] == [bp]
    with open(manifests[bp], 'rb') as f:
      assert summary[prior_runs.SUMMARY_KEY] == prior_runs.manifest_digest(f.read())
    assert summary['incremental']['run_id'] == first['run_id']
    assert not os.path.exists(claims.claim_uri(str(out / bp)))  # released once written
  assert not _unit_summary(out, 'bp-c')['ok']
  first_a = os.path.getmtime(out / 'bp-a' / 'summary.json')
  capsys.readouterr()

  # Run 2: a fourth appears, bp-b's manifest changes (a second shard), bp-c is fixed.
  manifests['bp-d'] = _write(data, 'bp-d')
  manifests['bp-b'] = _write(data, 'bp-b', shards=2)
  manifests['bp-c'] = _write(data, 'bp-c')
  assert run(_args(data, out, fmt)) == 0
  printed = capsys.readouterr().out
  assert 'bp-b: changed: the manifest changed since it was joined' in printed
  second = _report(out)
  assert second['run_id'] != first['run_id']
  assert (second['joined'], second['changed'], second['redone'], second['skipped']) == (
      ['bp-d'], ['bp-b'], ['bp-c'], ['bp-a'])
  actions = {u['batch_prediction_id']: u['action'] for u in second['units']}
  assert actions == {'bp-a': 'skip', 'bp-b': 'changed', 'bp-c': 'redo', 'bp-d': 'join'}
  assert all(u['ok'] for u in second['units'] if u['action'] != 'skip')
  # Exactly four outputs, each with every row of its manifest once (none duplicated: the
  # changed one holds its new rows only, the skipped one was not touched).
  assert sorted(os.listdir(out)) == ['bp-a', 'bp-b', 'bp-c', 'bp-d', 'runs']
  for bp, manifest in manifests.items():
    _check_unit(out, bp, manifest)
    assert _unit_summary(out, bp)['ok']
  assert os.path.getmtime(out / 'bp-a' / 'summary.json') == first_a
  assert _unit_summary(out, 'bp-b')['incremental']['decision']['action'] == 'changed'
  assert _unit_summary(out, 'bp-b')['totals']['shards'] == 2

  # Run 3: nothing new; nothing is joined or written but the run's own summary.
  assert run(_args(data, out, fmt)) == 0
  third = _report(out)
  assert third['skipped'] == ['bp-a', 'bp-b', 'bp-c', 'bp-d'] and third['joined'] == []
  assert 'nothing to join' in capsys.readouterr().out


def test_output_location_without_an_id_finds_every_manifest(tmp_path):
  data, out = tmp_path / 'data', tmp_path / 'out'
  manifest = _write(data, 'bp-sp7EvkPwfHS')  # an id as Amazon ML makes them
  assert run(['--incremental', '--output_location', f'{data}/out/', '--allowed_prefix',
              f'{data}/', '--output', str(out), '--format', 'jsonl']) == 0
  _check_unit(out, 'bp-sp7EvkPwfHS', manifest)
  # A schedule that finds nothing new, or nothing at all, is no error.
  empty = tmp_path / 'empty'
  empty.mkdir()
  assert run(['--incremental', '--output_location', f'{empty}/', '--output',
              str(tmp_path / 'out2')]) == 0


def test_a_unit_claimed_by_another_run_is_left_to_it(tmp_path, capsys):
  data, out = tmp_path / 'data', tmp_path / 'out'
  manifests = {bp: _write(data, bp) for bp in ('bp-a', 'bp-b')}
  assert claims.try_claim(claims.claim_uri(str(out / 'bp-a')), 'the-other-run',
                          stale_after_s=3600)
  assert run(_args(data, out, 'jsonl')) == 0
  report = _report(out)
  assert (report['joined'], report['claimed_elsewhere']) == (['bp-b'], ['bp-a'])
  assert 'another run holds its claim (the-other-run)' in capsys.readouterr().out
  assert not os.path.exists(out / 'bp-a' / 'summary.json')
  _check_unit(out, 'bp-b', manifests['bp-b'])
  # A claim older than --claim_timeout is a crashed run's: taken over, the unit joined.
  os.utime(claims.claim_uri(str(out / 'bp-a')), (1, 1))
  assert run(_args(data, out, 'jsonl', '--claim_timeout', '60')) == 0
  assert _report(out)['joined'] == ['bp-a']
  _check_unit(out, 'bp-a', manifests['bp-a'])


def test_a_unit_refused_at_launch_does_not_stop_the_others(tmp_path):
  data, out = tmp_path / 'data', tmp_path / 'out'
  good = _write(data, 'bp-a')
  bad = os.path.join(data, 'out', 'batch-prediction', 'bp-x.manifest')
  with open(bad, 'w') as f:
    json.dump({'/etc/passwd': '/etc/group'}, f)  # outside the allowed prefixes
  assert run(_args(data, out, 'jsonl')) == 2
  report = _report(out)
  assert (report['joined'], report['refused']) == (['bp-a'], ['bp-x'])
  _check_unit(out, 'bp-a', good)
  assert not os.path.exists(claims.claim_uri(str(out / 'bp-x')))


@pytest.mark.parametrize('args, message', [
    (['--incremental', '--output_location', 's3://b/out/', '--batch_prediction_id', 'bp-1'],
     'without --batch_prediction_id'),
    (['--incremental', '--manifest', 'm/*.manifest', '--format', 'bigquery',
      '--bigquery_table', 'demo-project:ds.t', '--write_disposition', 'append'],
     'needs --write_disposition replace'),
    (['--incremental', '--transform_job', 'jobs/*.json', '--model_type', 'binary',
      '--transform_job_name', 'x'], 'not --transform_job_name'),
    (['--incremental', '--transform_job', '{"TransformJobName": "x"}', '--model_type',
      'binary'], 'not inline JSON'),
])
def test_incremental_options_are_checked(args, message, tmp_path, capsys):
  assert run([*args, '--output', str(tmp_path / 'o')]) == 2
  assert message in capsys.readouterr().err


# BigQuery, as Dataflow translates it --------------------------------------------------------


def _unpickled(proto, name):
  transform = next(t for t in proto.components.transforms.values() if t.unique_name == name)
  return pickler.loads(beam_runner_api_pb2.ParDoPayload.FromString(transform.spec.payload)
                       .do_fn.payload)


def test_bigquery_each_unit_replaces_exactly_its_own_rows_in_the_translated_job(tmp_path):
  data, out = tmp_path / 'data', tmp_path / 'out'
  for bp in ('bp-a', 'bp-b', 'bp-c'):
    _write(data, bp)
  assert run(_args(data, out, 'jsonl')) == 0  # the earlier runs, as their summaries say
  _write(data, 'bp-d')
  _write(data, 'bp-b', shards=2)
  args = ['--runner', 'DataflowRunner', '--dry_run=True', '--project', 'demo-project',
          '--region', 'us-central1', '--temp_location', 'gs://demo-bucket/tmp',
          *_args(data, out, 'bigquery', '--bigquery_table', 'demo-project:warehouse.predictions')]
  options = PipelineOptions(args)
  p = beam.Pipeline(options=options)
  built = build_pipeline(p, options)
  assert {u.id: u.decision.action for u, _ in built.joined} == {'bp-b': 'changed',
                                                                 'bp-d': 'join'}
  assert built.report_uri is None and built.report['skipped'] == ['bp-a', 'bp-c']
  p.run()
  proto = p.runner.proto_pipeline
  labels = {t.unique_name for t in proto.components.transforms.values()}
  assert not any(name.startswith(('Join bp-a', 'Join bp-c')) for name in labels)
  stagings = set()
  for bp in ('bp-b', 'bp-d'):
    assert any(name.startswith(f'Join {bp}/LoadRecords/LoadIntoStaging/') for name in labels)
    [plan] = _unpickled(proto, f'Join {bp}/WriteSummary/WriteSummaryJson')[1]
    # Its own summary beside its own outputs, the digest it records, and its own staging table
    # published by replace: the rows of exactly this batch prediction are replaced.
    assert plan.output == f'{out}/{bp}/'
    assert plan.unit['batch_prediction_id'] == bp and plan.unit['claim'] is None  # dry run
    with open(f'{data}/out/batch-prediction/{bp}.manifest', 'rb') as f:
      assert plan.unit['manifest_sha256'] == prior_runs.manifest_digest(f.read())
    load = plan.table_load
    assert (load.table, load.disposition) == ('demo-project:warehouse.predictions', 'replace')
    stagings.add(load.staging)
    fn = _unpickled(proto, f'Join {bp}/Enrich/JoinShards/ParDo(JoinShardFn)')[0]
    assert fn._output == f'{out}/{bp}/'
  assert len(stagings) == 2


# Two runs at once ---------------------------------------------------------------------------


def _local_data(tmp_path, prefix: str) -> tuple[str, dict]:
  """Three batch predictions under ``tmp_path/data`` whose manifests name ``prefix``... URIs."""
  data = tmp_path / 'data'
  manifests = {}
  for bp in ('bp-1', 'bp-2', 'bp-3'):
    manifests[bp] = _write(data, bp)
    with open(manifests[bp]) as f:
      text = f.read().replace(f'{data}/', prefix)
    with open(manifests[bp], 'w') as f:
      f.write(text)
  return str(data), manifests


def _two_runs_at_once(args: list[str], env: dict) -> list[subprocess.CompletedProcess]:
  procs = [subprocess.Popen([sys.executable, '-m', 'pipelines.cli', *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
           for _ in range(2)]
  done = []
  try:
    for proc in procs:  # generous: two whole runs share the machine with the rest of the suite
      stdout, stderr = proc.communicate(timeout=600)
      done.append(subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr))
  finally:
    for proc in procs:  # a hung run must not outlive the test (and the servers it talks to)
      if proc.poll() is None:
        proc.kill()
        proc.wait()
  return done


def _check_exactly_once(got: str, data: str, manifests: dict, prefix: str, reports: list[dict]):
  joined = [bp for r in reports for bp in r['joined']]
  assert sorted(joined) == sorted(manifests), reports  # each by one run, none twice
  for r in reports:  # the other run left it to the one that claimed it, or found it done
    assert set(r['claimed_elsewhere'] + r['skipped'] + r['joined']) == set(manifests), r
  run_of = {bp: r['run_id'] for r in reports for bp in r['joined']}
  for bp, manifest in manifests.items():
    summary = _unit_summary(got, bp)
    assert summary['ok'] and summary['incremental']['run_id'] == run_of[bp]
    assert not os.path.exists(os.path.join(got, bp, claims.CLAIM))  # released
    check_predictions(read_records(os.path.join(got, bp)), manifest, rebase=(prefix, f'{data}/'))


def test_two_runs_at_once_on_s3_join_each_batch_prediction_once(tmp_path):
  s3 = fx.MotoS3()
  try:
    s3.make_bucket('inc-data')
    s3.make_bucket('inc-out')
    data, manifests = _local_data(tmp_path, 's3://inc-data/')
    s3.upload_tree(data, 'inc-data')
    args = ['--incremental', '--manifest', 's3://inc-data/out/batch-prediction/*.manifest',
            '--output', 's3://inc-out/enriched/', '--format', 'jsonl',
            '--allowed_prefix', 's3://inc-data/', *fx.s3_args(s3.endpoint)]
    runs = _two_runs_at_once(args, fx.aws_env())
    for r in runs:
      assert r.returncode == 0, r.stderr
    got = str(tmp_path / 'got')
    s3.download_prefix('inc-out', 'enriched/', got)
    reports = [json.load(open(p)) for p in sorted(glob.glob(f'{got}/runs/*.json'))]
    assert len(reports) == 2
    _check_exactly_once(got, data, manifests, 's3://inc-data/', reports)
  finally:
    s3.stop()


def test_two_runs_at_once_on_gcs_join_each_batch_prediction_once(tmp_path):
  emulator = fx.GcsEmulator(str(tmp_path))
  try:
    client = emulator.client()
    bucket = client.create_bucket('inc-data')
    client.create_bucket('inc-out')
    data, manifests = _local_data(tmp_path, 'gs://inc-data/')
    for path in glob.glob(f'{data}/**/*', recursive=True):
      if os.path.isfile(path):
        bucket.blob(os.path.relpath(path, data)).upload_from_filename(path)
    args = ['--incremental', '--manifest', 'gs://inc-data/out/batch-prediction/*.manifest',
            '--output', 'gs://inc-out/enriched/', '--format', 'avro']
    runs = _two_runs_at_once(args, fx.aws_env(emulator.env()))
    for r in runs:
      assert r.returncode == 0, r.stderr
    got = tmp_path / 'got'
    for blob in client.list_blobs('inc-out', prefix='enriched/'):
      path = got / blob.name[len('enriched/'):]
      path.parent.mkdir(parents=True, exist_ok=True)
      blob.download_to_filename(str(path))
    reports = [json.load(open(p)) for p in sorted(glob.glob(f'{got}/runs/*.json'))]
    assert len(reports) == 2
    _check_exactly_once(str(got), data, manifests, 'gs://inc-data/', reports)
  finally:
    emulator.stop()



# SageMaker: each saved job description a --transform_job glob finds is one unit -------------

SAMPLES = os.path.join(ROOT, 'samples')


def _job_file(jobs, name: str, status: str = 'Completed', extra: str = '') -> str:
  with open(os.path.join(SAMPLES, 'sagemaker', 'bt-sample-churn.json')) as f:
    job = json.load(f)
  job.update(TransformJobName=name, TransformJobStatus=status)
  path = os.path.join(jobs, f'{name}.json')
  with open(path, 'w') as f:
    f.write(json.dumps(job, indent=2) + extra)
  return path


def test_sagemaker_jobs_found_by_a_glob_each_joined_once(tmp_path):
  jobs, out = tmp_path / 'jobs', tmp_path / 'out'
  jobs.mkdir()
  for name in ('bt-a', 'bt-b'):
    _job_file(jobs, name)
  _job_file(jobs, 'bt-c', status='InProgress')
  args = ['--incremental', '--transform_job', f'{jobs}/*.json', '--model_type', 'binary',
          '--rebase_uri', f's3://predjoin-samples/={SAMPLES}/', '--output', str(out),
          '--format', 'jsonl']
  assert run(args) == 0
  first = _report(out)
  assert (first['joined'], first['not_finished']) == (['bt-a', 'bt-b'], ['bt-c'])
  # Each job's records are those of a run of that job alone (whose rows the SageMaker tests
  # check by value), under its own name.
  alone = tmp_path / 'alone'
  assert run(['--transform_job', _job_file(tmp_path, 'bt-a'), '--model_type', 'binary',
              '--rebase_uri', f's3://predjoin-samples/={SAMPLES}/', '--output', str(alone),
              '--format', 'jsonl']) == 0
  expected = read_records(str(alone))
  assert expected and {r['batch_prediction_id'] for r in expected} == {'bt-a'}
  assert read_records(str(out / 'bt-a')) == expected
  assert [{**r, 'batch_prediction_id': 'bt-a'} for r in read_records(str(out / 'bt-b'))] == \
      expected
  # bt-c finishes, bt-a's description changes: the second run joins exactly those.
  _job_file(jobs, 'bt-c')
  _job_file(jobs, 'bt-a', extra='\n')
  assert run(args) == 0
  second = _report(out)
  assert (second['joined'], second['changed'], second['skipped']) == (
      ['bt-c'], ['bt-a'], ['bt-b'])
  assert read_records(str(out / 'bt-a')) == expected
  assert len(read_records(str(out / 'bt-c'))) == len(expected)
