"""One shard joined by ShardJoiner over real local files: every outcome of the format's rules (docs/amazon-ml-format.md)."""

import dataclasses
import gzip
import json
import os
import zlib

import pyarrow as pa
import pytest

from tests.builders import oracle_rows, write_bp
from transforms.aml.manifest import shards_of
from transforms.io.access import AccessPolicy
from transforms.io.storage import Storage
from transforms.join import joiner, outcomes
from transforms.join.pass1 import FirstPass
from transforms.join.plan import PlanError, PlanSettings, make_plan

INPUTS = [f'{i},name {i},"{i}, more"' for i in range(1, 11)]


def _trust(manifest):
  """Local inputs sit beside out/, outside the manifest's directory: trust the test's root."""
  root = manifest.split('/out/batch-prediction/')[0]
  return AccessPolicy.create([root + '/'], ())


def _plan(manifest, block_rows=3, **settings):
  return make_plan([manifest], Storage(), PlanSettings(block_rows=block_rows, **settings),
                   _trust(manifest))


def _run(manifest, block_rows=3, **settings):
  storage = Storage()
  shard_joiner = joiner.ShardJoiner(_plan(manifest, block_rows, **settings), storage)
  records, dead, reports = [], [], []
  for shard in shards_of(open(manifest).read(), manifest):
    for item in shard_joiner.join(shard):
      if isinstance(item, pa.RecordBatch):
        records.extend(item.to_pylist())
      elif isinstance(item, outcomes.DeadLetter):
        dead.append(item.as_dict())
      elif isinstance(item, outcomes.ShardReport):
        reports.append(item)
  return records, dead, reports


@pytest.mark.parametrize('blanks', [{0}, {4}, {9}, {0, 1, 9}, set(range(10))])
def test_blank_lines_first_middle_last_never_shift(tmp_path, blanks):
  results = ['' if i in blanks else f'1,{(i + 1) / 20:.4E}' for i in range(10)]
  manifest = write_bp(tmp_path, 'bp-1', [(INPUTS, results)])
  records, dead, [report] = _run(manifest)
  expected = oracle_rows(manifest)
  assert dead == [] and len(records) == len(expected) == 10
  for got, want in zip(records, expected, strict=True):
    assert got['row_number'] == want['row_number']
    assert [got['id'], got['name'], got['amount']] == want['values']
    assert got['status'] == ('failed' if want['result'] == '' else 'ok')
    if want['result']:
      assert got['score'] == float(want['result'].split(',')[1])
  assert (report.input_rows, report.joined_rows, report.failed_rows) == (10, 10 - len(blanks),
                                                                          len(blanks))
  assert report.status == outcomes.OK


@pytest.mark.parametrize('n_results', [9, 11])
def test_row_count_mismatch_dead_letters_the_whole_shard(tmp_path, n_results):
  results = [f'1,0.{i}' for i in range(n_results)]
  manifest = write_bp(tmp_path, 'bp-1', [(INPUTS, results)])
  records, dead, [report] = _run(manifest, input_header='true')
  assert records == []
  assert [d['row_number'] for d in dead] == list(range(1, 11))
  assert {d['reason'] for d in dead} == {'row_count_mismatch'}
  assert dead[0]['input_rows'] == 10 and dead[0]['result_rows'] == n_results
  assert dead[3]['input_line'] == INPUTS[3] and dead[3]['result_line'] == results[3]
  assert report.status == outcomes.ROW_COUNT_MISMATCH and report.dead_letter_rows == 10
  assert f'{n_results} result lines' in report.error


