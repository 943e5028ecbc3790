"""BigQuery: table names, schema comparison, row conversion, and the launch-time table check."""

import http.server
import json
import os
import re
import threading

import apache_beam as beam
import pyarrow as pa
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from pipelines.enrich import LaunchError, build_pipeline
from pipelines.options import OptionsError, validate
from transforms import bigquery as bq
from transforms import layout as lay


@pytest.mark.parametrize('spec, expected', [
    ('my-project:warehouse.predictions', 'my-project:warehouse.predictions'),
    ('my-project.warehouse.predictions', 'my-project:warehouse.predictions'),
    ('example.com:my-project:ds.t_1', 'example.com:my-project:ds.t_1'),
])
def test_parse_table(spec, expected):
  assert bq.parse_table(spec) == expected


@pytest.mark.parametrize('spec', ['warehouse.predictions', 'p:ds', '', 'Bad_Project:ds.t',
                                  'my-project:ds.t; drop'])
def test_parse_table_refuses(spec):
  with pytest.raises(bq.TableError, match='PROJECT:DATASET.TABLE'):
    bq.parse_table(spec)


def _wanted():
  layout = lay.detect_layout(('tag', 'a', 'b'))
  return lay.bigquery_schema(lay.output_schema(layout, ['x']))


def test_schema_of_the_records_matches_itself_and_a_wider_nullable_table():
  wanted = _wanted()
  assert bq.schema_differences(wanted, wanted) == []
  wider = wanted + [{'name': 'loaded_by', 'type': 'STRING', 'mode': 'NULLABLE'}]
  assert bq.schema_differences(wider, wanted) == []
  aliases = [dict(f, type={'FLOAT': 'FLOAT64', 'INTEGER': 'INT64'}.get(f['type'], f['type']))
             for f in wanted]
  assert bq.schema_differences(aliases, wanted) == []


def test_schema_differences_are_each_named():
  wanted = _wanted()
  existing = [dict(f) for f in wanted if f['name'] != 'x']
  existing = [dict(f, type='STRING') if f['name'] == 'best_score' else f for f in existing]
  scores = next(f for f in existing if f['name'] == 'scores')
  scores['fields'] = [{'name': 'label', 'type': 'STRING', 'mode': 'REQUIRED'},
                      {'name': 'score', 'type': 'STRING', 'mode': 'REQUIRED'}]
  existing.append({'name': 'must_have', 'type': 'STRING', 'mode': 'REQUIRED'})
  problems = bq.schema_differences(existing, wanted)
  assert any(p.startswith('x: the table has no such column') for p in problems)
  assert any(p.startswith('best_score: the table has STRING/NULLABLE') for p in problems)
  assert any(p.startswith('scores.label:') for p in problems)
  assert any(p.startswith('scores.score:') for p in problems)
  assert any(p.startswith('must_have: REQUIRED') for p in problems)
  assert len(problems) == 5


def test_rows_turn_null_lists_into_empty_ones():
  layout = lay.detect_layout(('a', 'b'))
  schema = lay.output_schema(layout, ['x'])
  arrow = lay.arrow_schema(schema)
  row = {name: None for name in arrow.names}
  row.update(batch_prediction_id='bp', input_uri='i', row_number=1, status='failed')
  rows = bq.to_rows(pa.RecordBatch.from_pylist([row], schema=arrow))
  assert rows[0]['scores'] == [] and rows[0]['best_answer'] is None


# An existing table's schema, read by the real BigQuery client from a loopback REST endpoint ------

class _TablesApi(http.server.BaseHTTPRequestHandler):
  """``tables.get`` of the BigQuery REST API for the tables in ``server.tables``."""

  def do_GET(self):  # noqa: N802
    self.server.requests.append(self.path)
    match = re.match(r'^/bigquery/v2/projects/([^/]+)/datasets/([^/]+)/tables/([^/?]+)', self.path)
    table = self.server.tables.get(match.groups()) if match else None
    if table is None:
      status, body = 404, {'error': {'code': 404, 'message': f'Not found: Table {self.path}',
                                     'errors': [{'reason': 'notFound'}]}}
    else:
      project, dataset, name = match.groups()
      status, body = 200, {'kind': 'bigquery#table', 'schema': {'fields': table},
                           'tableReference': {'projectId': project, 'datasetId': dataset,
                                              'tableId': name}}
    data = json.dumps(body).encode()
    self.send_response(status)
    self.send_header('Content-Type', 'application/json')
    self.send_header('Content-Length', str(len(data)))
    self.end_headers()
    self.wfile.write(data)

  def log_message(self, *args):
    pass


@pytest.fixture
def bigquery_api():
  """A loopback BigQuery endpoint and a real ``bigquery.Client`` that talks to it."""
  from google.api_core.client_options import ClientOptions
  from google.auth.credentials import AnonymousCredentials
  from google.cloud import bigquery
  server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), _TablesApi)
  server.tables, server.requests = {}, []
  thread = threading.Thread(target=server.serve_forever, daemon=True)
  thread.start()
  client = bigquery.Client(
      project='demo-project', credentials=AnonymousCredentials(),
      client_options=ClientOptions(api_endpoint=f'http://127.0.0.1:{server.server_port}'))
  yield server, client
  server.shutdown()
  server.server_close()


