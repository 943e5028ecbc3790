"""Joining one shard: its input file with its result file, by position, streaming.

Pure Python over a storage object; the Beam DoFn in ``transforms/steps.py`` is a thin wrapper.

The run decides once whether inputs start with a header line (``transforms/join/header.py``); every
shard is held to that decision. A shard's rows are its input lines, less the header line and
less the empty lines at the end of the file; each row needs exactly one result line.

A shard is read twice. Pass 1 checks the input's header line against the run's columns, reads
the result header and counts the lines of both files, which also proves the gzip stream intact
(its CRC is checked at the end); a small result's lines are kept for pass 2
(``JoinPlan.result_keep_bytes``) instead of being read again. When the result repeats input
values (``tag``, ``trueLabel``; see ``transforms/join/align.py``), pass 1 streams both files in
lockstep and compares them, parsing only those columns. Only when the counts agree exactly and
every row is aligned does pass 2 stream the files in lockstep, a block of rows at a time, and
emit records. So a shard whose files disagree, or whose result is missing, corrupt or
misaligned, never emits a partial join: each of its input rows goes to the dead letter with the
reason instead. A count that is off is never absorbed by reading the input's first line as a
header, or not as one: the run's decision stands, and the shard is refused.

Pass 2 counts the lines of each file as it reads them, and checks for every block that input
row k sits on input line k (k + 1 with a header) and is answered by result line k + 1 (line 1
is the result's header); every record carries both line numbers.

With a datasource slice (``transforms/aml/slices.py``) the result answers only some rows of a
shard: those are joined, and the others become records with status ``not_predicted``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import io
import zlib
from collections.abc import Iterator

import numpy as np
import pyarrow as pa

from transforms.aml import schema_file, slices
from transforms.aml.manifest import Shard
from transforms.io.storage import Storage, StorageError, describe, redact
from transforms.join import align, blocks, coltypes, record_schema
from transforms.join.header import SCHEMA, HeaderDecision, split_header
from transforms.join.lines import LineReader, nth_newline, split_lines
from transforms.report import audit

RECORDS, DEAD_LETTER, REPORT, RESUBMIT = 'records', 'dead_letter', 'report', 'resubmit'

# Statuses of a shard in the summary.
OK, WITH_DEAD_LETTERS, ROW_COUNT_MISMATCH, MISALIGNED, ERROR = 'ok', 'ok_with_dead_letters', \
    'row_count_mismatch', 'misaligned', 'error'
BAD_STATUSES = (ROW_COUNT_MISMATCH, MISALIGNED, ERROR)

# How a shard's pairing of rows and result lines was established (the summary's ``alignment``).
VERIFIED = 'verified'      # the result's tag/trueLabel equal the input's values on every row
POSITIONAL = 'positional'  # exact counts and line numbers: the result repeats no input value
REFUSED = 'refused'        # not joined: ``status`` and ``error`` say why

_READ_ERRORS = (StorageError, OSError, EOFError, zlib.error, gzip.BadGzipFile)


@dataclasses.dataclass(frozen=True)
class JoinPlan:
  """What every shard of the run must look like, and how to interpret it; fixed at launch."""

  layout: record_schema.ResultLayout
  schema: record_schema.OutputSchema
  header: HeaderDecision             # whether every input starts with a header line
  cutoff: float = 0.5
  min_score: float | None = None
  block_rows: int = 65536
  block_bytes: int = 4 << 20  # input bytes per block: ~48k rows of a 12-column input
  # Whether pyarrow's CSV reader may parse an input block on its thread pool: it shortens a
  # block's wall time when this process has the cores to itself, but where one SDK process runs
  # per core (local multi-processing, Dataflow) the threads only compete with the other
  # workers: they cost 10% more CPU for the input's CSV parsing.
  parse_threads: bool = True
  # A result whose lines come to at most this many bytes once inflated is kept in memory from
  # pass 1 to pass 2 instead of being read and inflated again (1M binary rows: about 11 MB;
  # 250k rows of 5 classes: 12 MB). Larger results are read twice, so a worker's memory stays
  # bounded whatever the shard's size.
  result_keep_bytes: int = 32 << 20
  aml_schema: schema_file.AmlSchema | None = None  # --schema, or the first shard's
  schema_given: bool = False         # --schema: it applies to every shard
  on_type_error: str = coltypes.DEAD_LETTER
  top_k: int | None = None
  split: slices.Split | None = None
  checks: tuple[align.Check, ...] = ()
  header_line: str | None = None     # the first shard's header line, for resubmit/

  @property
  def arrow_schema(self) -> pa.Schema:
    return record_schema.arrow_schema(self.schema)


@dataclasses.dataclass
class ShardReport:
  """One shard's line in the summary. ``input_rows`` is None when the input could not be read."""

  batch_prediction_id: str
  manifest_uri: str
  input_uri: str | None
  result_uri: str | None
  input_rows: int | None = None
  result_rows: int | None = None
  joined_rows: int = 0
  failed_rows: int = 0
  dead_letter_rows: int = 0
  status: str = OK
  error: str | None = None
  input_header: bool | None = None  # the run's header decision, as applied to this shard
  trailing_empty_lines: int = 0  # empty lines at the end of the input: not observations
  alignment: str | None = None  # VERIFIED, POSITIONAL or REFUSED
  not_predicted_rows: int = 0
  type_error_rows: int = 0  # dead-lettered as type_error
  type_errors: dict = dataclasses.field(default_factory=dict)  # output column -> values
  checks: list = dataclasses.field(default_factory=list)  # alignment checks that ran
  misaligned: dict | None = None  # the first misaligned row
  data_slice: dict | None = None  # with --data_rearrangement
  audit: dict | None = None  # transforms/report/audit.py figures

  def as_dict(self) -> dict:
    return dataclasses.asdict(self)


