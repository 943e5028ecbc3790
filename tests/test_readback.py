"""The launcher's check where a runner reports no Beam counters: the outputs read back.

Each case runs the job (DirectRunner) into real files, then checks ``transforms.report.readback``
against its summary as written, and against summaries that disagree with the files in one way
each: the check must find every one.
"""

import copy

import pytest
from apache_beam.runners.runner import PipelineResult, PipelineState

from pipelines.job import run, verify_outputs
from tests.builders import read_dead_letters, read_records, read_summary, write_bp
from transforms.report import readback


def _job(tmp_path, fmt: str) -> dict:
  """A batch prediction with a failed observation, a bad input row (a dead letter) and a
  refused shard, joined into ``tmp_path/out``; its summary."""
  mixed = (['r1,a,1', 'r2,b', 'r3,c,3'], ['1,0.9', '0,0.2', ''])
  refused = (['r4,d,4', 'r5,e,5'], ['1,0.8'])
  manifest = write_bp(tmp_path / 'data', 'bp-1', [mixed, refused])
  out = tmp_path / 'out'
  code = run(['--manifest', manifest, '--output', str(out), '--format', fmt,
              '--allowed_prefix', f'{tmp_path}/', '--max_bad_shards', '1'])
  assert code == 0
  return read_summary(str(out))


@pytest.fixture(params=['avro', 'parquet', 'jsonl'])
def written(request, tmp_path):
  return _job(tmp_path, request.param), tmp_path / 'out'


def test_the_files_hold_what_the_summary_says(written):
  summary, out = written
  assert readback.check(summary) == []
  (shard, refused) = summary['shards']
  counts = readback.count_rows(summary)
  # The same files read by the builders' readers (fastavro, pyarrow, json).
  records, letters = read_records(str(out)), read_dead_letters(str(out))
  assert [r['status'] for r in records] == ['ok', 'failed']
  assert [d['reason'] for d in letters] == ['bad_input_row', *['row_count_mismatch'] * 2]
  assert counts == {
      (shard['batch_prediction_id'], shard['input_uri']):
          {'joined_rows': 1, 'failed_rows': 1, 'dead_letter_rows': 1},
      (refused['batch_prediction_id'], refused['input_uri']): {'dead_letter_rows': 2}}


def _changed(summary: dict, change) -> dict:
  changed = copy.deepcopy(summary)
  change(changed)
  return changed


def test_a_summary_that_disagrees_with_the_files_is_found(written):
  summary, _ = written

  def more_joined(s):
    s['shards'][0]['joined_rows'] += 1

  def fewer_dead_letters(s):
    s['shards'][0]['dead_letter_rows'] = 0

  def records_not_listed(s):
    s['outputs']['records'] = []

  def not_aligned(s):
    s['shards'][0]['alignment'] = 'refused'

  def refused_with_records(s):
    s['shards'][0]['status'] = 'misaligned'

  def shard_missing(s):
    del s['shards'][0]

  uri = summary['shards'][0]['input_uri']
  cases = {more_joined: f'{uri}: its files hold', fewer_dead_letters: f'{uri}: its files hold',
           records_not_listed: f'{uri}: its files hold',
           not_aligned: f"{uri}: records were written, but its alignment is 'refused'",
           refused_with_records: f'{uri}: records were written, but it was refused',
           shard_missing: f'{uri}: rows in the output files of no shard in the summary'}
  for change, problem in cases.items():
    problems = readback.check(_changed(summary, change))
    assert len(problems) == 1 and problems[0].startswith(problem), (change.__name__, problems)


def test_without_counters_the_launcher_reads_the_files_back_and_says_so_once(tmp_path, capsys):
  summary = _job(tmp_path, 'parquet')
  no_metrics = PipelineResult(PipelineState.DONE)  # Beam's result of a runner without metrics
  with pytest.raises(NotImplementedError):
    no_metrics.metrics()
  capsys.readouterr()
  assert verify_outputs(no_metrics, summary, True) == []
  changed = _changed(summary, lambda s: s['shards'][0].update(failed_rows=0))
  (problem,) = verify_outputs(no_metrics, changed, True)
  assert 'failed_rows 1' in problem and 'failed_rows 0' in problem
  err = capsys.readouterr().err.splitlines()
  assert err == ['predjoin: Beam counters are not available on this runner; the run is checked '
                 'against the record and dead-letter files summary.json lists'] * 2


def test_a_listed_file_that_cannot_be_read_is_a_failed_check(tmp_path, capsys):
  summary = _job(tmp_path, 'jsonl')
  (tmp_path / 'out' / summary['outputs']['records'][0].split('/out/', 1)[1]).unlink()
  (problem,) = verify_outputs(PipelineResult(PipelineState.DONE), summary, True)
  assert problem.startswith('the output files could not be read back: ')
