"""The enriched record: its fields, and the one schema Avro, Arrow/Parquet and BigQuery derive from.

A record holds the provenance fields, the prediction and audit fields of the model type (a
:class:`ResultLayout` says which the result has), then the input columns under names made valid
by the naming rule (README, "Output contract"). Pure functions, no Beam.
"""

from __future__ import annotations

import dataclasses
import re

BINARY, MULTICLASS, REGRESSION, RAW = 'binary', 'multiclass', 'regression', 'raw'
TAG, TRUE_LABEL, BEST_ANSWER, SCORE = 'tag', 'trueLabel', 'bestAnswer', 'score'

# The provenance fields every record starts with, in output order, and their kinds.
PROVENANCE_FIELDS = (('batch_prediction_id', 'string'), ('input_uri', 'string'),
                     ('row_number', 'long'), ('input_line_number', 'long'),
                     ('result_line_number', 'long'), ('status', 'string'))
# Those never null (a row outside a datasource slice has no result line).
PROVENANCE = ('batch_prediction_id', 'input_uri', 'row_number', 'input_line_number', 'status')



@dataclasses.dataclass(frozen=True)
class ResultLayout:
  """The columns of a result: the model type, the column names (``header``, named by the
  vocabulary above: ``tag``, ``trueLabel``, ``bestAnswer``, ``score``, or one column per class)
  and the class labels."""

  model_type: str
  header: tuple[str, ...]
  classes: tuple[str, ...] = ()
  kinds: tuple[str, ...] = ()  # raw: each output field's kind (string, double, boolean)

  @property
  def raw_fields(self) -> list[tuple[str, str]]:
    """raw: ``(output field, record field)`` of each field of the output kept as it is; the
    record field is ``out_`` and the field's name made valid by the naming rule."""
    names = [name for name in self.header if not name.startswith('echo_')]
    return list(zip(names, ['out_' + _INVALID.sub('_', name) for name in names], strict=True))

  @property
  def has_tag(self) -> bool:
    return TAG in self.header

  @property
  def has_true_label(self) -> bool:
    return TRUE_LABEL in self.header

  @property
  def has_best_answer(self) -> bool:
    return BEST_ANSWER in self.header


def prediction_fields(layout: ResultLayout) -> list[tuple[str, str, bool]]:
  """``(name, kind, nullable)`` of the prediction fields for a layout, in output order."""
  if layout.model_type == BINARY:
    fields = [('best_answer', 'long', True), ('score', 'double', True),
              ('service_best_answer', 'long', True)]
  elif layout.model_type == MULTICLASS:
    fields = [('best_answer', 'string', True), ('best_score', 'double', True),
              ('unknown', 'boolean', True), ('scores', 'scores', True)]
    if layout.has_best_answer:
      fields.append(('service_best_answer', 'string', True))
  elif layout.model_type == RAW:
    fields = [(field, kind, True) for (_, field), kind in zip(layout.raw_fields, layout.kinds,
                                                               strict=True)]
  else:
    fields = [('score', 'double', True)]
  if layout.has_tag:
    fields.append(('tag', 'string', True))
  if layout.has_true_label:
    fields.append(('true_label', 'string', True))
  return fields


_INVALID = re.compile(r'[^A-Za-z0-9_]')
MAX_NAME = 300  # BigQuery's limit; Avro has none.


def output_names(input_names: list[str] | tuple[str, ...], reserved: set[str]) -> list[str]:
  """Deterministic Avro/BigQuery-valid names for input columns.

  The rule: every character outside ``[A-Za-z0-9_]`` becomes ``_``; an empty name becomes
  ``col_<position>``; a name starting with a digit or ``_`` gets the prefix ``col_``; a name equal
  (ignoring case) to a provenance or prediction field gets the prefix ``input_``; a name equal
  (ignoring case) to an earlier column's gets the suffix ``_<position>``. Positions are 1-based.
  """
  reserved_low = {name.lower() for name in reserved}
  taken = set(reserved_low)
  result = []
  for position, raw in enumerate(input_names, start=1):
    name = _INVALID.sub('_', raw.strip())[:MAX_NAME]
    if not name:
      name = f'col_{position}'
    if name[0].isdigit() or name[0] == '_':
      name = f'col_{name}'
    while name.lower() in reserved_low:
      name = f'input_{name}'
    if name.lower() in taken:
      name = f'{name}_{position}'
    while name.lower() in taken:
      name = f'{name}_'
    taken.add(name.lower())
    result.append(name)
  return result


def audit_fields(layout: ResultLayout, top_k: int | None = None) -> list[tuple[str, str, bool]]:
  """``(name, kind, nullable)`` of the audit fields, after the prediction fields.

  Binary: ``answer_changed`` (the recomputed answer differs from the file's ``bestAnswer``).
  Multiclass: ``margin`` (best minus second score), ``score_sum_off`` (the scores do not sum to
  1 within 1e-3) and, with ``--top_k``, ``top_labels`` (the k best labels, best first).
  """
  if layout.model_type == BINARY:
    return [('answer_changed', 'boolean', True)]
  if layout.model_type == MULTICLASS:
    fields = [('margin', 'double', True), ('score_sum_off', 'boolean', True)]
    if top_k:
      fields.append(('top_labels', 'strings', True))
    return fields
  return []


