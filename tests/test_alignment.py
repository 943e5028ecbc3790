"""Alignment checks (tag, trueLabel) and datasource slices: pure functions and the whole job."""

import numpy as np
import pyarrow as pa
import pytest

from tests import verify_data as vd
from transforms.aml import slices
from transforms.join import align

SCHEMA = vd.schema(vd.CUSTOMERS, row_id='customerId', target='willRespond')


def _check(result_column, attribute_type):
  return align.Check(result_column, 0, 'col', attribute_type)


@pytest.mark.parametrize('attribute_type, result, inputs, expected', [
    ('CATEGORICAL', ['a', ' b', 'c', 'x'], ['a', 'b ', 'c', 'y'], [0, 0, 0, 1]),
    ('BINARY', ['1', '0', '1', '0', '1'], ['yes', ' N ', 'TRUE', 'true', 'maybe'], [0, 0, 0, 1, 1]),
    ('NUMERIC', ['1', '2.50', '3', '1E1'], ['1.0', '2.5', '4', '10'], [0, 0, 1, 0]),
    # Ids a double cannot tell apart (2**53 + 1 rounds to 2**53) are compared exactly.
    ('NUMERIC', ['9007199254740993', '9007199254740993', '-0.0', 'nan'],
     ['9007199254740992', '9007199254740993.0', '0', 'nan'], [1, 0, 0, 0]),
])
def test_mismatches_compare_by_meaning(attribute_type, result, inputs, expected):
  valid = np.ones(len(result), dtype=bool)
  got = align.mismatches(_check('tag', attribute_type), pa.array(result), pa.array(inputs), valid)
  assert got.astype(int).tolist() == expected
  valid[np.flatnonzero(expected)] = False
  assert not align.mismatches(_check('tag', attribute_type), pa.array(result), pa.array(inputs),
                              valid).any()


def test_checks_apply_only_when_the_schema_and_the_input_allow():
  from transforms.aml import result_header, schema_file
  schema = schema_file.parse_schema(__import__('json').dumps(SCHEMA), 's')
  both = result_header.detect_layout(('tag', 'trueLabel', 'bestAnswer', 'score'))
  names = [n for n, _ in vd.CUSTOMERS]
  assert [c.name for c in align.plan_checks(both, schema, names)] == [
      'tag = customerId', 'trueLabel = willRespond']
  assert align.plan_checks(result_header.detect_layout(('bestAnswer', 'score')), schema, names) == ()
  assert align.plan_checks(both, schema, names[:-1])[0].name == 'tag = customerId'
  assert align.plan_checks(both, None, names) == ()


def _bp(tmp_path, shards, tag=True, true_label=True):
  return vd.write(tmp_path, 'bp-a', shards, input_header=vd.CUSTOMER_HEADER,
                  result_header=vd.binary_header(tag, true_label), schema=SCHEMA)


def test_aligned_shards_pass_every_check(tmp_path):
  manifest = _bp(tmp_path, [(vd.customers(20), vd.binary_results(20, blanks={3}))] * 2)
  code, out = vd.cli(tmp_path, manifest, '--block_rows', '6')
  records, dead, summary = vd.results_of(out)
  assert code == 0 and dead == [] and len(records) == 40
  assert summary['alignment'] == {'checks': ['tag = customerId', 'trueLabel = willRespond'],
                                  'shards_checked': 2, 'shards_verified': 2,
                                  'shards_positional': 0, 'shards_refused': 0,
                                  'misaligned_shards': 0, 'misaligned': []}
  assert [s['alignment'] for s in summary['shards']] == ['verified', 'verified']
  assert all(s['checks'] == summary['alignment']['checks'] for s in summary['shards'])


@pytest.mark.parametrize('tag, true_label', [(True, False), (False, True)])
def test_first_mismatch_stops_the_shard_and_nothing_of_it_is_joined(tmp_path, tag, true_label):
  good = (vd.customers(20), vd.binary_results(20, tag=tag, true_label=true_label))
  results = vd.binary_results(20, tag=tag, true_label=true_label, blanks={14})
  results[14:] = vd.binary_results(5, start=15, tag=tag, true_label=true_label) + ['']  # shifted
  manifest = _bp(tmp_path, [good, (vd.customers(20), results)], tag, true_label)
  code, out = vd.cli(tmp_path, manifest, '--block_rows', '4')
  records, dead, summary = vd.results_of(out)
  assert code == 1  # a misaligned shard is a bad shard
  assert len(records) == 20 and {r['input_uri'] for r in records} == {records[0]['input_uri']}
  assert [d['row_number'] for d in dead] == list(range(1, 21))
  assert {d['reason'] for d in dead} == {'misaligned'}
  first = dead[0]
  assert first['misaligned_row'] == 15 and first['row_number'] == 1
  if tag:
    assert (first['check'], first['input_value'], first['result_value']) == (
        'tag = customerId', 'C14', 'C15')
  else:
    assert first['check'] == 'trueLabel = willRespond'
    assert (first['input_value'], first['result_value']) == ('FALSE', '1')
  assert 'row 15' in first['error'] and 'line 16' in first['error']
  assert dead[16]['result_line'] == results[16] and dead[16]['input_line'] == vd.customers(20)[16]
  assert summary['totals']['misaligned_shards'] == 1
  assert summary['alignment']['misaligned'][0]['row_number'] == 15
  shard = next(s for s in summary['shards'] if s['status'] == 'misaligned')
  assert shard['dead_letter_rows'] == 20 and shard['joined_rows'] == 0
  assert summary['identity']['holds'] and any('misaligned at row 15' in w
                                              for w in summary['warnings'])


