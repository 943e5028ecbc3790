"""Whether input shards start with a header line: one decision for the whole run, made at launch.

A header decision is a fact about a datasource, never about one shard, and never taken from line
counts: an input whose result is one line short would otherwise lose its first row as a
"header" and have every other row joined one off. The decision comes from, in this order:

1. ``--input_header true|false``;
2. the schema's ``dataFileContainsHeader`` (``--schema``, or the ``.schema`` beside the inputs);
3. an inference from the first lines of the inputs, which must be unambiguous:

   - a first line with a number in a column (``r1,17``) is data: header names are not numbers;
   - a first line whose cell is text in a column where every sampled row below it holds a number
     (``age`` above ``41``, ``17``, ...) is a header;
   - the same first line at the top of every sampled shard (two or more), and nowhere below, is
     a header.

   When the evidence points both ways, or nowhere (every column text), the run does not guess:
   it stops at launch and asks for ``--input_header``.

Every shard is then held to the decision: with a header, its first line must name the run's
columns; and its rows (lines, less the header line and the empty lines at its end) must equal
its result lines exactly. Pure functions, no I/O.
"""

from __future__ import annotations

import csv
import dataclasses
import math

OPTION, SCHEMA, INFERRED = 'option', 'schema', 'inferred'
SAMPLE_LINES = 200  # data lines of each sample looked at


def split_header(line: str | bytes) -> tuple[str, ...]:
  """Splits a CSV header line into stripped names (``1_star, 2_stars`` has spaces)."""
  if isinstance(line, bytes):
    line = line.decode('utf-8-sig')
  line = line.lstrip('\ufeff').rstrip('\r\n')
  # Headers carry spaces after commas, so a quoted name may follow one.
  return tuple(cell.strip() for cell in next(csv.reader([line], skipinitialspace=True), []))



class HeaderUndecided(ValueError):
  """The run cannot tell whether its inputs start with a header; says why and what to pass."""


@dataclasses.dataclass(frozen=True)
class HeaderDecision:
  """The run's one header decision. ``reason`` says where it came from, for the summary."""

  has_header: bool
  source: str  # OPTION, SCHEMA or INFERRED
  reason: str

  def as_dict(self) -> dict:
    return {'has_header': self.has_header, 'source': self.source, 'reason': self.reason}


def _is_number(text: str) -> bool:
  try:
    return math.isfinite(float(text))
  except ValueError:
    return False


@dataclasses.dataclass(frozen=True)
class Sample:
  """The first bytes of one input shard (``data``), and whether they are the whole file."""

  uri: str
  data: bytes
  whole: bool = False

  def lines(self) -> list[str]:
    """The sample's complete lines (a line cut by the sample's end is left out)."""
    text = self.data.decode('utf-8', 'replace').lstrip('\ufeff')
    lines = text.split('\n')
    if not self.whole or lines[-1] == '':
      lines.pop()
    return [line[:-1] if line.endswith('\r') else line for line in lines[:SAMPLE_LINES + 1]]


def _cells(line: str) -> list[str]:
  return [cell.strip() for cell in next(csv.reader([line]), [])]


def _shown(line: str) -> str:
  return repr(line if len(line) <= 60 else line[:57] + '...')


def infer(samples: list[Sample]) -> HeaderDecision:
  """The header decision from the first lines of the sampled shards.

  Raises:
    HeaderUndecided: the evidence points both ways or nowhere; the message gives it.
  """
  data_evidence, header_evidence = [], []
  firsts = []
  for sample in samples:
    lines = sample.lines()
    if not lines:
      continue
    first, below = lines[0], [_cells(line) for line in lines[1:]]
    firsts.append((sample.uri, first, lines[1:]))
    cells = _cells(first)
    where = f'line 1 of {sample.uri}, {_shown(first)},'
    if not any(cells):
      data_evidence.append(f'line 1 of {sample.uri} is empty, so it is not a header')
      continue
    numbers = [j for j, cell in enumerate(cells) if _is_number(cell)]
    if numbers:
      data_evidence.append(f'{where} has the number {cells[numbers[0]]!r} in column '
                           f'{numbers[0] + 1}: header names are not numbers')
      continue
    for j, cell in enumerate(cells):
      column = [row[j] for row in below if j < len(row) and row[j]]
      if cell and column and all(_is_number(value) for value in column):
        header_evidence.append(f'{where} has the text {cell!r} above {len(column)} numbers '
                               f'in column {j + 1}')
        break
  if len(firsts) >= 2:
    distinct = {first for _, first, _ in firsts}
    repeated = any(first in below for _, first, below in firsts)
    if len(distinct) == 1 and not repeated and any(_cells(firsts[0][1])):
      header_evidence.append(f'all {len(firsts)} sampled shards start with the same line, '
                             f'{_shown(firsts[0][1])}, which appears nowhere below it')
  if header_evidence and not data_evidence:
    return HeaderDecision(True, INFERRED, header_evidence[0])
  if data_evidence and not header_evidence:
    return HeaderDecision(False, INFERRED, data_evidence[0])
  if header_evidence:
    why = f'{header_evidence[0]}, but {data_evidence[0]}'
  elif not firsts:
    why = 'the sampled inputs are empty'
  else:
    why = (f'line 1 of {firsts[0][0]}, {_shown(firsts[0][1])}, could be a header or data: no '
           'column holds numbers below text, and no number is on it')
  raise HeaderUndecided(
      f'cannot tell whether the input files start with a header line: {why}. predjoin does not '
      'guess (a wrong guess would shift every row by one): pass --input_header true or '
      '--input_header false, or give the Amazon ML schema (--schema, or a .schema beside the '
      'inputs) whose dataFileContainsHeader says it')


def decide(option: str, schema_has_header: bool | None, schema_uri: str | None,
           samples: list[Sample]) -> HeaderDecision:
  """The run's header decision: ``--input_header``, else the schema, else :func:`infer`.

  Args:
    option: ``--input_header``: ``auto``, ``true`` or ``false``.
    schema_has_header: the schema's ``dataFileContainsHeader`` (None: no schema).
    schema_uri: where that schema is, for the reason.
    samples: the first bytes of some input shards, for the inference.

  Raises:
    HeaderUndecided: only the inference can decide, and it cannot (see :func:`infer`).
  """
  if option in ('true', 'false'):
    return HeaderDecision(option == 'true', OPTION, f'--input_header {option}')
  if schema_has_header is not None:
    return HeaderDecision(schema_has_header, SCHEMA,
                          f'dataFileContainsHeader is {str(schema_has_header).lower()} in '
                          f'{schema_uri}')
  return infer(samples)
