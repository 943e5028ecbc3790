"""Loading enriched records into BigQuery: table names, schema checks, the load and the publish.

A run's records never go straight into the table. ``WriteToTable`` loads them (Beam's
``WriteToBigQuery``, file loads of Avro files) into a staging table of the run's own,
``<table>__predjoin_<run id>`` in the table's dataset, which the launcher creates with a
two-day expiration (``TableLoad.create_staging``). Once every shard is accounted for and the
bad shards are within ``--max_bad_shards``, the summary step publishes them
(``TableLoad.publish``), by ``--write_disposition``:

- ``replace``: one transaction deletes the rows of the run's batch predictions and inserts the
  staged rows, so a re-run of a batch prediction replaces exactly its own rows, and readers see
  either the old rows or the new ones;
- ``append``: one INSERT of the staged rows;
- ``truncate``: one copy job replaces the table, rows and schema, with the staging table.

A failed run publishes nothing. The table is created when missing, partitioned by load date
(ingestion time, daily) and clustered by ``batch_prediction_id``; inserted rows go to the
partition of the day they are published. The schema derives from predjoin's one output schema
(``layout.bigquery_schema``); before a run replaces or appends, the launcher compares an
existing table's schema with the records' and stops with every difference listed.
"""

from __future__ import annotations

import dataclasses
import datetime
import re
import uuid

import apache_beam as beam
import pyarrow as pa

# PROJECT:DATASET.TABLE or PROJECT.DATASET.TABLE (the project is required: jobs are scheduled).
TABLE_PATTERN = re.compile(
    r'^(?P<project>[a-z][a-z0-9.:-]{4,61}[a-z0-9])[:.](?P<dataset>[A-Za-z0-9_]{1,1024})'
    r'\.(?P<table>[\w$-]{1,1024})$')
STAGING_SUFFIX = '__predjoin_'  # <table>__predjoin_<run id>: a run's staging table
STAGING_EXPIRES = datetime.timedelta(days=2)  # a staging table a failed job left behind goes
PARTITIONING = 'DAY'  # a new table: ingestion time, daily
CLUSTERING = ('batch_prediction_id',)

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


def schema_differences(existing: list[dict], wanted: list[dict], path: str = '',
                       never_null=()) -> list[str]:
  """What stops records of schema ``wanted`` from being inserted into a table of ``existing``.

  A column the table lacks, or one of another type or mode, is a difference; a column only the
  table has is fine when it is NULLABLE (inserts leave it null) and a difference when REQUIRED.
  A REQUIRED table column for a NULLABLE record field is fine when the field is in
  ``never_null`` (dotted paths of fields predjoin never leaves null, ``layout.never_null``):
  the records reach the table through an INSERT, which checks values, not declared modes
  (tables made by earlier versions of predjoin declare the provenance columns REQUIRED).
  """
  have = {f['name'].lower(): f for f in existing}
  want = {f['name'].lower(): f for f in wanted}
  problems = []
  for key, field in want.items():
    name = path + field['name']
    if key not in have:
      problems.append(f'{name}: the table has no such column')
      continue
    table_kind, table_mode = _normal(have[key])
    kind, mode = _normal(field)
    stricter = (table_mode, mode) == ('REQUIRED', 'NULLABLE') and name in never_null
    if table_kind != kind or (table_mode != mode and not stricter):
      problems.append(f'{name}: the table has {table_kind}/{table_mode}, the records '
                      f'{kind}/{mode}')
    elif kind == 'RECORD':
      problems.extend(schema_differences(have[key].get('fields', []), field.get('fields', []),
                                         name + '.', never_null))
  for key, field in have.items():
    if key not in want and _normal(field)[1] == 'REQUIRED':
      problems.append(f'{path}{field["name"]}: REQUIRED in the table, but the records lack it')
  return problems


def check_existing_table(table: str, wanted: list[dict], client=None,
                         never_null=()) -> list[str]:
  """Differences between an existing table's schema and ``wanted``; none when there is no table."""
  from google.api_core.exceptions import NotFound
  client = client or _client(table)
  try:
    found = client.get_table(_standard(table))
  except NotFound:
    return []
  return schema_differences([f.to_api_repr() for f in found.schema], wanted,
                            never_null=never_null)


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


def _standard(table: str) -> str:
  """``PROJECT:DATASET.TABLE`` -> ``PROJECT.DATASET.TABLE``, the client's and SQL's form (a
  domain-scoped project keeps its own colon: ``example.com:p.dataset.table``)."""
  project, _, rest = table.rpartition(':')
  return f'{project}.{rest}'


