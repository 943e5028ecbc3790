"""Joining one shard: its input file with its result file, by position, streaming.

Pure Python over a storage object; the Beam DoFn in ``transforms/enrich.py`` is a thin wrapper.

A shard is read twice. Pass 1 reads the result header and counts the lines of both files, which
also proves the gzip stream intact (its CRC is checked at the end); a small result's lines are
kept for pass 2 (``JoinPlan.result_keep_bytes``) instead of being read again. When the result
repeats input values (``tag``, ``trueLabel``; see ``transforms/align.py``), pass 1 streams both
files in lockstep and compares them, parsing only those columns. Only when both counts agree and
every row is aligned does pass 2 stream the files in lockstep, a block of rows at a time, and
emit records. So a shard whose files disagree, or whose result is missing, corrupt or misaligned,
never emits a partial join: each of its input rows goes to the dead letter with the reason
instead.

With a datasource slice (``transforms/split.py``) the result answers only some rows of a
shard: those are joined, and the others become records with status ``not_predicted``.
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import zlib
from collections.abc import Iterator

import numpy as np
import pyarrow as pa

from transforms import align, amlschema, audit, blocks, coltypes
from transforms import layout as lay
from transforms import split as splitting
from transforms.lines import LineReader, count_lines, split_lines
from transforms.manifest import Shard
from transforms.storage import Storage, StorageError, describe, redact

RECORDS, DEAD_LETTER, REPORT, RESUBMIT = 'records', 'dead_letter', 'report', 'resubmit'

# Statuses of a shard in the summary.
OK, WITH_DEAD_LETTERS, ROW_COUNT_MISMATCH, MISALIGNED, ERROR = 'ok', 'ok_with_dead_letters', \
    'row_count_mismatch', 'misaligned', 'error'
BAD_STATUSES = (ROW_COUNT_MISMATCH, MISALIGNED, ERROR)

_READ_ERRORS = (StorageError, OSError, EOFError, zlib.error, gzip.BadGzipFile)


@dataclasses.dataclass(frozen=True)
class JoinPlan:
  """What every shard of the run must look like, and how to interpret it; fixed at launch."""

  layout: lay.ResultLayout
  schema: lay.OutputSchema
  input_header: str = 'auto'         # the --input_header option
  header_names: bool = True          # whether schema.input_columns came from a header line
  default_header: bool = False       # auto mode, when neither a schema nor the counts decide
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
  aml_schema: amlschema.AmlSchema | None = None  # --schema, or the first shard's
  schema_given: bool = False         # --schema: it applies to every shard
  on_type_error: str = coltypes.DEAD_LETTER
  top_k: int | None = None
  split: splitting.Split | None = None
  checks: tuple[align.Check, ...] = ()
  header_line: str | None = None     # the first shard's header line, for resubmit/

  @property
  def arrow_schema(self) -> pa.Schema:
    return lay.arrow_schema(self.schema)


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
  input_header: bool | None = None
  not_predicted_rows: int = 0
  type_error_rows: int = 0  # dead-lettered as type_error
  type_errors: dict = dataclasses.field(default_factory=dict)  # output column -> values
  checks: list = dataclasses.field(default_factory=list)  # alignment checks that ran
  misaligned: dict | None = None  # the first misaligned row
  data_slice: dict | None = None  # with --data_rearrangement
  audit: dict | None = None  # transforms/audit.py figures

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


class ShardJoiner:
  """Joins shards under one plan. Create once per worker; ``join`` is called per shard."""

  def __init__(self, plan: JoinPlan, storage: Storage):
    self.plan = plan
    self.storage = storage
    self._arrow_schema = plan.arrow_schema

  def join(self, shard: Shard, shard_slice: splitting.ShardSlice | None = None,
           slice_error: str | None = None) -> Iterator[tuple[str, object]]:
    """Yields ``(RECORDS, RecordBatch)``, ``(DEAD_LETTER, dict)`` and ``(RESUBMIT, str)``, then
    ``(REPORT, ShardReport)``.

    Args:
      shard_slice: with ``--data_rearrangement``, the rows of this shard the result answers.
      slice_error: with ``--data_rearrangement``, why the slice could not be placed; every row
        of the shard then goes to the dead letter (``slice_unknown``).
    """
    report = ShardReport(shard.batch_prediction_id, shard.manifest_uri, shard.input_uri,
                         shard.result_uri)
    sliced = self.plan.split is not None
    checked = result_rest = None
    if self.plan.checks and not sliced:
      try:
        checked = self._count_and_check(shard)
      except (ShardProblem, *_READ_ERRORS):
        checked = None  # the separate reads below find the problem again and report it
    if checked is not None:
      input_lines, result_rows, has_header, first_mismatch = checked
    else:
      try:
        input_lines = self._count_input(shard)
      except _READ_ERRORS as e:
        report.status, report.error = ERROR, f'input unreadable: {describe(e)}'
        yield DEAD_LETTER, self._dead(shard, None, 'input_unreadable', report.error)
        yield REPORT, report
        return
      try:
        if slice_error is not None:
          raise ShardProblem('slice_unknown', slice_error)
        result_rows, result_rest = self._check_result(shard)
        has_header = self._input_has_header(shard, input_lines, result_rows, sliced)
      except (ShardProblem, *_READ_ERRORS) as e:
        reason = e.reason if isinstance(e, ShardProblem) else 'result_unreadable'
        message = str(e) if isinstance(e, ShardProblem) else describe(e)
        report.input_rows = input_lines - self._fallback_header(shard)
        report.status, report.error = ERROR, message
        yield from self._reject(shard, report, reason, message, with_result=False)
        return
    report.input_header = has_header
    report.input_rows = input_lines - has_header
    report.result_rows = result_rows
    ranges = ((0, report.input_rows),)
    expected = report.input_rows
    if shard_slice is not None:
      report.data_slice = shard_slice.as_dict()
      ranges, expected = shard_slice.ranges, shard_slice.predicted_rows
      if shard_slice.shard_rows != report.input_rows:
        report.status = ERROR
        report.error = (f'{redact(shard.input_uri)} has {report.input_rows} rows now but '
                        f'{shard_slice.shard_rows} when the slice was placed: it changed')
        yield from self._reject(shard, report, 'slice_unknown', report.error, with_result=False)
        return
    if expected != result_rows:
      report.status = ROW_COUNT_MISMATCH
      answered = (f'{expected} rows of the slice ({report.data_slice["predicted_ranges"]})'
                  if shard_slice is not None else f'{report.input_rows} rows')
      report.error = (f'{redact(shard.input_uri)} has {answered} but '
                      f'{redact(shard.result_uri)} has {result_rows} result lines')
      yield from self._reject(shard, report, ROW_COUNT_MISMATCH, report.error, with_result=True,
                              ranges=ranges)
      return
    segments = splitting.segments(report.input_rows, ranges)
    if self.plan.checks:
      report.checks = [check.name for check in self.plan.checks]
      if checked is not None:
        mismatch, boundary = first_mismatch, None
      else:
        mismatch, boundary = self._verify(shard, has_header, segments)
      if report.data_slice is not None:
        report.data_slice['boundary'] = boundary
      if mismatch is not None:
        report.status, report.misaligned = MISALIGNED, mismatch
        report.error = mismatch.pop('error')
        yield from self._reject(shard, report, MISALIGNED, report.error, with_result=True,
                                ranges=ranges, extra={
                                    'misaligned_row': mismatch['row_number'],
                                    'check': mismatch['check'],
                                    'result_value': mismatch['result_value'],
                                    'input_value': mismatch['input_value']})
        return
    elif report.data_slice is not None:
      report.data_slice['boundary'] = 'unchecked'
    yield from self._join_blocks(shard, report, has_header, segments, result_rest)
    if report.dead_letter_rows:
      report.status = WITH_DEAD_LETTERS
    yield REPORT, report

  def count_rows(self, shard: Shard) -> int:
    """The rows of a shard's input (header excluded), for placing a datasource slice.

    Raises:
      ShardProblem, OSError: the schema or the input cannot be read.
    """
    lines = self._count_input(shard)
    return lines - self._header_without_counts(shard) if lines else 0

  # Pass 1 ------------------------------------------------------------------------------------

  def _count_input(self, shard: Shard) -> int:
    with self.storage.open(shard.input_uri) as f:
      return count_lines(f)

  def _check_result(self, shard: Shard) -> tuple[int, bytes | None]:
    """The number of result rows (header excluded), and the lines after the header when they
    are small enough to keep (``JoinPlan.result_keep_bytes``, else None); checks the header
    against the plan."""
    with self.storage.open(shard.result_uri) as f:
      reader = LineReader(f)
      header = reader.readline()
      if header is None:
        raise ShardProblem('result_unreadable',
                           f'{redact(shard.result_uri)} is empty: no header line')
      names = lay.split_header(header)
      if names != self.plan.layout.header:
        raise ShardProblem(
            'result_header_mismatch',
            f'{redact(shard.result_uri)} line 1: header {",".join(names)!r} differs from '
            f'{",".join(self.plan.layout.header)!r}, the header of this run\'s first shard')
      return reader.count_and_keep_rest(self.plan.result_keep_bytes)

  def _schema(self, shard: Shard) -> amlschema.AmlSchema | None:
    """The schema that rules a shard: ``--schema``, else the one beside it (or None).

    Raises:
      ShardProblem: the schema cannot be read, or its columns differ from the run's schema.
    """
    if self.plan.schema_given:
      return self.plan.aml_schema
    try:
      schema = amlschema.find_schema(shard.input_uri, self.storage)
    except amlschema.SchemaError as e:
      raise ShardProblem('schema_unreadable', str(e)) from None
    known = self.plan.aml_schema
    if schema is not None and known is not None and not schema.same_columns(known):
      raise ShardProblem(
          'schema_mismatch', f'{redact(schema.uri)}: its attributes differ from those of '
          f'{redact(known.uri)}, the schema of this run\'s first shard')
    return schema

  def _header_without_counts(self, shard: Shard) -> bool:
    if self.plan.input_header != 'auto':
      return self.plan.input_header == 'true'
    schema = self._schema(shard)
    return schema.contains_header if schema else self.plan.default_header

  def _fallback_header(self, shard: Shard) -> bool:
    try:
      return self._header_without_counts(shard)
    except (ShardProblem, *_READ_ERRORS):
      return self.plan.default_header

  def _input_has_header(self, shard: Shard, input_lines: int, result_rows: int,
                        sliced: bool = False) -> bool:
    if self.plan.input_header != 'auto':
      has_header = self.plan.input_header == 'true'
    else:
      schema = self._schema(shard)
      if schema is not None:
        has_header = schema.contains_header
      elif not sliced and input_lines - result_rows in (0, 1):
        has_header = input_lines - result_rows == 1
      else:
        has_header = self.plan.default_header
    if has_header:
      self._check_input_header(shard)
    return has_header

  def _input_header_differs(self, line: bytes | None) -> bool:
    """Whether an input's first line is not a header of this run's columns."""
    names = lay.split_header(line or b'')
    expected = self.plan.schema.input_columns
    return len(names) != len(expected) or (self.plan.header_names and names != expected)

  def _check_input_header(self, shard: Shard) -> None:
    with self.storage.open(shard.input_uri) as f:
      line = LineReader(f).readline()
    if self._input_header_differs(line):
      names = lay.split_header(line or b'')
      expected = self.plan.schema.input_columns
      raise ShardProblem(
          'input_header_mismatch',
          f'{redact(shard.input_uri)} line 1: header {",".join(names)!r} differs from the '
          f'columns of this run, {",".join(expected)!r}')

  def _blocks(self, inputs: LineReader, results: LineReader, segments, input_ends=True):
    """Yields ``(row, input_block, n, result_block or None, input_ends, result_ends or
    None)``, walking the segments; the ends are the blocks' line ends (``transforms/lines``).
    Without ``input_ends`` the input's are None, and its blocks are cut by a cheaper count.

    ``row`` is 0-based; a block never crosses a segment's edge.
    """
    plan = self.plan
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
        result_block = result_ends = None
        if predicted:
          result_block, got, result_ends = results.take_exactly_lines(n)
          if got != n:
            raise RuntimeError(f'a result file changed while it was read: it ended {n - got} '
                               f'lines early')
        yield row, input_block, n, result_block, ends, result_ends
        row += n

  def _compare_block(self, shard: Shard, has_header: bool, row: int, result_line: int,
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
        f'{redact(shard.input_uri)} row {row_number} (line {row_number + has_header}): '
        f'{check.input_name} is {values["input_value"]!r}, but {check.result_column} on '
        f'line {result_line + i + 1} of {redact(shard.result_uri)} is '
        f'{values["result_value"]!r}: the result is not aligned with the input, so no '
        'row of this shard is joined')
    return values

  def _count_and_check(self, shard: Shard) -> tuple[int, int, bool, dict | None]:
    """Pass 1 when alignment checks apply: one lockstep read of both files.

    Counts the lines of both (to their ends, so the gzip CRC is checked) and compares the
    checked columns until the first misaligned row; the header comes from the schema or the
    option, not from the counts.

    Returns:
      ``(input_lines, result_rows, has_header, first misaligned row or None)``.

    Raises:
      ShardProblem, OSError, ...: anything unusual; the caller then reads the files the usual
        way, which finds the problem again and reports it with its reason.
    """
    plan = self.plan
    if plan.input_header == 'auto' and self._schema(shard) is None:
      # The header would be sniffed from the line counts: read them first, the usual way.
      raise ShardProblem('header_needs_counts', 'the input header is decided by the counts')
    has_header = self._header_without_counts(shard)
    with self.storage.open(shard.input_uri) as fin, self.storage.open(shard.result_uri) as fres:
      inputs, results = LineReader(fin), LineReader(fres)
      header = results.readline()
      if header is None or lay.split_header(header) != plan.layout.header:
        raise ShardProblem('result_header_mismatch', 'the result header differs')
      input_lines = 0
      if has_header:
        if self._input_header_differs(inputs.readline()):
          raise ShardProblem('input_header_mismatch', 'the input header differs')
        input_lines = 1
      rows = result_rows = 0
      mismatch, ended = None, False
      while True:
        input_block, n = inputs.take(plan.block_rows, plan.block_bytes)
        if not n:
          break
        if not ended:
          result_block, got = results.take_exactly(n)
          ended = got < n
          if mismatch is None and not ended:
            mismatch = self._compare_block(shard, has_header, rows, result_rows + 1,
                                           input_block, result_block, n, None)
          result_rows += got
        rows += n
      while not ended:
        _, got = results.take(plan.block_rows * 4)
        ended = not got
        result_rows += got
    return input_lines + rows, result_rows, has_header, mismatch

  def _verify(self, shard: Shard, has_header: bool, segments) -> tuple[dict | None, str]:
    """Pass 1, second part, with a datasource slice: the first misaligned row (or None), and
    the slice boundary.

    Streams both files in lockstep over the slice's segments, parsing only the checked columns.
    The boundary is ``confirmed`` when the checked values agree as joined and would not agree
    one row off, else ``unconfirmed`` (the values cannot tell, e.g. a constant label).
    """
    shifts = [False, False]
    result_line = 1  # the header
    with self.storage.open(shard.input_uri) as fin, self.storage.open(shard.result_uri) as fres:
      inputs, results = LineReader(fin), LineReader(fres)
      if has_header:
        inputs.readline()
      results.readline()
      for row, input_block, n, result_block, _, _ in self._blocks(inputs, results, segments,
                                                                  input_ends=False):
        if result_block is None:
          continue
        values = self._compare_block(shard, has_header, row, result_line, input_block,
                                     result_block, n, shifts)
        if values is not None:
          return values, 'misaligned'
        result_line += n
    return None, 'confirmed' if all(shifts) else 'unconfirmed'

  # Pass 2 ------------------------------------------------------------------------------------

  def _join_blocks(self, shard: Shard, report: ShardReport, has_header: bool, segments,
                   result_rest: bytes | None = None):
    """Pass 2. ``result_rest``: the result's lines after its header, kept from pass 1 (or None:
    the result file is read again)."""
    plan = self.plan
    kept = result_rest is not None
    with self.storage.open(shard.input_uri) as fin, \
        (io.BytesIO(result_rest) if kept else self.storage.open(shard.result_uri)) as fres:
      inputs, results = LineReader(fin), LineReader(fres)
      if has_header:
        inputs.readline()
      if not kept:
        results.readline()
      result_line = 1
      last_row = 0
      for row, input_block, n, result_block, input_ends, result_ends in self._blocks(
          inputs, results, segments):
        first_row = row + 1
        outcome = blocks.join_block(
            plan.schema, self._arrow_schema, plan.layout, shard.batch_prediction_id,
            redact(shard.input_uri), first_row, input_block, result_block, n, plan.cutoff,
            plan.min_score, on_type_error=plan.on_type_error, top_k=plan.top_k,
            threads=plan.parse_threads, result_ends=result_ends)
        if outcome.batch.num_rows:
          yield RECORDS, outcome.batch
        if outcome.dead:
          in_lines = split_lines(input_block)
          res_lines = split_lines(result_block) if result_block is not None else [None] * n
          for i, reason, detail in outcome.dead:
            on_input = reason != 'bad_result_line'
            line = 'line' if on_input else 'result line'
            where = shard.input_uri if on_input else shard.result_uri
            number = first_row + i + has_header if on_input else result_line + i + 1
            yield DEAD_LETTER, self._dead(
                shard, first_row + i, reason, f'{redact(where)} {line} {number}: {detail}',
                in_lines[i], res_lines[i], **outcome.extra.get(i, {}))
        if outcome.failed_rows is not None and len(outcome.failed_rows):
          yield RESUBMIT, '\n'.join(_line_texts(input_block, outcome.failed_rows, input_ends))
        report.joined_rows += outcome.joined
        report.failed_rows += outcome.failed
        report.not_predicted_rows += outcome.not_predicted
        report.dead_letter_rows += len(outcome.dead)
        report.type_error_rows += sum(reason == 'type_error' for _, reason, _ in outcome.dead)
        for name, count in outcome.type_errors.items():
          report.type_errors[name] = report.type_errors.get(name, 0) + count
        report.audit = audit.merge(report.audit, outcome.audit)
        if result_block is not None:
          result_line += n
        last_row = row + n
      if results.take(1)[1] or last_row != report.input_rows:
        raise RuntimeError(f'{redact(shard.input_uri)} or {redact(shard.result_uri)} changed '
                           'while it was read: the line counts differ from pass 1')

  # Dead letters ------------------------------------------------------------------------------

  def _dead(self, shard: Shard, row_number: int | None, reason: str, error: str,
            input_line: bytes | None = None, result_line: bytes | None = None, **extra) -> dict:
    return {
        'batch_prediction_id': shard.batch_prediction_id,
        'reason': reason,
        'error': error,
        'input_uri': redact(shard.input_uri),
        'result_uri': redact(shard.result_uri),
        'row_number': row_number,
        'input_line': _text(input_line),
        'result_line': _text(result_line),
        **extra,
    }

  def _reject(self, shard: Shard, report: ShardReport, reason: str, message: str,
              with_result: bool, ranges=None, extra: dict | None = None):
    """Sends every input row of a shard to the dead letter, streaming, then the report.

    With ``with_result``, each row carries the result line answering it: the next one for a
    row inside ``ranges`` (default: every row), none for the others.
    """
    counts = dict(extra or {})
    if reason == ROW_COUNT_MISMATCH:
      counts = {'input_rows': report.input_rows, 'result_rows': report.result_rows}
    report.joined_rows = report.failed_rows = report.dead_letter_rows = 0
    report.not_predicted_rows = report.type_error_rows = 0
    report.type_errors, report.audit = {}, None
    ranges = list(ranges) if ranges is not None else None
    try:
      with self.storage.open(shard.input_uri) as fin:
        inputs = LineReader(fin)
        if report.input_header if report.input_header is not None else \
            self._fallback_header(shard):
          inputs.readline()
        result_lines: Iterator[bytes] = iter(())
        fres = self.storage.open(shard.result_uri) if with_result else None
        try:
          if fres is not None:
            results = LineReader(fres)
            results.readline()
            result_lines = _lines(results, self.plan.block_rows)
          at = 0  # the range the rows have reached
          for row_number, input_line in enumerate(_lines(inputs, self.plan.block_rows), start=1):
            row = row_number - 1
            if ranges is None:
              answered = True
            else:
              while at < len(ranges) and ranges[at][1] <= row:
                at += 1
              answered = at < len(ranges) and ranges[at][0] <= row
            result_line = next(result_lines, None) if answered else None
            report.dead_letter_rows += 1
            yield DEAD_LETTER, self._dead(shard, row_number, reason, message, input_line,
                                          result_line, **counts)
        finally:
          if fres is not None:
            fres.close()
    except _READ_ERRORS as e:
      raise RuntimeError(f'{redact(shard.input_uri)} became unreadable while its rows were '
                         f'sent to the dead letter: {describe(e)}') from e
    if report.dead_letter_rows != report.input_rows:
      raise RuntimeError(f'{redact(shard.input_uri)} changed while it was read: '
                         f'{report.dead_letter_rows} rows now, {report.input_rows} before')
    yield REPORT, report