class ShardProblem(Exception):
  """A shard that cannot be joined; ``reason`` is the dead-letter reason."""

  def __init__(self, reason: str, message: str):
    super().__init__(message)
    self.reason = reason


def _text(line: bytes | None) -> str | None:
  return None if line is None else line.decode('utf-8', 'backslashreplace')


def _lines(reader: LineReader, block_rows: int) -> Iterator[bytes]:
  while True:
    block, n = reader.take(block_rows)
    if not n:
      return
    yield from split_lines(block)


def _line_texts(block: bytes, positions: np.ndarray, ends: np.ndarray) -> list[str]:
  """The lines at ``positions`` of a block whose line ends are ``ends``, without terminators,
  as text."""
  out = []
  for i in positions.tolist():
    start = int(ends[i - 1]) + 1 if i else 0
    line = block[start:int(ends[i])]
    out.append(_text(line[:-1] if line.endswith(b'\r') else line))
  return out


def _first_lines(block: bytes, n: int) -> bytes:
  """The first ``n`` lines of a block of whole lines."""
  return block[:nth_newline(block, n, len(block)) + 1] if n else b''


class _File:
  """One file of a shard, open for reading: its errors name it and carry ``reason``.

  A file that cannot be opened, or that fails while it is read (a missing object, a damaged
  gzip stream, a connection that stays broken after retries), raises :class:`ShardProblem`
  with ``reason`` (``input_unreadable`` or ``result_unreadable``) and a message that names the
  file, so the dead letter and the console say which of the shard's two files is at fault.
  """

  def __init__(self, storage: Storage, uri: str, reason: str):
    self._storage, self._uri, self._reason = storage, uri, reason
    self._f = None

  def _problem(self, error: BaseException) -> ShardProblem:
    side = self._reason.replace('_', ' ')  # input unreadable, result unreadable
    if isinstance(error, StorageError):  # its message names the file
      return ShardProblem(self._reason, f'{side}: {describe(error)}')
    return ShardProblem(self._reason, f'{side}: {redact(self._uri)}: {describe(error)}')

  def __enter__(self):
    try:
      self._f = self._storage.open(self._uri)
    except _READ_ERRORS as e:
      raise self._problem(e) from e
    return self

  def read(self, size: int = -1) -> bytes:
    try:
      return self._f.read(size)
    except _READ_ERRORS as e:
      raise self._problem(e) from e

  def readinto(self, buffer) -> int:
    try:
      return self._f.readinto(buffer)
    except _READ_ERRORS as e:
      raise self._problem(e) from e

  def __exit__(self, *exc):
    self._f.close()
    return False