def _client(table: str):
  from google.cloud import bigquery
  return bigquery.Client(project=table.rsplit(':', 1)[0])


def _quoted(table: str) -> str:
  return f'`{_standard(table)}`'


def publish_sql(table: str, staging: str, columns: list[str], disposition: str,
                partition_unit: str | None) -> str:
  """The statements that move a run's staged rows into the table (``replace`` and ``append``).

  ``@batch_prediction_ids`` (``ARRAY<STRING>``) names the run's batch predictions. With
  ``partition_unit`` (an ingestion-time partitioned table: DAY, HOUR, MONTH or YEAR) the rows go
  to the partition of the time they are published.
  """
  names = ', '.join(f'`{c}`' for c in columns)
  if partition_unit:
    insert = (f'INSERT INTO {_quoted(table)} (_PARTITIONTIME, {names})\n'
              f'SELECT TIMESTAMP_TRUNC(CURRENT_TIMESTAMP(), {partition_unit}), {names}\n'
              f'FROM {_quoted(staging)};')
  else:
    insert = f'INSERT INTO {_quoted(table)} ({names})\nSELECT {names}\nFROM {_quoted(staging)};'
  if disposition == 'append':
    return insert + '\n'
  if disposition != 'replace':
    raise ValueError(f'no SQL publishes a {disposition!r} load (truncate copies the table)')
  return ('BEGIN TRANSACTION;\n'
          f'DELETE FROM {_quoted(table)}\n'
          'WHERE batch_prediction_id IN UNNEST(@batch_prediction_ids);\n'
          f'{insert}\n'
          'COMMIT TRANSACTION;\n')


class PublishError(RuntimeError):
  """The staged rows cannot be published as they are (their count differs from the run's)."""


def _job_reference(text: str) -> tuple[str, str | None, str]:
  """``PROJECT:LOCATION.JOB_ID`` (or ``PROJECT:JOB_ID``) -> (project, location, job id)."""
  project, _, rest = text.rpartition(':')
  location, _, job_id = rest.rpartition('.')
  return project, location or None, job_id


@dataclasses.dataclass(frozen=True)
class TableLoad:
  """A run's way into a BigQuery table: its staging table and how it publishes the rows.

  ``run_id`` names the staging table and the publishing job, so a retried publish (the summary
  step of a job that failed after it published) finds the job it started instead of starting
  a second one.
  """

  table: str  # PROJECT:DATASET.TABLE
  schema: tuple  # layout.bigquery_schema's fields
  disposition: str  # replace, append or truncate
  run_id: str

  @classmethod
  def create(cls, table: str, schema: list[dict], disposition: str,
             run_id: str | None = None) -> TableLoad:
    if disposition not in ('replace', 'append', 'truncate'):
      raise ValueError(f'unknown write disposition {disposition!r}')
    return cls(parse_table(table), tuple(schema), disposition, run_id or uuid.uuid4().hex[:16])

  @property
  def staging(self) -> str:
    """The run's staging table, beside the table (BigQuery table names may be 1024 long)."""
    return f'{self.table}{STAGING_SUFFIX}{self.run_id}'

  @property
  def publish_job_id(self) -> str:
    return f'predjoin_{self.run_id}_publish'

  def _table_object(self, name: str, expires: datetime.datetime | None = None):
    from google.cloud import bigquery
    table = bigquery.Table(_standard(name),
                           schema=[bigquery.SchemaField.from_api_repr(f) for f in self.schema])
    table.time_partitioning = bigquery.TimePartitioning(type_=PARTITIONING)
    table.clustering_fields = list(CLUSTERING)
    if expires is not None:
      table.expires = expires
    return table

  def create_staging(self, client=None, now: datetime.datetime | None = None) -> None:
    """Creates the staging table at launch, expiring ``STAGING_EXPIRES`` later, so one a failed
    job leaves behind does not stay; partitioned and clustered like a new table, which a
    ``truncate`` copies."""
    client = client or _client(self.table)
    now = now or datetime.datetime.now(datetime.UTC)
    client.create_table(self._table_object(self.staging, now + STAGING_EXPIRES), exists_ok=True)

  def publish(self, batch_prediction_ids: list[str], jobs: list[str], expected_rows: int,
              client=None) -> dict:
    """Moves the staged rows into the table (module docstring); returns what it did.

    Args:
      batch_prediction_ids: the run's batch predictions, whose rows ``replace`` replaces.
      jobs: the load (and copy) jobs that filled the staging table, ``PROJECT:LOCATION.ID``.
      expected_rows: the records the run sent to the table; the staging table must hold as
        many, or nothing is published (PublishError).
    """
    from google.api_core.exceptions import Conflict, NotFound
    from google.cloud import bigquery
    client = client or _client(self.table)
    for job in jobs:  # done by now (the summary step follows them); raises if one failed
      project, location, job_id = _job_reference(job)
      client.get_job(job_id, project=project, location=location).result()
    staged = client.get_table(_standard(self.staging))
    if (staged.num_rows or 0) != expected_rows:
      raise PublishError(f'the staging table {self.staging} holds {staged.num_rows} rows, the '
                         f'run sent {expected_rows}: nothing is published to {self.table}')
    done = {'table': self.table, 'write_disposition': self.disposition, 'published': True,
            'rows': expected_rows, 'batch_prediction_ids': sorted(batch_prediction_ids),
            'staging_table': self.staging}
    location = staged.location
    try:
      if self.disposition == 'truncate':
        config = bigquery.CopyJobConfig(write_disposition='WRITE_TRUNCATE',
                                        create_disposition='CREATE_IF_NEEDED')
        job = client.copy_table(_standard(self.staging), _standard(self.table),
                                job_id=self.publish_job_id, location=location,
                                job_config=config)
      else:
        try:
          target = client.get_table(_standard(self.table))
        except NotFound:
          target = client.create_table(self._table_object(self.table), exists_ok=True)
        partitioning = target.time_partitioning
        unit = partitioning.type_ if partitioning is not None and not partitioning.field \
            else None
        sql = publish_sql(self.table, self.staging, [f['name'] for f in self.schema],
                          self.disposition, unit)
        config = bigquery.QueryJobConfig(query_parameters=[bigquery.ArrayQueryParameter(
            'batch_prediction_ids', 'STRING', sorted(batch_prediction_ids))])
        # A fixed job ID, retried by nobody but this step (see the Conflict below).
        job = client.query(sql, job_config=config, job_id=self.publish_job_id,
                           location=location, job_retry=None)
    except Conflict:  # a retry of this step: the job started before is the publish
      job = client.get_job(self.publish_job_id, location=location)
    job.result()
    if self.disposition == 'truncate':  # the table must not expire with the staging table
      copied = client.get_table(_standard(self.table))
      if copied.expires is not None and copied.expires == staged.expires:
        copied.expires = None
        client.update_table(copied, ['expires'])
    done['job'] = f'{job.project}:{job.location}.{job.job_id}'
    return done

  def discard(self, client=None) -> None:
    """Drops the staging table (after a publish, or instead of one)."""
    client = client or _client(self.table)
    client.delete_table(_standard(self.staging), not_found_ok=True)


