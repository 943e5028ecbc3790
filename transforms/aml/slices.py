"""Datasource slices (``docs/amazon-ml-format.md`` section 8): which input rows a batch prediction answered.

A datasource may use part of its data: ``--data_rearrangement`` takes the datasource's
``DataRearrangement``, ``{"splitting": {"percentBegin": 80, "percentEnd": 100}}`` (optionally
``"complement": true``, and ``"strategy": "sequential"``, the default). The result then holds one
line per row of the slice only. Pure functions, no Beam, no I/O.

**Rule.** The slice applies to the whole datasource: every input shard of one manifest, in the
manifest's order, as one sequence of N rows (headers excluded). With ``b`` and ``e`` the
percentages, the slice is rows ``floor(N * b / 100)`` to ``floor(N * e / 100)``, 0-based and
end-exclusive, computed exactly (no floating point); ``complement`` takes the rows outside it.
So the 0-70 and 70-100 slices of one datasource never overlap and leave no row out. Each shard
answers the part of the slice that falls in it. Random splitting (``"strategy": "random"``) is
refused: it cannot be reproduced outside the service.
"""

from __future__ import annotations

import dataclasses
import json
import math
from fractions import Fraction

_KEYS = {'percentBegin', 'percentEnd', 'complement', 'strategy', 'strategyParams'}


class SplitError(ValueError):
  """A ``--data_rearrangement`` that cannot be used; says why."""


@dataclasses.dataclass(frozen=True)
class Split:
  """A sequential slice of a datasource, in percent."""

  begin: Fraction
  end: Fraction
  complement: bool = False
  text: str = ''

  def bounds(self, total: int) -> tuple[int, int]:
    """``(begin_row, end_row)``, 0-based and end-exclusive, of the slice of ``total`` rows."""
    return math.floor(total * self.begin / 100), math.floor(total * self.end / 100)

  def ranges(self, total: int) -> list[tuple[int, int]]:
    """The predicted rows of a datasource of ``total`` rows, as half-open ranges."""
    lo, hi = self.bounds(total)
    if not self.complement:
      return [(lo, hi)] if hi > lo else []
    return [(a, b) for a, b in ((0, lo), (hi, total)) if b > a]

  def as_dict(self) -> dict:
    return {'percentBegin': float(self.begin), 'percentEnd': float(self.end),
            'complement': self.complement, 'strategy': 'sequential',
            'rule': 'rows floor(N * percentBegin / 100) to floor(N * percentEnd / 100), '
                    '0-based and end-exclusive, N the rows of all of a manifest\'s input '
                    'shards in manifest order' + ('; the complement: the rows outside them'
                                                  if self.complement else '')}


def _percent(value, name: str) -> Fraction:
  if isinstance(value, bool) or not isinstance(value, (int, float, str)):
    raise SplitError(f'--data_rearrangement: {name} must be a number, got {value!r}')
  try:
    percent = Fraction(str(value))
  except ValueError:
    raise SplitError(f'--data_rearrangement: {name} must be a number, got {value!r}') from None
  if not 0 <= percent <= 100:
    raise SplitError(f'--data_rearrangement: {name} {value} is not between 0 and 100')
  return percent


def parse(text: str) -> Split:
  """Parses a DataRearrangement string.

  Raises:
    SplitError: not JSON, no ``splitting`` object, unknown keys, percentages out of order or
      range, or random splitting.
  """
  try:
    obj = json.loads(text)
  except json.JSONDecodeError as e:
    raise SplitError(f'--data_rearrangement is not valid JSON ({e})') from None
  splitting = obj.get('splitting') if isinstance(obj, dict) else None
  if not isinstance(splitting, dict) or set(obj) != {'splitting'}:
    raise SplitError('--data_rearrangement must be {"splitting": {"percentBegin": B, '
                     '"percentEnd": E}}')
  unknown = set(splitting) - _KEYS
  if unknown:
    raise SplitError(f'--data_rearrangement: unknown splitting keys {sorted(unknown)}')
  strategy = splitting.get('strategy', 'sequential')
  if strategy == 'random':
    raise SplitError('--data_rearrangement: random splitting cannot be reproduced outside '
                     'Amazon ML (the service does not publish which rows it picks); only '
                     'sequential slices can be joined')
  if strategy != 'sequential':
    raise SplitError(f'--data_rearrangement: unknown strategy {strategy!r}')
  complement = splitting.get('complement', False)
  if not isinstance(complement, bool):
    raise SplitError('--data_rearrangement: complement must be true or false')
  begin = _percent(splitting.get('percentBegin', 0), 'percentBegin')
  end = _percent(splitting.get('percentEnd', 100), 'percentEnd')
  if begin >= end:
    raise SplitError(f'--data_rearrangement: percentBegin {float(begin):g} must be below '
                     f'percentEnd {float(end):g}')
  return Split(begin, end, complement, text)


@dataclasses.dataclass(frozen=True)
class ShardSlice:
  """What one shard answers: ``ranges`` of its own rows (0-based, half-open)."""

  ranges: tuple[tuple[int, int], ...]
  shard_rows: int
  first_row: int        # the shard's first row in the datasource (0-based)
  datasource_rows: int
  begin_row: int
  end_row: int

  @property
  def predicted_rows(self) -> int:
    return sum(hi - lo for lo, hi in self.ranges)

  def as_dict(self) -> dict:
    return {'datasource_rows': self.datasource_rows, 'begin_row': self.begin_row,
            'end_row': self.end_row, 'shard_first_row': self.first_row,
            'predicted_rows': self.predicted_rows,
            'predicted_ranges': [list(r) for r in self.ranges]}


@dataclasses.dataclass(frozen=True)
class ShardSize:
  """A shard's row count, from the preliminary count; ``rows`` None when it failed (``error``)."""

  manifest_uri: str
  index: int  # position in the manifest
  input_uri: str
  rows: int | None
  error: str | None = None


def shard_slice(split: Split, sizes: list[ShardSize], manifest_uri: str,
                input_uri: str) -> ShardSlice:
  """The slice of one shard, from the row counts of every shard of its manifest.

  Raises:
    SplitError: a shard of the manifest could not be counted, or the shard is not among them.
  """
  mine = sorted((s for s in sizes if s.manifest_uri == manifest_uri), key=lambda s: s.index)
  unknown = [s for s in mine if s.rows is None]
  if unknown:
    raise SplitError(f'the slice of {len(mine)} shards cannot be placed: {unknown[0].input_uri} '
                     f'could not be counted ({unknown[0].error})')
  total = sum(s.rows for s in mine)
  lo, hi = split.bounds(total)
  offset = 0
  for s in mine:
    if s.input_uri == input_uri:
      ranges = tuple((max(a, offset) - offset, min(b, offset + s.rows) - offset)
                     for a, b in split.ranges(total)
                     if min(b, offset + s.rows) > max(a, offset))
      return ShardSlice(ranges, s.rows, offset, total, lo, hi)
    offset += s.rows
  raise SplitError(f'{input_uri} was not counted with the other shards of {manifest_uri}')


def segments(total: int, ranges) -> list[tuple[int, int, bool]]:
  """``[(start, end, predicted)]`` covering rows 0..total of a shard, in order."""
  out, row = [], 0
  for lo, hi in ranges:
    if lo > row:
      out.append((row, lo, False))
    out.append((lo, hi, True))
    row = hi
  if row < total:
    out.append((row, total, False))
  return out