def test_existing_table_schema_is_read_and_compared(bigquery_api):
  server, client = bigquery_api
  wanted = _wanted()
  assert bq.check_existing_table('demo-project:ds.missing', wanted, client) == []
  server.tables[('demo-project', 'ds', 'same')] = wanted
  assert bq.check_existing_table('demo-project:ds.same', wanted, client) == []
  server.tables[('demo-project', 'ds', 'older')] = [f for f in wanted if f['name'] != 'x']
  assert bq.check_existing_table('demo-project:ds.older', wanted, client) == [
      'x: the table has no such column']
  assert server.requests == [f'/bigquery/v2/projects/demo-project/datasets/ds/tables/{t}'
                             f'?prettyPrint=false' for t in ('missing', 'same', 'older')]


SAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'samples')


def _job(tmp_path, *extra):
  return PipelineOptions([
      '--manifest', f'{SAMPLES}/output/batch-prediction/bp-sample-multiclass.manifest',
      '--rebase_uri', f's3://predjoin-samples/={SAMPLES}/', '--output', str(tmp_path / 'out'),
      '--temp_location', 'gs://demo-bucket/tmp', '--format', 'bigquery',
      '--bigquery_table', 'demo-project:warehouse.predictions', *extra])


def _schema_of_sample(tmp_path):
  options = _job(tmp_path, '--write_disposition', 'truncate')
  return lay.bigquery_schema(build_pipeline(beam.Pipeline(options=options), options)['plan'].schema)


def test_append_into_a_table_that_cannot_take_the_records_stops_at_launch(bigquery_api, tmp_path):
  server, client = bigquery_api
  wanted = _schema_of_sample(tmp_path)
  assert server.requests == []  # truncate replaces the table: no check
  changed = [dict(f, type='INTEGER') if f['name'] == 'best_score' else f for f in wanted]
  server.tables[('demo-project', 'warehouse', 'predictions')] = changed
  options = _job(tmp_path, '--write_disposition', 'append')
  with pytest.raises(LaunchError) as error:
    build_pipeline(beam.Pipeline(options=options), options, bigquery_client=client)
  message = str(error.value)
  assert 'demo-project:warehouse.predictions' in message
  assert 'best_score: the table has INTEGER/NULLABLE, the records FLOAT/NULLABLE' in message
  assert len(server.requests) == 1
  # The same table with the records' schema (or with an extra NULLABLE column) takes them.
  server.tables[('demo-project', 'warehouse', 'predictions')] = wanted + [
      {'name': 'loaded_at', 'type': 'TIMESTAMP', 'mode': 'NULLABLE'}]
  built = build_pipeline(beam.Pipeline(options=options), options, bigquery_client=client)
  assert len(server.requests) == 2
  assert 'record_files' in built


def test_a_refused_table_leaves_no_output_behind(bigquery_api, tmp_path):
  server, client = bigquery_api
  server.tables[('demo-project', 'warehouse', 'predictions')] = [
      {'name': 'row_number', 'type': 'STRING', 'mode': 'REQUIRED'}]
  options = _job(tmp_path)
  with pytest.raises(LaunchError, match='row_number: the table has STRING/REQUIRED'):
    build_pipeline(beam.Pipeline(options=options), options, bigquery_client=client)
  assert not (tmp_path / 'out').exists()  # refused before anything was prepared or written


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
  from transforms import join
  from transforms.access import AccessPolicy
  from transforms.manifest import shards_of
  from transforms.plan import make_plan
  from transforms.storage import Storage
  inputs = [f'{i},name {i},"{i}, more"' for i in range(1, 8)]
  results = ['t,0.1,0.9', '', 't,0.6,0.4', 't,0.5,0.5', '', 't,1.0E-3,9.99E-1', '']
  manifest = write_bp(tmp_path / 'm', 'bp-m', [(inputs, results)],
                      result_header='tag, 1_star, 2_stars')
  storage = Storage()
  plan = make_plan([manifest], storage, block_rows=3,
                   access_policy=AccessPolicy.create([str(tmp_path) + '/'], ()))
  batches = [value for shard in shards_of(open(manifest).read(), manifest)
             for kind, value in join.ShardJoiner(plan, storage).join(shard)
             if kind == join.RECORDS]
  rows = [row for batch in batches for row in bq.to_rows(batch)]
  assert len(rows) == 7 and [r['status'] for r in rows].count('failed') == 3
  path = tmp_path / 'load.avro'
  writer = AvroRowWriter(open(path, 'wb'), {'fields': lay.bigquery_schema(plan.schema)})
  for row in rows:
    writer.write(row)
  writer.close()
  with open(path, 'rb') as f:
    assert list(fastavro.reader(f)) == rows