class WriteToTable(beam.PTransform):
  """RecordBatches -> Beam's file loads (Avro) into the run's staging table (``TableLoad``).

  Returns the load (and copy) jobs as ``PROJECT:LOCATION.JOB_ID`` strings: the summary step
  follows them and then publishes the staged rows.
  """

  def __init__(self, load: TableLoad):
    super().__init__()
    self._load = load

  def expand(self, batches):
    # Imported here: a local run that writes no BigQuery table does not import Beam's BigQuery
    # IO at all (pipelines/localrun/workers.py), so ``beam.io`` may not have it.
    from apache_beam.io.gcp.bigquery import WriteToBigQuery
    result = (batches
              | 'ToRows' >> beam.FlatMap(to_rows)
              | 'LoadIntoStaging' >> WriteToBigQuery(
                  self._load.staging, schema={'fields': list(self._load.schema)},
                  method=WriteToBigQuery.Method.FILE_LOADS,
                  temp_file_format='AVRO',
                  create_disposition='CREATE_IF_NEEDED',
                  # The staging table is the run's own: every load adds to it (a retried load
                  # reuses its job ID, so it adds nothing twice).
                  write_disposition='WRITE_APPEND',
                  additional_bq_parameters={'timePartitioning': {'type': PARTITIONING},
                                            'clustering': {'fields': list(CLUSTERING)}}))
    return ((result.destination_load_jobid_pairs, result.destination_copy_jobid_pairs)
            | 'LoadJobs' >> beam.Flatten()
            | 'DescribeJobs' >> beam.Map(_describe_job))


def _describe_job(pair) -> str:
  """A (destination, JobReference) pair -> ``PROJECT:LOCATION.JOB_ID`` (``PROJECT:JOB_ID``
  without a location), the form ``TableLoad.publish`` follows."""
  reference = pair[1]
  if getattr(reference, 'projectId', None) is None:  # not a JobReference: keep what there is
    return str(reference)
  location = f'{reference.location}.' if reference.location else ''
  return f'{reference.projectId}:{location}{reference.jobId}'
