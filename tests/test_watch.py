"""The streaming watch (``--watch``): translated for Dataflow by the DataflowRunner's dry run, and
run on Beam's local runner, where each manifest that lands is joined once into its own prefix
(read back and checked row by row); a unit done before, or held by another run, is not joined.
"""

import json
import os
import threading
import time

import apache_beam as beam
import pytest
from apache_beam.internal import pickler
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.portability.api import beam_runner_api_pb2
from apache_beam.runners.runner import PipelineState
from apache_beam.testing.util import assert_that, equal_to

from pipelines.job import BuiltWatch, build_pipeline, local_runner, run
from pipelines.options import OptionsError, validate
from tests import s3_fixtures as fx
from tests.builders import check_predictions, read_records, write_bp
from transforms import steps, watch
from transforms.io import claims
from transforms.io.access import AccessPolicy
from transforms.io.storage import Storage, StorageConfig
from transforms.join.plan import PlanSettings
from transforms.report import prior_runs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLES = os.path.join(ROOT, 'samples')
INPUTS = [f'{i},"name, {i}",{i * 10}' for i in range(1, 13)]


def _results(blanks=(), shift=0):
  """Result lines whose score tells each row apart (and, with ``shift``, another manifest's)."""
  return ['' if i in blanks else f'{i % 2},{(i + 1 + shift) / 64:.6E}' for i in range(12)]


# Dataflow: the streaming job translates --------------------------------------------------------

def dataflow_args(*extra):
  return ['--runner', 'DataflowRunner', '--dry_run=True', '--project', 'demo-project',
          '--region', 'us-central1', '--temp_location', 'gs://demo-bucket/tmp',
          '--output', 'gs://demo-bucket/enriched/', '--format', 'parquet', *extra]


def _translate(args):
  options = PipelineOptions(args)
  p = beam.Pipeline(options=options)
  built = build_pipeline(p, options)
  result = p.run()
  return built, options, result, p.runner.proto_pipeline


def _unpickled(proto, name):
  transform = next(t for t in proto.components.transforms.values() if t.unique_name == name)
  return pickler.loads(beam_runner_api_pb2.ParDoPayload.FromString(transform.spec.payload)
                       .do_fn.payload)


@pytest.mark.parametrize('source, patterns', [
    (['--manifest', 's3://examplebucket/out/batch-prediction/*.manifest',
      '--manifest', 'gs://demo-bucket/mirror/batch-prediction/bp-*.manifest'],
     ['s3://examplebucket/out/batch-prediction/*.manifest',
      'gs://demo-bucket/mirror/batch-prediction/bp-*.manifest']),
    (['--output_location', 's3://examplebucket/out/'],
     ['s3://examplebucket/out/batch-prediction/*.manifest']),
])
def test_the_watch_translates_to_a_streaming_dataflow_job(source, patterns):
  # Nothing is read at launch: the globs may match nothing yet (no credentials here either).
  built, options, result, proto = _translate(dataflow_args('--watch', '--watch_interval', '30',
                                                           *source))
  assert isinstance(built, BuiltWatch) and built.patterns == patterns
  assert result.state == PipelineState.DONE
  assert result.job.proto.type_.name == 'JOB_TYPE_STREAMING'
  assert options.view_as(StandardOptions).streaming  # the launcher set Beam's --streaming
  labels = {t.unique_name for t in proto.components.transforms.values()}
  for i in range(len(patterns)):
    # Beam's MatchContinuously, deduplicating by path with its Watch (a splittable DoFn).
    assert f'Watch/Match{i}/Watch/ParDo(_WatchGrowthDoFn)' in labels, labels
  for label in ('Watch/SpreadUnits', 'Watch/JoinUnits', 'Watch/LogUnits'):
    assert label in labels, label
  # No batch steps, no window or combine: a unit is joined and summarized by one call.
  assert not any(name.startswith(('ListManifests', 'Enrich', 'WriteSummary')) for name in labels)
  assert not any('GroupByKey' in name for name in labels
                 if not name.startswith(('Watch/SpreadUnits', 'Watch/Match'))), labels
  watch_fn = _unpickled(proto, 'Watch/Match0/Watch/ParDo(_WatchGrowthDoFn)')[0]
  assert watch_fn._poll_interval.micros == 30_000_000
  join = _unpickled(proto, 'Watch/JoinUnits')[0]
  settings = join._settings
  assert (settings.output, settings.record_format) == ('gs://demo-bucket/enriched/', 'parquet')
  assert settings.plan_settings.range_rows == 0 and not join._remember
  assert settings.job_token.startswith('watch-')


