"""Typing input columns by their Amazon ML attribute type, a whole column at a time.

The rule (``docs/amazon-ml-format.md`` sections 5 and 6, documented in the README):

- ``NUMERIC`` -> double. Surrounding spaces are ignored; an empty value is null; anything else
  that is not a finite number does not fit.
- ``BINARY`` -> boolean. ``0 n no f false`` are false and ``1 y yes t true`` are true, ignoring
  case and surrounding spaces; an empty value is null; anything else does not fit.
- ``CATEGORICAL``, ``TEXT``, the sequence types, excluded attributes and columns with no schema
  -> string, unchanged.

The fast path types columns while pyarrow's CSV reader parses the block (``csv_convert_options``
lists the spellings it accepts directly). A block it refuses is read as strings and typed here
with Arrow compute; only the values that do not fit are looked at in Python, to say why.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms.aml import schema_file

STRING, DOUBLE, BOOLEAN = 'string', 'double', 'boolean'
NEGATIVES = ('0', 'n', 'no', 'f', 'false')
POSITIVES = ('1', 'y', 'yes', 't', 'true')

ARROW_TYPES = {STRING: pa.string(), DOUBLE: pa.float64(), BOOLEAN: pa.bool_()}
# A finite decimal number as Arrow parses it; used only to find the values a cast refused.
_NUMBER = r'^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$'

DEAD_LETTER, NULL = 'dead_letter', 'null'
ON_TYPE_ERROR = (DEAD_LETTER, NULL)


def kind_of(attribute_type: str | None) -> str:
  """The output kind of an attribute type (``None``: no schema -> string)."""
  if attribute_type == schema_file.NUMERIC:
    return DOUBLE
  if attribute_type == schema_file.BINARY:
    return BOOLEAN
  return STRING


def _spellings(words) -> list[str]:
  return sorted({form for word in words for form in (word, word.upper(), word.capitalize())})


def csv_convert_options() -> dict:
  """True/false spellings for pyarrow's CSV reader; others fall back to :func:`convert`."""
  return {'true_values': _spellings(POSITIVES), 'false_values': _spellings(NEGATIVES)}


@dataclasses.dataclass
class Converted:
  """A typed column; ``bad`` marks values that did not fit (they are null), or is None."""

  array: pa.Array
  bad: np.ndarray | None = None


def _mask(array: pa.Array) -> np.ndarray:
  return pc.fill_null(array, False).to_numpy(zero_copy_only=False)


def _any_of(values: pa.Array, words) -> pa.Array:
  # Not pc.is_in: it imports pandas, half a second per worker process.
  out = None
  for word in words:
    hit = pc.equal(values, word)
    out = hit if out is None else pc.or_(out, hit)
  return out


def _finite(array: pa.Array) -> Converted:
  """A double column with its non-finite values (nan, inf) marked bad and nulled."""
  finite = pc.is_finite(array)
  if pc.all(pc.fill_null(finite, True)).as_py():
    return Converted(array)
  bad = ~_mask(pc.fill_null(finite, True))
  return Converted(pc.if_else(pa.array(bad), pa.scalar(None, pa.float64()), array), bad)


def _cast_one(text: str) -> float | None:
  try:
    return pc.cast(pa.array([text]), pa.float64())[0].as_py()
  except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
    return None


def _to_double(strings: pa.Array) -> Converted:
  trimmed = pc.utf8_trim_whitespace(strings)
  text = pc.if_else(pc.equal(trimmed, ''), pa.scalar(None, pa.string()), trimmed)
  try:
    return _finite(pc.cast(text, pa.float64()))
  except pa.ArrowInvalid:
    pass
  present = _mask(pc.is_valid(text))
  numeric = _mask(pc.match_substring_regex(text, _NUMBER))
  try:
    values = pc.cast(pc.if_else(pa.array(numeric), text, pa.scalar(None, pa.string())),
                     pa.float64()).to_numpy(zero_copy_only=False).astype(np.float64)
  except pa.ArrowInvalid:  # the pattern let through something Arrow refuses: look at each
    numeric = np.zeros(len(text), dtype=bool)
    values = np.full(len(text), np.nan)
  values[~numeric] = np.nan
  for i in np.flatnonzero(present & ~numeric):  # only the refused values, to be sure of each
    value = _cast_one(text[int(i)].as_py())
    values[i] = np.nan if value is None else value
  bad = present & ~np.isfinite(values)
  return Converted(pa.array(values, pa.float64(), mask=~present | bad), bad if bad.any() else None)


def _to_boolean(strings: pa.Array) -> Converted:
  text = pc.utf8_lower(pc.utf8_trim_whitespace(strings))
  true = _mask(_any_of(text, POSITIVES))
  false = _mask(_any_of(text, NEGATIVES))
  present = _mask(pc.is_valid(text)) & ~_mask(pc.equal(text, ''))
  bad = present & ~true & ~false
  array = pa.array(true, pa.bool_(), mask=~(true | false))
  return Converted(array, bad if bad.any() else None)


def convert(column: pa.Array, kind: str) -> Converted:
  """Types one column; ``column`` is strings, or already of the kind's Arrow type."""
  if kind == STRING or column.type == pa.bool_():
    return Converted(column)
  if column.type == pa.float64():
    return _finite(column)
  if kind == DOUBLE:
    return _to_double(column)
  return _to_boolean(column)


def describe(name: str, attribute_type: str, value) -> str:
  """Why a value does not fit its column, for the dead letter."""
  if attribute_type == schema_file.BINARY:
    why = f'not one of {" ".join(NEGATIVES)} / {" ".join(POSITIVES)}'
  else:
    why = 'not a finite number'
  return f'column {name} ({attribute_type}): {value!r} is {why}'


def binary_values(strings: pa.Array) -> pa.Array:
  """Strings -> booleans by the synonym list; null where a value is not a synonym."""
  return _to_boolean(strings).array
