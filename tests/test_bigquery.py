"""BigQuery: table names, schema comparison, row conversion, and the launch-time table check."""

import dataclasses
import http.server
import json
import os
import re
import threading
import time

import apache_beam as beam
import pyarrow as pa
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from pipelines.job import LaunchError, build_pipeline
from pipelines.options import OptionsError, validate
from transforms.aml import result_header
from transforms.io import bigquery
from transforms.join import record_schema


@pytest.mark.parametrize('spec, expected', [
    ('my-project:warehouse.predictions', 'my-project:warehouse.predictions'),
    ('my-project.warehouse.predictions', 'my-project:warehouse.predictions'),
    ('example.com:my-project:ds.t_1', 'example.com:my-project:ds.t_1'),
])
def test_parse_table(spec, expected):
  assert bigquery.parse_table(spec) == expected


@pytest.mark.parametrize('spec', ['warehouse.predictions', 'p:ds', '', 'Bad_Project:ds.t',
                                  'my-project:ds.t; drop'])
def test_parse_table_refuses(spec):
  with pytest.raises(bigquery.TableError, match='PROJECT:DATASET.TABLE'):
    bigquery.parse_table(spec)


def _wanted():
  layout = result_header.detect_layout(('tag', 'a', 'b'))
  return record_schema.bigquery_schema(record_schema.output_schema(layout, ['x']))


def test_schema_of_the_records_matches_itself_and_a_wider_nullable_table():
  wanted = _wanted()
  assert bigquery.schema_differences(wanted, wanted) == []
  wider = wanted + [{'name': 'loaded_by', 'type': 'STRING', 'mode': 'NULLABLE'}]
  assert bigquery.schema_differences(wider, wanted) == []
  aliases = [dict(f, type={'FLOAT': 'FLOAT64', 'INTEGER': 'INT64'}.get(f['type'], f['type']))
             for f in wanted]
  assert bigquery.schema_differences(aliases, wanted) == []


def test_schema_differences_are_each_named():
  wanted = _wanted()
  existing = [dict(f) for f in wanted if f['name'] != 'x']
  existing = [dict(f, type='STRING') if f['name'] == 'best_score' else f for f in existing]
  scores = next(f for f in existing if f['name'] == 'scores')
  scores['fields'] = [{'name': 'label', 'type': 'STRING', 'mode': 'REQUIRED'},
                      {'name': 'score', 'type': 'STRING', 'mode': 'REQUIRED'}]
  existing.append({'name': 'must_have', 'type': 'STRING', 'mode': 'REQUIRED'})
  never_null = record_schema.never_null(record_schema.output_schema(result_header.detect_layout(('tag', 'a', 'b')), ['x']))
  problems = bigquery.schema_differences(existing, wanted, never_null=never_null)
  assert any(p.startswith('x: the table has no such column') for p in problems)
  assert any(p.startswith('best_score: the table has STRING/NULLABLE') for p in problems)
  assert any(p.startswith('scores.score:') for p in problems)
  assert any(p.startswith('must_have: REQUIRED') for p in problems)
  assert len(problems) == 4  # scores.label: REQUIRED in the table, but never null
  assert 'scores.label: the table has STRING/REQUIRED, the records STRING/NULLABLE' in \
      bigquery.schema_differences(existing, wanted)


def test_rows_turn_null_lists_into_empty_ones():
  layout = result_header.detect_layout(('a', 'b'))
  schema = record_schema.output_schema(layout, ['x'])
  arrow = record_schema.arrow_schema(schema)
  row = {name: None for name in arrow.names}
  row.update(batch_prediction_id='bp', input_uri='i', row_number=1, status='failed')
  rows = bigquery.to_rows(pa.RecordBatch.from_pylist([row], schema=arrow))
  assert rows[0]['scores'] == [] and rows[0]['best_answer'] is None


# The BigQuery REST API on loopback, for the real BigQuery client ------------------------------

_TABLE = re.compile(r'^/bigquery/v2/projects/([^/]+)/datasets/([^/]+)/tables/([^/?]+)')
_TABLES = re.compile(r'^/bigquery/v2/projects/([^/]+)/datasets/([^/]+)/tables/?(\?|$)')
_JOBS = re.compile(r'^/bigquery/v2/projects/([^/]+)/jobs/?(\?|$)')
_JOB = re.compile(r'^/bigquery/v2/projects/([^/]+)/(?:jobs|queries)/([^/?]+)')


