"""A refused shard: every one of its input rows to the dead letter, with the reason, streaming.

A shard is refused whole (never joined in part) when pass 1 finds it cannot be joined (an
unreadable file, a header that differs, a schema that differs) or when its counts or alignment
disagree. Its rows are read again and each becomes a dead letter with the shard's reason and
message, carrying the input line it was read from and, where the result had one for it, the
result line that would have answered it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from transforms.io.storage import redact
from transforms.join.lines import LineReader, split_lines
from transforms.join.outcomes import (
  ERROR,
  REFUSED,
  ROW_COUNT_MISMATCH,
  DeadLetter,
  ShardProblem,
  ShardReport,
)
from transforms.join.pass1 import INPUT_UNREADABLE, FirstPass
from transforms.join.shards import Shard


def _text(line: bytes | None) -> str | None:
  return None if line is None else line.decode('utf-8', 'backslashreplace')


def lines_of(reader: LineReader, block_rows: int) -> Iterator[bytes]:
  """The lines left in a reader, without terminators, a block at a time."""
  while True:
    block, n = reader.take(block_rows)
    if not n:
      return
    yield from split_lines(block)


def rows_of(input_lines: int, trailing_empty_lines: int, header: int) -> int:
  """A shard's rows: its lines, less the header line and the empty lines at its end."""
  body = max(input_lines - header, 0)
  return body - min(trailing_empty_lines, body)


class Refusal:
  """Refuses shards of one plan (``first_pass`` opens their files)."""

  def __init__(self, first_pass: FirstPass):
    self._pass = first_pass
    self._block_rows = first_pass.plan.block_rows

  def refuse(self, shard: Shard, report: ShardReport, problem: ShardProblem):
    """A shard pass 1 could not join: every input row to the dead letter with the reason, or
    one dead letter for the whole shard when its input cannot be read. Yields the dead letters,
    then the report."""
    report.status, report.error, report.alignment = ERROR, str(problem), REFUSED
    # An input whose first line is not the run's header has no header line: all its lines are
    # its rows, and all go to the dead letter, the first one too.
    header = 0 if problem.reason == 'input_header_mismatch' else self._pass.header
    if problem.reason != INPUT_UNREADABLE:
      try:
        lines, trailing = self._pass.count_input(shard, check_header=False)
      except ShardProblem as e:
        problem = ShardProblem(e.reason, f'{problem}; and {e}')
        report.error = str(problem)
      else:
        report.input_rows = rows_of(lines, trailing, header)
        report.trailing_empty_lines = min(trailing, max(lines - header, 0))
        report.input_header = bool(header)
        yield from self.reject(shard, report, problem.reason, str(problem), with_result=False,
                               header=header)
        return
    yield DeadLetter(shard.batch_prediction_id, problem.reason, str(problem), shard.input_uri,
                     shard.result_uri)
    yield report

  def reject(self, shard: Shard, report: ShardReport, reason: str, message: str,
             with_result: bool, ranges=None, extra: dict | None = None,
             header: int | None = None):
    """Sends every input row of a shard to the dead letter, streaming, then the report.

    With ``with_result``, each row carries the result line answering it: the next one for a
    row inside ``ranges`` (default: every row), none for the others. ``header``: whether the
    input's first line is a header, not a row (default: the run's decision).

    Raises:
      RuntimeError: a file became unreadable, or changed, since pass 1 read it.
    """
    header = self._pass.header if header is None else header
    extra = dict(extra or {})
    if reason == ROW_COUNT_MISMATCH:
      extra = {'input_rows': report.input_rows, 'result_rows': report.result_rows}
    report.joined_rows = report.failed_rows = report.dead_letter_rows = 0
    report.not_predicted_rows = report.type_error_rows = 0
    report.type_errors, report.audit = {}, None
    ranges = list(ranges) if ranges is not None else None
    try:
      with contextlib.ExitStack() as files:
        inputs = LineReader(files.enter_context(self._pass.input(shard)))
        if header:
          inputs.readline()
        result_lines: Iterator[bytes] = iter(())
        leading = self._pass.plan.result_leading_lines  # result lines before the first answer
        if with_result:
          results = LineReader(files.enter_context(self._pass.result(shard)))
          for _ in range(leading):
            results.readline()
          result_lines = lines_of(results, self._block_rows)
        at = answered = 0  # the range the rows have reached; result lines handed out
        rows = lines_of(inputs, self._block_rows)
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
          yield DeadLetter(
              shard.batch_prediction_id, reason, message, shard.input_uri, shard.result_uri,
              row + 1, row + 1 + header,
              answered + leading if result_line is not None else None,
              _text(input_line), _text(result_line), extra)
    except ShardProblem as e:
      raise RuntimeError(redact(f'{shard.input_uri} became unreadable while its rows were sent '
                                f'to the dead letter: {e}')) from e
    if report.dead_letter_rows != report.input_rows:
      raise RuntimeError(redact(f'{shard.input_uri} changed while it was read: '
                                f'{report.dead_letter_rows} rows now, {report.input_rows} '
                                'before'))
    yield report