def test_bad_result_and_input_lines_go_to_the_dead_letter_alone(tmp_path):
  inputs = INPUTS[:4] + ['5,only two'] + INPUTS[5:]
  results = ['1,0.9', '1,abc', '', '0,0.1,extra', '1,0.6', '1,0.7', '1,0.7', '0,0.2', '0,0.2',
             '']
  manifest = write_bp(tmp_path, 'bp-1', [(inputs, results)])
  records, dead, [report] = _run(manifest)
  assert [(d['row_number'], d['reason']) for d in dead] == [
      (2, 'bad_result_line'), (4, 'bad_result_line'), (5, 'bad_input_row')]
  assert 'line 3' in dead[0]['error'] and dead[0]['result_line'] == '1,abc'  # header is line 1
  assert 'line 6' in dead[2]['error'] and dead[2]['input_line'] == '5,only two'
  assert [r['row_number'] for r in records] == [1, 3, 6, 7, 8, 9, 10]
  assert report.status == outcomes.WITH_DEAD_LETTERS
  assert report.input_rows == report.joined_rows + report.failed_rows + report.dead_letter_rows


def test_missing_and_corrupt_results_reject_their_shard_only(tmp_path):
  manifest = write_bp(tmp_path, 'bp-1', [(INPUTS, ['1,0.5'] * 10)] * 3)
  pairs = json.load(open(manifest))
  results = list(pairs.values())
  os.remove(results[1])
  data = open(results[2], 'rb').read()
  open(results[2], 'wb').write(data[:-12] + bytes(12))  # damaged CRC and length trailer
  records, dead, reports = _run(manifest)
  by_input = {r.input_uri: r for r in reports}
  assert [by_input[i].status for i in pairs] == [outcomes.OK, outcomes.ERROR, outcomes.ERROR]
  assert 'no such file' in by_input[list(pairs)[1]].error
  assert results[1] in by_input[list(pairs)[1]].error
  assert len(records) == 10 and len(dead) == 20
  assert {d['reason'] for d in dead} == {'result_unreadable'}