class _BigQueryApi(http.server.BaseHTTPRequestHandler):
  """The tables and jobs calls of the BigQuery REST API, over ``server.datasets`` (``(project,
  dataset)``), ``server.tables`` (``(project, dataset, table)`` -> resource) and ``server.jobs``
  (job ID -> resource). Every job it is given is done at once; ``server.requests`` records each
  call, ``server.bodies`` each body."""

  def _reply(self, status, body=None):
    data = json.dumps(body).encode() if body is not None else b''
    self.send_response(status)
    self.send_header('Content-Type', 'application/json')
    self.send_header('Content-Length', str(len(data)))
    self.end_headers()
    self.wfile.write(data)

  def _not_found(self, what):
    self._reply(404, {'error': {'code': 404, 'message': f'Not found: {what}',
                                'errors': [{'reason': 'notFound'}]}})

  def _body(self):
    length = int(self.headers.get('Content-Length') or 0)
    body = json.loads(self.rfile.read(length)) if length else None
    self.server.bodies.append((self.command, self.path.split('?')[0], body))
    return body

  def _table(self, key):
    table = self.server.tables[key]
    project, dataset, name = key
    return {'kind': 'bigquery#table', 'location': 'EU', 'numRows': '0', **table,
            'tableReference': {'projectId': project, 'datasetId': dataset, 'tableId': name}}

  def _handle(self):
    server = self.server
    server.requests.append(f'{self.command} {self.path}')
    body = self._body()
    table = _TABLE.match(self.path)
    if table and self.command == 'GET':
      key = table.groups()
      return self._reply(200, self._table(key)) if key in server.tables else \
          self._not_found(self.path)
    if table and self.command == 'DELETE':
      return self._reply(204) if server.tables.pop(table.groups(), None) is not None else \
          self._not_found(self.path)
    if table and self.command in ('PATCH', 'PUT'):
      server.tables[table.groups()].update({k: v for k, v in body.items()
                                            if k != 'tableReference'})
      return self._reply(200, self._table(table.groups()))
    if _TABLES.match(self.path) and self.command == 'POST':
      ref = body['tableReference']
      key = (ref['projectId'], ref['datasetId'], ref['tableId'])
      if key[:2] not in server.datasets:
        return self._not_found(f'Dataset {key[0]}:{key[1]}')
      if key in server.tables:
        return self._reply(409, {'error': {'code': 409, 'message': 'Already Exists',
                                           'errors': [{'reason': 'duplicate'}]}})
      server.tables[key] = {k: v for k, v in body.items() if k != 'tableReference'}
      return self._reply(200, self._table(key))
    if _JOBS.match(self.path) and self.command == 'POST':
      job_id = body['jobReference']['jobId']
      if job_id in server.jobs:
        return self._reply(409, {'error': {'code': 409, 'message': f'Already Exists: Job '
                                           f'{job_id}', 'errors': [{'reason': 'duplicate'}]}})
      copy = body['configuration'].get('copy')
      if copy:  # a copy replaces (WRITE_TRUNCATE) the destination with the source, as it is
        (source,) = copy['sourceTables']
        target = copy['destinationTable']
        server.tables[(target['projectId'], target['datasetId'], target['tableId'])] = dict(
            server.tables[(source['projectId'], source['datasetId'], source['tableId'])])
      job = {**body, 'id': job_id, 'status': {'state': 'DONE'},
             'jobReference': {**body['jobReference'], 'location': body['jobReference'].get(
                 'location') or 'EU'},
             'statistics': {'creationTime': '1', 'startTime': '1', 'endTime': '2'}}
      server.jobs[job_id] = job
      return self._reply(200, job)
    job = _JOB.match(self.path)
    if job and self.command == 'GET':
      found = server.jobs.get(job.group(2))
      if found is None:
        return self._not_found(self.path)
      if '/queries/' in self.path:
        return self._reply(200, {'kind': 'bigquery#getQueryResultsResponse',
                                 'jobReference': found['jobReference'], 'jobComplete': True,
                                 'totalRows': '0', 'schema': {'fields': []}})
      return self._reply(200, found)
    return self._not_found(self.path)

  do_GET = do_POST = do_DELETE = do_PATCH = do_PUT = _handle

  def log_message(self, *args):
    pass


