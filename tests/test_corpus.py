"""The adversarial corpus (tests/corpus.py) through the whole job, checked row by row by value.

Headers or none; the decision from a schema, from --input_header, or inferred; empty lines at
the start, in the middle and at the end; results one line short or long at either end; quoted
line breaks; CRLF; byte order marks; headers that drift between shards; several shards with
different outcomes. Every case must end in correct records or a refusal with a reason, and no
record may hold another row's prediction.
"""

from __future__ import annotations

import os

import pytest

from pipelines.job import run
from tests.corpus import JOINED, REFUSED, Case, Shard, check, write_case

MISMATCH = 'row_count_mismatch'

# (name, shard settings, expected outcome of the shard); every variant runs with and without a
# header line, and with the header decision from a schema, from --input_header and inferred.
VARIANTS = [
    ('plain', {}, JOINED),
    ('crlf', {'crlf': True}, JOINED),
    ('bom', {'bom': True}, JOINED),
    ('crlf_bom_blanks', {'crlf': True, 'bom': True, 'blanks': (0, 5)}, JOINED),
    ('empty_middle', {'empty_at': (3,)}, JOINED),
    ('empty_middle_skipped', {'empty_at': (3,), 'result': 'skip_empty'}, MISMATCH),
    ('empty_end', {'trailing_empty': 2}, JOINED),
    ('empty_end_crlf', {'trailing_empty': 1, 'crlf': True}, JOINED),
    ('empty_end_answered', {'trailing_empty': 1, 'result': 'answer_trailing'}, MISMATCH),
    ('short_end', {'result': 'short_end'}, MISMATCH),
    ('short_start', {'result': 'short_start'}, MISMATCH),
    ('long', {'result': 'long'}, MISMATCH),
    ('quoted_newline', {'quoted_newline': 2}, JOINED),
    ('quoted_newline_logical', {'quoted_newline': 2, 'result': 'logical'}, MISMATCH),
]


def _single(has_header: bool, source: str, name: str, settings: dict, expect: str) -> Case:
  option = ('true' if has_header else 'false') if source == 'option' else None
  return Case(f'{"h" if has_header else "n"}-{source}-{name}',
              [Shard(header=has_header, expect=expect, **settings)], has_header=has_header,
              schema=source == 'schema', option=option)


CASES = [_single(h, source, name, settings, expect)
         for h in (True, False) for source in ('schema', 'option', 'infer')
         for name, settings, expect in VARIANTS]
CASES += [
    # An empty first line, then the rows (no header): an observation of its own.
    _single(False, 'schema', 'empty_start', {'empty_at': (0,)}, JOINED),
    _single(False, 'infer', 'empty_start', {'empty_at': (0,)}, JOINED),
    _single(False, 'option', 'empty_start', {'empty_at': (0,)}, JOINED),
    # A header decision of yes, and an empty line above the header: line 1 is no header.
    Case('empty-first', [Shard(), Shard(empty_first=True, expect='input_header_mismatch')],
         option='true'),
    Case('empty-first-schema', [Shard(), Shard(empty_first=True,
                                               expect='input_header_mismatch')],
         has_header=True, schema=True),
    # The result repeats the row id (tag): verified, and a swap of two lines is found.
    Case('tag', [Shard()], has_header=True, schema=True, tag=True),
    Case('tag-swap', [Shard(result='swap', expect='misaligned')], has_header=True, schema=True,
         tag=True),
    Case('tag-short-start', [Shard(header=False, result='short_start', expect=MISMATCH)],
         has_header=False,
         schema=True, tag=True),
    # Headers that drift: the same columns in another order in the second shard.
    Case('drift-infer', [Shard(), Shard(columns=('v', 'id', 'note'),
                                        expect='input_header_mismatch')]),
    Case('drift-option', [Shard(), Shard(columns=('v', 'id', 'note'),
                                         expect='input_header_mismatch')], option='true'),
    Case('drift-schema', [Shard(), Shard(columns=('v', 'id', 'note'),
                                         expect='input_header_mismatch')], has_header=True,
         schema=True),
    # One shard without the header the run decided every shard has.
    Case('missing-header', [Shard(), Shard(header=False, expect='input_header_mismatch')],
         option='true'),
    # Several shards, each with its own outcome.
    Case('mixed-header', [Shard(), Shard(result='short_end', expect=MISMATCH),
                          Shard(trailing_empty=1), Shard(result='long', expect=MISMATCH),
                          Shard(empty_at=(2,), blanks=(4,))], has_header=True, schema=True),
    Case('mixed-none', [Shard(header=False), Shard(header=False, result='short_start',
                                                   expect=MISMATCH),
                        Shard(header=False, crlf=True, trailing_empty=2),
                        Shard(header=False, empty_at=(1,), result='skip_empty',
                              expect=MISMATCH)], has_header=False),
]