@pytest.mark.parametrize('damage, errors', [
    (lambda d: d[:len(d) // 2] + bytes(range(40)) + d[len(d) // 2 + 40:],
     ('EOFError', 'BadGzipFile', 'error')),  # which one depends on where the bytes land
    (lambda d: d[:10] + b'\xff' * 50, ('EOFError', 'BadGzipFile', 'error')),
])
def test_a_result_corrupt_mid_stream_is_unreadable_not_short(tmp_path, damage, errors):
  # Damage inside the deflate data (not the trailer): the inflater's error, not a short count.
  rows = [f'{i % 2},0.{i:04d}' for i in range(3000)]
  inputs = [f'{i},name {i},"{i}, more"' for i in range(3000)]
  manifest = write_bp(tmp_path, 'bp-1', [(inputs, rows)] * 2)
  second = list(json.load(open(manifest)).values())[1]
  open(second, 'wb').write(damage(open(second, 'rb').read()))
  records, dead, reports = _run(manifest)
  bad = [r for r in reports if r.status == outcomes.ERROR]
  assert len(bad) == 1 and bad[0].result_uri == second and bad[0].input_rows == 3000
  # The error names the damaged file first, then the inflater's error.
  prefix = f'result unreadable: {second}: '
  assert bad[0].error.startswith(prefix), bad[0].error
  assert bad[0].error[len(prefix):].split(':')[0] in errors, bad[0].error
  assert all(d['error'] == bad[0].error for d in dead)
  assert len(records) == 3000 and len(dead) == 3000
  assert {d['reason'] for d in dead} == {'result_unreadable'}


def test_an_invalid_deflate_block_is_a_zlib_error(tmp_path):
  # The reader inflates with ISA-L; its errors reach the join as zlib's, which it handles.
  path = tmp_path / 'bad.csv.gz'
  path.write_bytes(gzip.compress(b'x\n' * 100)[:10] + b'\xff' * 50)
  with pytest.raises(zlib.error), Storage().open(str(path)) as f:
    f.read()


def test_missing_input_is_reported_with_unknown_rows(tmp_path):
  manifest = write_bp(tmp_path, 'bp-1', [(INPUTS, ['1,0.5'] * 10)] * 2)
  os.remove(list(json.load(open(manifest)))[1])
  records, dead, reports = _run(manifest)
  bad = [r for r in reports if r.status == outcomes.ERROR]
  assert len(records) == 10 and len(bad) == 1 and bad[0].input_rows is None
  assert dead[0]['reason'] == 'input_unreadable' and dead[0]['row_number'] is None


def test_result_header_that_differs_from_the_plan(tmp_path):
  manifest = write_bp(tmp_path, 'bp-1', [(INPUTS, ['1,0.5'] * 10)] * 2)
  second = list(json.load(open(manifest)).values())[1]
  open(second, 'wb').write(gzip.compress(('score\n' + '0.5\n' * 10).encode()))
  records, dead, reports = _run(manifest)
  assert len(records) == 10 and len(dead) == 10
  assert {d['reason'] for d in dead} == {'result_header_mismatch'}


def test_header_inferred_from_the_first_lines_when_no_schema(tmp_path):
  with_header = write_bp(tmp_path / 'a', 'bp-1', [(INPUTS, ['1,0.5'] * 10)])
  without = write_bp(tmp_path / 'b', 'bp-1', [(INPUTS, ['1,0.5'] * 10)], input_header=None)
  assert [r['id'] for r in _run(with_header)[0]] == [str(i) for i in range(1, 11)]
  records, _, [report] = _run(without)
  assert [r['col_1'] for r in records] == [str(i) for i in range(1, 11)]
  assert report.input_header is False


@pytest.mark.parametrize('header, results', [
    (None, 9),   # no header, one result line short: never "a header and 9 rows"
    ('id,name,amount', 11),  # a header, one line too many: never "no header and 11 rows"
])
def test_a_count_off_by_one_is_refused_never_read_as_a_header(tmp_path, header, results):
  manifest = write_bp(tmp_path, 'bp-1', [(INPUTS, [f'1,0.{i}' for i in range(results)])],
                      input_header=header)
  records, dead, [report] = _run(manifest)
  assert records == [] and report.status == outcomes.ROW_COUNT_MISMATCH
  assert report.input_rows == 10 and report.result_rows == results
  assert report.alignment == outcomes.REFUSED
  assert [d['input_line_number'] for d in dead] == [i + 1 + bool(header) for i in range(10)]
  assert 'never read as a missing or extra header' in report.error


def test_schema_gives_names_to_a_headerless_input(tmp_path):
  schema = {'version': '1.0', 'dataFileContainsHeader': False, 'attributes': [
      {'attributeName': 'id', 'attributeType': 'CATEGORICAL'},
      {'fieldName': 'full name', 'fieldType': 'TEXT'},
      {'attributeName': 'amount', 'attributeType': 'TEXT'}]}
  manifest = write_bp(tmp_path, 'bp-1', [(INPUTS, ['1,0.5'] * 10)], input_header=None,
                      schema=schema)
  records, _, _ = _run(manifest)
  assert records[0]['full_name'] == 'name 1' and records[9]['amount'] == '10, more'


def _multiclass_line(i: int) -> str:
  """Row i's scores: distinct per row, the best class moving from row to row."""
  a = (i + 1) / 100
  return f't{i},{a:.4f},{1 - a:.4f}' if i % 3 else f't{i},{1 - a:.4f},{a:.4f}'


def test_multiclass_shards_by_value_row_by_row(tmp_path):
  lines = [_multiclass_line(i) for i in range(9)] + ['']
  multi = write_bp(tmp_path / 'm', 'bp-m', [(INPUTS, lines)], result_header='tag, 1_star, 2_stars')
  records, dead, _ = _run(multi, min_score=0.95)
  assert dead == [] and len(records) == 10
  for i, (record, line) in enumerate(zip(records, lines, strict=True)):
    assert record['row_number'] == i + 1 and record['id'] == str(i + 1)
    if not line:
      assert record['status'] == 'failed' and record['scores'] is None
      continue
    tag, one, two = line.split(',')
    scores = [float(one), float(two)]
    assert record['tag'] == tag
    assert record['scores'] == [{'label': '1_star', 'score': scores[0]},
                                {'label': '2_stars', 'score': scores[1]}]
    best = max(range(2), key=scores.__getitem__)
    assert record['best_score'] == scores[best]
    assert record['unknown'] is (scores[best] < 0.95)
    assert record['best_answer'] == (None if scores[best] < 0.95 else ['1_star', '2_stars'][best])


def test_regression_shards_by_value_row_by_row(tmp_path):
  values = [f'{(-1) ** i * (i + 1) * 1.5:.6E}' for i in range(10)]
  regression = write_bp(tmp_path / 'r', 'bp-r', [(INPUTS, values)], result_header='score')
  records = _run(regression)[0]
  assert [(r['id'], r['score']) for r in records] == [
      (str(i + 1), float(v)) for i, v in enumerate(values)]


def test_plan_error_lists_every_problem(tmp_path):
  manifest = write_bp(tmp_path, 'bp-1', [(INPUTS, ['1,0.5'] * 10)])
  os.remove(list(json.load(open(manifest)).values())[0])
  with pytest.raises(PlanError, match='no such file'):
    make_plan([manifest, str(tmp_path / 'missing.manifest')], Storage(),
              access_policy=_trust(manifest))


def test_memory_is_bounded_by_the_block(tmp_path):
  rows = 5000
  manifest = write_bp(tmp_path, 'bp-1', [([f'{i},n,{i}' for i in range(rows)],
                                          ['1,0.5'] * rows)])
  storage = Storage()
  plan = _plan(manifest, block_rows=128)
  batches = [item for item in joiner.ShardJoiner(plan, storage).join(
      shards_of(open(manifest).read(), manifest)[0]) if isinstance(item, pa.RecordBatch)]
  assert max(b.num_rows for b in batches) == 128
  assert sum(b.num_rows for b in batches) == rows
  assert all(isinstance(b, pa.RecordBatch) for b in batches)


def test_a_result_kept_from_pass_1_joins_exactly_like_one_read_again(tmp_path):
  # Pass 2 reads the result lines pass 1 kept (JoinPlan.result_keep_bytes) or reads the file
  # again: blank, bad, CRLF and unterminated last lines come out the same either way.
  inputs = [f'{i},name {i},{i}.5' for i in range(1, 41)]
  results = [f'1,{i / 50:.4E}' for i in range(40)]
  results[0] = results[17] = results[38] = ''
  results[9] = 'not,a,result'
  results[22] = results[22] + '\r'
  manifest = write_bp(tmp_path, 'bp-1', [(inputs, results)])
  [result_file] = json.loads(open(manifest).read()).values()
  with gzip.open(result_file, 'rb') as f:
    data = f.read()
  assert data.endswith(b'\n')
  with gzip.open(result_file, 'wb') as f:
    f.write(data[:-1])  # the last line unterminated
  storage = Storage()
  shard = shards_of(open(manifest).read(), manifest)[0]
  base = _plan(manifest, block_rows=7)
  outputs = []
  for keep, kept in ((1 << 20, data[data.index(b'\n') + 1:-1]), (len(data) // 2, None), (0, None)):
    shard_joiner = joiner.ShardJoiner(dataclasses.replace(base, result_keep_bytes=keep), storage)
    assert FirstPass(shard_joiner.plan, storage).count_result(shard) == (40, kept)
    outputs.append([item.to_pylist() if isinstance(item, pa.RecordBatch) else
                    item.as_dict() if isinstance(item, outcomes.ShardReport) else item
                    for item in shard_joiner.join(shard)])
  assert outputs[0] == outputs[1] == outputs[2]
  report = outputs[0][-1]
  assert (report['input_rows'], report['joined_rows'], report['failed_rows'],
          report['dead_letter_rows']) == (40, 36, 3, 1)