@pytest.fixture
def bigquery_api():
  """A loopback BigQuery endpoint and a real ``bigquery.Client`` that talks to it."""
  from google.api_core.client_options import ClientOptions
  from google.auth.credentials import AnonymousCredentials
  from google.cloud import bigquery
  server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), _BigQueryApi)
  server.tables, server.jobs, server.requests, server.bodies = {}, {}, [], []
  server.datasets = {('demo-project', 'warehouse'), ('demo-project', 'ds')}
  thread = threading.Thread(target=server.serve_forever, daemon=True)
  thread.start()
  client = bigquery.Client(
      project='demo-project', credentials=AnonymousCredentials(),
      client_options=ClientOptions(api_endpoint=f'http://127.0.0.1:{server.server_port}'))
  yield server, client
  server.shutdown()
  server.server_close()


def _gets(server) -> list[str]:
  return [r.split(' ', 1)[1] for r in server.requests if r.startswith('GET ')]


def test_existing_table_schema_is_read_and_compared(bigquery_api):
  server, client = bigquery_api
  wanted = _wanted()
  assert bigquery.check_existing_table('demo-project:ds.missing', wanted, client) == []
  server.tables[('demo-project', 'ds', 'same')] = {'schema': {'fields': wanted}}
  assert bigquery.check_existing_table('demo-project:ds.same', wanted, client) == []
  server.tables[('demo-project', 'ds', 'older')] = {'schema': {'fields': [
      f for f in wanted if f['name'] != 'x']}}
  assert bigquery.check_existing_table('demo-project:ds.older', wanted, client) == [
      'x: the table has no such column']
  assert _gets(server) == [f'/bigquery/v2/projects/demo-project/datasets/ds/tables/{t}'
                           f'?prettyPrint=false' for t in ('missing', 'same', 'older')]


SAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'samples')


def _job(tmp_path, *extra):
  return PipelineOptions([
      '--manifest', f'{SAMPLES}/output/batch-prediction/bp-sample-multiclass.manifest',
      '--rebase_uri', f's3://predjoin-samples/={SAMPLES}/', '--output', str(tmp_path / 'out'),
      '--temp_location', 'gs://demo-bucket/tmp', '--format', 'bigquery',
      '--bigquery_table', 'demo-project:warehouse.predictions', *extra])


def _schema_of_sample(tmp_path):
  options = _job(tmp_path, '--dry_run=True')
  return record_schema.bigquery_schema(build_pipeline(beam.Pipeline(options=options), options).plan.schema)


TARGET = ('demo-project', 'warehouse', 'predictions')


def _posted_tables(server) -> list[dict]:
  return [body for method, path, body in server.bodies
          if method == 'POST' and path.endswith('/tables')]


@pytest.mark.parametrize('disposition', ['replace', 'append'])
def test_a_table_that_cannot_take_the_records_stops_the_launch(bigquery_api, tmp_path,
                                                                disposition):
  server, client = bigquery_api
  wanted = _schema_of_sample(tmp_path)
  assert server.requests == []  # a dry run neither checks nor creates
  changed = [dict(f, type='INTEGER') if f['name'] == 'best_score' else f for f in wanted]
  server.tables[TARGET] = {'schema': {'fields': changed}}
  options = _job(tmp_path, '--write_disposition', disposition)
  with pytest.raises(LaunchError) as error:
    build_pipeline(beam.Pipeline(options=options), options, bigquery_client=client)
  message = str(error.value)
  assert 'demo-project:warehouse.predictions' in message
  assert 'best_score: the table has INTEGER/NULLABLE, the records FLOAT/NULLABLE' in message
  assert f'(--write_disposition {disposition})' in message
  assert len(server.requests) == 1 and not _posted_tables(server)  # no staging table either
  # A table made by an earlier predjoin (provenance columns REQUIRED) takes them: they are
  # never null and reach the table through an INSERT. An extra NULLABLE column is fine.
  older = [dict(f, mode='REQUIRED') if f['name'] in record_schema.PROVENANCE else f for f in wanted]
  server.tables[TARGET] = {'schema': {'fields': older + [
      {'name': 'loaded_at', 'type': 'TIMESTAMP', 'mode': 'NULLABLE'}]}}
  built = build_pipeline(beam.Pipeline(options=options), options, bigquery_client=client)
  load = built.table_load
  assert (load.table, load.disposition) == ('demo-project:warehouse.predictions', disposition)
  [staging] = _posted_tables(server)
  assert staging['tableReference']['tableId'] == f'predictions__predjoin_{load.run_id}'
  assert staging['schema']['fields'] == wanted
  assert staging['timePartitioning'] == {'type': 'DAY'}
  assert staging['clustering'] == {'fields': ['batch_prediction_id']}
  expires = int(staging['expirationTime']) / 1000
  assert abs(expires - (time.time() + 2 * 86400)) < 120  # a failed job's staging table goes
  # A REQUIRED column the records may leave null is still refused.
  server.tables[TARGET] = {'schema': {'fields': [
      dict(f, mode='REQUIRED') if f['name'] == 'best_score' else f for f in wanted]}}
  with pytest.raises(LaunchError, match='best_score: the table has FLOAT/REQUIRED'):
    build_pipeline(beam.Pipeline(options=options), options, bigquery_client=client)


