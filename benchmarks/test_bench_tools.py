"""Tests of the benchmark tools on tiny generated data: the generator is deterministic, the
careful peers pass the checker and the naive ones fail it (so the checker can fail)."""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import json
import os
import subprocess
import sys

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from benchmarks import check, generate
from benchmarks.run import FULL, TOOLS, peers_python

CAREFUL = [t for t in TOOLS if t.kind == 'careful' and t.source == 'aml']

PEERS = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'peers')
SHARDS, ROWS, RATE = 3, 300, 0.08


def _digest(path):
  with open(path, 'rb') as f:
    return hashlib.sha256(f.read()).hexdigest()


@pytest.fixture(scope='module')
def data(tmp_path_factory):
  """One small batch prediction per model type: {model: (directory, truth)}."""
  out = {}
  for seed, model in enumerate(generate.MODELS, start=1):
    d = str(tmp_path_factory.mktemp(model))
    out[model] = (d, generate.generate(d, SHARDS, ROWS, model, RATE, seed, classes=4))
  return out


@pytest.fixture(scope='module')
def peers():
  """The peers' interpreter; ``make test`` names it (PREDJOIN_PEERS_PYTHON), and then it must
  have every peer's library. Run without it, the peer tests are skipped when they are missing."""
  python = peers_python()
  modules = 'pandas, duckdb, pyarrow, polars, fastavro'
  missing = subprocess.run([python, '-c', f'import {modules}'],
                           capture_output=True, text=True).returncode
  if missing and not os.environ.get('PREDJOIN_PEERS_PYTHON'):
    pytest.skip(f'{modules} are not all installed (make test builds .venv-peers)')
  assert not missing, f'{python} cannot import {modules}'
  return python


