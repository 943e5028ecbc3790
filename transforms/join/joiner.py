"""Joining one shard: its input file with its result file, by position, streaming.

Pure Python over a storage object; the Beam DoFn in ``transforms/steps.py`` is a thin wrapper.

The run decides once whether inputs start with a header line (``transforms/join/header.py``);
every shard is held to that decision. A shard's rows are its input lines, less the header line
and less the empty lines at the end of the file; each row needs exactly one result line.

A shard is read twice. Pass 1 (``transforms/join/pass1.py``) checks the header lines, counts
both files and, when the result repeats input values, compares them. Only when the counts
agree exactly and every row is aligned does pass 2 (here) stream the files in lockstep, a block
of rows at a time, and emit records. So a shard whose files disagree, or whose result is
missing, corrupt or misaligned, never emits a partial join: each of its input rows goes to the
dead letter with the reason instead (``transforms/join/refusal.py``). A count that is off is
never absorbed by reading the input's first line as a header, or not as one: the run's decision
stands, and the shard is refused.

Pass 2 counts the lines of each file as it reads them, and checks for every block that input
row k sits on input line k (k + 1 with a header) and is answered by result line k + 1 (line 1
is the result's header); every record carries both line numbers.

With a datasource slice (``transforms/aml/slices.py``) the result answers only some rows of a
shard: those are joined, and the others become records with status ``not_predicted``.

A large shard accepted by pass 1 may be split instead of joined here (``JoinPlan.range_rows``):
``join`` then yields a :class:`SplitShard` whose ranges any worker joins with ``join_range``, by
the same block join and the same line-number checks, from the offsets pass 1 noted
(``transforms/join/ranges.py``); ``merge_ranges`` adds the ranges' counts up into the shard's
report.
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Iterator

import numpy as np
import pyarrow as pa

from transforms.aml import slices
from transforms.io.storage import Storage, redact
from transforms.join import audit, blocks, ranges
from transforms.join.lines import LineReader, split_lines
from transforms.join.outcomes import (
  ERROR,
  MISALIGNED,
  POSITIONAL,
  REFUSED,
  ROW_COUNT_MISMATCH,
  VERIFIED,
  WITH_DEAD_LETTERS,
  DeadLetter,
  ResubmitLines,
  ShardProblem,
  ShardReport,
)
from transforms.join.pass1 import FirstPass, Found
from transforms.join.plan import JoinPlan
from transforms.join.refusal import Refusal, rows_of
from transforms.join.shards import Shard


def _text(line: bytes | None) -> str | None:
  return None if line is None else line.decode('utf-8', 'backslashreplace')


def _line_texts(block: bytes, positions: np.ndarray, ends: np.ndarray) -> list[str]:
  """The lines at ``positions`` of a block whose line ends are ``ends``, without terminators,
  as text."""
  out = []
  for i in positions.tolist():
    start = int(ends[i - 1]) + 1 if i else 0
    line = block[start:int(ends[i])]
    out.append(_text(line[:-1] if line.endswith(b'\r') else line))
  return out


@dataclasses.dataclass
class _Block:
  """A block of rows of one shard, as pass 2 reads it: ``row`` is its first row (0-based), the
  ends are the blocks' line ends (``transforms/join/lines.py``), and the line numbers are those
  of its first row in each file (``first_result_line`` None where the rows were not predicted)."""

  row: int
  n: int
  input: bytes
  result: bytes | None
  input_ends: np.ndarray | None
  result_ends: np.ndarray | None
  first_input_line: int
  first_result_line: int | None


Yielded = pa.RecordBatch | DeadLetter | ResubmitLines | ShardReport | ranges.SplitShard


class ShardJoiner:
  """Joins shards under one plan. Create once per worker; ``join`` is called per shard."""

  def __init__(self, plan: JoinPlan, storage: Storage):
    self.plan = plan
    self.storage = storage
    self._pass = FirstPass(plan, storage)
    self._refusal = Refusal(self._pass)
    self._header = self._pass.header

  def join(self, shard: Shard, shard_slice: slices.ShardSlice | None = None,
           slice_error: str | None = None) -> Iterator[Yielded]:
    """Yields record batches, :class:`DeadLetter` s and :class:`ResubmitLines`, then the shard's
    :class:`ShardReport`.

    Args:
      shard_slice: with ``--data_rearrangement``, the rows of this shard the result answers.
      slice_error: with ``--data_rearrangement``, why the slice could not be placed; every row
        of the shard then goes to the dead letter (``slice_unknown``).
    """
    report = ShardReport(shard.batch_prediction_id, shard.manifest_uri, shard.input_uri,
                         shard.result_uri, input_header=self.plan.header.has_header)
    try:
      found = self._pass.run(shard, shard_slice is not None or slice_error is not None,
                             slice_error)
    except ShardProblem as e:
      yield from self._refusal.refuse(shard, report, e)
      return
    report.input_rows = rows_of(found.input_lines, found.trailing_empty_lines, self._header)
    report.trailing_empty_lines = min(found.trailing_empty_lines,
                                      max(found.input_lines - self._header, 0))
    report.result_rows = found.result_rows
    predicted = ((0, report.input_rows),)  # the rows the result answers
    expected = report.input_rows
    if shard_slice is not None:
      report.data_slice = shard_slice.as_dict()
      predicted, expected = shard_slice.ranges, shard_slice.predicted_rows
      if shard_slice.shard_rows != report.input_rows:
        report.status, report.alignment = ERROR, REFUSED
        report.error = (f'{shard.input_uri} has {report.input_rows} rows now but '
                        f'{shard_slice.shard_rows} when the slice was placed: it changed')
        yield from self._refusal.reject(shard, report, 'slice_unknown', report.error,
                                        with_result=False)
        return
    if expected != found.result_rows:
      report.status, report.alignment = ROW_COUNT_MISMATCH, REFUSED
      report.error = self._count_error(shard, report, found, expected)
      yield from self._refusal.reject(shard, report, ROW_COUNT_MISMATCH, report.error,
                                      with_result=True, ranges=predicted)
      return
    segments = slices.segments(report.input_rows, predicted)
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
        yield from self._refusal.reject(
            shard, report, MISALIGNED, report.error, with_result=True, ranges=predicted,
            extra={'misaligned_row': mismatch['row_number'], 'check': mismatch['check'],
                   'result_value': mismatch['result_value'],
                   'input_value': mismatch['input_value']})
        return
      report.alignment = VERIFIED
    elif report.data_slice is not None:
      report.data_slice['boundary'] = 'unchecked'
    cut = ranges.cut(report, self.plan.range_rows, *found.spans) if found.spans else []
    if cut:  # every range is joined apart; the shard's report is theirs added up
      yield ranges.SplitShard(report, tuple(
          ranges.RangeWork(shard, report, row_range, len(cut), found.result_index)
          for row_range in cut))
      return
    yield from self._join_blocks(shard, report, segments, found.result_rest)
    if report.dead_letter_rows:
      report.status = WITH_DEAD_LETTERS
    yield report

  def count_rows(self, shard: Shard) -> int:
    """The rows of a shard's input, for placing a datasource slice.

    Raises:
      ShardProblem: the schema or the input cannot be read, or its header line differs.
    """
    self._pass.check_schema(shard)
    return rows_of(*self._pass.count_input(shard), self._header)

  def _count_error(self, shard: Shard, report: ShardReport, found: Found, expected: int) -> str:
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
    return (f'{shard.input_uri} has {rows} but {shard.result_uri} has '
            f'{found.result_rows} result lines after its header: each row needs exactly one. '
            f'The header decision of this run ({self.plan.header.reason}: '
            f'{"a header line" if self._header else "no header line"}) holds for every shard; '
            'a count that is off is refused, never read as a missing or extra header')

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
      with self._pass.input(shard) as fin, self._pass.result(shard) as fres:
        inputs, results = LineReader(fin), LineReader(fres)
        if self._header:
          inputs.readline()
        for _ in range(self.plan.result_leading_lines):
          results.readline()
        for block in self._blocks(inputs, results, segments, input_ends=False):
          if block.result is None:
            continue
          values = self._pass.compare_block(shard, block.row, block.first_result_line - 1,
                                            block.input, block.result, block.n, shifts)
          if values is not None:
            return values, 'misaligned'
    except ShardProblem as e:
      raise RuntimeError(redact(f'{shard.input_uri}: a file became unreadable since it was '
                                f'first read: {e}')) from e
    return None, 'confirmed' if all(shifts) else 'unconfirmed'

  # Pass 2 ------------------------------------------------------------------------------------

  def join_range(self, work: ranges.RangeWork) -> Iterator[Yielded]:
    """Joins one range of a split shard: yields its record batches, dead letters and resubmit
    lines, then a :class:`ShardReport` holding the range's counts only.

    Raises:
      RuntimeError: a file cannot be read at the range, or does not hold there what pass 1
        read (no record of the range is then made: the bundle fails and is retried).
    """
    shard, row_range = work.shard, work.range
    report = ShardReport(shard.batch_prediction_id, shard.manifest_uri, shard.input_uri,
                         shard.result_uri)
    first, end = row_range.first_row, row_range.first_row + row_range.rows
    leading = self.plan.result_leading_lines
    try:
      with self._range_file(shard.input_uri, row_range.input, 'input') as fin, \
          self._range_file(shard.result_uri, row_range.result, 'result',
                           work.result_index) as fres:
        inputs = LineReader(fin, lines_before=self._header + first,
                            at_start=row_range.input.start == 0)
        results = LineReader(fres, lines_before=leading + first, at_start=False)
        yield from self._join_lines(shard, report, inputs, results, [(first, end, True)],
                                    answered=first, rows=end)
        if row_range.index < work.ranges - 1 and inputs.take(1)[1]:
          raise RuntimeError(f'{shard.input_uri}: rows after row {end} in the range that ends '
                             'there: the file changed since pass 1')
        fin.finish()
        fres.finish()
    except ShardProblem as e:
      raise RuntimeError(redact(f'a file became unreadable since it was first read: {e}')) from e
    yield report

  def _range_file(self, uri: str, span: ranges.Span, what: str, index: bytes | None = None):
    """A file opened at a range's span (inflated from the index's access point for a gzip
    result), read through a :class:`ranges.SpanReader`."""
    if index is None:
      opened = self.storage.open(uri)
      opened.seek(span.start)
    else:
      raw = self.storage.open(uri, 'disable')
      try:
        opened = ranges.open_result_at(raw, index, span.start)
      except BaseException:
        raw.close()
        raise
    return ranges.SpanReader(opened, span, f'{redact(uri)} ({what})')

  def _blocks(self, inputs: LineReader, results: LineReader, segments, input_ends=True,
              answered: int = 0):
    """Yields a :class:`_Block` per block of rows, walking the segments; a block never crosses
    a segment's edge. Without ``input_ends`` the input's line ends are None, and its blocks are
    cut by a cheaper count.

    Checks, for every block, that its first row sits on the input line and is answered by the
    result line the run's rules say, as counted by each file's reader on its own.

    Raises:
      RuntimeError: a file ended early or a line count disagrees: the files changed since
        pass 1, or a bug; either way no record of the block is made.
    """
    plan = self.plan  # answered: result lines taken so far (after the header)
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
          if first_result_line != answered + 1 + plan.result_leading_lines:
            raise RuntimeError(f'row {row + 1} would be answered by result line '
                               f'{first_result_line}, not '
                               f'{answered + 1 + plan.result_leading_lines}: no record is made '
                               'from a misplaced row')
          answered += n
        yield _Block(row, n, input_block, result_block, ends, result_ends,
                     first_input_line, first_result_line)
        row += n

  def _join_blocks(self, shard: Shard, report: ShardReport, segments,
                   result_rest: bytes | None = None):
    """Pass 2. ``result_rest``: the result's lines after its header, kept from pass 1 (or None:
    the result file is read again)."""
    kept = result_rest is not None
    try:
      with self._pass.input(shard) as fin, \
          (io.BytesIO(result_rest) if kept else self._pass.result(shard)) as fres:
        inputs = LineReader(fin)
        leading = self.plan.result_leading_lines
        results = LineReader(fres, lines_before=leading, at_start=False) if kept else \
            LineReader(fres)
        if self._header:
          inputs.readline()
        if not kept:
          for _ in range(leading):
            results.readline()
        yield from self._join_lines(shard, report, inputs, results, segments,
                                    rows=report.input_rows)
    except ShardProblem as e:
      raise RuntimeError(redact(f'a file became unreadable since it was first read: {e}')) from e

  def _join_lines(self, shard: Shard, report: ShardReport, inputs: LineReader,
                  results: LineReader, segments, answered: int = 0, rows: int | None = None):
    """Joins the segments' rows from readers positioned at the first of them, counting into
    ``report``; the result must hold no line after them, and the rows must end at ``rows``."""
    shown_uri = redact(shard.input_uri)  # the records' input_uri, as it leaves the job
    rules = self.plan.block_rules
    last_row = segments[0][0] if segments else 0
    for block in self._blocks(inputs, results, segments, answered=answered):
      place = blocks.BlockPlace(shard.batch_prediction_id, shown_uri, block.row + 1,
                                block.first_input_line, block.first_result_line)
      outcome = blocks.join_block(rules, place, block.input, block.result, block.n,
                                  result_ends=block.result_ends)
      if outcome.batch.num_rows:
        yield outcome.batch
      if outcome.dead:
        yield from self._dead_rows(shard, block, outcome)
      if outcome.failed_rows is not None and len(outcome.failed_rows):
        yield ResubmitLines('\n'.join(_line_texts(block.input, outcome.failed_rows,
                                                  block.input_ends)))
      _count(report, outcome)
      last_row = block.row + block.n
    if results.take(1)[1] or last_row != rows:
      raise RuntimeError(redact(f'{shard.input_uri} or {shard.result_uri} changed while it '
                                'was read: the line counts differ from pass 1'))

  def _dead_rows(self, shard: Shard, block: _Block, outcome: blocks.BlockOutcome):
    in_lines = split_lines(block.input)
    res_lines = split_lines(block.result) if block.result is not None else [None] * block.n
    for i, reason, detail in outcome.dead:
      on_input = reason != 'bad_result_line'
      result_line = None if block.first_result_line is None else block.first_result_line + i
      if on_input:
        where = f'{shard.input_uri} line {block.first_input_line + i}'
      else:
        where = f'{shard.result_uri} result line {result_line}'
      yield DeadLetter(shard.batch_prediction_id, reason, f'{where}: {detail}', shard.input_uri,
                       shard.result_uri, block.row + i + 1, block.first_input_line + i,
                       result_line, _text(in_lines[i]), _text(res_lines[i]),
                       outcome.extra.get(i, {}))


def _count(report: ShardReport, outcome: blocks.BlockOutcome) -> None:
  report.joined_rows += outcome.joined
  report.failed_rows += outcome.failed
  report.not_predicted_rows += outcome.not_predicted
  report.dead_letter_rows += len(outcome.dead)
  report.type_error_rows += sum(reason == 'type_error' for _, reason, _ in outcome.dead)
  for name, count in outcome.type_errors.items():
    report.type_errors[name] = report.type_errors.get(name, 0) + count
  report.audit = audit.merge(report.audit, outcome.audit)


def merge_ranges(report: ShardReport, parts: list[ShardReport]) -> ShardReport:
  """The report of a split shard: pass 1's (counts, header, alignment) with the counts of its
  ranges added up."""
  merged = dataclasses.replace(report, type_errors={}, audit=None)
  for part in parts:
    merged.joined_rows += part.joined_rows
    merged.failed_rows += part.failed_rows
    merged.not_predicted_rows += part.not_predicted_rows
    merged.dead_letter_rows += part.dead_letter_rows
    merged.type_error_rows += part.type_error_rows
    for name, count in part.type_errors.items():
      merged.type_errors[name] = merged.type_errors.get(name, 0) + count
    merged.audit = audit.merge(merged.audit, part.audit)
  if merged.dead_letter_rows:
    merged.status = WITH_DEAD_LETTERS
  return merged