def test_truncate_replaces_the_schema_too_so_it_only_creates_the_staging_table(bigquery_api,
                                                                              tmp_path):
  server, client = bigquery_api
  server.tables[TARGET] = {'schema': {'fields': [
      {'name': 'row_number', 'type': 'STRING', 'mode': 'REQUIRED'}]}}
  options = _job(tmp_path, '--write_disposition', 'truncate')
  build_pipeline(beam.Pipeline(options=options), options, bigquery_client=client)
  assert [r.split('?')[0] for r in server.requests] == [
      'POST /bigquery/v2/projects/demo-project/datasets/warehouse/tables']


def test_a_refused_table_leaves_no_output_behind(bigquery_api, tmp_path):
  server, client = bigquery_api
  server.tables[TARGET] = {'schema': {'fields': [
      {'name': 'row_number', 'type': 'STRING', 'mode': 'REQUIRED'}]}}
  options = _job(tmp_path)
  with pytest.raises(LaunchError, match='row_number: the table has STRING/REQUIRED'):
    build_pipeline(beam.Pipeline(options=options), options, bigquery_client=client)
  assert not (tmp_path / 'out').exists()  # refused before anything was prepared or written


def test_a_dataset_that_does_not_exist_stops_the_launch(bigquery_api, tmp_path):
  _, client = bigquery_api
  options = _job(tmp_path, '--bigquery_table', 'demo-project:nowhere.predictions')
  with pytest.raises(LaunchError, match='cannot create the staging table '
                     'demo-project:nowhere.predictions__predjoin_[0-9a-f]+: 404 .*Dataset'):
    build_pipeline(beam.Pipeline(options=options), options, bigquery_client=client)
  assert not (tmp_path / 'out').exists()


@pytest.mark.parametrize('args, message', [
    (['--format', 'bigquery'], '--format bigquery needs --bigquery_table'),
    (['--format', 'bigquery', '--bigquery_table', 'ds.t'], 'is not PROJECT:DATASET.TABLE'),
    (['--format', 'avro', '--bigquery_table', 'p-123:ds.t'], 'applies to --format bigquery'),
])
def test_bigquery_options_are_checked(args, message, tmp_path):
  options = PipelineOptions(['--manifest', 'm.manifest', '--output', str(tmp_path), *args])
  with pytest.raises(OptionsError, match=message):
    validate(options)