def test_beams_streaming_option_means_the_watch_and_a_dry_run_says_what_it_writes(capsys):
  assert run(dataflow_args('--streaming', '--manifest',
                           's3://examplebucket/out/batch-prediction/*.manifest')) == 0
  out = capsys.readouterr().out
  assert 'dry run: the job was translated for Dataflow and not submitted' in out


def test_a_flex_template_launch_message_names_each_units_summary():
  from pipelines.job import launch_message
  options = PipelineOptions(['--template_location', 'gs://b/staging/job_object'])
  message = launch_message(None, options, 'gs://b/out/<id>/summary.json')
  assert message.endswith('writes gs://b/out/<id>/summary.json for each batch prediction when '
                          'it is joined')


@pytest.mark.parametrize('args, problem', [
    (['--watch', '--format', 'bigquery', '--bigquery_table', 'p:d.t'], '--format bigquery'),
    (['--watch', '--service_record', '{}'], '--service_record'),
    (['--watch_for', '10'], '--watch_for applies to --watch'),
    (['--watch', '--transform_job', 's3://b/job.json', '--model_type', 'binary'],
     'SageMaker'),
])
def test_what_the_watch_refuses(args, problem):
  base = ['--output', 'gs://b/out/']
  if '--transform_job' not in args:
    base += ['--manifest', 's3://b/out/batch-prediction/*.manifest']
  with pytest.raises(OptionsError, match=problem):
    validate(PipelineOptions(base + args))


@pytest.mark.parametrize('value', ['0', '-1', 'inf', 'nan', 'soon'])
def test_watch_seconds_are_positive_and_finite(value):
  from pipelines.options import UsageError, check_arguments
  for option in ('--watch_interval', '--watch_for'):
    with pytest.raises(UsageError):
      check_arguments(['--watch', option, value])


def test_the_watch_takes_every_manifest_of_an_output_location_not_one_id():
  with pytest.raises(OptionsError, match='not --batch_prediction_id'):
    validate(PipelineOptions(['--watch', '--output', 'gs://b/out/', '--output_location',
                              's3://b/out/', '--batch_prediction_id', 'bp-1']))
  validate(PipelineOptions(['--watch', '--output', 'gs://b/out/', '--output_location',
                            's3://b/out/']))


# The local runner: each manifest joined once, as it lands --------------------------------------

def _watch_args(root, out, seconds, *extra):
  return ['--manifest', f'{root}/out/batch-prediction/*.manifest', '--watch',
          '--watch_interval', '0.5', '--watch_for', str(seconds), '--output', out,
          '--allowed_prefix', f'{root}/', '--format', 'jsonl', *extra]


def _run_watch(args) -> dict[str, int]:
  """Runs the watch on predjoin's local runner until ``--watch_for`` ends; its unit counters."""
  options = PipelineOptions(args)
  p = beam.Pipeline(runner=local_runner(options), options=options)
  build_pipeline(p, options)
  result = p.run()
  result.wait_until_finish()
  counters = result.metrics().query(
      MetricsFilter().with_namespace(steps.NAMESPACE))['counters']
  totals: dict[str, int] = {}
  for c in counters:
    totals[c.key.metric.name] = totals.get(c.key.metric.name, 0) + c.committed
  return {name: totals.get(name, 0) for name in ('units_joined', 'units_skipped', 'units_failed')}


def _summary(out, unit):
  with open(os.path.join(out, unit, 'summary.json')) as f:
    return json.load(f)


