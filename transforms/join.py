"""Joining one shard: its input file with its result file, by position, streaming.

Pure Python over a storage object; the Beam DoFn in ``transforms/enrich.py`` is a thin wrapper.

A shard is read twice. Pass 1 reads the result header and counts the lines of both files, which
also proves the gzip stream intact (its CRC is checked at the end). Only when both counts agree
does pass 2 stream the files in lockstep, a block of rows at a time, and emit records. So a shard
whose files disagree, or whose result is missing or corrupt, never emits a partial join: each of
its input rows goes to the dead letter with the reason instead.
"""

from __future__ import annotations

import dataclasses
import gzip
import itertools
import zlib
from collections.abc import Iterator

import pyarrow as pa

from transforms import amlschema, blocks
from transforms import layout as lay
from transforms.lines import LineReader, count_lines, split_lines
from transforms.manifest import Shard
from transforms.storage import Storage, StorageError, describe, redact

RECORDS, DEAD_LETTER, REPORT = 'records', 'dead_letter', 'report'

# Statuses of a shard in the summary.
OK, WITH_DEAD_LETTERS, ROW_COUNT_MISMATCH, ERROR = 'ok', 'ok_with_dead_letters', \
    'row_count_mismatch', 'error'
BAD_STATUSES = (ROW_COUNT_MISMATCH, ERROR)

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
  block_bytes: int = 4 << 20  # input bytes per block: ~50k rows of a 12-column input

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


class ShardJoiner:
  """Joins shards under one plan. Create once per worker; ``join`` is called per shard."""

  def __init__(self, plan: JoinPlan, storage: Storage):
    self.plan = plan
    self.storage = storage
    self._arrow_schema = plan.arrow_schema

  def join(self, shard: Shard) -> Iterator[tuple[str, object]]:
    """Yields ``(RECORDS, RecordBatch)`` and ``(DEAD_LETTER, dict)``, then ``(REPORT, ShardReport)``."""
    report = ShardReport(shard.batch_prediction_id, shard.manifest_uri, shard.input_uri,
                         shard.result_uri)
    try:
      input_lines = self._count_input(shard)
    except _READ_ERRORS as e:
      report.status, report.error = ERROR, f'input unreadable: {describe(e)}'
      yield DEAD_LETTER, self._dead(shard, None, 'input_unreadable', report.error)
      yield REPORT, report
      return
    try:
      result_rows = self._check_result(shard)
      has_header = self._input_has_header(shard, input_lines, result_rows)
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
    if report.input_rows != result_rows:
      report.status = ROW_COUNT_MISMATCH
      report.error = (f'{redact(shard.input_uri)} has {report.input_rows} rows but '
                      f'{redact(shard.result_uri)} has {result_rows} result lines')
      yield from self._reject(shard, report, ROW_COUNT_MISMATCH, report.error, with_result=True)
      return
    yield from self._join_blocks(shard, report, has_header)
    if report.dead_letter_rows:
      report.status = WITH_DEAD_LETTERS
    yield REPORT, report

  # Pass 1 ------------------------------------------------------------------------------------

  def _count_input(self, shard: Shard) -> int:
    with self.storage.open(shard.input_uri) as f:
      return count_lines(f)

  def _check_result(self, shard: Shard) -> int:
    """The number of result rows (header excluded); checks the header against the plan."""
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
      rows = 0
      while True:
        _, n = reader.take(self.plan.block_rows * 4)
        if not n:
          return rows
        rows += n

  def _fallback_header(self, shard: Shard) -> bool:
    if self.plan.input_header != 'auto':
      return self.plan.input_header == 'true'
    try:
      schema = amlschema.find_schema(shard.input_uri, self.storage)
    except (amlschema.SchemaError, *_READ_ERRORS):
      schema = None
    return schema.contains_header if schema else self.plan.default_header

  def _input_has_header(self, shard: Shard, input_lines: int, result_rows: int) -> bool:
    if self.plan.input_header != 'auto':
      has_header = self.plan.input_header == 'true'
    else:
      try:
        schema = amlschema.find_schema(shard.input_uri, self.storage)
      except amlschema.SchemaError as e:
        raise ShardProblem('schema_unreadable', str(e)) from None
      if schema is not None:
        has_header = schema.contains_header
      elif input_lines - result_rows in (0, 1):
        has_header = input_lines - result_rows == 1
      else:
        has_header = self.plan.default_header
    if has_header:
      self._check_input_header(shard)
    return has_header

  def _check_input_header(self, shard: Shard) -> None:
    with self.storage.open(shard.input_uri) as f:
      line = LineReader(f).readline()
    names = lay.split_header(line or b'')
    expected = self.plan.schema.input_columns
    if len(names) != len(expected) or (self.plan.header_names and names != expected):
      raise ShardProblem(
          'input_header_mismatch',
          f'{redact(shard.input_uri)} line 1: header {",".join(names)!r} differs from the '
          f'columns of this run, {",".join(expected)!r}')

  # Pass 2 ------------------------------------------------------------------------------------

  def _join_blocks(self, shard: Shard, report: ShardReport, has_header: bool):
    plan = self.plan
    with self.storage.open(shard.input_uri) as fin, self.storage.open(shard.result_uri) as fres:
      inputs, results = LineReader(fin), LineReader(fres)
      if has_header:
        inputs.readline()
      results.readline()
      first_row = 1
      while True:
        input_block, n = inputs.take(plan.block_rows, plan.block_bytes)
        if not n:
          break
        result_block, got = results.take_exactly(n)
        if got != n:
          raise RuntimeError(f'{redact(shard.result_uri)} changed while it was read: it ended '
                             f'at row {first_row + got - 1}, pass 1 counted {report.input_rows}')
        outcome = blocks.join_block(
            plan.schema, self._arrow_schema, plan.layout, shard.batch_prediction_id,
            redact(shard.input_uri), first_row, input_block, result_block, n, plan.cutoff,
            plan.min_score)
        if outcome.batch.num_rows:
          yield RECORDS, outcome.batch
        if outcome.dead:
          in_lines, res_lines = split_lines(input_block), split_lines(result_block)
          for i, reason, detail in outcome.dead:
            line = 'line' if reason == 'bad_input_row' else 'result line'
            where = shard.input_uri if reason == 'bad_input_row' else shard.result_uri
            number = first_row + i + (has_header if reason == 'bad_input_row' else 1)
            yield DEAD_LETTER, self._dead(
                shard, first_row + i, reason, f'{redact(where)} {line} {number}: {detail}',
                in_lines[i], res_lines[i])
        report.joined_rows += outcome.joined
        report.failed_rows += outcome.failed
        report.dead_letter_rows += len(outcome.dead)
        first_row += n
      if results.take(1)[1] or first_row - 1 != report.input_rows:
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
              with_result: bool):
    """Sends every input row of a shard to the dead letter, streaming, then the report."""
    counts = {}
    if reason == ROW_COUNT_MISMATCH:
      counts = {'input_rows': report.input_rows, 'result_rows': report.result_rows}
    report.joined_rows = report.failed_rows = report.dead_letter_rows = 0
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
          pairs = itertools.zip_longest(_lines(inputs, self.plan.block_rows), result_lines)
          for row_number, (input_line, result_line) in enumerate(pairs, start=1):
            if input_line is None:
              break  # result lines beyond the input belong to no input row
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