def test_rows_load_as_the_avro_files_the_bigquery_sink_writes(tmp_path):
  # The exact writer WriteToBigQuery's Avro file loads use, with the schema derived from ours:
  # every record of a joined shard (failed rows too) fits it and reads back unchanged.
  import fastavro
  from apache_beam.io.gcp.bigquery_tools import AvroRowWriter

  from tests.builders import write_bp
  from transforms.aml.manifest import shards_of
  from transforms.io.access import AccessPolicy
  from transforms.io.storage import Storage
  from transforms.join import joiner
  from transforms.join.plan import PlanSettings, make_plan
  inputs = [f'{i},name {i},"{i}, more"' for i in range(1, 8)]
  results = ['t,0.1,0.9', '', 't,0.6,0.4', 't,0.5,0.5', '', 't,1.0E-3,9.99E-1', '']
  manifest = write_bp(tmp_path / 'm', 'bp-m', [(inputs, results)],
                      result_header='tag, 1_star, 2_stars')
  storage = Storage()
  plan = make_plan([manifest], storage, PlanSettings(block_rows=3),
                   AccessPolicy.create([str(tmp_path) + '/'], ()))
  batches = [item for shard in shards_of(open(manifest).read(), manifest)
             for item in joiner.ShardJoiner(plan, storage).join(shard)
             if isinstance(item, pa.RecordBatch)]
  rows = [row for batch in batches for row in bigquery.to_rows(batch)]
  assert len(rows) == 7 and [r['status'] for r in rows].count('failed') == 3
  path = tmp_path / 'load.avro'
  writer = AvroRowWriter(open(path, 'wb'), {'fields': record_schema.bigquery_schema(plan.schema)})
  for row in rows:
    writer.write(row)
  writer.close()
  with open(path, 'rb') as f:
    assert list(fastavro.reader(f)) == rows


# Publishing a run's staged rows: the statements, and the real client against the loopback API ---

STAGING = ('demo-project', 'warehouse', 'predictions__predjoin_r1')


def test_replace_deletes_the_runs_batch_predictions_and_inserts_in_one_transaction():
  sql = bigquery.publish_sql('example.com:demo:warehouse.predictions',
                       'example.com:demo:warehouse.predictions__predjoin_r1',
                       ['batch_prediction_id', 'row_number'], 'replace', 'DAY')
  assert sql == (
      'BEGIN TRANSACTION;\n'
      'DELETE FROM `example.com:demo.warehouse.predictions`\n'
      'WHERE batch_prediction_id IN UNNEST(@batch_prediction_ids);\n'
      'INSERT INTO `example.com:demo.warehouse.predictions` (_PARTITIONTIME, '
      '`batch_prediction_id`, `row_number`)\n'
      'SELECT TIMESTAMP_TRUNC(CURRENT_TIMESTAMP(), DAY), `batch_prediction_id`, `row_number`\n'
      'FROM `example.com:demo.warehouse.predictions__predjoin_r1`;\n'
      'COMMIT TRANSACTION;\n')
  append = bigquery.publish_sql('p-1:d.t', 'p-1:d.t__predjoin_r1', ['a'], 'append', None)
  assert append == 'INSERT INTO `p-1.d.t` (`a`)\nSELECT `a`\nFROM `p-1.d.t__predjoin_r1`;\n'
  with pytest.raises(ValueError, match='truncate copies the table'):
    bigquery.publish_sql('p-1:d.t', 'p-1:d.t__predjoin_r1', ['a'], 'truncate', None)


def test_each_run_has_its_own_staging_table_beside_the_table():
  first = bigquery.TableLoad.create('demo-project.warehouse.predictions', _wanted(), 'replace')
  second = bigquery.TableLoad.create('demo-project:warehouse.predictions', _wanted(), 'replace')
  assert first.table == second.table == 'demo-project:warehouse.predictions'
  assert first.staging.startswith('demo-project:warehouse.predictions__predjoin_')
  assert first.staging != second.staging and first.publish_job_id != second.publish_job_id
  with pytest.raises(ValueError, match='unknown write disposition'):
    bigquery.TableLoad.create('demo-project:warehouse.predictions', _wanted(), 'merge')


def _staged(server, rows: int):
  server.tables[STAGING] = {'schema': {'fields': _wanted()}, 'numRows': str(rows),
                            'timePartitioning': {'type': 'DAY'},
                            'expirationTime': str(int((time.time() + 86400) * 1000))}
  server.jobs['beam_load_1'] = {'id': 'beam_load_1', 'status': {'state': 'DONE'},
                                'jobReference': {'projectId': 'demo-project',
                                                 'jobId': 'beam_load_1', 'location': 'EU'},
                                'configuration': {'load': {}}}
  return bigquery.TableLoad('demo-project:warehouse.predictions', tuple(_wanted()), 'replace', 'r1')