# Datasource slices ------------------------------------------------------------------------------


@pytest.mark.parametrize('text, message', [
    ('{"splitting":{"percentBegin":0,"percentEnd":70,"strategy":"random"}}', 'cannot be reprod'),
    ('{"splitting":{"percentBegin":70,"percentEnd":70}}', 'must be below'),
    ('{"splitting":{"percentBegin":-1}}', 'between 0 and 100'),
    ('{"splitting":{"percentEnd":"x"}}', 'must be a number'),
    ('{"splitting":{"begin":1}}', 'unknown splitting keys'),
    ('{"percentBegin":1}', 'must be {"splitting"'),
    ('not json', 'not valid JSON'),
])
def test_data_rearrangement_errors(text, message):
  with pytest.raises(slices.SplitError, match=message):
    slices.parse(text)


def test_slice_rounding_rule():
  s = slices.parse('{"splitting":{"percentBegin":70,"percentEnd":100}}')
  assert s.bounds(10) == (7, 10) and s.bounds(9) == (6, 9) and s.bounds(3) == (2, 3)
  first = slices.parse('{"splitting":{"percentBegin":0,"percentEnd":70}}')
  for n in range(0, 200):  # complementary slices never overlap and leave no row out
    assert first.bounds(n)[1] == s.bounds(n)[0]
  c = slices.parse('{"splitting":{"percentBegin":20,"percentEnd":60,"complement":true}}')
  assert c.ranges(10) == [(0, 2), (6, 10)]
  assert slices.parse('{"splitting":{"percentBegin":"33.3","percentEnd":100}}').bounds(1000) == \
      (333, 1000)


def test_slice_spans_shards_in_manifest_order():
  s = slices.parse('{"splitting":{"percentBegin":50,"percentEnd":100}}')
  sizes = [slices.ShardSize('m', 1, 'b', 6), slices.ShardSize('m', 0, 'a', 10),
           slices.ShardSize('other', 0, 'x', 100)]
  a = slices.shard_slice(s, sizes, 'm', 'a')
  b = slices.shard_slice(s, sizes, 'm', 'b')
  assert (a.ranges, a.first_row, a.datasource_rows) == (((8, 10),), 0, 16)
  assert (b.ranges, b.first_row) == (((0, 6),), 10)
  with pytest.raises(slices.SplitError, match='could not be counted'):
    slices.shard_slice(s, [slices.ShardSize('m', 0, 'a', None, 'gone')], 'm', 'a')
  assert slices.segments(10, ((8, 10),)) == [(0, 8, False), (8, 10, True)]


def _sliced_bp(tmp_path, sizes, begin, end, true_label=True, tag=False):
  """Shards of the given sizes; results for the rows [begin, end) of them all, in order."""
  shards, start = [], 0
  for n in sizes:
    lo, hi = max(begin, start), min(end, start + n)
    results = vd.binary_results(max(hi - lo, 0), start=lo, tag=tag, true_label=true_label,
                                blanks={lo + 1})
    shards.append((vd.customers(n, start), results))
    start += n
  return vd.write(tmp_path, 'bp-slice', shards, input_header=vd.CUSTOMER_HEADER,
                  result_header=vd.binary_header(tag, true_label), schema=SCHEMA)


def test_slice_joins_its_rows_and_counts_the_others_as_not_predicted(tmp_path):
  # 3 shards of 10, 7 and 13 rows (30); 70-100 is rows 21..29, shard 2 row 4 onwards.
  manifest = _sliced_bp(tmp_path, [10, 7, 13], 21, 30)
  code, out = vd.cli(tmp_path, manifest, '--block_rows', '4', '--data_rearrangement',
                     '{"splitting":{"percentBegin":70,"percentEnd":100}}', fmt='parquet')
  records, dead, summary = vd.results_of(out)
  assert code == 0 and dead == []
  assert len(records) == 30
  status = [r['status'] for r in records if r['input_uri'].endswith('part-3.csv')]
  assert status == ['not_predicted'] * 4 + ['ok', 'failed'] + ['ok'] * 7
  third = [r for r in records if r['input_uri'].endswith('part-3.csv')]
  assert third[4]['customerId'] == 'C21' and third[4]['true_label'] == '1'
  assert all(r['score'] is None and r['best_answer'] is None for r in third[:4])
  t = summary['totals']
  assert (t['input_rows'], t['joined_rows'], t['failed_rows'], t['not_predicted_rows']) == (
      30, 8, 1, 21)
  assert summary['identity']['holds']
  piece = summary['data_rearrangement']['batch_predictions']['bp-slice']
  assert (piece['datasource_rows'], piece['begin_row'], piece['end_row']) == (30, 21, 30)
  assert piece['boundary'] == 'confirmed'
  first = next(s for s in summary['shards'] if s['input_uri'].endswith('part-1.csv'))
  assert first['data_slice']['predicted_rows'] == 0 and first['not_predicted_rows'] == 10


