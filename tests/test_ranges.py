"""Row ranges: a large shard cut after pass 1 and joined a range at a time, by any worker.

The marks pass 1 notes are checked against line starts found by an independent scan; ranges
are joined from them and compared, record by record, with the whole shard's join and with the
input and result files read by csv and gzip alone; a file that changes between pass 1 and a
range's join, a truncated gzip result and a multi-member one are each shown to fail or fall back
the way the module says. The corpus (tests/test_corpus.py) runs every case with ranges too.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import random
import zlib

import pytest

from pipelines.job import run
from tests.builders import (
  check_predictions,
  read_dead_letters,
  read_records,
  read_summary,
  write_bp,
)
from transforms.io.access import AccessPolicy
from transforms.io.storage import Storage
from transforms.join import ranges
from transforms.join.joiner import ShardJoiner, merge_ranges
from transforms.join.lines import LineReader
from transforms.join.outcomes import ShardReport
from transforms.join.plan import PlanSettings, make_plan

# Marks and spans, on their own ------------------------------------------------------------------


def test_marks_note_each_line_start_and_span_as_any_read_sees_them():
  rng = random.Random(7)
  for _ in range(300):
    lines = ['x' * rng.randint(0, 5) for _ in range(rng.randint(0, 60))]
    data = ('\r\n' if rng.random() < 0.3 else '\n').join(lines).encode() + \
        rng.choice([b'', b'\n', b'\n\n'])
    first, every = rng.choice([0, 1, 2]), rng.randint(1, 9)
    marks = ranges.Marks(io.BytesIO(data), first, every)
    LineReader(marks, chunk_bytes=rng.randint(1, 20)).count_rest()
    starts = [0] + [i + 1 for i, byte in enumerate(data) if byte == 10]  # independent scan
    assert marks.starts == starts[first::every]
    for span in marks.spans():
      [(size, crc)] = span.parts
      assert crc == zlib.crc32(data[span.start:span.start + size])
    assert sum(span.size for span in marks.spans()) == len(data) - (starts[first] if len(
        starts) > first else len(data))
    assert (marks.size, marks.crc) == (len(data), zlib.crc32(data))


def test_a_span_reader_takes_exactly_its_span_and_refuses_other_bytes():
  data = b''.join(b'row %d\n' % i for i in range(100))
  marks = ranges.Marks(io.BytesIO(data), 0, 10)
  marks.read()
  spans = marks.spans()
  last = ranges.Span(spans[8].start, spans[8].parts + spans[9].parts)  # to the end, 2 pieces
  for span in (spans[3], last):
    reader = ranges.SpanReader(io.BytesIO(data[span.start:]), span, 'x')
    assert reader.read() == data[span.start:span.start + span.size]
    reader.finish()
  changed = bytearray(data)
  changed[spans[3].start + 2] ^= 1  # the same size, another byte
  reader = ranges.SpanReader(io.BytesIO(bytes(changed[spans[3].start:])), spans[3], 'x')
  with pytest.raises(RuntimeError, match='not those pass 1 read'):
    reader.finish()
  reader = ranges.SpanReader(io.BytesIO(data[spans[3].start:spans[3].start + 5]), spans[3], 'x')
  with pytest.raises(RuntimeError, match='bytes, not'):  # the file is shorter now
    reader.finish()


def test_a_shard_is_cut_only_when_it_holds_two_ranges():
  spans = [ranges.Span(i * 10, ((10, 0),)) for i in range(4)]
  report = ShardReport('bp', 'm', 'i', 'r', input_rows=35)
  cut = ranges.cut(report, 10, spans, spans)
  assert [(r.first_row, r.rows) for r in cut] == [(0, 10), (10, 10), (20, 10), (30, 5)]
  assert cut[-1].input.parts == ((10, 0),)  # the last holds what follows, to the end
  assert ranges.cut(ShardReport('bp', 'm', 'i', 'r', input_rows=19), 10, spans, spans) == []
  assert ranges.cut(report, 10, spans[:3], spans) == []  # too few marks: joined whole


# The joiner: a shard split, joined range by range ---------------------------------------------


def _bp(tmp_path, rows=23, blanks=(0, 4, 5, 22), shards=1):
  data = []
  for s in range(shards):
    inputs = [f's{s}r{k},name {k},{k * 1.5}' for k in range(rows)]
    results = ['' if k in blanks else f'{k % 2},{(s * 100 + k) / 1000}' for k in range(rows)]
    data.append((inputs, results))
  return write_bp(tmp_path, 'bp-r', data)


def _joiner(tmp_path, manifest, range_rows):
  storage = Storage()
  plan = make_plan([manifest], storage, PlanSettings(range_rows=range_rows),
                   AccessPolicy.create((f'{tmp_path}/',), []))
  return ShardJoiner(plan, storage), plan


def _shard(manifest):
  from transforms.aml.manifest import shards_of
  with open(manifest, 'rb') as f:
    [shard] = shards_of(f.read(), manifest)
  return shard


def _rows(items):
  batches = [item for item in items if hasattr(item, 'to_pylist')]
  return [row for batch in batches for row in batch.to_pylist()]


def test_ranges_join_to_the_records_of_the_whole_shard(tmp_path):
  manifest = _bp(tmp_path)
  shard = _shard(manifest)
  whole_joiner, _ = _joiner(tmp_path, manifest, 0)
  whole = list(whole_joiner.join(shard))
  joiner, _ = _joiner(tmp_path, manifest, 5)
  [split] = list(joiner.join(shard))
  assert isinstance(split, ranges.SplitShard)
  assert [(w.range.first_row, w.range.rows) for w in split.work] == [
      (0, 5), (5, 5), (10, 5), (15, 5), (20, 3)]
  assert all(w.result_index for w in split.work)  # the gzip result through rapidgzip's index
  parts, rows = [], []
  for work in split.work:
    items = list(joiner.join_range(work))
    parts.append(items[-1])
    rows += _rows(items)
  assert rows == _rows(whole)
  merged = merge_ranges(split.report, parts)
  assert merged == whole[-1]  # counts, audit and all, as the whole shard's report


def test_a_file_changed_after_pass_1_fails_its_range_and_no_other(tmp_path):
  manifest = _bp(tmp_path)
  shard = _shard(manifest)
  joiner, _ = _joiner(tmp_path, manifest, 5)
  [split] = list(joiner.join(shard))
  with open(shard.input_uri, 'r+b') as f:  # the same size: row 7 names another row
    data = f.read()
    f.seek(0)
    f.write(data.replace(b's0r7,', b's0r9,'))
  list(joiner.join_range(split.work[0]))  # rows 0-4: untouched
  with pytest.raises(RuntimeError, match='not those pass 1 read'):
    list(joiner.join_range(split.work[1]))


@pytest.mark.parametrize('fmt', ['jsonl', 'parquet'])
def test_the_whole_job_with_ranges_on_two_workers(tmp_path, fmt):
  manifest = _bp(tmp_path, rows=41, blanks=(0, 9, 10, 40), shards=3)
  out = str(tmp_path / 'out')
  assert run(['--manifest', manifest, '--output', out, '--format', fmt, '--range_rows', '6',
              '--allowed_prefix', f'{tmp_path}/', '--direct_num_workers=2',
              '--direct_running_mode=multi_processing']) == 0
  check_predictions(read_records(out), manifest)
  summary = read_summary(out)
  assert summary['identity']['holds'] and summary['totals']['input_rows'] == 123
  assert len(summary['outputs']['records']) == 3 * 7  # 41 rows: ranges of 6, the last 5
  assert all(s['status'] == 'ok' and s['input_rows'] == 41 for s in summary['shards'])


def test_a_truncated_gzip_result_is_refused_as_without_ranges(tmp_path):
  manifest = _bp(tmp_path, rows=400, blanks=(), shards=2)
  from transforms.aml.manifest import shards_of
  with open(manifest, 'rb') as f:
    good, truncated = shards_of(f.read(), manifest)
  with open(truncated.result_uri, 'rb') as f:
    data = f.read()
  with open(truncated.result_uri, 'wb') as f:
    f.write(data[:len(data) * 2 // 3])
  out = str(tmp_path / 'out')
  assert run(['--manifest', manifest, '--output', out, '--range_rows', '50',
              '--allowed_prefix', f'{tmp_path}/', '--format', 'jsonl',
              '--max_bad_shards', '1']) == 0
  dead = read_dead_letters(out)
  assert {(d['input_uri'], d['reason']) for d in dead} == {
      (truncated.input_uri, 'result_unreadable')} and len(dead) == 400
  assert {r['input_uri'] for r in read_records(out)} == {good.input_uri}
  assert len(read_summary(out)['outputs']['records']) == 8  # the good shard, split


def test_a_multi_member_gzip_result_is_joined_whole_and_right(tmp_path):
  manifest = _bp(tmp_path, rows=200, blanks=(3, 150))
  shard = _shard(manifest)
  text = gzip.decompress(open(shard.result_uri, 'rb').read())
  cut = text.index(b'\n', len(text) // 2) + 1
  with open(shard.result_uri, 'wb') as f:  # two members: the trailer covers the second only
    f.write(gzip.compress(text[:cut]) + gzip.compress(text[cut:]))
  out = str(tmp_path / 'out')
  assert run(['--manifest', manifest, '--output', out, '--range_rows', '20',
              '--allowed_prefix', f'{tmp_path}/', '--format', 'jsonl']) == 0
  check_predictions(read_records(out), manifest)
  assert len(read_summary(out)['outputs']['records']) == 1  # not split: read again by ISA-L


def test_sagemaker_outputs_are_split_by_plain_offsets(tmp_path):
  (tmp_path / 'in').mkdir()
  (tmp_path / 'out').mkdir()
  ids = [f'a{k}' for k in range(30)]
  (tmp_path / 'in' / 'x.csv').write_text('id,v\n' + ''.join(f'{i},{k}\n' for k, i in
                                                             enumerate(ids)))
  # The model answered the header line too: the first output line goes with it.
  (tmp_path / 'out' / 'x.csv.out').write_text('0.5\n' + ''.join(
      '\n' if k % 7 == 3 else f'{k / 100}\n' for k in range(30)))
  out = str(tmp_path / 'o')
  assert run(['--transform_input', f'{tmp_path}/in/', '--transform_output', f'{tmp_path}/out',
              '--model_type', 'binary', '--input_header', 'true', '--range_rows', '4',
              '--output', out, '--format', 'jsonl']) == 0
  records = read_records(out)
  assert [(r['id'], r['score'], r['result_line_number']) for r in records] == [
      (i, None if k % 7 == 3 else k / 100, k + 2) for k, i in enumerate(ids)]
  assert len(json.load(open(os.path.join(out, 'summary.json')))['outputs']['records']) == 8