def _posted_jobs(server) -> list[dict]:
  return [body for method, path, body in server.bodies
          if method == 'POST' and path.endswith('/jobs')]


def test_publish_replaces_exactly_the_runs_batch_predictions(bigquery_api):
  server, client = bigquery_api
  load = _staged(server, 7)
  done = load.publish(['bp-2', 'bp-1'], ['demo-project:EU.beam_load_1'], 7, client)
  assert done == {'table': 'demo-project:warehouse.predictions', 'write_disposition': 'replace',
                  'published': True, 'rows': 7, 'batch_prediction_ids': ['bp-1', 'bp-2'],
                  'staging_table': 'demo-project:warehouse.predictions__predjoin_r1',
                  'job': 'demo-project:EU.predjoin_r1_publish'}
  # The load job was followed, then the missing table was made: partitioned by load day,
  # clustered by batch prediction, the records' schema, no expiration.
  assert 'GET /bigquery/v2/projects/demo-project/jobs/beam_load_1?projection=full&location=EU' \
      '&prettyPrint=false' in server.requests
  [created] = _posted_tables(server)
  assert created['tableReference']['tableId'] == 'predictions'
  assert (created['schema']['fields'], created['timePartitioning'], created['clustering']) == (
      _wanted(), {'type': 'DAY'}, {'fields': ['batch_prediction_id']})
  assert 'expirationTime' not in created
  [job] = _posted_jobs(server)
  assert job['jobReference'] == {'jobId': 'predjoin_r1_publish', 'projectId': 'demo-project',
                                 'location': 'EU'}
  query = job['configuration']['query']
  assert query['query'] == bigquery.publish_sql(load.table, load.staging, [f['name'] for f in _wanted()],
                                          'replace', 'DAY')
  assert query['useLegacySql'] is False
  assert query['queryParameters'] == [{
      'name': 'batch_prediction_ids',
      'parameterType': {'type': 'ARRAY', 'arrayType': {'type': 'STRING'}},
      'parameterValue': {'arrayValues': [{'value': 'bp-1'}, {'value': 'bp-2'}]}}]
  # Retried (the summary step failed after publishing), it finds its job: no second publish.
  again = load.publish(['bp-1', 'bp-2'], ['demo-project:EU.beam_load_1'], 7, client)
  assert again['job'] == done['job'] and len(_posted_jobs(server)) == 2
  assert list(server.jobs) == ['beam_load_1', 'predjoin_r1_publish']
  load.discard(client)
  assert STAGING not in server.tables and TARGET in server.tables
  load.discard(client)  # already gone: fine


def test_append_inserts_into_the_tables_own_partitioning(bigquery_api):
  server, client = bigquery_api
  load = dataclasses.replace(_staged(server, 3), disposition='append')
  server.tables[TARGET] = {'schema': {'fields': _wanted()},
                           'timePartitioning': {'type': 'DAY', 'field': 'loaded'}}
  load.publish(['bp-1'], [], 3, client)
  [job] = _posted_jobs(server)
  # Partitioned by a column, not by ingestion time: no _PARTITIONTIME to set.
  assert job['configuration']['query']['query'] == bigquery.publish_sql(
      load.table, load.staging, [f['name'] for f in _wanted()], 'append', None)
  assert not _posted_tables(server)  # the table was there


def test_truncate_copies_the_staging_table_over_the_table_and_keeps_its_expiration(bigquery_api):
  server, client = bigquery_api
  load = dataclasses.replace(_staged(server, 5), disposition='truncate')
  server.tables[TARGET] = {'schema': {'fields': [{'name': 'old', 'type': 'STRING'}]}}
  done = load.publish(['bp-1'], [], 5, client)
  [job] = _posted_jobs(server)
  copy = job['configuration']['copy']
  assert [t['tableId'] for t in copy['sourceTables']] == ['predictions__predjoin_r1']
  assert copy['destinationTable']['tableId'] == 'predictions'
  assert (copy['writeDisposition'], copy['createDisposition']) == ('WRITE_TRUNCATE',
                                                                    'CREATE_IF_NEEDED')
  assert server.tables[TARGET]['schema']['fields'] == _wanted()
  assert server.tables[TARGET].get('expirationTime') is None  # the staging table's was undone
  assert done['published'] and done['job'] == 'demo-project:EU.predjoin_r1_publish'
  # Retried after the copy, the step finds its copy job and still leaves no expiration.
  server.tables[TARGET]['expirationTime'] = server.tables[STAGING]['expirationTime']
  assert load.publish(['bp-1'], [], 5, client)['job'] == done['job']
  assert len(_posted_jobs(server)) == 2 and len(server.jobs) == 2
  assert server.tables[TARGET].get('expirationTime') is None


