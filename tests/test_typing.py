"""Schema-driven typing: schema files, the typing rule, the derived schemas, and the whole job."""

import io
import json
import os
import random

import fastavro
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests import verify_data as vd
from transforms.aml import result_header, schema_file
from transforms.join import blocks, coltypes, record_schema

# Schema files -----------------------------------------------------------------------------------


def test_schema_reads_current_and_legacy_keys_alike():
  pairs = [('id', 'CATEGORICAL'), ('x', 'numeric'), ('ok', 'BINARY')]
  current = schema_file.parse_schema(json.dumps(vd.schema(pairs, row_id='id', target='ok',
                                                        excluded=['x'])), 's')
  legacy = schema_file.parse_schema(json.dumps(vd.schema(pairs, row_id='id', target='ok',
                                                       excluded=['x'], legacy=True)), 's')
  for s in (current, legacy):
    assert s.names == ('id', 'x', 'ok') and s.row_id == 'id' and s.target == 'ok'
    assert s.excluded == ('x',) and s.type_of('x') == 'NUMERIC'
    assert s.output_type('x') == 'TEXT' and s.output_type('ok') == 'BINARY'


def test_the_row_id_attribute_keeps_its_text_whatever_its_type():
  schema = schema_file.parse_schema(json.dumps(vd.schema(
      [('id', 'NUMERIC'), ('x', 'NUMERIC')], row_id='id')), 's')
  assert schema.type_of('id') == 'NUMERIC'  # what the alignment check normalises by
  assert schema.output_type('id') == 'TEXT' and schema.output_type('x') == 'NUMERIC'


@pytest.mark.parametrize('change, message', [
    ({'attributes': vd.attributes(('a', 'DATE'))}, "unknown type 'DATE'"),
    ({'rowId': 'nope'}, '"rowId" \'nope\' is not one of the attributes'),
    ({'targetAttributeName': 'nope'}, 'is not one of the attributes'),
    ({'excludedAttributeNames': ['zz']}, 'excludedAttributeNames'),
    ({'attributes': vd.attributes(('a', 'TEXT'), ('a', 'TEXT'))}, 'appears twice'),
])
def test_schema_errors_name_the_file(change, message):
  obj = {**vd.schema([('a', 'TEXT'), ('b', 'NUMERIC')]), **change}
  with pytest.raises(schema_file.SchemaError, match=message) as e:
    schema_file.parse_schema(json.dumps(obj), 's3://b/in/.schema')
  assert 's3://b/in/.schema' in str(e.value)


# The typing rule --------------------------------------------------------------------------------


def test_numeric_values_empty_is_null_and_bad_values_are_marked():
  got = coltypes.convert(pa.array(['1.5', ' -2E3 ', '', '7', 'abc', 'nan', '1e999', '.5']),
                         coltypes.DOUBLE)
  assert got.array.to_pylist() == [1.5, -2000.0, None, 7.0, None, None, None, 0.5]
  assert got.bad.tolist() == [False, False, False, False, True, True, True, False]
  assert coltypes.convert(pa.array(['1', '2.25']), coltypes.DOUBLE).bad is None


def test_binary_synonyms_any_case_spaces_ignored():
  values = ['0', 'n', 'No', ' F ', 'FALSE', '1', 'y', 'YES', 't', ' True', '', 'maybe', '2']
  got = coltypes.convert(pa.array(values), coltypes.BOOLEAN)
  assert got.array.to_pylist() == [False] * 5 + [True] * 5 + [None] * 3
  assert np.flatnonzero(got.bad).tolist() == [11, 12]


def test_fast_csv_typing_and_the_vectorised_string_path_agree():
  """The CSV reader types clean blocks; any other block is typed from strings. Same results,
  with the reader's threads or without."""
  rng = random.Random(3)
  numbers = ['1', '-2.5', '3E2', '', ' 4 ', '"5"', 'x', 'nan', '+.5', '1.', 'inf', '"  "']
  flags = ['yes', 'No', 'T', 'false', '', ' y ', 'yEs', 'maybe', '1', '0', '""']
  kinds = [coltypes.DOUBLE, coltypes.BOOLEAN, coltypes.STRING]
  types = [coltypes.ARROW_TYPES[k] for k in kinds]
  for _ in range(300):
    lines = [f'{rng.choice(numbers)},{rng.choice(flags)},s{i}' for i in range(rng.randint(1, 8))]
    block = ''.join(line + '\n' for line in lines).encode()
    typed = blocks.parse_input(block, len(lines), 3, types)
    strings = blocks.parse_input(block, len(lines), 3)
    serial = blocks.parse_input(block, len(lines), 3, types, threads=False)
    assert repr([c.to_pylist() for c in serial.columns]) == \
        repr([c.to_pylist() for c in typed.columns])  # repr: nan == nan
    assert (serial.kind.tolist(), serial.errors) == (typed.kind.tolist(), typed.errors)
    for kind, a, b in zip(kinds, typed.columns, strings.columns, strict=True):
      x, y = coltypes.convert(a, kind), coltypes.convert(b, kind)
      assert x.array.to_pylist() == y.array.to_pylist(), lines
      bad_x = x.bad if x.bad is not None else np.zeros(len(lines), dtype=bool)
      bad_y = y.bad if y.bad is not None else np.zeros(len(lines), dtype=bool)
      assert bad_x.tolist() == bad_y.tolist(), lines


