"""The whole job: under TestPipeline, and through the CLI on the DirectRunner (also multi-process).

Outputs are read back with fastavro / pyarrow / json and compared row by row with an oracle that
reads the inputs with the standard library only.
"""

import glob
import json
import logging
import os
import re
import subprocess
import sys

import apache_beam as beam
import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from pipelines.job import build_pipeline, local_runner, one_worker_process, run
from tests.builders import (
    oracle_rows,
    read_dead_letters,
    read_records,
    read_records_file,
    read_summary,
    write_bp,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INPUTS = [f'{i},"name, {i}",{i * 10}' for i in range(1, 13)]


def trusted(tmp_path):
  """The inputs sit beside out/, outside the manifest's directory: trust the test's root."""
  return ['--allowed_prefix', f'{tmp_path}/']


def _results(blanks):
  return ['' if i in blanks else f'{i % 2},{(i + 1) / 14:.6E}' for i in range(12)]


@pytest.fixture
def good_bp(tmp_path):
  """Three shards: blank lines first, in the middle and last (the file ends with '\\n\\n')."""
  return write_bp(tmp_path, 'bp-good', [(INPUTS, _results({0})), (INPUTS, _results({5, 6})),
                                        (INPUTS, _results({11}))])


@pytest.fixture
def mixed_bp(tmp_path):
  """Two good shards and one whose result has a line too few."""
  return write_bp(tmp_path, 'bp-mixed', [(INPUTS, _results({0})), (INPUTS, _results({3})[:-1]),
                                         (INPUTS, _results({11}))])


def assert_matches_oracle(records, expected):
  assert len(records) == len(expected)
  for got, want in zip(records, expected, strict=True):
    assert (got['input_uri'], got['row_number']) == (want['input_uri'], want['row_number'])
    # Each row's lines in its two files (a header line above the rows, the result's on line 1).
    assert (got['input_line_number'], got['result_line_number']) == (
        want['row_number'] + 1, want['row_number'] + 1)
    assert [got['id'], got['name'], got['amount']] == want['values']
    if want['result']:
      answer, score = want['result'].split(',')
      assert got['status'] == 'ok'
      assert (got['service_best_answer'], got['score']) == (int(answer), float(score))
      assert got['best_answer'] == int(float(score) >= 0.5)
    else:
      assert got['status'] == 'failed' and got['score'] is None


def _report_counts(report):
  return (os.path.basename(report.input_uri), report.input_rows, report.joined_rows,
          report.failed_rows, report.dead_letter_rows, report.status)


def test_test_pipeline_outputs_and_counters(mixed_bp, tmp_path):
  out = str(tmp_path / 'out')
  options = PipelineOptions(['--manifest', mixed_bp, '--output', out, '--format', 'parquet',
                             '--block_rows', '5', *trusted(tmp_path)])
  p = TestPipeline(runner=local_runner(options), options=options)
  built = build_pipeline(p, p.options)
  assert_that(built.outcomes | 'Counts' >> beam.Map(lambda o: _report_counts(o.report)),
              equal_to([('part-1.csv', 12, 11, 1, 0, 'ok'),
                        ('part-2.csv', 12, 0, 0, 12, 'row_count_mismatch'),
                        ('part-3.csv', 12, 11, 1, 0, 'ok')]), label='CheckReports')
  result = p.run()
  result.wait_until_finish()
  counters = {c.key.metric.name: c.committed
              for c in result.metrics().query(MetricsFilter())['counters']}
  assert counters['rows_in'] == 36 and counters['rows_joined'] == 22
  assert counters['rows_failed'] == 2 and counters['rows_dead_lettered'] == 12
  assert counters['records_to_sink'] == 24 and counters['dead_letters_to_sink'] == 12
  assert counters['shards_bad'] == 1 and counters['shards_ok'] == 2
  summary = read_summary(out)
  assert summary['identity']['holds'] and not summary['ok']
  assert summary['totals']['input_rows'] == 36
  assert built.plan.parse_threads  # one in-memory worker: the CSV reader's threads help


MP = ['--direct_running_mode=multi_processing']


@pytest.mark.parametrize('args, alone', [
    ([], True),  # in-memory: one worker
    (['--direct_num_workers=2'], True),  # in-memory still
    ([*MP, '--direct_num_workers=1'], True),
    ([*MP, '--direct_num_workers=2'], False),
    ([*MP, '--direct_num_workers=0'], (os.cpu_count() or 1) == 1),  # a worker per core
    (['--direct_running_mode=multi_threading', '--direct_num_workers=2'], True),
    (['--runner=DataflowRunner'], False),  # one SDK process per vCPU
])
def test_csv_reader_threads_only_where_one_process_has_the_cores(args, alone):
  assert one_worker_process(PipelineOptions(args)) is alone


def test_multi_processing_plans_parse_without_threads(good_bp, tmp_path):
  options = PipelineOptions(['--manifest', good_bp, '--output', str(tmp_path / 'out'),
                             *MP, '--direct_num_workers=2', *trusted(tmp_path)])
  assert build_pipeline(beam.Pipeline(options=options), options).plan.parse_threads is False


def test_an_earlier_summary_goes_when_the_run_starts_but_not_on_a_dry_run(good_bp, tmp_path):
  out = tmp_path / 'fresh'
  out.mkdir()
  (out / 'summary.json').write_text('{"ok": true}')
  args = ['--manifest', good_bp, '--output', str(out), *trusted(tmp_path)]
  options = PipelineOptions([*args, '--dry_run=True'])
  build_pipeline(beam.Pipeline(options=options), options)
  assert (out / 'summary.json').exists()
  options = PipelineOptions(args)
  build_pipeline(beam.Pipeline(options=options), options)  # not run: nothing written yet
  assert not (out / 'summary.json').exists()


@pytest.mark.parametrize('fmt', ['avro', 'parquet', 'jsonl'])
def test_cli_each_format_row_by_row(good_bp, tmp_path, fmt, capsys):
  out = str(tmp_path / 'out')
  assert run(['--manifest', good_bp, '--output', out, '--format', fmt, '--block_rows', '4',
              *trusted(tmp_path)]) == 0
  assert_matches_oracle(read_records(out), oracle_rows(good_bp))
  assert read_dead_letters(out) == []
  printed = capsys.readouterr().out
  assert 'rows in 36, joined 32, failed 4, dead-lettered 0' in printed
  # One records file per shard, written by the worker that joined it, rows in input order.
  summary = read_summary(out)
  files = summary['outputs']['records']
  assert sorted(glob.glob(os.path.join(out, 'records', '*'))) == files
  assert len(files) == summary['totals']['shards'] > 1
  for path in files:
    stem = os.path.basename(path)
    rows = read_records_file(path)
    assert re.fullmatch(rf'part-[\w-]+-[0-9a-f]{{12}}\.{fmt}', stem), stem
    assert len({r['input_uri'] for r in rows}) == 1
    assert stem.startswith(f'part-{os.path.basename(rows[0]["input_uri"]).split(".")[0]}-')
    assert [r['row_number'] for r in rows] == list(range(1, len(rows) + 1))


def _multiclass_scores(shard: int, i: int) -> list[float]:
  """Three scores distinct per row and per shard, the best class moving from row to row."""
  low, mid = (shard * 50 + i + 1) / 1000, (shard * 7 + i % 5 + 1) / 100
  scores = [low, mid, round(1 - low - mid, 6)]
  return scores[i % 3:] + scores[:i % 3]


@pytest.mark.parametrize('fmt', ['avro', 'parquet', 'jsonl'])
def test_cli_multiclass_row_by_row_against_the_oracle(tmp_path, fmt):
  shards = []
  for shard in range(1, 4):
    lines = ['' if (shard + i) % 5 == 0 else
             ','.join([f't{shard}-{i}'] + [f'{v:.6E}' for v in _multiclass_scores(shard, i)])
             for i in range(12)]
    shards.append((INPUTS, lines))
  manifest = write_bp(tmp_path, 'bp-multi', shards, result_header='tag, a, b, c')
  out = str(tmp_path / 'out')
  assert run(['--manifest', manifest, '--output', out, '--format', fmt, '--block_rows', '5',
              *trusted(tmp_path)]) == 0
  records, expected = read_records(out), oracle_rows(manifest)
  assert len(records) == len(expected) == 36
  for got, want in zip(records, expected, strict=True):
    assert (got['input_uri'], got['row_number']) == (want['input_uri'], want['row_number'])
    assert [got['id'], got['name'], got['amount']] == want['values']
    if not want['result']:
      assert got['status'] == 'failed' and got['scores'] in (None, [])
      continue
    tag, *cells = want['result'].split(',')
    scores = [float(c) for c in cells]
    best = scores.index(max(scores))
    assert got['status'] == 'ok' and got['tag'] == tag
    assert [(e['label'], e['score']) for e in got['scores']] == list(zip('abc', scores,
                                                                         strict=True))
    assert (got['best_answer'], got['best_score']) == ('abc'[best], scores[best])


def test_cli_regression_row_by_row_against_the_oracle(tmp_path):
  shards = [(INPUTS, ['' if i == shard else f'{(shard * 100 + i) * (-1) ** i / 7:.6E}'
                      for i in range(12)]) for shard in range(1, 4)]
  manifest = write_bp(tmp_path, 'bp-reg', shards, result_header='score')
  out = str(tmp_path / 'out')
  assert run(['--manifest', manifest, '--output', out, '--format', 'parquet',
              *trusted(tmp_path)]) == 0
  records, expected = read_records(out), oracle_rows(manifest)
  assert len(records) == len(expected) == 36
  assert len({r['score'] for r in records if r['score'] is not None}) == 33  # all distinct
  for got, want in zip(records, expected, strict=True):
    assert (got['input_uri'], got['row_number'], got['id']) == (
        want['input_uri'], want['row_number'], want['values'][0])
    assert got['score'] == (float(want['result']) if want['result'] else None)
    assert got['status'] == ('ok' if want['result'] else 'failed')


def test_cli_count_mismatch_exit_code_and_allowance(mixed_bp, tmp_path, capsys):
  out = str(tmp_path / 'out')
  assert run(['--manifest', mixed_bp, '--output', out, '--format', 'avro',
              *trusted(tmp_path)]) == 1
  assert 'row_count_mismatch' in capsys.readouterr().out
  expected = oracle_rows_skipping(mixed_bp, 'part-2.csv')
  assert_matches_oracle(read_records(out), expected)
  # The rejected shard has no records file; the others have one each.
  names = sorted(os.listdir(os.path.join(out, 'records')))
  assert not any(name.startswith('part-part-2-') for name in names)
  assert len(names) == len({r['input_uri'] for r in expected})
  dead = read_dead_letters(out)
  assert [d['row_number'] for d in dead] == list(range(1, 13))
  assert {(d['reason'], d['input_rows'], d['result_rows']) for d in dead} == {
      ('row_count_mismatch', 12, 11)}
  summary = read_summary(out)
  shard = next(s for s in summary['shards'] if s['input_uri'].endswith('part-2.csv'))
  assert (shard['status'], shard['dead_letter_rows'], shard['result_rows']) == (
      'row_count_mismatch', 12, 11)
  # The bad shard's dead letters are one file named after it, which the summary lists; the
  # resubmit/ files are one per shard with failed observations, each with its own name.
  [dead_file] = summary['outputs']['dead_letter']
  assert os.listdir(os.path.join(out, 'dead_letter')) == [os.path.basename(dead_file)]
  assert os.path.basename(dead_file).startswith('part-part-2-')
  resubmit_files = summary['outputs']['resubmit']
  assert sorted(os.listdir(os.path.join(out, 'resubmit'))) == sorted(
      ['.schema'] * ('.schema' in os.listdir(os.path.join(out, 'resubmit'))) +
      [os.path.basename(f) for f in resubmit_files])
  assert len({os.path.basename(f) for f in resubmit_files}) == len(resubmit_files) >= 1
  assert not [d for d in os.listdir(out) if d.startswith('beam-temp')]
  out2 = str(tmp_path / 'out2')
  assert run(['--manifest', mixed_bp, '--output', out2, '--max_bad_shards', '1',
              *trusted(tmp_path)]) == 0


def oracle_rows_skipping(manifest, skipped_name):
  pairs = json.load(open(manifest))
  kept = {k: v for k, v in pairs.items() if not k.endswith(skipped_name)}
  path = manifest + '.kept'
  with open(path, 'w') as f:
    json.dump(kept, f)
  return oracle_rows(path)


def test_malformed_manifest_others_complete(good_bp, tmp_path, capsys):
  bad = tmp_path / 'bp-bad.manifest'
  bad.write_text('{"/x/a.csv": "/x/a.gz",\n "/x/b.csv" "/x/b.gz"}')
  out = str(tmp_path / 'out')
  assert run(['--manifest', good_bp, '--manifest', str(bad), '--output', out,
              *trusted(tmp_path)]) == 1
  assert_matches_oracle(read_records(out), oracle_rows(good_bp))
  summary = read_summary(out)
  problem = next(s for s in summary['shards'] if s['input_uri'] is None)
  assert str(bad) in problem['error'] and 'line 2' in problem['error']
  assert summary['totals']['bad_manifests'] == 1
  assert run(['--manifest', good_bp, '--manifest', str(bad), '--output', str(tmp_path / 'o2'),
              '--max_bad_shards', '1', *trusted(tmp_path)]) == 0


def test_locate_manifest_by_output_location(good_bp, tmp_path):
  location = os.path.dirname(os.path.dirname(good_bp)) + '//'
  out = str(tmp_path / 'out')
  assert run(['--output_location', location, '--batch_prediction_id', 'bp-good',
              '--output', out, *trusted(tmp_path)]) == 0
  assert read_records(out)[0]['batch_prediction_id'] == 'bp-good'


@pytest.mark.parametrize('args, message', [
    (['--output', 'x'], '--manifest'),
    (['--manifest', 'm', '--output_location', 'l', '--batch_prediction_id', 'b', '--output', 'x'],
     'not both'),
    (['--manifest', '/nonexistent/bp.manifest', '--output', 'x'], 'nonexistent/bp.manifest'),
    (['--output_location', '/nowhere/', '--batch_prediction_id', 'bp-9', '--output', 'x'],
     '/nowhere/batch-prediction/bp-9.manifest'),
    (['--manifest', '/nowhere/*.manifest', '--output', 'x'], 'matches no file'),
])
def test_usage_errors_exit_2_and_say_what(args, message, capsys):
  assert run(args) == 2
  assert message in capsys.readouterr().err


def test_cli_multi_processing_direct_runner(good_bp, tmp_path):
  out = str(tmp_path / 'out')
  command = [os.path.join(os.path.dirname(sys.executable), 'predjoin'), '--manifest', good_bp,
             '--output', out, '--format', 'parquet', '--block_rows', '5',
             '--direct_num_workers=2', '--direct_running_mode=multi_processing',
             *trusted(tmp_path)]
  done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=str(tmp_path))
  assert done.returncode == 0, done.stderr
  assert_matches_oracle(read_records(out), oracle_rows(good_bp))
  summary = read_summary(out)
  assert summary['identity']['holds'] and summary['totals']['failed_rows'] == 4
  # The launcher ends without interpreter teardown: what it printed still arrives, in full.
  assert f'summary: {out}/summary.json' in done.stdout
  # The workers' routine warnings (predjoin's options unknown to Beam's parser, no staging
  # directory, an empty dead-letter sink) are not shown; the run printed nothing on stderr.
  assert done.stderr == '', done.stderr
  assert [line.split(': ')[1] for line in done.stdout.splitlines()
          if line.startswith('  ')] == ['ok, in 12, joined 11, failed 1, dead-lettered 0',
                                        'ok, in 12, joined 10, failed 2, dead-lettered 0',
                                        'ok, in 12, joined 11, failed 1, dead-lettered 0']