def test_each_manifest_is_joined_once_also_one_that_lands_while_the_job_runs(tmp_path):
  root, out = str(tmp_path), str(tmp_path / 'enriched')
  a = write_bp(root, 'bp-a', [(INPUTS, _results({0})), (INPUTS, _results({5}, shift=12))])
  b = write_bp(root, 'bp-b', [(INPUTS, _results(shift=24))])
  staged = write_bp(tmp_path / 'staging', 'bp-c', [(INPUTS, _results({11}, shift=36))])
  c = os.path.join(root, 'out', 'batch-prediction', 'bp-c.manifest')
  dropped = []

  def drop_once_the_job_joins_a_unit():
    # The job is running and has matched: it claimed the first unit (its prefix is there). Every
    # later match finds bp-c, however long the joins take: the matches are due by the clock.
    while not os.path.exists(os.path.join(out, 'bp-a')):
      time.sleep(0.02)
    dropped.append(os.path.exists(os.path.join(out, 'bp-c')))
    os.rename(staged, c)

  dropper = threading.Thread(target=drop_once_the_job_joins_a_unit, daemon=True)
  dropper.start()
  counters = _run_watch(_watch_args(root, out, 6))
  dropper.join(timeout=5)
  assert dropped == [False]  # bp-c landed after the job had started joining
  # Every poll lists every manifest again; each is joined once.
  assert (counters['units_joined'], counters['units_failed']) == (3, 0)
  for unit, manifest in (('bp-a', a), ('bp-b', b), ('bp-c', c)):
    check_predictions(read_records(os.path.join(out, unit)), manifest)
    summary = _summary(out, unit)
    assert summary['ok'] and summary['batch_prediction_ids'] == [unit]
    with open(manifest, 'rb') as f:
      assert summary[prior_runs.SUMMARY_KEY] == prior_runs.manifest_digest(f.read())
    assert not os.path.exists(claims.claim_uri(os.path.join(out, unit)))  # released
  assert sorted(os.listdir(out)) == ['bp-a', 'bp-b', 'bp-c']


def test_a_restarted_watch_skips_complete_units_and_joins_changed_and_failed_ones(tmp_path):
  root, out = str(tmp_path), str(tmp_path / 'enriched')
  a = write_bp(root, 'bp-a', [(INPUTS, _results({0}))])
  b = write_bp(root, 'bp-b', [(INPUTS, _results(shift=12))])
  bad = os.path.join(root, 'out', 'batch-prediction', 'bp-bad.manifest')
  with open(bad, 'w') as f:
    f.write('{"not": ')
  counters = _run_watch(_watch_args(root, out, 2))
  assert (counters['units_joined'], counters['units_failed']) == (2, 1)
  assert not _summary(out, 'bp-bad')['ok']
  kept = {unit: (os.stat(os.path.join(out, unit, 'summary.json')).st_mtime_ns,
                 open(os.path.join(out, unit, 'summary.json')).read()) for unit in ('bp-a', 'bp-b')}
  # bp-b's manifest now names two shards, with other results: its unit is joined again.
  write_bp(root, 'bp-b', [(INPUTS, _results({3}, shift=48)), (INPUTS, _results(shift=60))])
  counters = _run_watch(_watch_args(root, out, 2))
  # bp-b joined again, bp-bad failed again (it is joined by every run until it is fixed), bp-a
  # skipped.
  assert (counters['units_joined'], counters['units_failed']) == (1, 1)
  assert counters['units_skipped'] >= 1
  # bp-a: complete for the same manifest, not touched.
  assert (os.stat(os.path.join(out, 'bp-a', 'summary.json')).st_mtime_ns,
          open(os.path.join(out, 'bp-a', 'summary.json')).read()) == kept['bp-a']
  check_predictions(read_records(os.path.join(out, 'bp-a')), a)
  # bp-b: the new pairing's predictions, and only those.
  check_predictions(read_records(os.path.join(out, 'bp-b')), b)
  assert _summary(out, 'bp-b')[prior_runs.SUMMARY_KEY] == prior_runs.manifest_digest(
      open(b, 'rb').read())