# One internal schema, four derived ones ---------------------------------------------------------


def _typed_schema(top_k=None):
  layout = result_header.detect_layout(('tag', 'a', 'b', 'c'))
  return record_schema.output_schema(layout, ['id', 'amount', 'member', 'note'],
                           ['string', 'double', 'boolean', 'string'],
                           ['CATEGORICAL', 'NUMERIC', 'BINARY', 'TEXT'], top_k=top_k)


def test_arrow_avro_and_bigquery_schemas_derive_from_one_schema():
  schema = _typed_schema(top_k=2)
  arrow = record_schema.arrow_schema(schema)
  avro = fastavro.parse_schema(record_schema.avro_schema(schema))
  bigquery = record_schema.bigquery_schema(schema)
  assert arrow.names == schema.names == [f['name'] for f in avro['fields']] == \
      [f['name'] for f in bigquery]
  assert arrow.field('amount').type == pa.float64() and arrow.field('member').type == pa.bool_()
  assert arrow.field('top_labels').type == pa.list_(pa.string())
  by_name = {f['name']: f for f in bigquery}
  assert by_name['amount'] == {'name': 'amount', 'type': 'FLOAT', 'mode': 'NULLABLE'}
  assert by_name['member']['type'] == 'BOOLEAN' and by_name['note']['type'] == 'STRING'
  assert by_name['row_number'] == {'name': 'row_number', 'type': 'INTEGER', 'mode': 'NULLABLE'}
  assert by_name['scores'] == {'name': 'scores', 'type': 'RECORD', 'mode': 'REPEATED', 'fields': [
      {'name': 'label', 'type': 'STRING', 'mode': 'NULLABLE'},
      {'name': 'score', 'type': 'FLOAT', 'mode': 'NULLABLE'}]}
  assert by_name['top_labels'] == {'name': 'top_labels', 'type': 'STRING', 'mode': 'REPEATED'}
  assert 'fields' not in by_name['margin']


def _avro_nullable(avro_type) -> dict:
  """Dotted path -> nullable, for every field of an Avro record type (list items as path.item)."""
  out = {}

  def walk(path, t):
    nullable = isinstance(t, list) and 'null' in t
    if isinstance(t, list):
      (t,) = [branch for branch in t if branch != 'null']
    out[path] = nullable
    if isinstance(t, dict) and t.get('type') == 'array':
      walk(f'{path}.item', t['items'])
    elif isinstance(t, dict) and t.get('type') == 'record':
      for f in t['fields']:
        walk(f'{path}.{f["name"]}', f['type'])

  for f in avro_type['fields']:
    walk(f['name'], f['type'])
  return out


def _arrow_nullable(schema: pa.Schema) -> dict:
  out = {}

  def walk(path, field):
    out[path] = field.nullable
    if pa.types.is_list(field.type):
      walk(f'{path}.item', field.type.value_field)
    elif pa.types.is_struct(field.type):
      for child in field.type:
        walk(f'{path}.{child.name}', child)

  for field in schema:
    walk(field.name, field)
  return out


def _bigquery_nullable(fields, prefix='') -> dict:
  """REPEATED columns hold lists, which BigQuery never stores as null: an empty list."""
  out = {}
  for f in fields:
    path = prefix + f['name']
    out[path] = f['mode'] in ('NULLABLE', 'REPEATED')
    if f['mode'] == 'REPEATED':
      out[f'{path}.item'] = True  # an item of a list: checked by the files, never null
    for child in f.get('fields', []):
      out.update(_bigquery_nullable([child], f'{path}.item.'))
  return out


@pytest.mark.parametrize('header, top_k', [(('tag', 'a', 'b', 'c'), 2), (('bestAnswer', 'score'),
                                                                          None), (('score',), None)])