def test_an_output_that_cannot_be_written_is_one_line_and_exit_2(good_bp, tmp_path):
  blocker = tmp_path / 'a-file'
  blocker.write_text('not a directory')
  predjoin = os.path.join(os.path.dirname(sys.executable), 'predjoin')
  done = subprocess.run([predjoin, '--manifest', good_bp, '--output', str(blocker / 'out'),
                         *trusted(tmp_path)], capture_output=True, text=True, timeout=120)
  assert done.returncode == 2, done.stderr
  assert done.stderr.startswith(f'predjoin: error: cannot write to --output {blocker}/out: ')
  assert done.stderr.count('\n') == 1 and 'Traceback' not in done.stderr


@pytest.mark.parametrize('damage', [
    lambda data: b'be' + data[2:],                 # not gzip
    lambda data: data[:len(data) // 2],            # cut short
    lambda data: data[:-8] + bytes(4) + data[-4:],  # a wrong CRC
])
def test_a_damaged_result_is_named_in_the_dead_letter_and_on_the_console(good_bp, tmp_path,
                                                                          damage, capsys):
  result = list(json.load(open(good_bp)).values())[1]
  with open(result, 'rb') as f:
    data = f.read()
  with open(result, 'wb') as f:
    f.write(damage(data))
  out = str(tmp_path / 'out')
  assert run(['--manifest', good_bp, '--output', out, *trusted(tmp_path)]) == 1
  printed = capsys.readouterr().out
  [line] = [line for line in printed.splitlines() if 'part-2.csv: error' in line]
  assert f'result unreadable: {result}: ' in line
  dead = read_dead_letters(out)
  assert len(dead) == 12 and {d['reason'] for d in dead} == {'result_unreadable'}
  assert all(d['error'].startswith(f'result unreadable: {result}: ') for d in dead)
  assert [d['input_line_number'] for d in dead] == list(range(2, 14))


def test_cli_exit_codes_survive_the_quick_exit(mixed_bp, tmp_path):
  out = str(tmp_path / 'out')
  predjoin = os.path.join(os.path.dirname(sys.executable), 'predjoin')
  usage = subprocess.run([predjoin, '--manifest', str(tmp_path / 'none.manifest'), '--output',
                          out], capture_output=True, text=True, timeout=120)
  assert usage.returncode == 2 and 'none.manifest' in usage.stderr
  bad = subprocess.run([predjoin, '--manifest', mixed_bp, '--output', out, *trusted(tmp_path)],
                       capture_output=True, text=True, timeout=300)
  assert bad.returncode == 1, bad.stderr
  assert 'predjoin: 1 bad shard(s) or manifest(s)' in bad.stderr
  assert 'row_count_mismatch' in bad.stdout


def test_bundled_samples_run_like_make_run(tmp_path):
  samples = os.path.join(ROOT, 'samples')
  for bp, rows in [('binary', 30), ('multiclass', 22), ('regression', 14)]:
    out = str(tmp_path / bp)
    assert run(['--manifest', f'{samples}/output/batch-prediction/bp-sample-{bp}.manifest',
                '--rebase_uri', f's3://predjoin-samples/={samples}/', '--output', out]) == 0
    records = read_records(out)
    assert len(records) == rows == read_summary(out)['totals']['input_rows']



def test_bundled_sagemaker_samples_run_like_make_run(tmp_path):
  samples = os.path.join(ROOT, 'samples')
  rebase = ['--rebase_uri', f's3://predjoin-samples/={samples}/']
  out = str(tmp_path / 'churn')
  assert run(['--transform_job', f'{samples}/sagemaker/bt-sample-churn.json', '--model_type',
              'binary', *rebase, '--output', out]) == 0
  records = read_records(out)
  for r in records:  # each output line is the row's id and its probability (JoinSource Input)
    with open(r['input_uri'].replace('/input/', '/output/') + '.out') as f:
      account, probability = f.read().splitlines()[r['row_number'] - 1].split(',')
    assert (r['col_1'], r['score']) == (account, float(probability))
  assert len(records) == 16 == read_summary(out)['totals']['input_rows']
  out = str(tmp_path / 'species')
  assert run(['--transform_job', f'{samples}/sagemaker/bt-sample-species.json', '--model_type',
              'multiclass', '--class_labels', 'setosa,versicolor,virginica',
              '--max_bad_shards', '1', *rebase, '--output', out]) == 0
  labels = ['setosa', 'versicolor', 'virginica']
  for r in read_records(out):
    with open(r['input_uri'].replace('/input/', '/output/') + '.out') as f:
      answer = json.loads(f.read().splitlines()[r['row_number'] - 1])
    assert [s['score'] for s in r['scores']] == answer['score']
    assert r['service_best_answer'] == labels[answer['predicted_label']]
  dead = read_dead_letters(out)
  assert {d['reason'] for d in dead} == {'output_missing'} and len(dead) == 4
  assert {os.path.basename(d['input_uri']) for d in dead} == {'flowers-3.csv'}

def test_the_direct_runner_runs_the_fn_api_runner_never_prism(good_bp, tmp_path, caplog):
  # Beam's DirectRunner would first try Prism, which downloads a binary from GitHub.
  assert isinstance(local_runner(PipelineOptions([])), FnApiRunner)
  assert isinstance(local_runner(PipelineOptions(['--runner', 'DirectRunner'])), FnApiRunner)
  assert local_runner(PipelineOptions(['--runner', 'PrismRunner'])) is None
  caplog.set_level(logging.INFO)
  assert run(['--manifest', good_bp, '--output', str(tmp_path / 'out'),
              *trusted(tmp_path)]) == 0
  logged = '\n'.join(record.getMessage() for record in caplog.records)
  assert 'prism' not in logged.lower(), logged


def test_only_the_known_harmless_worker_warnings_are_dropped():
  from pipelines.job import HarmlessWorkerWarnings

  def record(level, message):
    return logging.LogRecord('apache_beam.runners.portability.local_job_service', level, 'x', 1,
                             'Worker: severity: WARN message: "%s"', (message,), None)
  keep = HarmlessWorkerWarnings().filter
  assert not keep(record(logging.WARNING, "Discarding unparseable args: ['--cutoff=0.5']"))
  assert not keep(record(logging.WARNING, 'No semi_persistent_directory found: None'))
  assert keep(record(logging.WARNING, 'the Arrow-to-Avro encoder does not encode like'))
  assert keep(record(logging.ERROR, 'Discarding unparseable args, and then it failed'))


def test_options_views_are_made_once_and_share_the_values():
  from apache_beam.options.pipeline_options import StandardOptions, TypeOptions

  from pipelines.options import Options, PredjoinOptions
  argv = ['--runner', 'DirectRunner', '--format', 'avro', '--cutoff', '0.3', '--no_pipeline_type_check']
  options = Options(argv)
  assert options.view_as(StandardOptions) is options.view_as(StandardOptions)
  # Parsed exactly as Beam's own PipelineOptions parses them.
  assert options.get_all_options() == PipelineOptions(argv).get_all_options()
  assert options.view_as(PredjoinOptions).cutoff == 0.3
  assert options.view_as(TypeOptions).pipeline_type_check is False
  # A value set through one view is what every view, and the options, see.
  options.view_as(StandardOptions).runner = 'DataflowRunner'
  assert options.view_as(StandardOptions).runner == 'DataflowRunner'
  assert options.get_all_options()['runner'] == 'DataflowRunner'
  assert PipelineOptions(argv).view_as(StandardOptions).runner == 'DirectRunner'


def _outcome(uri, files=None, records=None, dead=0):
  from transforms.join.outcomes import ShardReport
  from transforms.report.run_summary import ShardOutcome
  return ShardOutcome(ShardReport('bp', 'm', uri, uri + '.gz'), files or {}, records, dead)


def test_collect_run_gathers_every_part_however_the_elements_are_split():
  import random

  from transforms.report.run_summary import SinkCounts, StagingJob
  from transforms.steps import CollectRun
  a, b = ('bp', 'in/a.csv'), ('bp', 'in/b.csv')
  elements = ([SinkCounts(a, (3, 1, 0))] * 5 + [SinkCounts(b, (2, 0, 1))] * 3 +
              [_outcome(u, {'records': f'r-{u}'}, (1, 0, 0)) for u in 'xyz'] +
              [_outcome('w', {'resubmit': 's1'}), StagingJob('t <- j1'), StagingJob('t <- j2')])
  fn = CollectRun()
  rng = random.Random(7)
  for _ in range(20):
    rng.shuffle(elements)
    cuts = sorted(rng.sample(range(len(elements) + 1), 3))
    parts = [elements[i:j] for i, j in zip([0, *cuts], [*cuts, len(elements)], strict=True)]
    accs = []
    for part in parts:
      acc = fn.create_accumulator()
      for element in part:
        acc = fn.add_input(acc, element)
      accs.append(acc)
    rng.shuffle(accs)
    out = fn.extract_output(fn.merge_accumulators(accs))
    assert out.sink_counts == {a: (15, 5, 0), b: (6, 0, 3)}
    assert sorted(o.report.input_uri for o in out.outcomes) == ['w', 'x', 'y', 'z']
    assert out.files('records') == ['r-x', 'r-y', 'r-z'] and out.files('resubmit') == ['s1']
    assert out.files('dead_letter') == [] and sorted(out.staging_jobs) == ['t <- j1', 't <- j2']
  with pytest.raises(TypeError):
    fn.add_input(fn.create_accumulator(), ('reports', {}))  # no untyped parts


def test_identity_check_catches_rows_a_sink_did_not_receive_or_received_without_a_report():
  # The summary checks each shard's report against what reached the record sink and the
  # shard's dead-letter file; any row missing, extra or unreported breaks the identity.
  from pipelines.job import check_counters
  from transforms.join.outcomes import ShardReport
  from transforms.report.run_summary import RunParts, ShardOutcome, SinkCounts, summarize

  def check(records, dead, sink=None):
    report = ShardReport('bp', 'm', 'in/a.csv', 'r.gz', input_rows=10, joined_rows=6,
                         failed_rows=1, dead_letter_rows=3, status='ok_with_dead_letters')
    parts = RunParts([ShardOutcome(report, {}, records, dead)])
    for part in sink or []:
      parts.add(part)
    return summarize(parts, max_bad_shards=0)

  good = check((6, 1, 0), 3)
  assert good['identity']['holds'] and good['ok']
  counters = {'rows_in': 10, 'rows_joined': 6, 'rows_failed': 1, 'rows_dead_lettered': 3,
              'records_to_sink': 7, 'dead_letters_to_sink': 3}
  assert check_counters(good, counters) == []
  assert check_counters(good, {**counters, 'dead_letters_to_sink': 2}) == [
      'counter dead_letters_to_sink = 2, summary says 3']
  short = check((6, 1, 0), 2)  # one dead letter never written
  assert not short['identity']['holds'] and not short['ok']
  assert short['identity']['problems'] == [
      'in/a.csv: the sinks received 6 joined, 1 failed, 0 not predicted and 2 dead-letter rows; '
      'the join reported 6, 1, 0, 3']
  # Records that went to a sink of their own are counted in front of it, keyed by shard.
  key = ('bp', 'in/a.csv')
  assert check(None, 3, [SinkCounts(key, (6, 1, 0))])['identity']['holds']
  stray = check(None, 3, [SinkCounts(key, (6, 1, 0)), SinkCounts(('bp', 'in/b.csv'), (1, 0, 0))])
  assert stray['identity']['problems'] == ['in/b.csv: rows reached a sink with no shard report']
