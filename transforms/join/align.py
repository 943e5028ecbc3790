"""Alignment checks: does each result line answer the input row it is joined to?

Amazon ML writes two columns that repeat input values: ``tag`` (the schema's ``rowId``
attribute) and ``trueLabel`` (the target attribute, when the input has it). When a result has one
and the input has the matching column, every row's pair must agree; a shard where one row does
not is misaligned, and is not joined at all (``transforms/join/joiner.py``, pass 1).

Values are compared as written first (one Arrow comparison per block); only rows that differ are
compared again by meaning: surrounding spaces ignored, ``BINARY`` values through the synonym list
(``yes`` equals ``1``), ``NUMERIC`` values as exact decimal numbers (``1.0`` equals ``1``;
ids too large for a double stay distinct). Pure functions.
"""

from __future__ import annotations

import dataclasses
import decimal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms.aml import schema_file
from transforms.join import coltypes, record_schema


@dataclasses.dataclass(frozen=True)
class Check:
  """One check: result column ``tag`` or ``trueLabel`` against an input column."""

  result_column: str
  input_index: int  # position among the input columns
  input_name: str
  attribute_type: str
  shown: str = ''  # how the result's column is named in messages (default its name)

  @property
  def result_label(self) -> str:
    return self.shown or self.result_column

  @property
  def name(self) -> str:
    return f'{self.result_label} = {self.input_name}'


def plan_checks(layout: record_schema.ResultLayout, schema: schema_file.AmlSchema | None,
                input_columns) -> tuple[Check, ...]:
  """The checks that apply: ``tag`` when the schema names a rowId the input has, ``trueLabel``
  when the input has the schema's target attribute."""
  if schema is None:
    return ()
  columns = list(input_columns)
  checks = []
  for present, name, column in ((layout.has_tag, schema.row_id, record_schema.TAG),
                                (layout.has_true_label, schema.target, record_schema.TRUE_LABEL)):
    if present and name and name in columns:
      checks.append(Check(column, columns.index(name), name, schema.type_of(name) or ''))
  return tuple(checks)


def normalize(strings: pa.Array, attribute_type: str) -> pa.Array:
  """Comparable text: trimmed; binary synonyms as ``0``/``1``; numbers in one form."""
  text = pc.utf8_trim_whitespace(strings)
  if attribute_type == schema_file.BINARY:
    flags = coltypes.binary_values(text)
    as_digit = pc.if_else(flags, '1', '0')
    return pc.if_else(pc.is_valid(flags), as_digit, pc.utf8_lower(text))
  if attribute_type == schema_file.NUMERIC:
    return pa.array([_number_text(value) for value in text.to_pylist()], pa.string())
  return text


def _number_text(value: str | None) -> str | None:
  """One exact text per number (``1.0``, ``1`` and ``1E0`` give the same), as decimals: an id
  above 2**53 (``9007199254740993``) stays itself, where a double would round it."""
  if value is None:
    return None
  try:
    number = decimal.Decimal(value)
  except decimal.InvalidOperation:
    return value
  if not number.is_finite():
    return value
  return '0' if number == 0 else str(number.normalize())


def _equal(a: pa.Array, b: pa.Array) -> np.ndarray:
  return pc.fill_null(pc.equal(a, b), False).to_numpy(zero_copy_only=False)


def _codes(a: pa.Array, b: pa.Array, attribute_type: str) -> tuple[np.ndarray, np.ndarray]:
  """Integer codes of the normalized values of two string columns, equal when they agree.

  Only the distinct values are normalized (a label column has a handful), so the per-row work
  is a dictionary encoding and a NumPy lookup.
  """
  da, db = pc.dictionary_encode(a), pc.dictionary_encode(b)
  keys = normalize(pa.concat_arrays([da.dictionary, db.dictionary]), attribute_type)
  _, code = np.unique(np.asarray(keys.to_pylist(), dtype=object).astype(str),
                      return_inverse=True)
  code = code.ravel()
  split = len(da.dictionary)
  ia = pc.fill_null(da.indices, 0).to_numpy(zero_copy_only=False)
  ib = pc.fill_null(db.indices, 0).to_numpy(zero_copy_only=False)
  ca = code[:split][ia] if split else np.full(len(a), -1)  # all null: agrees with nothing
  cb = code[split:][ib] if len(code) > split else np.full(len(b), -2)
  return ca, cb


def mismatches(check: Check, result: pa.Array, inputs: pa.Array, valid: np.ndarray) -> np.ndarray:
  """Rows (among ``valid``) where the result column and the input column disagree."""
  mask = valid & ~_equal(result, inputs)
  if mask.any():
    index = np.flatnonzero(mask)
    take = pa.array(index)
    a, b = _codes(result.take(take), inputs.take(take), check.attribute_type)
    mask[index[a == b]] = False
  return mask


def shifted_differ(check: Check, result: pa.Array, inputs: pa.Array,
                   valid: np.ndarray) -> tuple[bool, bool]:
  """Whether the result would disagree with the input shifted one row (earlier, later).

  A slice boundary is confirmed when the values agree as joined and would not agree one row off.
  """
  if len(result) < 2:
    return False, False
  r, i = _codes(result, inputs, check.attribute_type)
  both = valid[1:] & valid[:-1]
  earlier = both & (r[1:] != i[:-1])   # result row j against input row j - 1
  later = both & (r[:-1] != i[1:])     # result row j against input row j + 1
  return bool(earlier.any()), bool(later.any())