def test_avro_parquet_and_bigquery_agree_on_nullability(header, top_k, tmp_path):
  # BigQuery refuses to load a nullable field into a REQUIRED column, so the files of each
  # format load into the table predjoin makes. The Avro blocks are encoded by polars, which
  # declares every field nullable; the writer checks that it encodes exactly predjoin's schema.
  from transforms.io import sinks
  layout = result_header.detect_layout(header)
  schema = record_schema.output_schema(layout, ['id', 'amount'], ['string', 'double'], top_k=top_k)
  arrow = record_schema.arrow_schema(schema)
  assert sinks.block_encoding_matches(arrow, record_schema.avro_schema(schema))
  batch = pa.RecordBatch.from_pylist([], schema=arrow)
  writers = {fmt: sinks.RecordWriters(fmt, schema) for fmt in ('avro', 'parquet')}
  for fmt, writers_of in writers.items():
    writer = writers_of.open(open(tmp_path / f'r.{fmt}', 'wb'))
    writer.write(batch)
    writer.close()
  assert writers['avro']._blockwise  # encoded block-wise, not record by record
  with open(tmp_path / 'r.avro', 'rb') as f:
    avro = _avro_nullable(fastavro.reader(f).writer_schema)
  parquet = _arrow_nullable(pq.read_schema(tmp_path / 'r.parquet'))
  bigquery = _bigquery_nullable(record_schema.bigquery_schema(schema))
  assert set(avro) == set(parquet) == set(bigquery)
  assert avro == parquet == bigquery
  assert all(avro.values())
  assert set(record_schema.never_null(schema)) >= set(record_schema.PROVENANCE)


def test_bigquery_schema_loads_as_a_beam_table_schema():
  from apache_beam.io.gcp.bigquery_tools import parse_table_schema_from_json
  table = parse_table_schema_from_json(json.dumps({'fields': record_schema.bigquery_schema(
      _typed_schema())}))
  scores = next(f for f in table.fields if f.name == 'scores')
  assert (scores.type, scores.mode, [f.name for f in scores.fields]) == (
      'RECORD', 'REPEATED', ['label', 'score'])


def test_typed_block_writes_as_avro():
  schema = _typed_schema(top_k=1)
  layout = result_header.detect_layout(('tag', 'a', 'b', 'c'))
  rules = blocks.BlockRules(schema, record_schema.arrow_schema(schema), layout, top_k=1)
  outcome = blocks.join_block(rules, blocks.BlockPlace('bp', 'in', 1, 1, 2),
                              b'r1,1.5,yes,x\nr2,,no,y\n', b't1,0.2,0.3,0.5\n\n', 2)
  buf = io.BytesIO()
  fastavro.writer(buf, record_schema.avro_schema(schema), outcome.batch.to_pylist())
  rows = list(fastavro.reader(io.BytesIO(buf.getvalue())))
  assert rows[0]['amount'] == 1.5 and rows[0]['member'] is True and rows[0]['top_labels'] == ['c']
  assert rows[1]['amount'] is None and rows[1]['member'] is False and rows[1]['status'] == 'failed'


# Through the job --------------------------------------------------------------------------------


def _typed_bp(tmp_path, inputs, **kwargs):
  return vd.write(tmp_path, 'bp-t', [(inputs, vd.binary_results(len(inputs), tag=False,
                                                                 true_label=False))],
                  input_header=vd.CUSTOMER_HEADER, result_header=vd.binary_header(False, False),
                  schema=vd.schema(vd.CUSTOMERS), **kwargs)


def test_output_types_follow_the_schema(tmp_path):
  inputs = vd.customers(12)
  manifest = _typed_bp(tmp_path, inputs)
  code, out = vd.cli(tmp_path, manifest, fmt='parquet')
  assert code == 0
  table = pq.read_table(os.path.join(out, 'records'))
  assert table.schema.field('age').type == pa.float64()
  assert table.schema.field('member').type == pa.bool_()
  assert table.schema.field('note').type == pa.string()
  rows = sorted(table.to_pylist(), key=lambda r: r['row_number'])
  assert [r['age'] for r in rows[:3]] == [20.5, 21.5, 22.5]
  assert [r['willRespond'] for r in rows[:6]] == [False, True, False, True, False, True]
  summary = vd.results_of(out)[2]
  assert summary['typing']['columns'][1] == {'input': 'age', 'output': 'age',
                                             'attribute_type': 'NUMERIC', 'type': 'double'}


def test_a_value_that_does_not_fit_goes_to_the_dead_letter_naming_the_column(tmp_path):
  inputs = vd.customers(12)
  inputs[4] = 'C4,forty,yes,"n, 4",no'
  inputs[9] = 'C9,29.5,perhaps,"n, 9",1'
  manifest = _typed_bp(tmp_path, inputs)
  code, out = vd.cli(tmp_path, manifest, '--block_rows', '5')
  records, dead, summary = vd.results_of(out)
  assert code == 0 and len(records) == 10
  assert [(d['row_number'], d['reason'], d['columns']) for d in dead] == [
      (5, 'type_error', ['age']), (10, 'type_error', ['member'])]
  assert "column age (NUMERIC): 'forty' is not a finite number" in dead[0]['error']
  assert 'line 6' in dead[0]['error']  # the header is line 1
  assert dead[1]['input_line'] == inputs[9]
  assert summary['typing']['type_error_rows'] == 2
  assert summary['typing']['values_not_fitting'] == {'age': 1, 'member': 1}
  assert summary['identity']['holds']


