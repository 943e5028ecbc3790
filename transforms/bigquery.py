"""Loading enriched records into BigQuery: table names, schema checks, and the sink.

The table schema derives from predjoin's one output schema (``layout.bigquery_schema``). Loads
go through ``WriteToBigQuery`` with file loads of Avro files, into a table partitioned by load
date (ingestion time, daily). Before a run appends to an existing table, the launcher compares
that table's schema with the records' and stops with every difference listed.
"""

from __future__ import annotations

import re

import apache_beam as beam
import pyarrow as pa

# PROJECT:DATASET.TABLE or PROJECT.DATASET.TABLE (the project is required: jobs are scheduled).
TABLE_PATTERN = re.compile(
    r'^(?P<project>[a-z][a-z0-9.:-]{4,61}[a-z0-9])[:.](?P<dataset>[A-Za-z0-9_]{1,1024})'
    r'\.(?P<table>[\w$-]{1,1024})$')
DISPOSITIONS = {'append': 'WRITE_APPEND', 'truncate': 'WRITE_TRUNCATE'}

# BigQuery reports legacy and standard SQL names for the same types.
_TYPE_ALIASES = {'FLOAT64': 'FLOAT', 'INT64': 'INTEGER', 'BOOL': 'BOOLEAN', 'STRUCT': 'RECORD'}


class TableError(ValueError):
  """A table name or an existing table schema that a run cannot load into."""


def parse_table(spec: str) -> str:
  """Normalises ``PROJECT:DATASET.TABLE`` / ``PROJECT.DATASET.TABLE`` to the colon form."""
  match = TABLE_PATTERN.match(spec or '')
  if not match:
    raise TableError(f'--bigquery_table {spec!r} is not PROJECT:DATASET.TABLE')
  return f'{match["project"]}:{match["dataset"]}.{match["table"]}'


def _normal(field: dict) -> tuple:
  kind = str(field.get('type', '')).upper()
  return (_TYPE_ALIASES.get(kind, kind), str(field.get('mode') or 'NULLABLE').upper())


def schema_differences(existing: list[dict], wanted: list[dict], path: str = '') -> list[str]:
  """What stops records of schema ``wanted`` from being appended to a table of ``existing``.

  A column the table lacks, or one of another type or mode, is a difference; a column only the
  table has is fine when it is NULLABLE (loads leave it null) and a difference when REQUIRED.
  """
  have = {f['name'].lower(): f for f in existing}
  want = {f['name'].lower(): f for f in wanted}
  problems = []
  for key, field in want.items():
    name = path + field['name']
    if key not in have:
      problems.append(f'{name}: the table has no such column')
      continue
    if _normal(have[key]) != _normal(field):
      problems.append(f'{name}: the table has {"/".join(_normal(have[key]))}, the records '
                      f'{"/".join(_normal(field))}')
    elif _normal(field)[0] == 'RECORD':
      problems.extend(schema_differences(have[key].get('fields', []), field.get('fields', []),
                                         name + '.'))
  for key, field in have.items():
    if key not in want and _normal(field)[1] == 'REQUIRED':
      problems.append(f'{path}{field["name"]}: REQUIRED in the table, but the records lack it')
  return problems


def check_existing_table(table: str, wanted: list[dict], client=None) -> list[str]:
  """Differences between an existing table's schema and ``wanted``; none when there is no table."""
  from google.api_core.exceptions import NotFound
  from google.cloud import bigquery
  client = client or bigquery.Client(project=table.split(':', 1)[0])
  try:
    found = client.get_table(table.replace(':', '.'))
  except NotFound:
    return []
  return schema_differences([f.to_api_repr() for f in found.schema], wanted)


def to_rows(batch: pa.RecordBatch) -> list[dict]:
  """Rows for BigQuery: lists are never null there, so a null list loads as an empty one."""
  lists = [f.name for f in batch.schema if pa.types.is_list(f.type)]
  rows = batch.to_pylist()
  if lists:
    for row in rows:
      for name in lists:
        if row[name] is None:
          row[name] = []
  return rows


class WriteToTable(beam.PTransform):
  """RecordBatches -> BigQuery file loads (Avro), partitioned by load date.

  Returns the ``table <- load job`` strings of the loads, so the summary follows them.
  """

  def __init__(self, table: str, bigquery_schema: list[dict], write_disposition: str):
    super().__init__()
    self._table = parse_table(table)
    self._schema = {'fields': bigquery_schema}
    self._disposition = DISPOSITIONS[write_disposition]

  def expand(self, batches):
    # Imported here: a local run that writes no BigQuery table does not import Beam's BigQuery
    # IO at all (pipelines/workers.py), so ``beam.io`` may not have it.
    from apache_beam.io.gcp.bigquery import WriteToBigQuery
    result = (batches
              | 'ToRows' >> beam.FlatMap(to_rows)
              | 'LoadIntoBigQuery' >> WriteToBigQuery(
                  self._table, schema=self._schema,
                  method=WriteToBigQuery.Method.FILE_LOADS,
                  temp_file_format='AVRO',
                  create_disposition='CREATE_IF_NEEDED',
                  write_disposition=self._disposition,
                  additional_bq_parameters={'timePartitioning': {'type': 'DAY'}}))
    return result.destination_load_jobid_pairs | 'DescribeLoads' >> beam.Map(
        lambda pair: f'{pair[0]} <- {getattr(pair[1], "jobId", pair[1])}')
