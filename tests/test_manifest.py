"""Manifest parsing and location: pure functions."""

import pytest

from transforms.aml.manifest import (
  ManifestError,
  batch_prediction_id,
  manifest_uri,
  parse_manifest,
  rebase,
  shards_of,
)

URI = 's3://b/out/batch-prediction/bp-1.manifest'


def test_format_md_example_with_leading_space_in_value():
  text = ('{"s3://examplebucket/input/data1.csv":" s3://examplebucket/output/batch-prediction/'
          'result/bp-example-data1.csv.gz"}')
  assert parse_manifest(text, URI) == [(
      's3://examplebucket/input/data1.csv',
      's3://examplebucket/output/batch-prediction/result/bp-example-data1.csv.gz')]


def test_line_break_inside_value_string():
  text = '{"s3://b/in/a.csv":"\n s3://b/out/r/a.gz",\n "s3://b/in/b.csv":"\r\n  s3://b/out/r/b.gz "}'
  assert parse_manifest(text, URI) == [('s3://b/in/a.csv', 's3://b/out/r/a.gz'),
                                       ('s3://b/in/b.csv', 's3://b/out/r/b.gz')]


def test_one_object_per_line_form():
  text = '{"s3://b/in/a.csv":"s3://b/r/a.gz"}\n\n{"s3://b/in/b.csv":"s3://b/r/b.gz"}\n'
  assert parse_manifest(text, URI) == [('s3://b/in/a.csv', 's3://b/r/a.gz'),
                                       ('s3://b/in/b.csv', 's3://b/r/b.gz')]


def test_bytes_with_bom_and_order_kept():
  text = '\ufeff{"/d/z.csv":"/r/z.gz","/d/a.csv":"/r/a.gz"}'.encode()
  assert [k for k, _ in parse_manifest(text, URI)] == ['/d/z.csv', '/d/a.csv']


@pytest.mark.parametrize('text, message', [
    ('{"s3://b/a.csv":"s3://b/r.gz","s3://b/a.csv":"s3://b/s.gz"}', 'more than once'),
    ('{"s3://b/a.csv":" s3://b/r.gz"," s3://b/a.csv ":"s3://b/s.gz"}', 'more than once'),
    ('{}', 'names no shards'),
    ('', 'is empty'),
    ('   \n', 'is empty'),
    ('{"s3://b/a.csv": 3}', 'not a URI string'),
    ('{"s3://b/a.csv": {"x": "y"}}', 'not a URI string'),
    ('["s3://b/a.csv"]', 'expected a JSON object'),
    ('{"data/a.csv":"s3://b/r.gz"}', 'relative URI'),
    ('{"s3://b/a.csv":"result/a.gz"}', 'relative URI'),
    ('{"s3://b/a.csv":""}', 'empty URI'),
])
def test_errors_name_the_manifest(text, message):
  with pytest.raises(ManifestError, match=message) as e:
    parse_manifest(text, URI)
  assert URI in str(e.value)


def test_invalid_json_names_the_line():
  text = '{"s3://b/a.csv":"s3://b/r.gz",\n"s3://b/b.csv" "s3://b/s.gz"}'
  with pytest.raises(ManifestError, match=r'line 2') as e:
    parse_manifest(text, URI)
  assert URI in str(e.value)


@pytest.mark.parametrize('location', ['s3://b/out/', 's3://b/out', 's3://b/out//'])
def test_manifest_uri_by_service_naming_rule(location):
  assert manifest_uri(location, 'bp-x') == 's3://b/out/batch-prediction/bp-x.manifest'


def test_manifest_uri_refuses_a_slash_in_the_id():
  with pytest.raises(ValueError):
    manifest_uri('s3://b/out/', '../bp')


def test_batch_prediction_id_from_file_name():
  assert batch_prediction_id('s3://b/o/batch-prediction/prd.ch6.ttnc_extd.test.009.manifest') == \
      'prd.ch6.ttnc_extd.test.009'


def test_rebase_first_matching_rule_and_shards():
  rules = [('s3://b/', 'gs://c/copy/'), ('s3://', 'file:///never/')]
  assert rebase('s3://b/in/a.csv', rules) == 'gs://c/copy/in/a.csv'
  assert rebase('s3://other/a', rules) == 'file:///never/other/a'
  shards = shards_of('{"s3://b/in/a.csv":"s3://b/r/a.gz"}', URI, rules)
  assert shards[0].batch_prediction_id == 'bp-1'
  assert (shards[0].input_uri, shards[0].result_uri) == ('gs://c/copy/in/a.csv',
                                                         'gs://c/copy/r/a.gz')