def _run_peer(python, name, truth, out):
  proc = subprocess.run([python, os.path.join(PEERS, name + '.py'), truth['manifest'], out],
                        capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr[-2000:]


def test_predjoins_environment_has_no_pandas():
  # Beam imports pandas at start-up when it is installed (0.4-0.5 s per process); predjoin's
  # dependencies must not bring it, and the benchmark measures predjoin without it.
  assert importlib.util.find_spec('pandas') is None


def test_generator_is_deterministic(tmp_path):
  a, b, c = (str(tmp_path / n) for n in 'abc')
  ta = generate.generate(a, 2, 200, 'multiclass', 0.1, seed=7)
  tb = generate.generate(b, 2, 200, 'multiclass', 0.1, seed=7)
  tc = generate.generate(c, 2, 200, 'multiclass', 0.1, seed=8)
  for sa, sb, sc in zip(ta['shards'], tb['shards'], tc['shards'], strict=True):
    assert _digest(sa['input']) == _digest(sb['input'])
    assert _digest(sa['result']) == _digest(sb['result'])
    assert _digest(sa['result']) != _digest(sc['result'])
  # Manifest and truth differ only by the directory they name.
  for rel in ('truth.json', os.path.join('batch-prediction', 'bp-multiclass-s7.manifest')):
    with open(os.path.join(a, rel)) as fa, open(os.path.join(b, rel)) as fb:
      assert fa.read().replace(a, 'D') == fb.read().replace(b, 'D')


def test_generated_layout(data):
  d, truth = data['binary']
  with open(truth['manifest']) as f:
    manifest = json.load(f)
  assert len(manifest) == SHARDS
  for shard in truth['shards']:
    assert manifest[shard['input']] == shard['result']
    with open(shard['input']) as f:
      lines = f.read().splitlines()
    assert lines[0] == ','.join(generate.INPUT_COLUMNS[i][0] for i in range(12))
    assert len(lines) == ROWS + 1
    with gzip.open(shard['result'], 'rt') as f:
      text = f.read()
    body = text.split('\n')[1:-1]  # header; one line per row; the file ends with a newline
    assert text.startswith('bestAnswer,score\n') and text.endswith('\n')
    assert len(body) == ROWS
    assert sum(1 for line in body if not line) == shard['failed'] > 0
    for line in body:
      if line:
        answer, score = line.split(',')
        assert (float(score) >= 0.5) == (answer == '1')
  # The awkward places: a blank last line in shard 0, a blank first data line in shard 1.
  assert truth['shards'][0]['samples'][str(ROWS)] == ''
  assert truth['shards'][1]['samples']['1'] == ''
  mc = data['multiclass'][1]
  assert mc['result_header'] == '1_star, 2_stars, 3_stars, 4_stars'


@pytest.mark.parametrize('model', generate.MODELS)
@pytest.mark.parametrize('tool', CAREFUL, ids=[t.name for t in CAREFUL])
def test_careful_peers_are_correct(data, peers, tmp_path, tool, model):
  # Run as the benchmark runs them: each writes the format it is compared in, one file a shard.
  d, truth = data[model]
  out = str(tmp_path / 'out')
  proc = subprocess.run(tool.command(truth, out, 'predjoin', d), capture_output=True, text=True,
                        timeout=120)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert sorted(os.listdir(out)) == [f'data-{i:03d}.{tool.fmt}' for i in range(SHARDS)]
  report = check.check(d, out)
  assert report['correct'], report['reason']
  assert report['rows'] == SHARDS * ROWS


def test_every_format_has_careful_peers_writing_it():
  formats = {}
  for tool in CAREFUL:
    formats.setdefault(tool.fmt, set()).add(tool.name)
  assert formats == {
      'parquet': {'pandas_careful', 'duckdb_careful', 'pyarrow_careful'},
      'jsonl': {'pandas_careful_jsonl', 'duckdb_careful_jsonl', 'polars_careful_jsonl'},
      'avro': {'pandas_careful_avro', 'polars_careful_avro'}}
  assert {t.fmt for t in TOOLS if t.kind == 'naive'} == {'parquet'}


def test_a_rounded_score_fails_the_checker(data, peers, tmp_path):
  # pandas' to_json rounds to 10 decimal places unless told otherwise: 8.173957e-06 would come
  # out as 8.174e-06. The checker must see such a score as wrong (the JSON Lines peer asks for
  # 15 places).
  d, truth = data['binary']
  out = tmp_path / 'out'
  _run_peer(peers, 'pandas_careful', truth, str(out))
  table = pq.read_table(out / 'data-000.parquet')
  score = pc.round(table.column('score'), 4)
  table = table.set_column(table.schema.get_field_index('score'), 'score', score)
  pq.write_table(table, out / 'data-000.parquet')
  report = check.check(d, str(out))
  assert not report['correct'] and 'score' in report['reason']


@pytest.mark.parametrize('peer', ['pandas_naive', 'duckdb_naive'])
def test_naive_peers_are_flagged(data, peers, tmp_path, peer):
  d, truth = data['binary']
  _run_peer(peers, peer, truth, str(tmp_path))
  report = check.check(d, str(tmp_path))
  assert not report['correct']
  assert 'sampled rows differ' in report['reason']


def _predjoin_style(data, tmp_path):
  """pyarrow_careful's output reshaped like predjoin's records: input_uri, row_number, status."""
  d, truth = data
  peer_out = str(tmp_path / 'peer')
  _run_peer(peers_python(), 'pyarrow_careful', truth, peer_out)
  tables = []
  for shard in truth['shards']:
    t = pq.read_table(os.path.join(peer_out, shard['name'] + '.parquet'))
    n = t.num_rows
    status = pc.if_else(pc.is_null(t.column('score')), 'failed', 'ok')
    t = t.append_column('input_uri', pa.array([shard['input']] * n))
    t = t.append_column('row_number', pa.array(range(1, n + 1), pa.int64()))
    tables.append(t.append_column('status', status))
  # Reverse the row order: predjoin's records carry their position, not their order.
  table = pa.concat_tables(tables)
  return table.take(pa.array(range(table.num_rows - 1, -1, -1)))


def test_checker_on_predjoin_style_records(data, tmp_path):
  d, _ = data['binary']
  table = _predjoin_style(data['binary'], tmp_path)
  good = tmp_path / 'good' / 'records'
  good.mkdir(parents=True)
  with open(good / 'records-00000-of-00001.jsonl', 'w') as f:
    for row in table.to_pylist():
      row['signup_date'] = str(row['signup_date'])
      f.write(json.dumps(row) + '\n')
  report = check.check(d, str(tmp_path / 'good'))
  assert report['correct'], report['reason']
  assert report['mode'] == 'input_uri + row_number'

  # One wrong status is caught by the failed count, one moved score by the samples.
  status = table.column('status').to_pylist()
  status[status.index('failed')] = 'ok'
  bad = table.set_column(table.schema.get_field_index('status'), 'status', pa.array(status))
  (tmp_path / 'bad1' / 'records').mkdir(parents=True)
  pq.write_table(bad, tmp_path / 'bad1' / 'records' / 'part.parquet')
  report = check.check(d, str(tmp_path / 'bad1'))
  assert not report['correct'] and 'status failed' in report['reason']

  (tmp_path / 'bad2' / 'records').mkdir(parents=True)
  pq.write_table(table.slice(1), tmp_path / 'bad2' / 'records' / 'part.parquet')
  report = check.check(d, str(tmp_path / 'bad2'))
  assert not report['correct'] and 'rows, expected' in report['reason']


def test_checker_reads_avro(data, tmp_path):
  fastavro = pytest.importorskip('fastavro')
  d, _ = data['regression']
  table = _predjoin_style(data['regression'], tmp_path).select(
      ['input_uri', 'row_number', 'status', 'score', 'customer_id'])
  schema = {'type': 'record', 'name': 'Record', 'fields': [
      {'name': 'input_uri', 'type': 'string'}, {'name': 'row_number', 'type': 'long'},
      {'name': 'status', 'type': 'string'}, {'name': 'score', 'type': ['null', 'double']},
      {'name': 'customer_id', 'type': 'long'}]}
  (tmp_path / 'out' / 'records').mkdir(parents=True)
  with open(tmp_path / 'out' / 'records' / 'part.avro', 'wb') as f:
    fastavro.writer(f, schema, table.to_pylist())
  report = check.check(d, str(tmp_path / 'out'))
  assert report['correct'], report['reason']


def _row(role, tool, kind, rate, correct=True, rss=300.0, fmt='parquet', rows=8_000_000,
         cpu=10.0, shards=8):
  return {'role': role, 'dataset': role, 'tool': tool, 'kind': kind, 'status': 'ran',
          'format': fmt, 'correct': correct, 'rows_per_s': rate, 'max_process_rss_mb': rss,
          'peak_tree_rss_mb': rss * 2, 'reason': '' if correct else 'row 3 shifted',
          'rows': rows, 'cpu': cpu, 'shards': shards}


def test_targets_judge_each_format_against_the_peers_writing_it():
  from benchmarks.run import targets
  rows = [
      _row('main', 'predjoin-parquet', 'predjoin', 1.3e6, cpu=11.0),
      _row('main', 'predjoin-avro', 'predjoin', 1.0e6, fmt='avro'),
      _row('main', 'predjoin-jsonl', 'predjoin', 0.5e6, fmt='jsonl'),
      _row('main', 'pandas_careful', 'careful', 1.2e6, cpu=8.8),
      _row('main', 'duckdb_careful', 'careful', 0.9e6, cpu=4.0),  # less CPU, but slower
      _row('main', 'pandas_naive', 'naive', 9.9e6, correct=False),  # fast but wrong: ignored
      _row('main', 'polars_careful_avro', 'careful', 1.1e6, fmt='avro'),
      _row('main', 'duckdb_careful_jsonl', 'careful', 0.4e6, fmt='jsonl'),
      _row('main', 'polars_careful_jsonl', 'careful', 2.0e6, correct=False, fmt='jsonl'),
      _row('multiclass', 'predjoin-parquet', 'predjoin', 0.3e6),
      _row('multiclass', 'duckdb_careful', 'careful', 0.6e6),
  ]
  goals = {g['target']: g for g in targets(rows)}
  main = goals['predjoin-parquet rows/s vs fastest correct parquet peer (8 x 1M binary)']
  assert main['verdict'] == 'PASS' and main['value'] == pytest.approx(1.3 / 1.2)
  multi = goals['predjoin-parquet rows/s vs fastest correct parquet peer (4 x 250k multiclass)']
  assert multi['verdict'] == 'FAIL' and multi['value'] == pytest.approx(0.5)
  assert 'duckdb_careful' in multi['detail']
  # Avro against the Avro peer (not pandas' faster Parquet), JSON Lines against the correct
  # JSON Lines peer (not the faster wrong one).
  avro = goals['predjoin-avro rows/s vs fastest correct avro peer (8 x 1M binary)']
  assert avro['verdict'] == 'FAIL' and avro['value'] == pytest.approx(1.0 / 1.1)
  jsonl = goals['predjoin-jsonl rows/s vs fastest correct jsonl peer (8 x 1M binary)']
  assert jsonl['verdict'] == 'PASS' and jsonl['value'] == pytest.approx(0.5 / 0.4)
  assert 'duckdb_careful_jsonl' in jsonl['detail']
  # CPU per million rows against the fastest peer's (pandas), not the thriftiest.
  cpu = goals['predjoin-parquet CPU s per M rows vs fastest correct parquet peer (8 x 1M binary)']
  assert cpu['verdict'] == 'FAIL' and cpu['value'] == pytest.approx(11.0 / 8.8)
  for name in ('predjoin-avro rows/s vs fastest correct avro peer (4 x 250k multiclass)',
               'predjoin-parquet rows/s vs fastest correct parquet peer (1 x 16M binary)',
               '2 workers vs 1 worker rows/s (1 x 16M binary, one shard)',
               'CPU s per shard, tiny shards (50 rows) read from S3'):
    assert goals[name]['verdict'] == 'N/A'  # not run: N/A, not a pass


def test_targets_on_one_large_shard_and_on_tiny_shards():
  from benchmarks.run import targets
  rows = [
      _row('big', 'predjoin-parquet', 'predjoin', 1.8e6, rss=260, rows=16_000_000, shards=1),
      _row('big', 'predjoin-parquet-1w', 'predjoin', 1.0e6, rss=380, rows=16_000_000, shards=1),
      _row('mem-small', 'predjoin-parquet', 'predjoin', 0.4e6, rss=240, rows=1_000_000,
           shards=1),
      _row('tiny-s3', 'predjoin-parquet', 'predjoin', 2e3, cpu=8.0, rows=10_000, shards=200),
      _row('tiny-s3-one', 'predjoin-parquet', 'predjoin', 20, cpu=4.0, rows=50, shards=1),
  ]
  goals = {g['target']: g for g in targets(rows)}
  scale = goals['2 workers vs 1 worker rows/s (1 x 16M binary, one shard)']
  assert scale['verdict'] == 'PASS' and scale['value'] == pytest.approx(1.8)
  memory = goals['1 x 16M vs 1 x 1M: peak RSS ratio (largest process, predjoin-parquet)']
  assert memory['verdict'] == 'PASS' and memory['value'] == pytest.approx(260 / 240)
  worker = goals['peak RSS per worker: largest process of any multi-processing predjoin run (MB)']
  assert worker['value'] == 380 and worker['verdict'] == 'PASS'
  tiny = goals['CPU s per shard, tiny shards (50 rows) read from S3']
  assert tiny['verdict'] == 'PASS' and tiny['value'] == pytest.approx(0.04)
  assert f'{4 / 199:.3f} s per shard beyond the first' in tiny['detail']
  rows[3]['cpu'] = 12.0
  assert {g['target']: g for g in targets(rows)}[tiny['target']]['verdict'] == 'FAIL'


def test_projections_follow_the_formula():
  from benchmarks.run import STARTUP_SECONDS, projection_lines, projections
  rows = [_row('main', 'predjoin-parquet', 'predjoin', 1e6, cpu=10.0),  # 800k rows per CPU-s
          _row('big', 'predjoin-parquet', 'predjoin', 1e6, cpu=32.0, rows=16_000_000)]  # 500k
  proj = projections(rows)
  cases = {(c['layout'], c['workers']): c for c in proj['cases']}
  assert len(cases) == 6
  # 100 shards of 1M rows at 800k rows per CPU-second: 1.25 s each.
  assert cases['100 shards', 1]['wall_s'] == pytest.approx(125.0)
  assert cases['100 shards', 1]['vcpu_hours'] == pytest.approx(125.0 / 3600)
  assert cases['100 shards', 8]['wall_s'] == pytest.approx(13 * 1.25)  # ceil(100 / 8) rounds
  assert cases['100 shards', 8]['vcpu_hours'] == pytest.approx(8 * 13 * 1.25 / 3600)
  assert cases['100 shards', 64]['wall_s'] == pytest.approx(2 * 1.25)
  # One shard of 100M rows: 100 ranges of 1M rows at 500k rows per CPU-second.
  one = cases['one shard', 64]
  assert one['units'] == 100 and one['wall_s'] == pytest.approx(2 * 2.0)
  assert one['vcpu_hours_with_startup'] == pytest.approx(64 * (4.0 + STARTUP_SECONDS) / 3600)
  text = '\n'.join(projection_lines(proj))
  assert 'ceil(units / busy)' in text and '| one shard | 100 | 64 |' in text
  assert projections([]) is None


def test_the_data_sets_the_issue_names():
  from benchmarks.run import QUICK
  sets = {d.role: d for d in FULL}
  assert (sets['big'].shards, sets['big'].rows) == (1, 16_000_000)
  assert (sets['mem-large'].shards, sets['mem-large'].rows) == (1, 4_000_000)
  assert (sets['tiny-s3'].shards, sets['tiny-s3'].rows, sets['tiny-s3'].storage) == (200, 50,
                                                                                    's3')
  # On the 16M shard: the three formats, 2 and 1 workers, and a peer for every format.
  by_name = {t.name: t for t in TOOLS}
  big = [by_name[n] for n in sets['big'].tools]
  assert {t.fmt for t in big if t.kind == 'predjoin'} == {'parquet', 'avro', 'jsonl'}
  assert {t.fmt for t in big if t.kind == 'careful'} == {'parquet', 'avro', 'jsonl'}
  assert {t.workers for t in big if t.kind == 'predjoin'} == {1, 2}
  assert {d.role for d in QUICK} == set(sets)


def test_predjoin_reads_the_tiny_shards_from_the_s3_server(tmp_path):
  pytest.importorskip('moto')
  from benchmarks.run import S3Server
  d = str(tmp_path / 'tiny')
  truth = generate.generate(d, 3, 50, 'binary', RATE, 9)
  server = S3Server()
  try:
    remote = server.upload('tiny', d, truth)
    assert remote.manifest.startswith('s3://') and remote.prefix == f's3://{S3Server.BUCKET}/tiny/'
    tool = next(t for t in TOOLS if t.name == 'predjoin-parquet')
    predjoin = os.path.join(os.path.dirname(sys.executable), 'predjoin')
    out = str(tmp_path / 'out')
    command = tool.command(truth, out, predjoin, d, remote)
    assert truth['manifest'] not in command and remote.manifest in command
    proc = subprocess.run(command, capture_output=True, text=True, timeout=300, env=remote.env)
    assert proc.returncode == 0, proc.stderr[-2000:]
  finally:
    server.stop()
  report = check.check(d, out)
  assert report['correct'] and report['mode'] == 'input_uri + row_number', report
  assert report['rows'] == 150
  uris = pq.read_table(os.path.join(out, 'records'), columns=['input_uri']).column('input_uri')
  assert set(uris.to_pylist()) == {f'{remote.prefix}input/data-{i:03d}.csv' for i in range(3)}


@pytest.fixture(scope='module')
def sagemaker_data(tmp_path_factory):
  """A small binary data set with its SageMaker transform job view."""
  d = str(tmp_path_factory.mktemp('sagemaker'))
  return d, generate.generate(d, SHARDS, ROWS, 'binary', RATE, 7, sagemaker=True)


def test_the_sagemaker_view_holds_the_same_predictions(sagemaker_data):
  d, truth = sagemaker_data
  with open(truth['transform_job']) as f:
    job = json.load(f)
  assert job['TransformInput']['SplitType'] == 'Line'
  for shard in truth['shards']:
    with open(shard['input'], 'rb') as f:
      f.readline()  # the batch prediction's inputs have a header line; the job's have none
      assert f.read() == open(shard['transform_input'], 'rb').read()
    out = os.path.join(d, 'transform', 'output', shard['name'] + '.csv.out')
    with gzip.open(shard['result'], 'rt') as f, open(out) as o:
      lines = f.read().split('\n')[1:]
      assert [line.split(',')[-1] if line else '' for line in lines] == o.read().split('\n')


def test_sagemaker_peers_and_predjoin_on_the_transform_job(sagemaker_data, peers, tmp_path):
  from benchmarks.run import TOOLS, peers_python
  d, truth = sagemaker_data
  for name in ('pandas_sagemaker_careful', 'pandas_sagemaker_naive'):
    out = str(tmp_path / name)
    proc = subprocess.run([peers_python(), os.path.join(PEERS, name + '.py'),
                           truth['transform_job'], out], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = check.check(d, out)
    assert report['correct'] == (name == 'pandas_sagemaker_careful'), report['reason']
  # predjoin, as the benchmark runs it on this data set
  tool = next(t for t in TOOLS if t.name == 'predjoin-parquet-1w')
  predjoin = os.path.join(os.path.dirname(sys.executable), 'predjoin')
  out = str(tmp_path / 'predjoin')
  proc = subprocess.run(tool.command(truth, out, predjoin, d), capture_output=True, text=True,
                        timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  report = check.check(d, out)
  assert report['correct'] and report['mode'] == 'input_uri + row_number', report


def test_the_dask_tool_runs_predjoin_on_dask_on_the_main_data_set_only():
  (dask,) = [t for t in TOOLS if t.runner == 'DaskRunner']
  command = dask.command({'manifest': 'm.manifest'}, 'out', '/venv/bin/predjoin', '/data/main/')
  assert command[0] == '/venv/bin/predjoin' and command[-2:] == ['--runner', 'DaskRunner']
  assert not [arg for arg in command if arg.startswith('--direct_')]
  direct = next(t for t in TOOLS if t.name == 'predjoin-parquet').command(
      {'manifest': 'm.manifest'}, 'out', '/venv/bin/predjoin', '/data/main/')
  assert command[:-2] == direct[:len(command) - 2]  # the same job, on another runner
  main = next(d for d in FULL if d.role == 'main')
  assert (main.shards, main.rows) == (8, 1_000_000) and dask.roles == ('main',)


def test_the_checker_reads_json_lines_whose_types_change_after_the_inferred_part(tmp_path):
  # Types come from the first 10,000 lines; a later wider value must not be lost or nulled.
  path = tmp_path / 'part.jsonl'
  with open(path, 'w') as f:
    for _ in range(10_000):
      f.write(json.dumps({'score': 1, 'best_answer': None, 'other': 1}) + '\n')
    f.write(json.dumps({'score': 0.5, 'best_answer': 'x', 'other': 2}) + '\n')
  (table,) = check.read_output([str(path)], {'score', 'best_answer'})
  assert table.column_names == ['score', 'best_answer']
  assert table.slice(10_000).to_pylist() == [{'score': 0.5, 'best_answer': 'x'}]