@dataclasses.dataclass
class _Pass1:
  """What pass 1 found: the input's lines (the header line counted) and the empty lines at its
  end, the result's rows (after its header), the result's lines when kept for pass 2, and the
  first misaligned row when the checks ran in the same read (``checked``)."""

  input_lines: int
  trailing_empty_lines: int
  result_rows: int
  result_rest: bytes | None = None
  checked: bool = False
  mismatch: dict | None = None


@dataclasses.dataclass
class _Block:
  """A block of rows of one shard, as pass 2 reads it: ``row`` is its first row (0-based), the
  ends are the blocks' line ends (``transforms/join/lines.py``), and the line numbers are those of
  its first row in each file (``first_result_line`` None where the rows were not predicted)."""

  row: int
  n: int
  input: bytes
  result: bytes | None
  input_ends: np.ndarray | None
  result_ends: np.ndarray | None
  first_input_line: int
  first_result_line: int | None


class ShardJoiner:
  """Joins shards under one plan. Create once per worker; ``join`` is called per shard."""

  def __init__(self, plan: JoinPlan, storage: Storage):
    self.plan = plan
    self.storage = storage
    self._arrow_schema = plan.arrow_schema
    self._header = int(plan.header.has_header)

  def join(self, shard: Shard, shard_slice: slices.ShardSlice | None = None,
           slice_error: str | None = None) -> Iterator[tuple[str, object]]:
    """Yields ``(RECORDS, RecordBatch)``, ``(DEAD_LETTER, dict)`` and ``(RESUBMIT, str)``, then
    ``(REPORT, ShardReport)``.

    Args:
      shard_slice: with ``--data_rearrangement``, the rows of this shard the result answers.
      slice_error: with ``--data_rearrangement``, why the slice could not be placed; every row
        of the shard then goes to the dead letter (``slice_unknown``).
    """
    report = ShardReport(shard.batch_prediction_id, shard.manifest_uri, shard.input_uri,
                         shard.result_uri, input_header=self.plan.header.has_header)
    try:
      found = self._pass1(shard, shard_slice is not None or slice_error is not None,
                          slice_error)
    except ShardProblem as e:
      yield from self._refuse(shard, report, e)
      return
    report.input_rows = self._rows(found.input_lines, found.trailing_empty_lines)
    report.trailing_empty_lines = min(found.trailing_empty_lines,
                                      max(found.input_lines - self._header, 0))
    report.result_rows = found.result_rows
    ranges = ((0, report.input_rows),)
    expected = report.input_rows
    if shard_slice is not None:
      report.data_slice = shard_slice.as_dict()
      ranges, expected = shard_slice.ranges, shard_slice.predicted_rows
      if shard_slice.shard_rows != report.input_rows:
        report.status, report.alignment = ERROR, REFUSED
        report.error = (f'{redact(shard.input_uri)} has {report.input_rows} rows now but '
                        f'{shard_slice.shard_rows} when the slice was placed: it changed')
        yield from self._reject(shard, report, 'slice_unknown', report.error, with_result=False)
        return
    if expected != found.result_rows:
      report.status, report.alignment = ROW_COUNT_MISMATCH, REFUSED
      report.error = self._count_error(shard, report, found, expected)
      yield from self._reject(shard, report, ROW_COUNT_MISMATCH, report.error, with_result=True,
                              ranges=ranges)
      return
    segments = slices.segments(report.input_rows, ranges)
    report.alignment = POSITIONAL
    if self.plan.checks:
      report.checks = [check.name for check in self.plan.checks]
      if found.checked:
        mismatch, boundary = found.mismatch, None
      else:
        mismatch, boundary = self._verify(shard, segments)
      if report.data_slice is not None:
        report.data_slice['boundary'] = boundary
      if mismatch is not None:
        report.status, report.misaligned, report.alignment = MISALIGNED, mismatch, REFUSED
        report.error = mismatch.pop('error')
        yield from self._reject(shard, report, MISALIGNED, report.error, with_result=True,
                                ranges=ranges, extra={
                                    'misaligned_row': mismatch['row_number'],
                                    'check': mismatch['check'],
                                    'result_value': mismatch['result_value'],
                                    'input_value': mismatch['input_value']})
        return
      report.alignment = VERIFIED
    elif report.data_slice is not None:
      report.data_slice['boundary'] = 'unchecked'
    yield from self._join_blocks(shard, report, segments, found.result_rest)
    if report.dead_letter_rows:
      report.status = WITH_DEAD_LETTERS
    yield REPORT, report

  def count_rows(self, shard: Shard) -> int:
    """The rows of a shard's input, for placing a datasource slice.

    Raises:
      ShardProblem: the schema or the input cannot be read, or its header line differs.
    """
    self._check_schema(shard)
    return self._rows(*self._count_input(shard))

  # The run's rules ---------------------------------------------------------------------------

  def _rows(self, input_lines: int, trailing_empty_lines: int, header: int | None = None) -> int:
    """A shard's rows: its lines, less the header line and the empty lines at its end."""
    body = max(input_lines - (self._header if header is None else header), 0)
    return body - min(trailing_empty_lines, body)

  def _count_error(self, shard: Shard, report: ShardReport, found: _Pass1, expected: int) -> str:
    parts = [f'{found.input_lines} lines']
    if self._header:
      parts.append('less 1 header line')
    if report.trailing_empty_lines:
      parts.append(f'less {report.trailing_empty_lines} empty line'
                   f'{"s" if report.trailing_empty_lines > 1 else ""} at its end')
    rows = f'{report.input_rows} rows ({", ".join(parts)})'
    if report.data_slice is not None:
      rows += (f', of which the slice {report.data_slice["predicted_ranges"]} holds '
               f'{expected}')
    return (f'{redact(shard.input_uri)} has {rows} but {redact(shard.result_uri)} has '
            f'{found.result_rows} result lines after its header: each row needs exactly one. '
            f'The header decision of this run ({self.plan.header.reason}: '
            f'{"a header line" if self._header else "no header line"}) holds for every shard; '
            'a count that is off is refused, never read as a missing or extra header')

  def _check_schema(self, shard: Shard) -> None:
    """The schema beside a shard must agree with the run's (``--schema`` rules every shard).

    Raises:
      ShardProblem: the schema cannot be read, its columns differ from the run's schema, or
        its ``dataFileContainsHeader`` differs from the run's header decision, which came
        from a schema.
    """
    if self.plan.schema_given:
      return
    try:
      schema = schema_file.find_schema(shard.input_uri, self.storage)
    except schema_file.SchemaError as e:
      raise ShardProblem('schema_unreadable', str(e)) from None
    except _READ_ERRORS as e:
      raise ShardProblem('schema_unreadable', describe(e)) from None
    if schema is None:
      return
    known = self.plan.aml_schema
    if known is not None and not schema.same_columns(known):
      raise ShardProblem(
          'schema_mismatch', f'{redact(schema.uri)}: its attributes differ from those of '
          f'{redact(known.uri)}, the schema of this run\'s first shard')
    decision = self.plan.header
    if decision.source == SCHEMA and schema.contains_header != decision.has_header:
      raise ShardProblem(
          'schema_mismatch', f'{redact(schema.uri)}: dataFileContainsHeader is '
          f'{str(schema.contains_header).lower()}, but this run decided by '
          f'{decision.reason}; every shard of a run must be read the same way')

  def _check_header_line(self, shard: Shard, line: bytes | None) -> None:
    """With a header decision of yes, the shard's first line must name the run's columns."""
    expected = self.plan.schema.input_columns
    if line is None:
      raise ShardProblem('input_header_mismatch',
                         f'{redact(shard.input_uri)} is empty: it has no header line '
                         f'({self.plan.header.reason})')
    names = split_header(line)
    if names != tuple(expected):
      raise ShardProblem(
          'input_header_mismatch',
          f'{redact(shard.input_uri)} line 1: header {",".join(names)!r} differs from the '
          f'columns of this run, {",".join(expected)!r}; every shard\'s header must name the '
          f'same columns in the same order ({self.plan.header.reason})')

  # Pass 1 ------------------------------------------------------------------------------------

  def _input(self, shard: Shard) -> _File:
    return _File(self.storage, shard.input_uri, 'input_unreadable')

  def _result(self, shard: Shard) -> _File:
    return _File(self.storage, shard.result_uri, 'result_unreadable')

  def _pass1(self, shard: Shard, sliced: bool, slice_error: str | None) -> _Pass1:
    """Counts and checks both files (see the module docstring).

    Raises:
      ShardProblem: the shard cannot be joined at all; ``reason`` says why.
    """
    if self.plan.checks and not sliced:
      found = self._count_and_check(shard)
    else:
      input_lines, trailing = self._count_input(shard)
      if slice_error is not None:
        raise ShardProblem('slice_unknown', slice_error)
      found = _Pass1(input_lines, trailing, *self._count_result(shard))
    self._check_schema(shard)
    return found

  def _count_input(self, shard: Shard, check_header: bool = True) -> tuple[int, int]:
    """The input's lines (its header line included) and the empty lines at its end."""
    with self._input(shard) as f:
      reader = LineReader(f)
      if self._header:
        line = reader.readline()
        if check_header:
          self._check_header_line(shard, line)
      reader.count_rest()
      return reader.lines, reader.trailing_empty_lines

  def _read_result_header(self, shard: Shard, reader: LineReader) -> None:
    header = reader.readline()
    if header is None:
      raise ShardProblem('result_unreadable',
                         f'{redact(shard.result_uri)} is empty: no header line')
    names = split_header(header)
    if names != self.plan.layout.header:
      raise ShardProblem(
          'result_header_mismatch',
          f'{redact(shard.result_uri)} line 1: header {",".join(names)!r} differs from '
          f'{",".join(self.plan.layout.header)!r}, the header of this run\'s first shard')

  def _count_result(self, shard: Shard) -> tuple[int, bytes | None]:
    """The number of result rows (header excluded), and the lines after the header when they
    are small enough to keep (``JoinPlan.result_keep_bytes``, else None); checks the header
    against the plan."""
    with self._result(shard) as f:
      reader = LineReader(f)
      self._read_result_header(shard, reader)
      return reader.count_and_keep_rest(self.plan.result_keep_bytes)

  def _compare_block(self, shard: Shard, row: int, result_line: int,
                     input_block: bytes, result_block: bytes, n: int, shifts: list | None):
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
    parsed_result = blocks.parse_result(result_block, n, plan.layout, only=only)
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
        f'{redact(shard.input_uri)} row {row_number} (line {row_number + self._header}): '
        f'{check.input_name} is {values["input_value"]!r}, but {check.result_column} on '
        f'line {result_line + i + 1} of {redact(shard.result_uri)} is '
        f'{values["result_value"]!r}: the result is not aligned with the input, so no '
        'row of this shard is joined')
    return values

  def _count_and_check(self, shard: Shard) -> _Pass1:
    """Pass 1 when alignment checks apply: one lockstep read of both files.

    Counts the lines of both (to their ends, so the gzip CRC is checked) and compares the
    checked columns until the first misaligned row.

    Raises:
      ShardProblem: a file cannot be read, or a header differs (the refusal counts the input's
        rows again on its own).
    """
    plan = self.plan
    with self._input(shard) as fin:
      inputs = LineReader(fin)
      if self._header:
        self._check_header_line(shard, inputs.readline())
      with self._result(shard) as fres:
        results = LineReader(fres)
        self._read_result_header(shard, results)
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
              mismatch = self._compare_block(shard, rows, result_rows + 1, block,
                                             result_block, got, None)
            result_rows += got
          rows += n
        while not ended:
          _, got = results.take(plan.block_rows * 4)
          ended = not got
          result_rows += got
      return _Pass1(inputs.lines, inputs.trailing_empty_lines, result_rows, checked=True,
                    mismatch=mismatch)

  def _verify(self, shard: Shard, segments) -> tuple[dict | None, str]:
    """Pass 1, second part, with a datasource slice: the first misaligned row (or None), and
    the slice boundary.

    Streams both files in lockstep over the slice's segments, parsing only the checked columns.
    The boundary is ``confirmed`` when the checked values agree as joined and would not agree
    one row off, else ``unconfirmed`` (the values cannot tell, e.g. a constant label).

    Raises:
      RuntimeError: a file became unreadable, or changed, since pass 1 read it.
    """
    shifts = [False, False]
    try:
      with self._input(shard) as fin, self._result(shard) as fres:
        inputs, results = LineReader(fin), LineReader(fres)
        if self._header:
          inputs.readline()
        results.readline()
        for block in self._blocks(inputs, results, segments, input_ends=False):
          if block.result is None:
            continue
          values = self._compare_block(shard, block.row, block.first_result_line - 1,
                                       block.input, block.result, block.n, shifts)
          if values is not None:
            return values, 'misaligned'
    except ShardProblem as e:
      raise RuntimeError(f'{redact(shard.input_uri)}: a file became unreadable since it was '
                         f'first read: {e}') from e
    return None, 'confirmed' if all(shifts) else 'unconfirmed'

  # Pass 2 ------------------------------------------------------------------------------------

  def _blocks(self, inputs: LineReader, results: LineReader, segments, input_ends=True):
    """Yields a :class:`_Block` per block of rows, walking the segments; a block never crosses
    a segment's edge. Without ``input_ends`` the input's line ends are None, and its blocks are
    cut by a cheaper count.

    Checks, for every block, that its first row sits on the input line and is answered by the
    result line the run's rules say, as counted by each file's reader on its own.

    Raises:
      RuntimeError: a file ended early or a line count disagrees: the files changed since
        pass 1, or a bug; either way no record of the block is made.
    """
    plan = self.plan
    answered = 0  # result lines taken so far (after the header)
    for start, end, predicted in segments:
      row = start
      while row < end:
        rows = min(plan.block_rows, end - row)
        if input_ends:
          input_block, n, ends = inputs.take_lines(rows, plan.block_bytes)
        else:
          (input_block, n), ends = inputs.take(rows, plan.block_bytes), None
        if not n:
          return
        first_input_line = inputs.lines - n + 1
        if first_input_line != row + 1 + self._header:
          raise RuntimeError(f'row {row + 1} was read from input line {first_input_line}, not '
                             f'{row + 1 + self._header}: no record is made from a misplaced row')
        result_block = result_ends = first_result_line = None
        if predicted:
          result_block, got, result_ends = results.take_exactly_lines(n)
          if got != n:
            raise RuntimeError(f'a result file changed while it was read: it ended {n - got} '
                               f'lines early')
          first_result_line = results.lines - n + 1
          if first_result_line != answered + 2:
            raise RuntimeError(f'row {row + 1} would be answered by result line '
                               f'{first_result_line}, not {answered + 2}: no record is made '
                               'from a misplaced row')
          answered += n
        yield _Block(row, n, input_block, result_block, ends, result_ends,
                     first_input_line, first_result_line)
        row += n

  def _join_blocks(self, shard: Shard, report: ShardReport, segments,
                   result_rest: bytes | None = None):
    """Pass 2. ``result_rest``: the result's lines after its header, kept from pass 1 (or None:
    the result file is read again)."""
    plan = self.plan
    kept = result_rest is not None
    input_uri = redact(shard.input_uri)
    try:
      with self._input(shard) as fin, \
          (io.BytesIO(result_rest) if kept else self._result(shard)) as fres:
        inputs = LineReader(fin)
        results = LineReader(fres, lines_before=1, at_start=False) if kept else LineReader(fres)
        if self._header:
          inputs.readline()
        if not kept:
          results.readline()
        last_row = 0
        for block in self._blocks(inputs, results, segments):
          place = blocks.BlockPlace(shard.batch_prediction_id, input_uri, block.row + 1,
                                    block.first_input_line, block.first_result_line)
          outcome = blocks.join_block(
              plan.schema, self._arrow_schema, plan.layout, place, block.input, block.result,
              block.n, plan.cutoff, plan.min_score, on_type_error=plan.on_type_error,
              top_k=plan.top_k, threads=plan.parse_threads, result_ends=block.result_ends)
          if outcome.batch.num_rows:
            yield RECORDS, outcome.batch
          if outcome.dead:
            yield from self._dead_rows(shard, block, outcome)
          if outcome.failed_rows is not None and len(outcome.failed_rows):
            yield RESUBMIT, '\n'.join(_line_texts(block.input, outcome.failed_rows,
                                                  block.input_ends))
          self._count(report, outcome)
          last_row = block.row + block.n
        if results.take(1)[1] or last_row != report.input_rows:
          raise RuntimeError(f'{redact(shard.input_uri)} or {redact(shard.result_uri)} changed '
                             'while it was read: the line counts differ from pass 1')
    except ShardProblem as e:
      raise RuntimeError(f'a file became unreadable since it was first read: {e}') from e

  def _dead_rows(self, shard: Shard, block: _Block, outcome: blocks.BlockOutcome):
    in_lines = split_lines(block.input)
    res_lines = split_lines(block.result) if block.result is not None else [None] * block.n
    for i, reason, detail in outcome.dead:
      on_input = reason != 'bad_result_line'
      result_line = None if block.first_result_line is None else block.first_result_line + i
      if on_input:
        where = f'{redact(shard.input_uri)} line {block.first_input_line + i}'
      else:
        where = f'{redact(shard.result_uri)} result line {result_line}'
      yield DEAD_LETTER, self._dead(
          shard, block.row + i + 1, reason, f'{where}: {detail}', in_lines[i], res_lines[i],
          block.first_input_line + i, result_line, **outcome.extra.get(i, {}))

  @staticmethod
  def _count(report: ShardReport, outcome: blocks.BlockOutcome) -> None:
    report.joined_rows += outcome.joined
    report.failed_rows += outcome.failed
    report.not_predicted_rows += outcome.not_predicted
    report.dead_letter_rows += len(outcome.dead)
    report.type_error_rows += sum(reason == 'type_error' for _, reason, _ in outcome.dead)
    for name, count in outcome.type_errors.items():
      report.type_errors[name] = report.type_errors.get(name, 0) + count
    report.audit = audit.merge(report.audit, outcome.audit)

  # Dead letters ------------------------------------------------------------------------------

  def _dead(self, shard: Shard, row_number: int | None, reason: str, error: str,
            input_line: bytes | None = None, result_line: bytes | None = None,
            input_line_number: int | None = None, result_line_number: int | None = None,
            **extra) -> dict:
    return {
        'batch_prediction_id': shard.batch_prediction_id,
        'reason': reason,
        'error': error,
        'input_uri': redact(shard.input_uri),
        'result_uri': redact(shard.result_uri),
        'row_number': row_number,
        'input_line_number': input_line_number,
        'result_line_number': result_line_number,
        'input_line': _text(input_line),
        'result_line': _text(result_line),
        **extra,
    }

  def _refuse(self, shard: Shard, report: ShardReport, problem: ShardProblem):
    """A shard pass 1 could not join: every input row to the dead letter with the reason, or
    one dead letter for the whole shard when its input cannot be read."""
    report.status, report.error, report.alignment = ERROR, str(problem), REFUSED
    # An input whose first line is not the run's header has no header line: all its lines are
    # its rows, and all go to the dead letter, the first one too.
    header = 0 if problem.reason == 'input_header_mismatch' else self._header
    if problem.reason != 'input_unreadable':
      try:
        lines, trailing = self._count_input(shard, check_header=False)
      except ShardProblem as e:
        problem = ShardProblem(e.reason, f'{problem}; and {e}')
        report.error = str(problem)
      else:
        report.input_rows = self._rows(lines, trailing, header)
        report.trailing_empty_lines = min(trailing, max(lines - header, 0))
        report.input_header = bool(header)
        yield from self._reject(shard, report, problem.reason, str(problem), with_result=False,
                                header=header)
        return
    yield DEAD_LETTER, self._dead(shard, None, problem.reason, str(problem))
    yield REPORT, report

  def _reject(self, shard: Shard, report: ShardReport, reason: str, message: str,
              with_result: bool, ranges=None, extra: dict | None = None,
              header: int | None = None):
    """Sends every input row of a shard to the dead letter, streaming, then the report.

    With ``with_result``, each row carries the result line answering it: the next one for a
    row inside ``ranges`` (default: every row), none for the others. ``header``: whether the
    input's first line is a header, not a row (default: the run's decision).
    """
    header = self._header if header is None else header
    counts = dict(extra or {})
    if reason == ROW_COUNT_MISMATCH:
      counts = {'input_rows': report.input_rows, 'result_rows': report.result_rows}
    report.joined_rows = report.failed_rows = report.dead_letter_rows = 0
    report.not_predicted_rows = report.type_error_rows = 0
    report.type_errors, report.audit = {}, None
    ranges = list(ranges) if ranges is not None else None
    try:
      with contextlib.ExitStack() as files:
        inputs = LineReader(files.enter_context(self._input(shard)))
        if header:
          inputs.readline()
        result_lines: Iterator[bytes] = iter(())
        if with_result:
          results = LineReader(files.enter_context(self._result(shard)))
          results.readline()
          result_lines = _lines(results, self.plan.block_rows)
        at = answered = 0  # the range the rows have reached; result lines handed out
        rows = _lines(inputs, self.plan.block_rows)
        for row in range(report.input_rows):
          input_line = next(rows, None)
          if input_line is None:
            break
          if ranges is None:
            in_range = True
          else:
            while at < len(ranges) and ranges[at][1] <= row:
              at += 1
            in_range = at < len(ranges) and ranges[at][0] <= row
          result_line = next(result_lines, None) if in_range else None
          answered += result_line is not None
          report.dead_letter_rows += 1
          yield DEAD_LETTER, self._dead(
              shard, row + 1, reason, message, input_line, result_line,
              row + 1 + header, answered + 1 if result_line is not None else None,
              **counts)
    except ShardProblem as e:
      raise RuntimeError(f'{redact(shard.input_uri)} became unreadable while its rows were '
                         f'sent to the dead letter: {e}') from e
    if report.dead_letter_rows != report.input_rows:
      raise RuntimeError(f'{redact(shard.input_uri)} changed while it was read: '
                         f'{report.dead_letter_rows} rows now, {report.input_rows} before')
    yield REPORT, report
