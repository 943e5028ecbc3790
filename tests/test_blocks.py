"""Line blocks, parsing and interpretation of blocks: pure functions, fast and slow paths."""

import io
import os
import random

import numpy as np
import pytest

from transforms.aml import result_header
from transforms.join import blocks, record_schema
from transforms.join.lines import (
  BOM,
  CHUNK_BYTES,
  FIRST_READ_BYTES,
  EndOfLines,
  LineReader,
  count_lines,
  line_lengths,
  split_lines,
)

BINARY = result_header.detect_layout(('trueLabel', 'bestAnswer', 'score'))
MULTI = result_header.detect_layout(('a', 'b', 'c'))
REGRESSION = result_header.detect_layout(('score',))


class Chunky(io.BytesIO):
  """Returns at most 3 bytes per read (and per readinto), so lines straddle chunk boundaries."""

  def read(self, size=-1):
    return super().read(3)

  def readinto(self, buffer):
    with memoryview(buffer) as view:
      return super().readinto(view[:3])


class ReadOnly:
  """A file object with ``read`` only (no ``readinto``)."""

  def __init__(self, data: bytes):
    self._f = io.BytesIO(data)

  def read(self, size=-1):
    return self._f.read(size)


class Counted(io.BytesIO):
  """Counts the calls of ``read`` and ``readinto``."""

  def __init__(self, data: bytes):
    super().__init__(data)
    self.calls = {'read': 0, 'readinto': 0}

  def read(self, size=-1):
    self.calls['read'] += 1
    return super().read(size)

  def readinto(self, buffer):
    self.calls['readinto'] += 1
    return super().readinto(buffer)


@pytest.mark.parametrize('data, lines', [
    (b'', 0), (b'a', 1), (b'a\n', 1), (b'a\n\n', 2), (b'\n', 1), (b'a\r\nb', 2),
    (b'a\nb\n\n\n', 4), (b'a\n  ', 2),
])
def test_count_lines_rule(data, lines):
  assert count_lines(io.BytesIO(data), chunk_bytes=2) == lines
  reader = LineReader(Chunky(data))
  total = 0
  while True:
    _, n = reader.take(2)
    if not n:
      break
    total += n
  assert total == lines


def test_take_returns_whole_lines_in_order_across_chunks():
  data = b''.join(f'line{i}\n'.encode() if i % 7 else b'\n' for i in range(100)) + b'tail'
  reader = LineReader(Chunky(data))
  got = []
  while True:
    block, n = reader.take_exactly(9)
    if not n:
      break
    assert block.count(b'\n') == n
    got.extend(split_lines(block))
  assert got == data.split(b'\n')


def test_take_respects_max_bytes_but_always_one_line():
  reader = LineReader(io.BytesIO(b'x' * 50 + b'\nshort\nshort\n'))
  assert reader.take(10, max_bytes=10) == (b'x' * 50 + b'\n', 1)
  assert reader.take(10, max_bytes=10)[1] >= 1


@pytest.mark.parametrize('opener', [io.BytesIO, Chunky, ReadOnly])
@pytest.mark.parametrize('seed', range(6))
def test_mixed_takes_return_every_line_once_in_order(seed, opener):
  # take, take_exactly and readline interleaved, over reads of every size, from files that
  # fill a whole read, return 3 bytes a read, or have no readinto: the lines come back exactly
  # as the line rule splits the data, whatever is left between reads.
  rng = random.Random(seed)
  lines = [b'x' * rng.choice([0, 0, 1, 5, 40, 300]) + (b'\r' if rng.random() < 0.1 else b'')
           for _ in range(rng.randint(0, 400))]
  data = b'\n'.join(lines) + (b'\n' if lines and rng.random() < 0.5 else b'')
  expected = data.split(b'\n')
  if data.endswith(b'\n') or not data:
    expected.pop()
  chunk = rng.choice([1, 7, 64, 1000, 1 << 20])
  reader = LineReader(opener(data), chunk_bytes=chunk)
  got = []
  counted = 0  # lines counted, not taken one by one, at the end
  while True:
    how = rng.random()
    if how < 0.03 and got:  # the rest, counted
      counted = reader.count_rest()
      assert counted == len(expected) - len(got)
      assert reader.take(1) == (b'', 0)
      break
    if how < 0.15:
      line = reader.readline()
      if line is None:
        break
      got.append(line + b'\r' if expected[len(got)].endswith(b'\r') else line)
      continue
    ends = None
    max_lines, max_bytes = rng.randint(1, 50), rng.choice([1, 30, 500, 4096])
    if how < 0.4:
      block, n = reader.take(max_lines, max_bytes=max_bytes)
    elif how < 0.6:
      block, n, ends = reader.take_lines(max_lines, max_bytes=max_bytes)
    elif how < 0.8:
      block, n = reader.take_exactly(max_lines)
    else:
      block, n, ends = reader.take_exactly_lines(max_lines)
    if not n:
      break
    assert block.endswith(b'\n') and block.count(b'\n') == n
    if ends is not None:  # the line ends come from the same scan: exactly the block's
      assert ends.tolist() == [i for i, byte in enumerate(block) if byte == 10]
    got.extend(block.split(b'\n')[:-1])
  assert got == expected[:len(expected) - counted]
  assert reader.lines == len(expected)  # the reader's own count of the lines it handed out
  assert reader.trailing_empty_lines == _trailing_empty(expected)
  assert count_lines(io.BytesIO(data), chunk_bytes=chunk) == len(expected)