def test_a_wrong_slice_is_caught_by_the_counts_or_the_true_labels(tmp_path):
  manifest = _sliced_bp(tmp_path, [10, 7, 13], 21, 30)
  code, out = vd.cli(tmp_path, manifest, '--data_rearrangement',
                     '{"splitting":{"percentBegin":60,"percentEnd":100}}')
  assert code == 1
  assert {d['reason'] for d in vd.results_of(out)[1]} == {'row_count_mismatch'}
  # Same number of rows, one row off: only the true labels can tell.
  shifted = _sliced_bp(tmp_path / 'b', [10, 7, 13], 20, 29)
  code, out = vd.cli(tmp_path, shifted, '--data_rearrangement',
                     '{"splitting":{"percentBegin":70,"percentEnd":100}}')
  records, dead, summary = vd.results_of(out)
  assert code == 1 and {d['reason'] for d in dead} == {'misaligned'}
  assert summary['data_rearrangement']['batch_predictions']['bp-slice']['boundary'] == \
      'misaligned'


def test_random_splitting_is_refused_at_launch(tmp_path, capsys):
  manifest = _sliced_bp(tmp_path, [10], 0, 10)
  code, _ = vd.cli(tmp_path, manifest, '--data_rearrangement',
                   '{"splitting":{"percentBegin":0,"percentEnd":70,"strategy":"random"}}')
  assert code == 2 and 'cannot be reproduced' in capsys.readouterr().err


def test_complement_slice_and_counters_under_test_pipeline(tmp_path):
  from apache_beam.metrics.metric import MetricsFilter
  from apache_beam.options.pipeline_options import PipelineOptions
  from apache_beam.testing.test_pipeline import TestPipeline

  from pipelines.job import build_pipeline, local_runner
  # 20 rows; the complement of 25-75 is rows 0..4 and 15..19.
  inputs = vd.customers(20)
  results = vd.binary_results(5, start=0) + vd.binary_results(5, start=15)
  manifest = vd.write(tmp_path, 'bp-c', [(inputs, results)], input_header=vd.CUSTOMER_HEADER,
                      result_header=vd.binary_header(), schema=SCHEMA)
  out = str(tmp_path / 'out')
  options = PipelineOptions([
      '--manifest', manifest, '--output', out, '--allowed_prefix', str(tmp_path),
      '--block_rows', '3', '--data_rearrangement',
      '{"splitting":{"percentBegin":25,"percentEnd":75,"complement":true}}'])
  p = TestPipeline(runner=local_runner(options), options=options)
  build_pipeline(p, p.options)
  result = p.run()
  result.wait_until_finish()
  counters = {c.key.metric.name: c.committed
              for c in result.metrics().query(MetricsFilter())['counters']}
  assert (counters['rows_in'], counters['rows_joined'], counters['rows_not_predicted']) == (
      20, 10, 10)
  assert counters['records_to_sink'] == 20 and counters.get('shards_misaligned', 0) == 0
  records, dead, summary = vd.results_of(out)
  assert dead == [] and summary['identity']['holds']
  assert [r['status'] == 'ok' for r in records] == [True] * 5 + [False] * 10 + [True] * 5
  assert records[15]['tag'] == 'C15'
  assert summary['data_rearrangement']['batch_predictions']['bp-c']['boundary'] == 'confirmed'


def test_slice_under_multi_processing(tmp_path):
  import os
  import subprocess
  import sys
  manifest = _sliced_bp(tmp_path, [10, 7, 13], 21, 30, tag=True)
  out = str(tmp_path / 'mp')
  command = [os.path.join(os.path.dirname(sys.executable), 'predjoin'), '--manifest', manifest,
             '--output', out, '--allowed_prefix', str(tmp_path), '--format', 'avro',
             '--block_rows', '4', '--direct_num_workers=2',
             '--direct_running_mode=multi_processing', '--data_rearrangement',
             '{"splitting":{"percentBegin":70,"percentEnd":100}}']
  done = subprocess.run(command, capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr
  records, dead, summary = vd.results_of(out)
  assert len(records) == 30 and dead == []
  assert summary['totals']['not_predicted_rows'] == 21
  assert summary['alignment']['checks'] == ['tag = customerId', 'trueLabel = willRespond']
