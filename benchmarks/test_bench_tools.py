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
  have pandas and DuckDB. Run without it, the peer tests are skipped when they are missing."""
  python = peers_python()
  missing = subprocess.run([python, '-c', 'import pandas, duckdb, pyarrow'],
                           capture_output=True, text=True).returncode
  if missing and not os.environ.get('PREDJOIN_PEERS_PYTHON'):
    pytest.skip('pandas and DuckDB are not installed (make test builds .venv-peers)')
  assert not missing, f'{python} cannot import pandas, duckdb and pyarrow'
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
@pytest.mark.parametrize('peer', ['pandas_careful', 'duckdb_careful', 'pyarrow_careful'])
def test_careful_peers_are_correct(data, peers, tmp_path, peer, model):
  d, truth = data[model]
  _run_peer(peers, peer, truth, str(tmp_path))
  report = check.check(d, str(tmp_path))
  assert report['correct'], report['reason']
  assert report['rows'] == SHARDS * ROWS


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


def _row(role, tool, kind, rate, correct=True, rss=300.0):
  return {'role': role, 'dataset': role, 'tool': tool, 'kind': kind, 'status': 'ran',
          'correct': correct, 'rows_per_s': rate, 'max_process_rss_mb': rss,
          'peak_tree_rss_mb': rss * 2, 'reason': '' if correct else 'row 3 shifted'}


def test_targets_judge_parquet_on_the_multiclass_data_set_against_its_own_peers():
  from benchmarks.run import targets
  rows = [
      _row('main', 'predjoin-parquet', 'predjoin', 1.3e6),
      _row('main', 'predjoin-avro', 'predjoin', 1.0e6),
      _row('main', 'predjoin-jsonl', 'predjoin', 0.5e6),
      _row('main', 'pandas_careful', 'careful', 1.2e6),
      _row('main', 'pandas_naive', 'naive', 9.9e6, correct=False),  # fast but wrong: ignored
      _row('multiclass', 'predjoin-parquet', 'predjoin', 0.3e6),
      _row('multiclass', 'duckdb_careful', 'careful', 0.6e6),
  ]
  goals = {g['target']: g for g in targets(rows)}
  main = goals['predjoin-parquet rows/s vs fastest correct peer']
  assert main['verdict'] == 'PASS' and main['value'] == pytest.approx(1.3 / 1.2)
  multi = goals['predjoin-parquet rows/s vs fastest correct peer (multiclass)']
  assert multi['verdict'] == 'FAIL' and multi['value'] == pytest.approx(0.5)
  assert 'duckdb_careful' in multi['detail']
  assert goals['predjoin-avro rows/s vs fastest correct peer']['verdict'] == 'PASS'
  assert goals['predjoin-jsonl rows/s vs fastest correct peer']['verdict'] == 'FAIL'
  rows = [r for r in rows if r['role'] != 'multiclass']  # not run: N/A, not a pass
  goals = {g['target']: g for g in targets(rows)}
  assert goals['predjoin-parquet rows/s vs fastest correct peer (multiclass)']['verdict'] == 'N/A'


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