def _trailing_empty(lines: list[bytes]) -> int:
  """The empty lines (nothing, or only the \\r of \\r\\n) after the last line with content."""
  n = 0
  for line in reversed(lines):
    if line not in (b'', b'\r'):
      break
    n += 1
  return n


@pytest.mark.parametrize('seed', range(8))
def test_the_empty_lines_at_the_end_are_counted_however_the_bytes_arrive(seed):
  # Files of empty lines, \r, \n and text, fed in pieces of every size: the count of empty
  # lines at the end equals the one read off the whole file's lines.
  rng = random.Random(seed)
  for _ in range(500):
    data = b''.join(rng.choice([b'\n', b'\r', b'x', b'\r\n', b'\n\n'])
                    for _ in range(rng.randint(0, 14)))
    lines = data.split(b'\n')
    if data.endswith(b'\n') or not data:
      lines.pop()
    ends = EndOfLines()
    i = 0
    while i < len(data):
      step = rng.randint(1, 5)
      ends.feed(data[i:i + step])
      i += step
    assert ends.trailing() == _trailing_empty(lines), data
    reader = LineReader(Chunky(data))
    assert reader.count_rest() == len(lines)
    assert reader.trailing_empty_lines == _trailing_empty(lines), data


def test_a_byte_order_mark_at_the_start_is_not_part_of_the_first_line():
  for opener in (io.BytesIO, Chunky):
    reader = LineReader(opener(BOM + b'id,v\r\n1,2\n'), chunk_bytes=1)
    assert reader.readline() == b'id,v' and reader.take(5) == (b'1,2\n', 1)
    assert reader.lines == 2
    assert LineReader(opener(BOM + b'a\nb')).count_rest() == 2
    assert LineReader(opener(BOM)).count_rest() == 0
  # Only at the start of a file: a reader that starts mid-file keeps the bytes.
  assert LineReader(io.BytesIO(BOM + b'a\n'), at_start=False).readline() == BOM + b'a'


@pytest.mark.parametrize('seed', range(4))
def test_take_lines_cuts_blocks_like_take(seed):
  # The same data read with take and with take_lines gives the same blocks.
  rng = random.Random(seed)
  data = b''.join(b'y' * rng.choice([0, 3, 90, 5000]) + b'\n' for _ in range(300)) + b'end'
  sizes = [(rng.randint(1, 40), rng.choice([1, 100, 4096, 1 << 16])) for _ in range(400)]
  a, b = LineReader(Chunky(data)), LineReader(Chunky(data))
  for max_lines, max_bytes in sizes:
    block, n = a.take(max_lines, max_bytes)
    assert b.take_lines(max_lines, max_bytes)[:2] == (block, n)
    if not n:
      break
  else:
    pytest.fail('the data should have ended')


def test_reads_go_into_one_buffer_of_bounded_size():
  # A big file is read into the reader's buffer (readinto), not into a new bytes object per
  # read, and the buffer stays a few blocks long, whatever the file's size.
  data = b''.join(b'z' * (i % 200) + b'\n' for i in range(20000))  # 2 MB
  f = Counted(data)
  reader = LineReader(f, chunk_bytes=4096)
  lines = 0
  while True:
    block, n, _ = reader.take_lines(100, max_bytes=8192)
    if not n:
      break
    lines += n
  assert lines == 20000
  assert f.calls['readinto'] > 200 and f.calls['read'] <= 2
  assert len(reader._buf) <= 4 * (4096 + 8192)


def test_a_header_line_reads_only_the_start_of_a_file():
  # Readers that only want the header (of inputs and results, once per shard) read the first
  # FIRST_READ_BYTES, not a whole 4 MB chunk into a buffer of twice that.
  data = b'a,b,c\n' + b'1,2,3\n' * 1_000_000
  f = io.BytesIO(data)
  assert LineReader(f).readline() == b'a,b,c'
  assert f.tell() == FIRST_READ_BYTES < CHUNK_BYTES