@dataclasses.dataclass(frozen=True)
class OutputSchema:
  """The one internal schema of an enriched record; Arrow, Avro and BigQuery schemas derive from it.

  ``fields`` are ``(name, kind, nullable)`` with kind one of string, long, double, boolean,
  scores (a list of ``{label, score}``), strings (a list of strings); ``nullable`` says whether
  predjoin may leave the field null (every format declares every field nullable: see
  ``arrow_schema``).
  """

  fields: tuple[tuple[str, str, bool], ...]
  input_columns: tuple[str, ...]  # the input's own names, in order
  input_fields: tuple[str, ...]   # their output names
  input_types: tuple[str, ...] = ()  # their Amazon ML attribute types ('' without a schema)

  @property
  def names(self) -> list[str]:
    return [name for name, _, _ in self.fields]

  @property
  def input_kinds(self) -> list[str]:
    kinds = dict((name, kind) for name, kind, _ in self.fields)
    return [kinds[name] for name in self.input_fields]


def output_schema(layout: ResultLayout, input_columns: list[str] | tuple[str, ...],
                  input_kinds: list[str] | tuple[str, ...] | None = None,
                  input_types: list[str] | tuple[str, ...] | None = None,
                  top_k: int | None = None) -> OutputSchema:
  """The record schema: provenance, prediction, audit, then the input columns.

  Args:
    input_kinds: per input column, string, double or boolean (default: all string).
    input_types: per input column, its Amazon ML attribute type, for messages.
  """
  provenance = [(name, kind, name not in PROVENANCE) for name, kind in PROVENANCE_FIELDS]
  prediction = prediction_fields(layout) + audit_fields(layout, top_k)
  reserved = {name for name, _, _ in provenance + prediction}
  names = output_names(input_columns, reserved)
  kinds = list(input_kinds) if input_kinds is not None else ['string'] * len(names)
  inputs = [(name, kind, True) for name, kind in zip(names, kinds, strict=True)]
  types = tuple(input_types) if input_types is not None else ('',) * len(names)
  return OutputSchema(tuple(provenance + prediction + inputs), tuple(input_columns), tuple(names),
                      types)


# Every format declares every field, and every field of a ``scores`` item, nullable, whether or
# not predjoin ever leaves it null (the ``nullable`` of ``OutputSchema.fields`` says that, and the
# README's record table). The Avro records are encoded a block at a time by polars
# (``transforms/io/sinks.py``), whose encoder writes each field as a union with null; Parquet and
# BigQuery say the same, so a file of one format loads into a table made for another: BigQuery
# refuses to load a nullable Avro or Parquet field into a REQUIRED column.


def arrow_schema(schema: OutputSchema):
  """The Arrow schema of a record (Parquet files, the blocks between transforms)."""
  import pyarrow as pa
  scalar = {'string': pa.string(), 'long': pa.int64(), 'double': pa.float64(),
            'boolean': pa.bool_(), 'strings': pa.list_(pa.string())}
  scores = pa.list_(pa.struct([pa.field('label', pa.string()), pa.field('score', pa.float64())]))
  return pa.schema([
      pa.field(name, scores if kind == 'scores' else scalar[kind])
      for name, kind, _ in schema.fields
  ])


def avro_schema(schema: OutputSchema, name: str = 'EnrichedPrediction') -> dict:
  """The Avro schema of a record: every field optional (``["null", T]``), list items too.

  Optional everywhere is what the Arrow-native Avro encoder writes (``transforms/io/sinks.py``
  encodes whole blocks with polars, and checks that it encodes exactly this schema), and what
  the Arrow and BigQuery schemas declare.
  """
  def optional(avro_type):
    return ['null', avro_type]

  label_score = {'type': 'record', 'name': 'LabelScore', 'fields': [
      {'name': 'label', 'type': optional('string'), 'default': None},
      {'name': 'score', 'type': optional('double'), 'default': None}]}
  lists = {'scores': {'type': 'array', 'items': optional(label_score)},
           'strings': {'type': 'array', 'items': optional('string')}}
  fields = [{'name': field_name, 'type': optional(lists.get(kind, kind)), 'default': None}
            for field_name, kind, _ in schema.fields]
  return {'type': 'record', 'name': name, 'namespace': 'predjoin', 'fields': fields}


_BIGQUERY_TYPES = {'string': 'STRING', 'long': 'INTEGER', 'double': 'FLOAT',
                   'boolean': 'BOOLEAN'}


def bigquery_schema(schema: OutputSchema) -> list[dict]:
  """The BigQuery table schema of a record: ``{name, type, mode[, fields]}`` per column.

  The form ``WriteToBigQuery(schema={'fields': ...})`` takes. Every column is NULLABLE, like the
  Avro and Parquet fields. A list becomes a REPEATED column (``scores`` a REPEATED RECORD of
  ``label`` and ``score``); BigQuery has no null lists, so a null list loads as an empty one.
  """
  out = []
  for name, kind, _ in schema.fields:
    if kind == 'scores':
      out.append({'name': name, 'type': 'RECORD', 'mode': 'REPEATED', 'fields': [
          {'name': 'label', 'type': 'STRING', 'mode': 'NULLABLE'},
          {'name': 'score', 'type': 'FLOAT', 'mode': 'NULLABLE'}]})
    elif kind == 'strings':
      out.append({'name': name, 'type': 'STRING', 'mode': 'REPEATED'})
    else:
      out.append({'name': name, 'type': _BIGQUERY_TYPES[kind], 'mode': 'NULLABLE'})
  return out


def never_null(schema: OutputSchema) -> list[str]:
  """Dotted paths of the fields predjoin never leaves null, though every format declares them
  nullable: the provenance fields, and the ``label`` and ``score`` of each ``scores`` item."""
  paths = [name for name, _, nullable in schema.fields if not nullable]
  paths += [f'{name}.{item}' for name, kind, _ in schema.fields if kind == 'scores'
            for item in ('label', 'score')]
  return paths