def test_the_load_jobs_beam_reports_are_followed_by_their_project_and_location():
  from apache_beam.io.gcp.internal.clients.bigquery import JobReference
  for reference, text in [
      (JobReference(projectId='p-1', jobId='beam_bq_job_LOAD_1', location='EU'),
       'p-1:EU.beam_bq_job_LOAD_1'),
      (JobReference(projectId='example.com:p', jobId='beam_bq_job_LOAD_2'),
       'example.com:p:beam_bq_job_LOAD_2')]:
    assert bigquery._describe_job(('p-1:d.t', reference)) == text
    assert bigquery._job_reference(text) == (reference.projectId, reference.location,
                                       reference.jobId)


def test_nothing_is_published_when_the_staging_table_does_not_hold_the_runs_rows(bigquery_api):
  server, client = bigquery_api
  load = _staged(server, 6)
  with pytest.raises(bigquery.PublishError, match='holds 6 rows, the run sent 7: nothing is '
                     'published to demo-project:warehouse.predictions'):
    load.publish(['bp-1'], ['demo-project:EU.beam_load_1'], 7, client)
  assert not _posted_jobs(server) and TARGET not in server.tables


def test_a_failed_run_publishes_nothing(bigquery_api):
  from transforms.join.outcomes import ShardReport
  from transforms.report.run_summary import RunParts, ShardOutcome, summarize
  from transforms.steps import publish_records
  server, client = bigquery_api
  load = _staged(server, 0)
  report = ShardReport('bp-1', 'm', 'in.csv', 'r.gz', input_rows=2, dead_letter_rows=2,
                       status='row_count_mismatch',
                       error='in.csv has 2 rows but r.gz has 1 result lines')
  parts = RunParts([ShardOutcome(report, {}, None, 2)])
  summary = summarize(parts, max_bad_shards=0)
  requests = len(server.requests)
  assert publish_records(load, summary, [], client) == {
      'table': 'demo-project:warehouse.predictions', 'write_disposition': 'replace',
      'published': False, 'reason': 'the run failed (see "ok"): the table is unchanged'}
  assert len(server.requests) == requests
  # Within the limit the same run publishes, replacing bp-1's rows (none: it had no records).
  summary = summarize(parts, max_bad_shards=1)
  assert publish_records(load, summary, [], client)['batch_prediction_ids'] == ['bp-1']


def test_an_incremental_units_publish_replaces_exactly_its_own_rows(bigquery_api):
  # A batch prediction joined again whose manifest failed within --max_bad_shards publishes
  # no rows and has no shard: its earlier rows must still go, so the unit names itself.
  from transforms.join.outcomes import ShardReport
  from transforms.report.run_summary import RunParts, ShardOutcome, summarize
  from transforms.steps import publish_records
  server, client = bigquery_api
  load = _staged(server, 0)
  report = ShardReport('bp-b', 'm', None, None, status='error',
                       error='the manifest cannot be read')  # no shard names it
  summary = summarize(RunParts([ShardOutcome(report, {}, None, 0)]), max_bad_shards=1)
  assert summary['ok'] and summary['batch_prediction_ids'] == ['bp-b']
  assert publish_records(load, summary, [], client)['batch_prediction_ids'] == []
  server.jobs.pop('predjoin_r1_publish')
  server.bodies.clear()
  done = publish_records(load, summary, [], client, batch_prediction_ids=['bp-b'])
  assert done['batch_prediction_ids'] == ['bp-b']
  [job] = _posted_jobs(server)
  assert job['configuration']['query']['queryParameters'][0]['parameterValue'] == {
      'arrayValues': [{'value': 'bp-b'}]}
  assert 'WHERE batch_prediction_id IN UNNEST(@batch_prediction_ids)' in \
      job['configuration']['query']['query']