def test_on_type_error_null_keeps_the_row_and_counts_the_value(tmp_path):
  inputs = vd.customers(12)
  inputs[4] = 'C4,forty,yes,"n, 4",no'
  manifest = _typed_bp(tmp_path, inputs)
  code, out = vd.cli(tmp_path, manifest, '--on_type_error', 'null')
  records, dead, summary = vd.results_of(out)
  assert code == 0 and dead == [] and len(records) == 12
  assert records[4]['age'] is None and records[4]['member'] is True
  assert summary['typing']['values_not_fitting'] == {'age': 1}
  assert summary['typing']['type_error_rows'] == 0
  assert any('made null: age 1' in w for w in summary['warnings'])


@pytest.mark.parametrize('legacy', [False, True])
def test_headerless_input_takes_names_and_order_from_the_schema(tmp_path, legacy):
  pairs = [('b_first', 'NUMERIC'), ('a_second', 'CATEGORICAL')]
  manifest = vd.write(tmp_path, 'bp-h', [(['1,x', '2,y'], ['0,0.1', '1,0.9'])],
                      input_header=None, schema=vd.schema(pairs, header=False, legacy=legacy))
  code, out = vd.cli(tmp_path, manifest, fmt='avro')
  records = vd.results_of(out)[0]
  assert code == 0
  assert list(records[0])[-2:] == ['b_first', 'a_second']
  assert [(r['b_first'], r['a_second']) for r in records] == [(1.0, 'x'), (2.0, 'y')]


def test_header_that_differs_from_the_schema_is_a_clear_error(tmp_path, capsys):
  manifest = vd.write(tmp_path, 'bp-m', [(['1,x'], ['0,0.1'])], input_header='a,c',
                      schema=vd.schema([('a', 'NUMERIC'), ('b', 'TEXT')]))
  code, _ = vd.cli(tmp_path, manifest)
  err = capsys.readouterr().err
  assert code == 2
  assert "header 'a,c' differs from the attributes" in err and "'a,b'" in err


def test_schema_option_and_excluded_attributes(tmp_path):
  manifest = vd.write(tmp_path, 'bp-s', [(['1,x,junk', '2,y,3'], ['0,0.1', '1,0.9'])],
                      input_header=None)
  schema_path = vd.dump(tmp_path / 'given.schema', vd.schema(
      [('n', 'NUMERIC'), ('s', 'TEXT'), ('ignored', 'NUMERIC')], header=False,
      excluded=['ignored']))
  code, out = vd.cli(tmp_path, manifest, '--schema', schema_path)
  records, dead, summary = vd.results_of(out)
  assert code == 0 and dead == []
  assert [(r['n'], r['s'], r['ignored']) for r in records] == [(1.0, 'x', 'junk'), (2.0, 'y', '3')]
  assert summary['typing']['schema'] == schema_path
  code, _ = vd.cli(tmp_path, manifest, '--schema', str(tmp_path / 'missing.schema'))
  assert code == 2


def test_numeric_row_ids_above_2_53_stay_exact_in_every_format(tmp_path):
  # 9007199254740993 = 2**53 + 1 has no double: typed as one it became ...992.
  ids = ['9007199254740993', '9007199254740994', '18446744073709551615', '42', ' 7 ']
  inputs = [f'{i},{n}.5' for i, n in zip(ids, range(5), strict=True)]
  results = [f'{i.strip()},{n % 2},{n / 10:.6E}' for n, i in enumerate(ids)]
  manifest = vd.write(tmp_path, 'bp-ids', [(inputs, results)], input_header='id,amount',
                      result_header='tag,bestAnswer,score',
                      schema=vd.schema([('id', 'NUMERIC'), ('amount', 'NUMERIC')], row_id='id'))
  for fmt in ('avro', 'parquet', 'jsonl'):
    code, out = vd.cli(tmp_path, manifest, fmt=fmt)
    records, dead, summary = vd.results_of(out)
    assert code == 0 and dead == []
    assert [r['id'] for r in records] == ids
    assert [r['amount'] for r in records] == [0.5, 1.5, 2.5, 3.5, 4.5]
    assert summary['typing']['columns'][0]['type'] == 'string'
    assert summary['alignment']['checks'] == ['tag = id']
    assert summary['totals']['misaligned_shards'] == 0
    if fmt == 'parquet':
      assert pq.read_table(os.path.join(out, 'records')).schema.field('id').type == pa.string()
