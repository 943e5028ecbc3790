"""Pass 1 over a shard: is it joinable at all? Counts, header lines, and the alignment checks.

Pass 1 checks the input's header line against the run's columns (when the run decided inputs
have one), reads the result header and counts the lines of both files to their ends, which also
proves the gzip stream intact (its CRC is checked at the end); a small result's lines are kept
for pass 2 (``JoinPlan.result_keep_bytes``) instead of being read again. When the result
repeats input values (``tag``, ``trueLabel``; see ``transforms/join/align.py``), pass 1 streams
both files in lockstep and compares them, parsing only those columns. It decides nothing: the
joiner (``transforms/join/joiner.py``) compares what it found with the run's rules.

With ``JoinPlan.range_rows``, pass 1 also notes, in the same read, where the shard could be cut
into row ranges for several workers (``transforms/join/ranges.py``): each file's stream passes
through a ``Marks``, and a large gzip result is inflated by rapidgzip, which indexes it as it
goes. Anything rapidgzip gets wrong or cannot tell (an error, a trailer that disagrees) makes
pass 1 read the shard again the usual way, and the shard is then joined whole.
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import posixpath
import time
import zlib

import numpy as np

from transforms.aml import schema_file
from transforms.io.storage import BY_NAME, Storage, StorageError, describe, gunzipped
from transforms.join import align, blocks, ranges
from transforms.join.header import SCHEMA, split_header
from transforms.join.lines import LineReader, nth_newline
from transforms.join.outcomes import ShardProblem
from transforms.join.plan import JoinPlan
from transforms.join.shards import Shard

# How long a worker trusts a directory's shared ``.schema`` it has read (see _read_schema).
SHARED_SCHEMA_SECONDS = 60.0
READ_ERRORS = (StorageError, OSError, EOFError, zlib.error, gzip.BadGzipFile)
INPUT_UNREADABLE, RESULT_UNREADABLE = 'input_unreadable', 'result_unreadable'


class ShardFile:
  """One file of a shard, open for reading: its errors name it and carry ``reason``.

  A file that cannot be opened, or that fails while it is read (a missing object, a damaged
  gzip stream, a connection that stays broken after retries), raises :class:`ShardProblem`
  with ``reason`` (``input_unreadable`` or ``result_unreadable``) and a message that names the
  file, so the dead letter and the console say which of the shard's two files is at fault.
  """

  def __init__(self, storage: Storage, uri: str, reason: str, compression: str = BY_NAME,
               opener=None):
    """``opener``: makes the file object instead of ``storage.open`` (pass 1 noting ranges)."""
    self._storage, self._uri, self._reason = storage, uri, reason
    self._compression = compression
    self._opener = opener
    self._f = None

  def _problem(self, error: BaseException) -> ShardProblem:
    side = self._reason.replace('_', ' ')  # input unreadable, result unreadable
    if isinstance(error, StorageError):  # its message names the file
      return ShardProblem(self._reason, f'{side}: {describe(error)}')
    return ShardProblem(self._reason, f'{side}: {self._uri}: {describe(error)}')

  def __enter__(self):
    try:
      self._f = self._opener() if self._opener is not None else \
          self._storage.open(self._uri, self._compression)
    except READ_ERRORS as e:
      raise self._problem(e) from e
    return self

  def read(self, size: int = -1) -> bytes:
    try:
      return self._f.read(size)
    except READ_ERRORS as e:
      raise self._problem(e) from e

  def readinto(self, buffer) -> int:
    try:
      return self._f.readinto(buffer)
    except READ_ERRORS as e:
      raise self._problem(e) from e

  def __exit__(self, *exc):
    self._f.close()
    return False


@dataclasses.dataclass
class Found:
  """What pass 1 found: the input's lines (the header line counted) and the empty lines at its
  end, the result's rows (after its header), the result's lines when kept for pass 2, and the
  first misaligned row when the checks ran in the same read (``checked``)."""

  input_lines: int
  trailing_empty_lines: int
  result_rows: int
  result_rest: bytes | None = None
  checked: bool = False
  mismatch: dict | None = None
  spans: tuple[list, list] | None = None  # with ranges noted: (input spans, result spans)
  result_index: bytes | None = None  # a gzip result's rapidgzip index, for ranges


class IndexingFailed(Exception):
  """rapidgzip could not be trusted with this result: pass 1 reads it again the usual way."""


class _IndexingReader:
  """A gzip result inflated by rapidgzip, which indexes its access points as it goes; any
  error of rapidgzip's is :class:`IndexingFailed`. At the end of the stream the index is kept
  (``index``) before the reader closes."""

  def __init__(self, raw):
    self._raw = raw
    self._reader = ranges.rapidgzip_reader(raw)
    self.index: bytes | None = None

  def read(self, size: int = -1) -> bytes:
    try:
      data = self._reader.read(size)
      if not data and self.index is None:
        self.index = ranges.export_index(self._reader)
      return data
    except Exception as e:
      raise IndexingFailed(f'rapidgzip: {type(e).__name__}: {e}') from e

  def readinto(self, buffer) -> int:
    with memoryview(buffer) as view:
      data = self.read(len(view))
      view[:len(data)] = data
    return len(data)

  def close(self) -> None:
    try:
      self._reader.close()
    finally:
      self._raw.close()


class _RangeNotes:
  """What pass 1 notes of one shard for cutting it into ranges (see the module docstring)."""

  def __init__(self, first_pass: FirstPass, shard: Shard):
    self._pass = first_pass
    self._shard = shard
    self.input_marks: ranges.Marks | None = None
    self.result_marks: ranges.Marks | None = None
    self.indexing: _IndexingReader | None = None

  def open_input(self):
    storage, shard, every = self._pass.storage, self._shard, self._pass.plan.range_rows
    self.input_marks = ranges.Marks(storage.open(shard.input_uri, shard.input_compression),
                                    self._pass.header, every)
    return self.input_marks

  def open_result(self):
    storage, uri, plan = self._pass.storage, self._shard.result_uri, self._pass.plan
    source = None
    if uri.lower().endswith('.gz'):
      raw = storage.open(uri, 'disable')
      try:
        size = raw.seek(0, io.SEEK_END)
        raw.seek(0)
      except Exception as e:
        raw.close()
        raise StorageError(f'cannot read {uri}: {describe(e)}') from e
      if size >= 2 * plan.range_rows * ranges.GZIP_BYTES_PER_ROW:
        source = self.indexing = _IndexingReader(raw)
      else:  # too small to be cut: read as it is, without opening it again
        source = gunzipped(raw, uri)
    if source is None:
      source = storage.open(uri)
    self.result_marks = ranges.Marks(source, plan.result_leading_lines, plan.range_rows)
    return self.result_marks

  def finish(self) -> tuple[tuple[list, list], bytes | None] | None:
    """The spans of both files and the result's index (None: the files were not read to
    their ends here).

    Raises:
      IndexingFailed: the gzip trailer disagrees with what rapidgzip inflated.
    """
    if self.input_marks is None or self.result_marks is None:
      return None
    index = None
    if self.indexing is None and self._shard.result_uri.lower().endswith('.gz'):
      return None  # a small gzip result: no access points to start a range at
    if self.indexing is not None:
      if self.indexing.index is None:
        return None
      with self._pass.storage.open(self._shard.result_uri, 'disable') as raw:
        if not ranges.trailer_agrees(raw, self.result_marks.crc, self.result_marks.size):
          raise IndexingFailed('the gzip trailer disagrees with the inflated bytes')
      index = self.indexing.index
    return (self.input_marks.spans(), self.result_marks.spans()), index


def _first_lines(block: bytes, n: int) -> bytes:
  """The first ``n`` lines of a block of whole lines."""
  return block[:nth_newline(block, n, len(block)) + 1] if n else b''


class FirstPass:
  """Pass 1 for shards of one plan; also the files' openers and checks the other passes use."""

  def __init__(self, plan: JoinPlan, storage: Storage):
    self.plan = plan
    self.storage = storage
    self.header = int(plan.header.has_header)
    self._notes: _RangeNotes | None = None  # while pass 1 notes ranges
    self._shared_schemas: dict[str, tuple[float, bytes | None]] = {}

  def input(self, shard: Shard) -> ShardFile:
    return ShardFile(self.storage, shard.input_uri, INPUT_UNREADABLE, shard.input_compression,
                     self._notes.open_input if self._notes is not None else None)

  def result(self, shard: Shard) -> ShardFile:
    return ShardFile(self.storage, shard.result_uri, RESULT_UNREADABLE,
                     opener=self._notes.open_result if self._notes is not None else None)

  def run(self, shard: Shard, sliced: bool, slice_error: str | None) -> Found:
    """Counts and checks both files; the schema beside the shard must agree with the run's.
    With ``plan.range_rows``, also notes where a shard that needs no slice could be cut into
    ranges (``Found.spans``); an input that is gzip is always joined whole.

    Raises:
      ShardProblem: the shard cannot be joined at all; ``reason`` says why.
    """
    if self.plan.range_rows and not sliced and shard.result_problem is None and \
        not shard.input_gzip and not shard.input_uri.lower().endswith('.gz'):
      self._notes = _RangeNotes(self, shard)
      try:
        found = self._run(shard, sliced, slice_error)
        noted = self._notes.finish()
        if noted is not None:
          found.spans, found.result_index = noted
        return found
      except IndexingFailed:
        pass  # read the shard again the usual way, below: it is joined whole
      finally:
        self._notes = None
    return self._run(shard, sliced, slice_error)

  def _run(self, shard: Shard, sliced: bool, slice_error: str | None) -> Found:
    if shard.result_problem is not None:  # no result to read: its input's rows are refused
      self.count_input(shard)
      raise ShardProblem(*shard.result_problem)
    if self.plan.checks and not sliced:
      found = self.count_and_check(shard)
    else:
      input_lines, trailing = self.count_input(shard)
      if slice_error is not None:
        raise ShardProblem('slice_unknown', slice_error)
      found = Found(input_lines, trailing, *self.count_result(shard))
    self.check_schema(shard)
    return found

  def check_schema(self, shard: Shard) -> None:
    """The schema beside a shard must agree with the run's (``--schema`` rules every shard).

    Raises:
      ShardProblem: the schema cannot be read, its columns differ from the run's schema, or
        its ``dataFileContainsHeader`` differs from the run's header decision, which came
        from a schema.
    """
    if self.plan.schema_given:
      return
    try:
      schema = schema_file.find_schema(shard.input_uri, self.storage, self._read_schema)
    except schema_file.SchemaError as e:
      raise ShardProblem('schema_unreadable', str(e)) from None
    except READ_ERRORS as e:
      raise ShardProblem('schema_unreadable', describe(e)) from None
    if schema is None:
      return
    known = self.plan.aml_schema
    if known is not None and not schema.same_columns(known):
      raise ShardProblem(
          'schema_mismatch', f'{schema.uri}: its attributes differ from those of '
          f'{known.uri}, the schema of this run\'s first shard')
    decision = self.plan.header
    if decision.source == SCHEMA and schema.contains_header != decision.has_header:
      raise ShardProblem(
          'schema_mismatch', f'{schema.uri}: dataFileContainsHeader is '
          f'{str(schema.contains_header).lower()}, but this run decided by '
          f'{decision.reason}; every shard of a run must be read the same way')

  def _read_schema(self, uri: str) -> bytes | None:
    """A schema file's bytes (None: there is none). A directory's shared ``.schema`` is read
    once per ``SHARED_SCHEMA_SECONDS`` by a worker, not once per shard: with many small
    shards those requests were a good part of the CPU per shard."""
    if posixpath.basename(uri) != '.schema':
      return schema_file.read_if_exists(uri, self.storage)
    now = time.monotonic()
    held = self._shared_schemas.get(uri)
    if held is None or now - held[0] >= SHARED_SCHEMA_SECONDS:
      held = (now, schema_file.read_if_exists(uri, self.storage))
      if len(self._shared_schemas) >= 256:
        self._shared_schemas.clear()
      self._shared_schemas[uri] = held
    return held[1]

  def check_header_line(self, shard: Shard, line: bytes | None) -> None:
    """With a header decision of yes, the shard's first line must name the run's columns."""
    expected = self.plan.schema.input_columns
    if line is None:
      raise ShardProblem('input_header_mismatch',
                         f'{shard.input_uri} is empty: it has no header line '
                         f'({self.plan.header.reason})')
    names = split_header(line)
    if names != tuple(expected):
      raise ShardProblem(
          'input_header_mismatch',
          f'{shard.input_uri} line 1: header {",".join(names)!r} differs from the '
          f'columns of this run, {",".join(expected)!r}; every shard\'s header must name the '
          f'same columns in the same order ({self.plan.header.reason})')

  def count_input(self, shard: Shard, check_header: bool = True) -> tuple[int, int]:
    """The input's lines (its header line included) and the empty lines at its end."""
    with self.input(shard) as f:
      reader = LineReader(f)
      if self.header:
        line = reader.readline()
        if check_header:
          self.check_header_line(shard, line)
      reader.count_rest()
      return reader.lines, reader.trailing_empty_lines

  def read_leading(self, shard: Shard, reader: LineReader) -> None:
    """Takes and checks the result lines before the first row's answer (a header line)."""
    lines = [reader.readline() for _ in range(self.plan.result_leading_lines)]
    self.plan.result_format.check_leading(shard.result_uri, lines, self.plan.layout)

  def count_result(self, shard: Shard) -> tuple[int, bytes | None]:
    """The number of result rows (the leading lines excluded), and the lines after them when
    they are small enough to keep (``JoinPlan.result_keep_bytes``, else None); checks the
    leading lines (a header) against the plan."""
    with self.result(shard) as f:
      reader = LineReader(f)
      self.read_leading(shard, reader)
      return reader.count_and_keep_rest(self.plan.result_keep_bytes)

  def compare_block(self, shard: Shard, row: int, result_line: int, input_block: bytes,
                    result_block: bytes, n: int, shifts: list | None) -> dict | None:
    """The first misaligned row of a block as a dict (or None), parsing only checked columns.

    ``row`` is the block's first row (0-based), ``result_line`` the result line before it.
    With ``shifts`` (``[earlier, later]``), records whether the values would disagree one row
    off.
    """
    plan = self.plan
    include = sorted({check.input_index for check in plan.checks})
    only = [check.result_column for check in plan.checks]
    parsed_input = blocks.parse_input(input_block, n, len(plan.schema.input_columns),
                                      include=include, threads=plan.parse_threads)
    parsed_result = plan.result_format.parse(result_block, n, plan.layout, only=only)
    valid = (parsed_input.kind == blocks.OK) & (parsed_result.kind == blocks.OK)
    first = None
    for check in plan.checks:
      theirs = parsed_result.columns[only.index(check.result_column)]
      mine = parsed_input.columns[include.index(check.input_index)]
      mask = align.mismatches(check, theirs, mine, valid)
      if mask.any() and (first is None or int(np.argmax(mask)) < first[0]):
        first = (int(np.argmax(mask)), check, theirs, mine)
      elif shifts is not None and not all(shifts):
        earlier, later = align.shifted_differ(check, theirs, mine, valid)
        shifts[0], shifts[1] = shifts[0] or earlier, shifts[1] or later
    if first is None:
      return None
    i, check, theirs, mine = first
    row_number = row + i + 1
    values = {'check': check.name, 'row_number': row_number,
              'result_value': theirs[i].as_py(), 'input_value': mine[i].as_py()}
    values['error'] = (
        f'{shard.input_uri} row {row_number} (line {row_number + self.header}): '
        f'{check.input_name} is {values["input_value"]!r}, but {check.result_label} on '
        f'line {result_line + i + 1} of {shard.result_uri} is '
        f'{values["result_value"]!r}: the result is not aligned with the input, so no '
        'row of this shard is joined')
    return values

  def count_and_check(self, shard: Shard) -> Found:
    """Pass 1 when alignment checks apply: one lockstep read of both files.

    Counts the lines of both (to their ends, so the gzip CRC is checked) and compares the
    checked columns until the first misaligned row.

    Raises:
      ShardProblem: a file cannot be read, or a header differs (the refusal counts the input's
        rows again on its own).
    """
    plan = self.plan
    with self.input(shard) as fin:
      inputs = LineReader(fin)
      if self.header:
        self.check_header_line(shard, inputs.readline())
      with self.result(shard) as fres:
        results = LineReader(fres)
        self.read_leading(shard, results)
        rows = result_rows = 0
        mismatch, ended = None, False
        while True:
          input_block, n = inputs.take(plan.block_rows, plan.block_bytes)
          if not n:
            break
          if not ended:
            result_block, got = results.take_exactly(n)
            ended = got < n
            if mismatch is None and got:
              block = input_block if got == n else _first_lines(input_block, got)
              mismatch = self.compare_block(shard, rows, result_rows + plan.result_leading_lines,
                                            block,
                                            result_block, got, None)
            result_rows += got
          rows += n
        while not ended:
          _, got = results.take(plan.block_rows * 4)
          ended = not got
          result_rows += got
      return Found(inputs.lines, inputs.trailing_empty_lines, result_rows, checked=True,
                   mismatch=mismatch)