def test_the_watch_and_incremental_batch_runs_leave_each_others_complete_units_alone(tmp_path,
                                                                                     capsys):
  root, out = str(tmp_path), str(tmp_path / 'enriched')
  a = write_bp(root, 'bp-a', [(INPUTS, _results({1}))])
  batch = ['--incremental', '--output', out, '--allowed_prefix', f'{root}/', '--format', 'jsonl']
  assert run(['--manifest', a, *batch]) == 0  # bp-a, by a batch run
  by_batch = open(os.path.join(out, 'bp-a', 'summary.json')).read()
  b = write_bp(root, 'bp-b', [(INPUTS, _results(shift=12))])
  counters = _run_watch(_watch_args(root, out, 2))
  assert counters['units_joined'] == 1 and counters['units_skipped'] >= 1  # bp-b; not bp-a
  assert open(os.path.join(out, 'bp-a', 'summary.json')).read() == by_batch
  assert _summary(out, 'bp-b')['incremental']['run_id'].startswith('watch-')
  capsys.readouterr()
  # A batch run over both finds both done.
  assert run(['--manifest', f'{root}/out/batch-prediction/*.manifest', *batch]) == 0
  printed = capsys.readouterr().out
  assert 'bp-a: skip:' in printed and 'bp-b: skip:' in printed, printed
  for unit, manifest in (('bp-a', a), ('bp-b', b)):
    check_predictions(read_records(os.path.join(out, unit)), manifest)


def test_the_command_prints_each_units_summary_and_exits_1_on_a_failed_unit(tmp_path, capsys):
  root, out = str(tmp_path), str(tmp_path / 'enriched')
  os.makedirs(os.path.join(root, 'out', 'batch-prediction'))
  assert run(_watch_args(root, out, 1)) == 0  # nothing landed: nothing to do, no error
  assert 'no batch prediction joined under' in capsys.readouterr().out
  write_bp(root, 'bp-a', [(INPUTS, _results())])
  assert run(_watch_args(root, out, 1)) == 0
  printed = capsys.readouterr().out
  assert f'{out}/bp-a/summary.json: ok, rows in 12, joined 12' in printed
  with open(os.path.join(root, 'out', 'batch-prediction', 'bp-bad.manifest'), 'w') as f:
    f.write('[]')
  assert run(_watch_args(root, out, 1)) == 1
  captured = capsys.readouterr()
  assert f'{out}/bp-bad/summary.json: FAILED' in captured.out
  assert '1 batch prediction(s) failed' in captured.err


# The per-unit DoFn on the DirectRunner (batch) ---------------------------------------------------

def _settings(root, out, **kw):
  return watch.UnitSettings(PlanSettings(), StorageConfig(), out, 'jsonl', (),
                            AccessPolicy.create([f'{root}/']), job_token='watch-test', **kw)


def test_a_unit_another_run_holds_is_left_to_it_and_a_stale_claim_is_taken_over(tmp_path):
  root, out = str(tmp_path), str(tmp_path / 'enriched')
  a = write_bp(root, 'bp-a', [(INPUTS, _results())])
  b = write_bp(root, 'bp-b', [(INPUTS, _results(shift=12))])
  storage = Storage()
  held = claims.claim_uri(os.path.join(out, 'bp-a'))
  stale = claims.claim_uri(os.path.join(out, 'bp-b'))
  assert claims.try_claim(held, 'batch-run-1', stale_after_s=60, storage=storage)
  assert claims.try_claim(stale, 'batch-run-0', stale_after_s=60, storage=storage)
  old = time.time() - 3600
  os.utime(stale, (old, old))  # its run died an hour ago
  with beam.Pipeline(runner=local_runner(PipelineOptions([])),
                     options=PipelineOptions([])) as p:
    results = (p | beam.Create([a, b])
               | beam.ParDo(watch.JoinUnitFn(_settings(root, out, stale_after_s=600)))
               | beam.Map(lambda r: (r.unit_id, r.action, r.ok)))
    assert_that(results, equal_to([('bp-a', watch.CLAIMED, None),
                                   ('bp-b', watch.JOINED, True)]))
  assert not os.path.exists(os.path.join(out, 'bp-a', 'summary.json'))
  assert claims.read_claim(held, storage).owner == 'batch-run-1'  # still the other run's
  check_predictions(read_records(os.path.join(out, 'bp-b')), b)
  assert claims.read_claim(stale, storage) is None  # taken over, then released