def test_a_small_file_gets_no_buffer_bigger_than_itself():
  # A file that ends at its second read (a small shard) is joined as it is: no buffer of two
  # 4 MB chunks is made (and zero-filled) for reads that never come.
  data = b'1,2,3\n' * 100_000  # 600 KB: more than the first read, less than a chunk
  reader = LineReader(io.BytesIO(data))
  blocks_read = []
  while True:
    block, n, _ = reader.take_lines(65536)
    if not n:
      break
    blocks_read.append(block)
  assert b''.join(blocks_read) == data
  assert len(reader._buf) <= len(data)


def test_count_rest_after_a_partial_read_follows_the_line_rule():
  for data, taken, rest in ((b'a\nb\nc', 1, 2), (b'a\nb\n', 1, 1), (b'a\n', 1, 0),
                            (b'a\n\n\n', 2, 1), (b'a', 0, 1), (b'', 0, 0)):
    reader = LineReader(Chunky(data))
    if taken:
      assert reader.take_exactly(taken)[1] == taken
    assert reader.count_rest() == rest, data


def test_line_lengths_ignore_crlf():
  assert line_lengths(b'ab\r\n\r\n\nx\n').tolist() == [2, 0, 0, 1]


def _block(lines):
  return ''.join(line + '\n' for line in lines).encode()


def _result(lines, layout, slow=False):
  block = _block(lines)
  if slow:
    return blocks._parse_result_slow(block, len(lines), layout)
  return blocks.parse_result(block, len(lines), layout)


@pytest.mark.parametrize('slow', [False, True])
def test_number_forms_and_blank_lines(slow):
  lines = ['', '1,1,9.96733E-1', '0,0,1.945252E-5', '', '1,1,0.46317', ' 0 , 0 , 8.7642E-3 ', '']
  parsed = _result(lines, BINARY, slow)
  assert parsed.kind.tolist() == [1, 0, 0, 1, 0, 0, 1]
  scores = parsed.columns[2].to_pylist()
  assert [scores[i] for i in (1, 2, 4, 5)] == [0.996733, 1.945252e-05, 0.46317, 0.0087642]


@pytest.mark.parametrize('slow', [False, True])
def test_bad_result_lines_are_bad_alone(slow):
  lines = ['1,1,0.9', '1,1', '1,1,abc', '1,2,0.5', '1,1,NaN', '1,1,', ',,', '0,0,0.1']
  parsed = _result(lines, BINARY, slow)
  assert parsed.kind.tolist() == [0, 2, 2, 2, 2, 2, 2, 0]
  assert 'expected 3 fields, got 2' in parsed.errors[1]
  assert 'score' in parsed.errors[2] and 'bestAnswer' in parsed.errors[3]


def test_fast_and_slow_paths_agree_on_random_blocks():
  rng = random.Random(7)
  pieces = ['', '0,1,0.25', '1,0,7.5E-1', '1,1,1E0', 'x,1,0.3', '1,1,oops', '1,1', '0,0,0',
            '"1",1,0.5', ' ', '0,1,-0.0']
  for _ in range(200):
    lines = [rng.choice(pieces) for _ in range(rng.randint(1, 12))]
    fast, slow = _result(lines, BINARY), _result(lines, BINARY, slow=True)
    assert fast.kind.tolist() == slow.kind.tolist(), lines
    ok = fast.kind == blocks.OK
    for f, s in zip(fast.columns, slow.columns, strict=True):
      assert np.array(f.to_pylist(), dtype=object)[ok].tolist() == \
          np.array(s.to_pylist(), dtype=object)[ok].tolist(), lines


def _interpret(lines, layout, cutoff=0.5, min_score=None):
  parsed = _result(lines, layout)
  ok = parsed.kind == blocks.OK
  return {k: v.to_pylist() for k, v in blocks.interpret(parsed, layout, ok, cutoff,
                                                         min_score).items()}


def test_binary_cutoff_equality_gives_one():
  out = _interpret(['0,1,0.5', '0,0,0.4999999', '1,1,0.7', ''], BINARY, cutoff=0.5)
  assert out['best_answer'] == [1, 0, 1, None]
  assert out['service_best_answer'] == [1, 0, 1, None]
  assert out['true_label'] == ['0', '0', '1', None]
  out = _interpret(['0,1,0.7', '0,0,0.7'], BINARY, cutoff=0.7)
  assert out['best_answer'] == [1, 1]


def test_multiclass_best_ties_and_unknown():
  lines = ['0.2,0.5,0.3', '0.4,0.4,0.2', '', '0.34,0.33,0.33', '1E-1,8E-1,1E-1']
  out = _interpret(lines, MULTI, min_score=0.35)
  assert out['best_answer'] == ['b', 'a', None, None, 'b']
  assert out['best_score'] == [0.5, 0.4, None, 0.34, 0.8]
  assert out['unknown'] == [False, False, None, True, False]
  assert out['scores'][0] == [{'label': 'a', 'score': 0.2}, {'label': 'b', 'score': 0.5},
                              {'label': 'c', 'score': 0.3}]
  assert out['scores'][2] is None
  assert _interpret(lines, MULTI)['best_answer'][3] == 'a'