# The run cannot decide, and must not guess: every column is text, on one shard; or the shards'
# first lines point both ways.
LAUNCH_CASES = [
    Case('text-only', [Shard(columns=('id', 'note'))]),
    # The first shard's line 1 cannot be the header the run reads there.
    Case('empty-first-only', [Shard(empty_first=True)], option='true'),
    Case('empty-first-only-schema', [Shard(empty_first=True)], has_header=True, schema=True),
    Case('text-only-none', [Shard(header=False, columns=('id', 'note'))]),
    Case('conflict', [Shard(), Shard(header=False)]),
]


def _run(tmp_path, case: Case, range_rows: int = 0) -> tuple[int, str, list]:
  manifest, written = write_case(str(tmp_path), case)
  out = str(tmp_path / 'out-run')
  args = ['--manifest', manifest, '--output', out, '--format', 'jsonl',
          '--allowed_prefix', f'{tmp_path}/', '--block_rows', '3', '--range_rows',
          str(range_rows)]
  if case.option:
    args += ['--input_header', case.option]
  return run(args), out, written


def test_the_corpus_is_large_and_crosses_every_dimension():
  assert len(CASES) + len(LAUNCH_CASES) >= 40
  shards = [s for case in CASES for s in case.shards]
  assert {s.header for s in shards} == {True, False}
  assert {case.option for case in CASES} == {None, 'true', 'false'}
  assert {case.schema for case in CASES} == {True, False}
  assert {s.result for s in shards} >= {'exact', 'short_end', 'short_start', 'long',
                                        'skip_empty', 'answer_trailing', 'logical', 'swap'}
  assert any(s.crlf for s in shards) and any(s.bom for s in shards)
  assert any(s.quoted_newline is not None for s in shards)
  assert any(0 in s.empty_at for s in shards) and any(s.trailing_empty for s in shards)


@pytest.mark.parametrize('range_rows', [0, 2], ids=['whole', 'ranges'])
@pytest.mark.parametrize('case', CASES, ids=lambda case: case.name)
def test_every_row_is_joined_to_its_own_prediction_or_refused(tmp_path, case, range_rows):
  # With ranges of 2 rows, every joined shard of 4 rows or more is cut into ranges that are
  # joined apart (from offsets noted in pass 1, the gzip results through their index).
  code, out, written = _run(tmp_path, case, range_rows)
  assert code in (0, 1), code
  problems = check(case, written, out)
  assert problems == [], '\n'.join(problems)
  refused = [w for w in written if w.expect != JOINED]
  assert code == (1 if refused else 0)
  if range_rows and len(refused) < len(written):
    assert any('-r00001' in name for name in os.listdir(os.path.join(out, 'records')))


@pytest.mark.parametrize('case', LAUNCH_CASES, ids=lambda case: case.name)
def test_a_run_that_cannot_decide_the_header_stops_at_launch(tmp_path, case, capsys):
  code, out, _ = _run(tmp_path, case)
  err = capsys.readouterr().err
  assert code == 2
  assert 'header' in err and (case.option or case.schema or '--input_header' in err)
  assert len(err.strip().splitlines()) == 1  # one line, no traceback
  assert not os.path.exists(out)  # nothing read past the samples, nothing written


def test_the_oracle_catches_a_row_joined_to_another_rows_prediction(tmp_path):
  # The check itself must fail on a shifted record: shift one record's score and see it caught.
  case = _single(False, 'option', 'plain', {}, JOINED)
  code, out, written = _run(tmp_path, case)
  assert code == 0 and check(case, written, out) == []
  [path] = [os.path.join(out, 'records', name) for name in os.listdir(f'{out}/records')]
  lines = open(path).read().splitlines()
  import json
  first, second = json.loads(lines[0]), json.loads(lines[1])
  first['score'], second['score'] = second['score'], first['score']
  with open(path, 'w') as f:
    f.write('\n'.join(json.dumps(r) for r in [first, second]) + '\n' + '\n'.join(lines[2:]) + '\n')
  problems = check(case, written, out)
  assert any('meant' in p for p in problems), problems


def test_expectations_are_the_cases_own_not_the_runs(tmp_path):
  # A refused-expected shard that were joined would be reported: the expectation is not read
  # from the run.
  case = _single(True, 'option', 'short_end', {'result': 'short_end'}, REFUSED)
  code, out, written = _run(tmp_path, case)
  assert code == 1 and check(case, written, out) == []
  written[0].expect = JOINED
  assert any('expected joined' in p for p in check(case, written, out))