def test_a_unit_joins_the_manifest_bytes_its_summary_digests(tmp_path):
  root, out = str(tmp_path), str(tmp_path / 'enriched')
  a = write_bp(root, 'bp-a', [(INPUTS, _results({2})), (INPUTS, _results(shift=12))])
  data = open(a, 'rb').read()
  digest = prior_runs.manifest_digest(data)
  facts = watch.unit_facts(a, digest, 'watch-test:bp-a', None,
                           prior_runs.Decision('join', 'not joined before'))
  summary = watch.join_unit(a, data, facts, _settings(root, out), Storage())
  assert summary['ok'] and summary[prior_runs.SUMMARY_KEY] == digest
  assert summary['incremental']['decision']['action'] == 'join'
  assert summary['totals']['joined_rows'] + summary['totals']['failed_rows'] == 24
  check_predictions(read_records(os.path.join(out, 'bp-a')), a)
  assert prior_runs.decide(os.path.join(out, 'bp-a'), digest).action == 'skip'



# On S3 (moto's server on loopback): manifests there, and one uploaded while the watch runs -----

def _s3_data(tmp_path, prefix: str) -> tuple[str, dict]:
  """Three batch predictions under ``tmp_path/data`` whose manifests name ``prefix``... URIs."""
  data = str(tmp_path / 'data')
  manifests = {}
  for n, bp in enumerate(('bp-1', 'bp-2', 'bp-3')):
    manifests[bp] = write_bp(data, bp, [(INPUTS, _results({n}, shift=12 * n)),
                                        (INPUTS, _results(shift=12 * n + 6))])
    with open(manifests[bp]) as f:
      text = f.read().replace(f'{data}/', prefix)
    with open(manifests[bp], 'w') as f:
      f.write(text)
  return data, manifests


def test_on_s3_the_watch_joins_each_manifest_also_one_uploaded_while_it_runs(tmp_path):
  # The runs are commands of their own, as a user runs them: moto's server in this process then
  # has it to itself.
  s3 = fx.MotoS3()
  try:
    s3.make_bucket('watch-data')
    s3.make_bucket('watch-out')
    data, manifests = _s3_data(tmp_path, 's3://watch-data/')
    late = 'out/batch-prediction/bp-3.manifest'
    for dirpath, _, files in os.walk(data):
      for name in files:
        key = os.path.relpath(os.path.join(dirpath, name), data)
        if key != late:
          s3.client.upload_file(os.path.join(dirpath, name), 'watch-data', key)
    # The job reaches S3 through a proxy that logs its requests: the late manifest is uploaded
    # once the job has listed the manifests (the watch runs: its first match is done).
    proxy = fx.FaultProxy(s3.endpoint)
    common = ['--output', 's3://watch-out/enriched/', '--format', 'parquet',
              '--allowed_prefix', 's3://watch-data/', *fx.s3_args(proxy.endpoint)]
    uploaded = []

    def upload_once_the_watch_has_matched():
      while not any(path.startswith('/watch-data') and 'prefix=out' in path
                    for path in proxy.paths('GET')):
        time.sleep(0.05)
      uploaded.append(s3.keys('watch-out', 'enriched/bp-3/'))
      s3.client.upload_file(os.path.join(data, late), 'watch-data', late)

    uploader = threading.Thread(target=upload_once_the_watch_has_matched, daemon=True)
    uploader.start()
    try:
      watching = fx.run_cli([
          '--watch', '--manifest', 's3://watch-data/out/batch-prediction/*.manifest',
          '--watch_interval', '0.5', '--watch_for', '10', *common], fx.aws_env(), timeout=240)
    finally:
      proxy.stop()
    uploader.join(timeout=5)
    assert uploaded == [[]]  # uploaded while the job ran, before anything of it was joined
    assert watching.returncode == 0, watching.stderr
    for bp in manifests:
      assert f's3://watch-out/enriched/{bp}/summary.json: ok' in watching.stdout, watching.stdout
    got = str(tmp_path / 'got')
    s3.download_prefix('watch-out', 'enriched/', got)
    for bp, manifest in manifests.items():
      check_predictions(read_records(os.path.join(got, bp)), manifest,
                        rebase=('s3://watch-data/', f'{data}/'))
      summary = _summary(got, bp)
      assert summary['ok'] and not os.path.exists(os.path.join(got, bp, claims.CLAIM))
      assert summary['incremental']['run_id'].startswith('watch-')
  finally:
    s3.stop()
