"""Re-thresholding audit, reconciliation with the service, and resubmit/: through the job."""

import glob
import json
import os

import pytest

from tests import verify_data as vd
from transforms.aml import service
from transforms.join import audit

INPUTS = [f'{i},name {i}' for i in range(1, 13)]
SCORES = [0.05, 0.39, 0.45, 0.49, 0.5, 0.51, 0.55, 0.61, 0.7, 0.95, 0.3, 0.8]


def _binary(tmp_path, answers, blanks=()):
  results = ['' if i in blanks else f'{a},{s}' for i, (a, s) in enumerate(
      zip(answers, SCORES, strict=True))]
  return vd.write(tmp_path, 'bp-b', [(INPUTS, results)], input_header='id,name')


# Binary re-thresholding -------------------------------------------------------------------------


def test_service_answers_that_agree_with_the_cutoff_are_not_flagged(tmp_path):
  manifest = _binary(tmp_path, [int(s >= 0.5) for s in SCORES])
  code, out = vd.cli(tmp_path, manifest)
  records, _, summary = vd.results_of(out)
  assert code == 0 and not any(r['answer_changed'] for r in records)
  assert summary['audit']['answers_changed'] == 0
  assert summary['audit']['service_threshold_between'] == [0.49, 0.5]


def test_cutoff_flags_and_counts_changed_answers_and_shows_scores_around_it(tmp_path):
  # The service answered with a 0.6 threshold; we recompute with 0.5.
  manifest = _binary(tmp_path, [int(s >= 0.6) for s in SCORES], blanks={0})
  code, out = vd.cli(tmp_path, manifest, '--cutoff', '0.5')
  records, _, summary = vd.results_of(out)
  changed = [r['id'] for r in records if r['answer_changed']]
  assert code == 0 and changed == ['5', '6', '7']  # scores 0.5, 0.51, 0.55
  assert records[0]['answer_changed'] is None  # the failed row
  a = summary['audit']
  assert (a['cutoff'], a['answers_changed'], a['changed_to_1'], a['changed_to_0']) == (
      0.5, 3, 3, 0)
  bins = {(b['from'], b['to']): b['rows'] for b in a['scores_around_cutoff']}
  assert bins == {(None, 0.4): 2, (0.4, 0.45): 0, (0.45, 0.49): 1, (0.49, 0.5): 1,
                  (0.5, 0.51): 1, (0.51, 0.55): 1, (0.55, 0.6): 1, (0.6, None): 4}
  assert a['service_threshold_between'] == [0.55, 0.61]


def test_audit_figures_merge():
  a = {'rows': 2, 'score_bins': [1, 1], 'service_0_max_score': 0.4, 'service_1_min_score': None}
  b = {'rows': 1, 'score_bins': [0, 1], 'service_0_max_score': 0.3, 'service_1_min_score': 0.7}
  assert audit.merge(a, b) == {'rows': 3, 'score_bins': [1, 2], 'service_0_max_score': 0.4,
                               'service_1_min_score': 0.7}
  assert audit.merge(None, a) == a and audit.merge(a, {}) == a


# Multiclass -------------------------------------------------------------------------------------


def _multiclass(tmp_path, lines):
  return vd.write(tmp_path, 'bp-m', [(INPUTS[:len(lines)], lines)], input_header='id,name',
                  result_header='cat, dog, bird')


def test_multiclass_margin_top_k_unknown_and_sums(tmp_path):
  lines = ['0.2,0.5,0.3', '0.4,0.4,0.2', '', '0.34,0.33,0.33', '0.5,0.6,0.1', '0.1,0.1,0.2']
  code, out = vd.cli(tmp_path, _multiclass(tmp_path, lines), '--min_score', '0.35',
                     '--top_k', '2', fmt='avro')
  records, _, summary = vd.results_of(out)
  assert code == 0
  assert [r['best_answer'] for r in records] == ['dog', 'cat', None, None, 'dog', None]
  assert [r['unknown'] for r in records] == [False, False, None, True, False, True]
  assert [r['margin'] for r in records] == pytest.approx([0.2, 0.0, None, 0.01, 0.1, 0.1])
  assert [r['top_labels'] for r in records] == [['dog', 'bird'], ['cat', 'dog'], None,
                                                ['cat', 'dog'], ['dog', 'cat'], ['bird', 'cat']]
  assert [r['score_sum_off'] for r in records] == [False, False, None, False, True, True]
  a = summary['audit']
  assert (a['unknown_rows'], a['score_sum_off_rows'], a['top_k']) == (2, 2, 2)
  assert sum(b['rows'] for b in a['margins']) == 5


def test_multiclass_sums_that_are_fine_are_not_flagged(tmp_path):
  lines = ['0.2,0.5,0.3', '0.3334,0.3333,0.3333', '1E0,0,0']
  code, out = vd.cli(tmp_path, _multiclass(tmp_path, lines))
  records, _, summary = vd.results_of(out)
  assert code == 0 and not any(r['score_sum_off'] for r in records)
  assert 'top_labels' not in records[0] and summary['audit']['score_sum_off_rows'] == 0


