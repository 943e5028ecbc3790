"""Blocks of rows: parse a block of result lines and its input lines, interpret, build a batch.

A block is N consecutive observations of one shard: N input lines and the N result lines that
answer them. Everything here works on whole blocks (pyarrow's CSV reader, NumPy, Arrow compute);
no Python runs per row on the fast path. When a block holds anything the fast path does not
accept (a non-numeric score, bad UTF-8, ...) the whole block is parsed again by the slow path,
which is Python's ``csv`` module line by line and defines the semantics; tests check the two agree.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import os

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from transforms.join import arrays, audit, coltypes, record_schema
from transforms.join.lines import line_lengths, split_lines


def _arrow_memory_pool() -> str:
  """Puts Arrow on jemalloc where pyarrow has it (else the system allocator); returns its name.

  Arrow's default mimalloc pool keeps the memory of freed blocks, and on the system allocator
  each block's large buffers are mapped and unmapped anew; Arrow's jemalloc gives freed pages
  back promptly and is both faster and smaller (``benchmarks/README.md``). The C++ side reads
  the variable when it first allocates, pyarrow's own calls use ``set_memory_pool``. An
  explicit ARROW_DEFAULT_MEMORY_POOL still wins.
  """
  if os.environ.get('ARROW_DEFAULT_MEMORY_POOL'):
    return os.environ['ARROW_DEFAULT_MEMORY_POOL']
  try:
    pool, name = pa.jemalloc_memory_pool(), 'jemalloc'
  except NotImplementedError:  # a pyarrow built without jemalloc (Windows)
    pool, name = pa.system_memory_pool(), 'system'
  os.environ['ARROW_DEFAULT_MEMORY_POOL'] = name
  pa.set_memory_pool(pool)
  return name


ARROW_MEMORY_POOL = _arrow_memory_pool()

OK, FAILED, BAD = 0, 1, 2

_READ_BLOCK = 1 << 22
_BOOLEANS = coltypes.csv_convert_options()
NOT_PREDICTED = 'not_predicted'


@dataclasses.dataclass
class Parsed:
  """One side of a block: a column per field (length n) and each row's outcome.

  ``kind`` is OK, FAILED (a blank result line) or BAD (``errors[i]`` says why). Values of rows
  that are not OK are unspecified; consumers mask them.
  """

  n: int
  kind: np.ndarray
  errors: dict[int, str]
  columns: list[pa.Array]


def _result_types(layout: record_schema.ResultLayout) -> list[pa.DataType]:
  types = []
  for name in layout.header:
    if name in (record_schema.TAG, record_schema.TRUE_LABEL):
      types.append(pa.string())
    elif name == record_schema.BEST_ANSWER:
      types.append(pa.int64() if layout.model_type == record_schema.BINARY else pa.string())
    else:
      types.append(pa.float64())
  return types


def _read_csv(block: bytes, ncols: int, types: list[pa.DataType], skip_blank: bool = False,
              threads: bool = False, include: list[int] | None = None):
  invalid: list[tuple[int, str, int]] = []

  def on_invalid(row):
    invalid.append((row.number, row.text, row.actual_columns))
    return 'skip'

  names = [f'c{i}' for i in range(ncols)]
  table = pa_csv.read_csv(
      io.BytesIO(block),
      read_options=pa_csv.ReadOptions(column_names=names, use_threads=threads,
                                      block_size=_READ_BLOCK),
      parse_options=pa_csv.ParseOptions(ignore_empty_lines=skip_blank,
                                        invalid_row_handler=on_invalid),
      convert_options=pa_csv.ConvertOptions(
          column_types=dict(zip(names, types, strict=True)), null_values=[''],
          strings_can_be_null=False, quoted_strings_can_be_null=False,
          include_columns=None if include is None else [names[i] for i in include],
          **_BOOLEANS))
  return table, invalid


def _columns(table: pa.Table, count: int | None = None) -> list[pa.Array]:
  """The table's (first ``count``) columns as arrays: a column of one chunk is that chunk, not
  a copy of it (``combine_chunks`` copies even one chunk)."""
  columns = []
  for i in range(table.num_columns if count is None else count):
    column = table.column(i)
    columns.append(column.chunk(0) if column.num_chunks == 1 else column.combine_chunks())
  return columns


def _scatter(table: pa.Table, n: int, invalid_rows: list[int]) -> list[pa.Array]:
  """Columns of length n: parsed rows at their positions, nulls where rows were skipped."""
  columns = _columns(table)
  if not invalid_rows:
    return columns
  index = np.full(n, -1, dtype=np.int64)
  keep = np.ones(n, dtype=bool)
  keep[invalid_rows] = False
  index[keep] = np.arange(table.num_rows)
  take = pa.array(index, mask=index < 0)
  return [column.take(take) for column in columns]


def _fields_error(expected: int, got: int) -> str:
  return f'expected {expected} fields, got {got}'


def parse_result(block: bytes, n: int, layout: record_schema.ResultLayout,
                 only: list[str] | None = None, ends: np.ndarray | None = None) -> Parsed:
  """Parses n result lines; blank lines are FAILED, unparseable ones BAD (with the reason).

  Args:
    only: convert and return just these columns (the alignment checks' ``tag``/``trueLabel``);
      their values are not checked, so a line is BAD only for its number of fields.
    ends: the block's line ends (``transforms/join/lines.py``), when the reader has them.
  """
  types = _result_types(layout)
  include = None if only is None else [layout.header.index(name) for name in only]
  try:
    table, invalid = _read_csv(block, len(types), types, include=include)
  except (pa.ArrowInvalid, UnicodeDecodeError):
    table, invalid = None, None
  if table is None or table.num_rows + len(invalid) != n:
    slow = _parse_result_slow(block, n, layout)
    if include is not None:
      slow.columns = [slow.columns[i] for i in include]
    return slow
  kind = np.where(line_lengths(block, ends) == 0, FAILED, OK).astype(np.int8)
  errors: dict[int, str] = {}
  for number, text, got in invalid:
    if text.strip():
      kind[number - 1] = BAD
      errors[number - 1] = _fields_error(len(types), got)
    else:
      kind[number - 1] = FAILED
  columns = _scatter(table, n, [number - 1 for number, _, _ in invalid])
  if include is None:
    _check_values(layout, types, columns, kind, errors)
  return Parsed(n, kind, errors, columns)


def _check_values(layout, types, columns, kind, errors) -> None:
  """Marks OK rows BAD where a score is empty or not finite, or a binary answer not 0/1."""
  for name, pa_type, column in zip(layout.header, types, columns, strict=True):
    if pa_type == pa.float64():
      with np.errstate(invalid='ignore'):  # null slots may hold anything
        finite = np.isfinite(arrays.values(column)) & arrays.valid(column)
      problem = (kind == OK) & ~finite
      detail = f'{name} is empty or not a finite number'
    elif name == record_schema.BEST_ANSWER and layout.model_type == record_schema.BINARY:
      # Not pc.is_in: it imports pandas, half a second per worker process.
      valid = pc.fill_null(pc.or_(pc.equal(column, 0), pc.equal(column, 1)), False)
      problem = (kind == OK) & ~valid.to_numpy(zero_copy_only=False)
      detail = 'bestAnswer is not 0 or 1'
    else:
      continue
    for i in np.flatnonzero(problem):
      kind[i] = BAD
      errors[int(i)] = detail


def _parse_result_slow(block: bytes, n: int, layout: record_schema.ResultLayout) -> Parsed:
  types = _result_types(layout)
  kind = np.zeros(n, dtype=np.int8)
  errors: dict[int, str] = {}
  values: list[list] = [[None] * n for _ in types]
  for i, raw in enumerate(split_lines(block)):
    if not raw.strip():
      kind[i] = FAILED
      continue
    try:
      fields = [cell.strip() for cell in next(csv.reader([raw.decode('utf-8')]))]
    except (UnicodeDecodeError, csv.Error) as e:
      kind[i], errors[i] = BAD, f'not a CSV line ({e})'
      continue
    if len(fields) != len(types):
      kind[i], errors[i] = BAD, _fields_error(len(types), len(fields))
      continue
    try:
      row = [_convert(name, pa_type, cell) for name, pa_type, cell in zip(layout.header, types,
                                                                           fields, strict=True)]
    except ValueError as e:
      kind[i], errors[i] = BAD, str(e)
      continue
    for column, value in zip(values, row, strict=True):
      column[i] = value
  return Parsed(n, kind, errors, [pa.array(v, t) for v, t in zip(values, types, strict=True)])


def _convert(name: str, pa_type: pa.DataType, cell: str):
  if pa_type == pa.string():
    return cell
  if pa_type == pa.int64():  # binary bestAnswer
    if cell not in ('0', '1'):
      raise ValueError('bestAnswer is not 0 or 1')
    return int(cell)
  try:
    value = float(cell)
  except ValueError:
    raise ValueError(f'{name} is empty or not a finite number') from None
  if not math.isfinite(value):
    raise ValueError(f'{name} is empty or not a finite number')
  return value


def parse_input(block: bytes, n: int, ncols: int, types: list[pa.DataType] | None = None,
                include: list[int] | None = None, threads: bool = True) -> Parsed:
  """Parses n input lines into ncols columns; a row with another field count is BAD.

  The first parse skips blank lines, so when it returns n rows the block has none and nothing
  scans for them; only a block with a blank or invalid line is parsed again, keeping them.

  Args:
    types: per column, the Arrow type the CSV reader converts it to (default: all strings).
      A block it cannot convert is read again as strings: its columns are then strings, and
      :func:`transforms.coltypes.convert` types them and finds the values that do not fit.
    include: only these column positions are converted and returned (string columns).
    threads: whether pyarrow's CSV reader may use its thread pool (``JoinPlan.parse_threads``).
  """
  if include is not None:
    return _parse_input_some(block, n, ncols, include, threads)
  if types is not None and any(t != pa.string() for t in types):
    try:
      table, invalid = _read_csv(block, ncols, list(types), skip_blank=True, threads=threads)
      if table.num_rows == n and not invalid:
        return Parsed(n, np.zeros(n, dtype=np.int8), {},
                      _columns(table, ncols))
    except (pa.ArrowInvalid, UnicodeDecodeError):
      pass  # a value the reader does not convert, or a bad line: read as strings below
  types = [pa.string()] * ncols
  try:
    table, invalid = _read_csv(block, ncols, types, skip_blank=True, threads=threads)
    if table.num_rows == n and not invalid:
      return Parsed(n, np.zeros(n, dtype=np.int8), {},
                    _columns(table, ncols))
    table, invalid = _read_csv(block, ncols, types)
  except (pa.ArrowInvalid, UnicodeDecodeError):
    return _parse_input_slow(block, n, ncols)
  if table.num_rows + len(invalid) != n or any(number is None for number, _, _ in invalid):
    return _parse_input_slow(block, n, ncols)
  return _placed(block, n, ncols, table, invalid)


def _parse_input_some(block: bytes, n: int, ncols: int, include: list[int],
                      threads: bool = True) -> Parsed:
  """Like parse_input with strings, converting only the ``include`` columns (alignment checks)."""
  types = [pa.string()] * ncols
  try:
    table, invalid = _read_csv(block, ncols, types, skip_blank=True, threads=threads,
                               include=include)
    if table.num_rows == n and not invalid:  # no blank or invalid line: nothing to place
      return Parsed(n, np.zeros(n, dtype=np.int8), {},
                    _columns(table, len(include)))
    table, invalid = _read_csv(block, ncols, types, include=include)
  except (pa.ArrowInvalid, UnicodeDecodeError):
    table, invalid = None, None
  if table is None or table.num_rows + len(invalid) != n or \
      any(number is None for number, _, _ in invalid):
    slow = _parse_input_slow(block, n, ncols)
    return Parsed(n, slow.kind, slow.errors, [slow.columns[i] for i in include])
  return _placed(block, n, ncols, table, invalid)


def _placed(block: bytes, n: int, ncols: int, table: pa.Table, invalid: list) -> Parsed:
  """A block read with blank and invalid lines left out, put back in place as BAD rows."""
  kind = np.zeros(n, dtype=np.int8)
  errors: dict[int, str] = {}
  if ncols > 1:
    for i in np.flatnonzero(line_lengths(block) == 0):
      kind[i], errors[int(i)] = BAD, f'blank line; {_fields_error(ncols, 0)}'
  for number, _, got in invalid:
    kind[number - 1], errors[number - 1] = BAD, _fields_error(ncols, got)
  return Parsed(n, kind, errors, _scatter(table, n, [number - 1 for number, _, _ in invalid]))


def _parse_input_slow(block: bytes, n: int, ncols: int) -> Parsed:
  kind = np.zeros(n, dtype=np.int8)
  errors: dict[int, str] = {}
  values: list[list] = [[None] * n for _ in range(ncols)]
  for i, raw in enumerate(split_lines(block)):
    try:
      fields = next(csv.reader([raw.decode('utf-8')]), [])
    except (UnicodeDecodeError, csv.Error) as e:
      kind[i], errors[i] = BAD, f'not a CSV line ({e})'
      continue
    if not raw and ncols == 1:
      fields = ['']
    if len(fields) != ncols:
      detail = _fields_error(ncols, len(fields))
      kind[i], errors[i] = BAD, f'blank line; {detail}' if not raw else detail
      continue
    for column, value in zip(values, fields, strict=True):
      column[i] = value
  return Parsed(n, kind, errors, [pa.array(v, pa.string()) for v in values])


def _masked(array: pa.Array, valid: pa.Array) -> pa.Array:
  return pc.if_else(valid, array, pa.scalar(None, array.type))


def interpret(result: Parsed, layout: record_schema.ResultLayout, ok: np.ndarray, cutoff: float,
              min_score: float | None, top_k: int | None = None) -> dict[str, pa.Array]:
  """The prediction and audit fields of a block, null where ``ok`` is False.

  Binary: ``best_answer = 1`` when ``score >= cutoff``; ``answer_changed`` when that differs
  from the file's ``bestAnswer``. Multiclass: the class with the highest score, the first column
  winning ties; below ``min_score`` the answer is null and ``unknown``; see ``_multiclass``.
  """
  valid = pa.array(ok)
  by_name = dict(zip(layout.header, result.columns, strict=True))
  fields: dict[str, pa.Array] = {}
  if layout.model_type == record_schema.BINARY:
    score = _masked(by_name[record_schema.SCORE], valid)
    fields['best_answer'] = pc.cast(pc.greater_equal(score, cutoff), pa.int64())
    fields['score'] = score
    fields['service_best_answer'] = _masked(by_name[record_schema.BEST_ANSWER], valid)
    fields['answer_changed'] = pc.not_equal(fields['best_answer'], fields['service_best_answer'])
  elif layout.model_type == record_schema.MULTICLASS:
    fields.update(_multiclass(by_name, layout, ok, valid, min_score, top_k))
  elif layout.model_type == record_schema.RAW:
    for name, field in layout.raw_fields:
      fields[field] = _masked(by_name[name], valid)
  else:
    fields['score'] = _masked(by_name[record_schema.SCORE], valid)
  if layout.has_tag:
    fields['tag'] = _masked(by_name[record_schema.TAG], valid)
  if layout.has_true_label:
    fields['true_label'] = _masked(by_name[record_schema.TRUE_LABEL], valid)
  return fields


def _label_lists(labels: pa.Array, index: np.ndarray, ok: np.ndarray) -> pa.ListArray:
  """Rows of ``index`` (n x k class positions) as lists of labels, null where not ``ok``."""
  n, k = index.shape
  offsets = pa.array(np.arange(0, n * k + 1, k, dtype=np.int32))
  return pa.ListArray.from_arrays(offsets, labels.take(pa.array(index.ravel())),
                                  mask=pa.array(~ok))


def _multiclass(by_name, layout, ok, valid, min_score, top_k) -> dict[str, pa.Array]:
  """Best answer, best score, unknown, scores; margin (best minus second score), score_sum_off
  (the scores do not sum to 1 within audit.SUM_TOLERANCE) and, with top_k, top_labels."""
  n, k = len(ok), len(layout.classes)
  matrix = np.column_stack([
      by_name[label].to_numpy(zero_copy_only=False) for label in layout.classes
  ]).astype(np.float64, copy=False)
  matrix[~ok] = 0.0  # rows that are not OK carry nulls (NaN); their fields are masked below
  best = np.argmax(matrix, axis=1)  # the first maximum: ties go to the first column
  best_score = matrix[np.arange(n), best]
  second = np.partition(matrix, k - 2, axis=1)[:, k - 2]
  labels = pa.array(layout.classes, pa.string())
  unknown = ok & (best_score < min_score) if min_score is not None else np.zeros(n, dtype=bool)
  answer_valid = pa.array(ok & ~unknown)
  struct = pa.StructArray.from_arrays(
      [_tiled_labels(tuple(layout.classes), n), pa.array(matrix.ravel())],
      fields=[pa.field('label', pa.string(), nullable=False),
              pa.field('score', pa.float64(), nullable=False)])
  offsets = pa.array(np.arange(0, n * k + 1, k, dtype=np.int32))
  fields = {
      'best_answer': _masked(labels.take(pa.array(best)), answer_valid),
      'best_score': _masked(pa.array(best_score), valid),
      'unknown': _masked(pa.array(unknown), valid),
      'scores': pa.ListArray.from_arrays(offsets, struct, mask=pa.array(~ok)),
      'margin': _masked(pa.array(best_score - second), valid),
      'score_sum_off': _masked(
          pa.array(np.abs(matrix.sum(axis=1) - 1.0) > audit.SUM_TOLERANCE), valid),
  }
  if top_k:
    order = np.argsort(-matrix, axis=1, kind='stable')[:, :min(top_k, k)]  # ties: first column
    fields['top_labels'] = _label_lists(labels, order, ok)
  if layout.has_best_answer:
    fields['service_best_answer'] = _masked(by_name[record_schema.BEST_ANSWER], valid)
  return fields


# Columns that repeat the same values in every block (a shard's URI and batch prediction id, the
# class labels of multiclass scores), one per key, kept per worker process.
_CACHED: dict[tuple, pa.Array] = {}
_CACHED_KEPT = 16


def _cached_slice(key: tuple, length: int, build) -> pa.Array:
  """``build(m)[:length]`` for an m >= length: a zero-copy slice of a column cached per key
  (built anew only when a longer one is asked for, twice as long as before)."""
  column = _CACHED.get(key)
  if column is None or len(column) < length:
    if len(_CACHED) >= _CACHED_KEPT:
      _CACHED.clear()
    column = _CACHED[key] = build(max(length, 2 * len(column or ())))
  return column.slice(0, length)


def constant(value: str, n: int) -> pa.StringArray:
  """A string column of ``value`` n times, without copying the value for every row of every
  block as ``pa.repeat`` would."""
  return _cached_slice(('constant', value), n,
                       lambda m: pa.repeat(pa.scalar(value, pa.string()), m))


def _tiled_labels(classes: tuple[str, ...], n: int) -> pa.StringArray:
  """The class labels in order, n times over: the ``label`` of every ``scores`` entry, made
  once, not for each block."""
  k = len(classes)
  return _cached_slice(('labels', classes), n * k, lambda m: pa.array(classes, pa.string()).take(
      pa.array(np.tile(np.arange(k), m // k))))


@dataclasses.dataclass
class BlockOutcome:
  """A joined block: the record batch, and the rows that went to the dead letter instead.

  ``failed_rows`` are the positions (in the block) of the records with status ``failed``;
  ``type_errors`` counts, per output column, the values that did not fit their type (their rows
  dead-lettered, or the values nulled, by ``on_type_error``); ``extra`` holds more keys for some
  dead letters (``columns`` of a ``type_error``).
  """

  batch: pa.RecordBatch
  joined: int
  failed: int
  dead: list[tuple[int, str, str]]  # (position in block, reason, detail)
  not_predicted: int = 0
  failed_rows: np.ndarray | None = None
  type_errors: dict[str, int] = dataclasses.field(default_factory=dict)
  extra: dict[int, dict] = dataclasses.field(default_factory=dict)
  audit: dict | None = None


def _typed_columns(schema: record_schema.OutputSchema, inputs: Parsed):
  """The input columns typed by the schema; and, per column with values that do not fit, a mask
  of those values in rows that are otherwise OK."""
  columns, bad = [], {}
  input_ok = inputs.kind == OK
  for j, (column, kind) in enumerate(zip(inputs.columns, schema.input_kinds, strict=True)):
    converted = coltypes.convert(column, kind)
    columns.append(converted.array)
    if converted.bad is not None:
      mask = converted.bad & input_ok
      if mask.any():
        bad[j] = mask
  return columns, bad


def _type_error(schema: record_schema.OutputSchema, inputs: Parsed, bad: dict, i: int):
  where = [j for j, mask in bad.items() if mask[i]]
  detail = '; '.join(coltypes.describe(schema.input_columns[j], schema.input_types[j] or '?',
                                       inputs.columns[j][i].as_py()) for j in where)
  return detail, {'columns': [schema.input_columns[j] for j in where]}


def _numbers(first: int, n: int) -> pa.Array:
  return pa.array(np.arange(first, first + n, dtype=np.int64))


@dataclasses.dataclass(frozen=True)
class BlockPlace:
  """Where a block's rows come from: their shard, and the line of each file its first row is on.

  The line numbers are counted by the readers of the two files, each on its own
  (``LineReader.lines``); every record carries them, as the evidence of its pairing.
  """

  batch_prediction_id: str
  input_uri: str                  # as it appears in the records (redacted)
  first_row: int                  # the 1-based row number of the block's first row
  first_input_line: int           # the input line it is on (1-based, a header line counted)
  first_result_line: int | None   # the result line answering it (the header is line 1); None
                                  # for rows the batch prediction did not answer


@dataclasses.dataclass(frozen=True)
class BlockRules:
  """What joining a block needs to know of the run (``JoinPlan.block_rules``).

  ``on_type_error``: ``dead_letter`` sends a row with a value that does not fit its column's type
  to the dead letter (reason ``type_error``); ``null`` makes the value null. ``threads``: whether
  the input block may be parsed on pyarrow's thread pool (``JoinPlan.parse_threads``).
  """

  schema: record_schema.OutputSchema
  arrow_schema: pa.Schema
  layout: record_schema.ResultLayout
  cutoff: float = 0.5
  min_score: float | None = None
  on_type_error: str = coltypes.DEAD_LETTER
  top_k: int | None = None
  threads: bool = True
  result_format: object = None  # transforms/join/results.ResultFormat; None: parse_result


def join_block(rules: BlockRules, place: BlockPlace, input_block: bytes,
               result_block: bytes | None, n: int,
               result_ends: np.ndarray | None = None) -> BlockOutcome:
  """Joins n input lines with the n result lines answering them, by position.

  Args:
    rules: the run's schema and interpretation.
    place: the block's shard and the first row's number and lines.
    result_block: None for rows the batch prediction did not cover (outside the datasource's
      slice): their records have status ``not_predicted`` and null prediction fields.
    result_ends: the result block's line ends (``transforms/join/lines.py``), when the reader
      has them.
  """
  schema, layout = rules.schema, rules.layout
  cutoff, min_score, on_type_error = rules.cutoff, rules.min_score, rules.on_type_error
  inputs = parse_input(input_block, n, len(schema.input_columns),
                       [coltypes.ARROW_TYPES[kind] for kind in schema.input_kinds],
                       threads=rules.threads)
  typed, bad = _typed_columns(schema, inputs)
  type_dead = np.zeros(n, dtype=bool)
  if bad and on_type_error == coltypes.DEAD_LETTER:
    for mask in bad.values():
      type_dead |= mask
  predicted = result_block is not None
  if predicted:
    if rules.result_format is None:
      result = parse_result(result_block, n, layout, ends=result_ends)
    else:
      result = rules.result_format.parse(result_block, n, layout, ends=result_ends)
    result_errors, result_bad = result.errors, result.kind == BAD
  else:
    result_errors, result_bad = {}, np.zeros(n, dtype=bool)
  dead, extra = [], {}
  for i in sorted(set(inputs.errors) | set(np.flatnonzero(type_dead).tolist()) |
                  set(result_errors)):
    if i in inputs.errors:
      dead.append((i, 'bad_input_row', inputs.errors[i]))
    elif type_dead[i]:
      detail, extra[i] = _type_error(schema, inputs, bad, i)
      dead.append((i, 'type_error', detail))
    else:
      dead.append((i, 'bad_result_line', result_errors[i]))
  keep = (inputs.kind == OK) & ~type_dead & ~result_bad
  n_keep = int(keep.sum())
  type_errors = {
      schema.input_fields[j]: int(mask.sum() if on_type_error == coltypes.DEAD_LETTER
                                  else (mask & keep).sum())
      for j, mask in bad.items()}
  columns = {
      'batch_prediction_id': constant(place.batch_prediction_id, n),
      'input_uri': constant(place.input_uri, n),
      'row_number': _numbers(place.first_row, n),
      'input_line_number': _numbers(place.first_input_line, n),
      **dict(zip(schema.input_fields, typed, strict=True)),
  }
  if place.first_result_line is not None:
    columns['result_line_number'] = _numbers(place.first_result_line, n)
  if predicted:
    ok = keep & (result.kind == OK)
    prediction = interpret(result, layout, ok, cutoff, min_score, rules.top_k)
    columns['status'] = pc.if_else(pa.array(ok), 'ok', 'failed')
    columns.update(prediction)
    stats = audit.block_stats(layout, prediction, ok, cutoff)
    joined = int(ok.sum())
    failed_rows = np.flatnonzero(keep & (result.kind == FAILED))
  else:
    columns['status'] = constant(NOT_PREDICTED, n)
    stats, joined, failed_rows = None, 0, np.zeros(0, dtype=np.int64)
  batch = pa.RecordBatch.from_arrays(
      [columns[field.name] if field.name in columns else pa.nulls(n, field.type)
       for field in rules.arrow_schema], schema=rules.arrow_schema)
  if n_keep != n:
    batch = batch.filter(pa.array(keep))
  return BlockOutcome(batch, joined, n_keep - joined if predicted else 0, dead,
                      not_predicted=0 if predicted else n_keep, failed_rows=failed_rows,
                      type_errors=type_errors, extra=extra, audit=stats)
