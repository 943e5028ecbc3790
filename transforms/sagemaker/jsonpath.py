"""The JSONPath subset SageMaker's ``InputFilter`` and ``OutputFilter`` take, on CSV records.

A CSV record is a JSON array to these filters, so only index paths apply to it: ``$`` (all),
``$[2]``, ``$[0,-1]`` (negative from the end), ``$[2:5]``, ``$[:5]``, ``$[2:]`` and mixes such
as ``$[0,5:]``. A slice's end is inclusive, as SageMaker's documentation states (``$[1:4]``
is the second through the fifth column). Key paths (``$.features``, ``$['id','SageMakerOutput']``)
select from JSON objects; they parse, but select no column of a CSV record. Pure functions.
"""

from __future__ import annotations

import dataclasses
import re


class PathError(ValueError):
  """A filter outside the subset, or one that does not fit the record it is applied to."""


@dataclasses.dataclass(frozen=True)
class Path:
  """A parsed filter: ``parts`` are ``('all',)``, ``('index', i)``, ``('slice', start, end)``
  (either None for open) or ``('key', name)``."""

  text: str
  parts: tuple[tuple, ...]

  @property
  def is_index_path(self) -> bool:
    return all(part[0] != 'key' for part in self.parts)


_INT = r'-?\d+'
_ITEM = re.compile(rf'^\s*(?:(?P<start>{_INT})?\s*:\s*(?P<end>{_INT})?|(?P<index>{_INT}))\s*$')


def parse(text: str) -> Path:
  """Parses a filter.

  Raises:
    PathError: not a filter SageMaker documents.
  """
  text = (text or '$').strip()
  if text == '$':
    return Path(text, (('all',),))
  match = re.fullmatch(r'\$\[(?P<items>[^\]]+)\]', text)
  if match:
    items = match['items']
    if "'" in items or '"' in items:
      keys = [k.strip().strip('\'"') for k in items.split(',')]
      return Path(text, tuple(('key', k) for k in keys))
    parts = []
    for item in items.split(','):
      found = _ITEM.match(item)
      if not found:
        raise PathError(f'{text!r}: {item.strip()!r} is not an index or a slice')
      if found['index'] is not None:
        parts.append(('index', int(found['index'])))
      else:
        parts.append(('slice', None if found['start'] is None else int(found['start']),
                      None if found['end'] is None else int(found['end'])))
    return Path(text, tuple(parts))
  if re.fullmatch(r'\$(\.[A-Za-z_][\w-]*)+(\.\*)?', text):
    return Path(text, tuple(('key', k) for k in text[2:].split('.') if k != '*'))
  raise PathError(f'{text!r} is not in the JSONPath subset SageMaker takes ($, $[i,j], $[a:b], '
                  "$.name, $['a','b'])")


def _position(i: int, length: int, text: str) -> int:
  position = i + length if i < 0 else i
  if not 0 <= position < length:
    raise PathError(f'{text!r}: index {i} is outside a record of {length} columns')
  return position


def select(path: Path, length: int) -> list[int]:
  """The positions a filter selects from a CSV record of ``length`` columns, in order.

  Raises:
    PathError: a key path (it selects nothing from an array), or an index outside the record
      (SageMaker fails such a job).
  """
  if not path.is_index_path:
    raise PathError(f'{path.text!r} selects keys of a JSON object, not columns of a CSV record')
  out = []
  for part in path.parts:
    if part[0] == 'all':
      out.extend(range(length))
    elif part[0] == 'index':
      out.append(_position(part[1], length, path.text))
    else:
      start = 0 if part[1] is None else _position(part[1], length, path.text)
      end = length - 1 if part[2] is None else _position(part[2], length, path.text)
      out.extend(range(start, end + 1))
  return out