def test_regression_blank_and_values():
  out = _interpret(['-1.526385E1', '', '42'], REGRESSION)
  assert out['score'] == [-15.26385, None, 42.0]


def _join(input_lines, result_lines, layout=BINARY, columns=('id', 'name', 'amount')):
  schema = record_schema.output_schema(layout, list(columns))
  place = blocks.BlockPlace('bp', 'in.csv', 11, 12, 21)  # a header line; the result's 20 lines
  rules = blocks.BlockRules(schema, record_schema.arrow_schema(schema), layout)
  return blocks.join_block(rules, place, _block(input_lines), _block(result_lines),
                           len(input_lines))


def test_join_block_keeps_positions_and_dead_letters_bad_rows():
  inputs = ['1,a,"x, y"', '2,b,3', '', '4,d', '5,e,5', '6,f,6']
  results = ['1,1,0.9', '', '0,0,0.1', '0,0,0.2', '1,1,bad', '1,0,0.3']
  outcome = _join(inputs, results)
  rows = outcome.batch.to_pylist()
  assert [r['row_number'] for r in rows] == [11, 12, 16]
  assert [(r['input_line_number'], r['result_line_number']) for r in rows] == [
      (12, 21), (13, 22), (17, 26)]
  assert [r['status'] for r in rows] == ['ok', 'failed', 'ok']
  assert rows[0]['amount'] == 'x, y' and rows[1]['score'] is None and rows[2]['name'] == 'f'
  assert [(i, reason) for i, reason, _ in outcome.dead] == [
      (2, 'bad_input_row'), (3, 'bad_input_row'), (4, 'bad_result_line')]
  assert (outcome.joined, outcome.failed) == (2, 1)


def test_join_block_single_column_input_keeps_empty_values():
  outcome = _join(['a', '', 'c'], ['1,1,0.9', '0,0,0.2', ''], columns=('only',))
  assert [r['only'] for r in outcome.batch.to_pylist()] == ['a', '', 'c']
  assert outcome.dead == []


def test_constant_columns_are_slices_of_one_cached_column():
  first, shorter = blocks.constant('bp-const', 5), blocks.constant('bp-const', 3)
  longer, other = blocks.constant('bp-const', 12), blocks.constant('other-const', 2)
  assert first.to_pylist() == ['bp-const'] * 5 and shorter.to_pylist() == ['bp-const'] * 3
  assert longer.to_pylist() == ['bp-const'] * 12 and other.to_pylist() == ['other-const'] * 2
  assert shorter.buffers()[2].address == first.buffers()[2].address  # no copy for a shorter block
  assert blocks.constant('', 0).to_pylist() == [] and blocks.constant('', 2).to_pylist() == ['', '']


def test_tiled_class_labels_follow_the_classes_for_any_block_size():
  classes = ('tiled_a', 'tiled_b', 'tiled_c')
  for n in (2, 5, 1, 40, 3):
    assert blocks._tiled_labels(classes, n).to_pylist() == list(classes) * n


@pytest.mark.parametrize('given, expected', [(None, None), ('system', 'system')])
def test_arrow_runs_on_jemalloc_unless_a_pool_is_given(given, expected):
  import subprocess
  import sys
  env = {k: v for k, v in os.environ.items() if k != 'ARROW_DEFAULT_MEMORY_POOL'}
  if given:
    env['ARROW_DEFAULT_MEMORY_POOL'] = given
  code = ('import pyarrow as pa; from transforms.join import blocks; '
          'print(blocks.ARROW_MEMORY_POOL, pa.default_memory_pool().backend_name, '
          'pa.array(range(9)).buffers()[1] is not None)')
  out = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True,
                       check=True).stdout.split()
  if expected is None:  # pyarrow's Linux and macOS wheels have jemalloc
    import pyarrow as pa
    try:
      pa.jemalloc_memory_pool()
      expected = 'jemalloc'
    except NotImplementedError:
      expected = 'system'
  assert out == [expected, expected, 'True']


def test_count_and_keep_rest_keeps_the_rest_only_up_to_the_limit():
  data = b'head\na\n\nbb\r\nccc'
  rest = data[5:]
  for limit, kept in ((len(rest), rest), (len(rest) + 100, rest), (len(rest) - 1, None), (0, None)):
    reader = LineReader(Chunky(data))
    assert reader.readline() == b'head'
    assert reader.count_and_keep_rest(limit) == (4, kept)
    assert reader.take(1) == (b'', 0)
  reader = LineReader(io.BytesIO(b'only\n'))
  reader.readline()
  assert reader.count_and_keep_rest(0) == (0, b'')  # nothing left: nothing to read again