def test_top_k_on_a_binary_result_is_a_usage_error(tmp_path, capsys):
  code, _ = vd.cli(tmp_path, _binary(tmp_path, [0] * 12), '--top_k', '2')
  assert code == 2 and '--top_k applies to multiclass' in capsys.readouterr().err


# Reconciliation ---------------------------------------------------------------------------------


def _records(total=12, invalid=1, status='COMPLETED', model_type='BINARY', threshold=0.5):
  bp = {'BatchPredictionId': 'bp-b', 'MLModelId': 'ml-1', 'Status': status,
        'TotalRecordCount': total, 'InvalidRecordCount': invalid,
        'InputDataLocationS3': 's3://b/in/', 'OutputUri': 's3://b/out/'}
  model = {'MLModelId': 'ml-1', 'MLModelType': model_type, 'ScoreThreshold': threshold,
           'Status': 'COMPLETED'}
  return bp, model


def test_service_record_that_agrees_gives_no_warning(tmp_path):
  manifest = _binary(tmp_path, [int(s >= 0.5) for s in SCORES], blanks={3})
  bp, model = _records()
  path = vd.dump(tmp_path / 'model.json', model)
  code, out = vd.cli(tmp_path, manifest, '--service_record', json.dumps(bp),
                     '--service_record', path)
  summary = vd.results_of(out)[2]
  assert code == 0 and summary['warnings'] == []
  checks = summary['reconciliation']['records'][0]['checks']
  assert {c['field']: c['agrees'] for c in checks} == {
      'Status': True, 'TotalRecordCount': True, 'InvalidRecordCount': True, 'MLModelType': True,
      'ScoreThreshold': True, 'ScoreThreshold in the file': True}


def test_service_record_that_differs_warns_on_each_difference(tmp_path, capsys):
  manifest = _binary(tmp_path, [int(s >= 0.6) for s in SCORES], blanks={3})
  bp, model = _records(total=13, invalid=0, model_type='MULTICLASS', threshold=0.7)
  code, out = vd.cli(tmp_path, manifest, '--service_record', json.dumps([bp, model]))
  summary = vd.results_of(out)[2]
  assert code == 0  # warnings do not fail the run
  text = '\n'.join(summary['warnings'])
  assert 'TotalRecordCount 13, but the result files hold 12 lines' in text
  assert 'InvalidRecordCount 0, but the result files hold 1 failed' in text
  assert 'the model is MULTICLASS, but the result header is that of a binary' in text
  assert 'ScoreThreshold is 0.7, but best_answer was recomputed with --cutoff 0.5' in text
  assert 'ScoreThreshold 0.7 does not explain' in text
  assert 'warning: bp-b: the service reports TotalRecordCount 13' in capsys.readouterr().out


def test_service_record_errors():
  with pytest.raises(service.ServiceRecordError, match='not valid JSON'):
    service.parse_records(['{oops'])
  with pytest.raises(service.ServiceRecordError, match='GetBatchPrediction'):
    service.parse_records(['{"Name": "x"}'])
  with pytest.raises(service.ServiceRecordError, match='cannot be read'):
    service.parse_records(['/nonexistent/bp.json'], lambda uri: open(uri).read())


# resubmit/ --------------------------------------------------------------------------------------


def test_failed_observations_are_written_for_resubmission_with_header_and_schema(tmp_path):
  schema = vd.schema([('id', 'CATEGORICAL'), ('name', 'TEXT')], header=True, row_id='id')
  results = ['' if i in (0, 4, 11) else f'1,{s}' for i, s in enumerate(SCORES)]
  inputs = INPUTS[:4] + ['5,"name, with comma"'] + INPUTS[5:]
  manifest = vd.write(tmp_path, 'bp-r', [(inputs, results), (inputs, ['1,0.5'] * 12)],
                      input_header='id,name', schema=schema)
  code, out = vd.cli(tmp_path, manifest, '--block_rows', '3')
  assert code == 0
  files = sorted(glob.glob(os.path.join(out, 'resubmit', 'part-*.csv')))
  lines = []
  for path in files:
    with open(path) as f:
      content = f.read().splitlines()
    assert content[0] == 'id,name'
    lines.extend(content[1:])
  assert sorted(lines) == sorted([inputs[0], inputs[4], inputs[11]])
  with open(os.path.join(out, 'resubmit', '.schema')) as f:
    assert json.load(f) == schema
  summary = vd.results_of(out)[2]
  assert summary['resubmit']['rows'] == 3 and summary['resubmit']['files'] == files


def test_nothing_to_resubmit_writes_nothing(tmp_path):
  manifest = _binary(tmp_path, [1] * 12)
  code, out = vd.cli(tmp_path, manifest)
  assert code == 0 and not glob.glob(os.path.join(out, 'resubmit', '*'))
  assert vd.results_of(out)[2]['resubmit'] == {'rows': 0, 'files': [], 'schema': None}
