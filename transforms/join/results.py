"""How a result file is laid out: what comes before the answers, and how a block of them parses.

The join core pairs row k of an input with the k-th answer of its result, whatever the service
that wrote it. What differs between services is here:

- the lines before the first answer (``leading_lines``): Amazon ML writes a header line;
  SageMaker Batch Transform writes none, but answers an input's header line like any record,
  so with a header decision of yes its first output line answers the header, not a row;
- what those lines must say (``check_leading``): Amazon ML's header must be the run's;
- how a block of answers parses into the columns of the run's :class:`ResultLayout`
  (``parse``), with each line's outcome: an answer, a failed record, or a bad line.

A result format is part of the run's plan (``JoinPlan.result_format``), fixed at launch and
pickled to the workers with it.
"""

from __future__ import annotations

import numpy as np

from transforms.join import blocks
from transforms.join.outcomes import ShardProblem
from transforms.join.record_schema import ResultLayout


class ResultFormat:
  """The layout of one service's result files; subclasses say what differs (see above)."""

  def leading_lines(self, input_has_header: bool) -> int:
    """How many result lines come before the answer to the first row."""
    raise NotImplementedError

  def check_leading(self, result_uri: str, lines: list[bytes | None],
                    layout: ResultLayout) -> None:
    """Checks the leading lines of a result (None: the file ended before one).

    Raises:
      ShardProblem: they are not what the run's results must start with.
    """

  def parse(self, block: bytes, n: int, layout: ResultLayout, only: list[str] | None = None,
            ends: np.ndarray | None = None) -> blocks.Parsed:
    """Parses a block of n answers into ``layout``'s columns (``only`` these, when given), each
    line's outcome OK, FAILED or BAD (``blocks.Parsed``)."""
    raise NotImplementedError


class HeaderedCsv(ResultFormat):
  """A CSV result with a header line naming its columns (Amazon ML): one answer per line after
  it, a blank line for a failed record."""

  def leading_lines(self, input_has_header: bool) -> int:
    return 1

  def check_leading(self, result_uri: str, lines: list[bytes | None],
                    layout: ResultLayout) -> None:
    from transforms.join.header import split_header
    [header] = lines
    if header is None:
      raise ShardProblem('result_unreadable', f'{result_uri} is empty: no header line')
    names = split_header(header)
    if names != layout.header:
      raise ShardProblem(
          'result_header_mismatch',
          f'{result_uri} line 1: header {",".join(names)!r} differs from '
          f'{",".join(layout.header)!r}, the header of this run\'s first shard')

  def parse(self, block: bytes, n: int, layout: ResultLayout, only: list[str] | None = None,
            ends: np.ndarray | None = None) -> blocks.Parsed:
    return blocks.parse_result(block, n, layout, only=only, ends=ends)
