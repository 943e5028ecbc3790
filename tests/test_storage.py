"""Object storage for real: the whole job against moto's S3 server (and a GCS emulator).

The endpoints listen on 127.0.0.1 only (tests/s3_fixtures.py). The CLI runs as a subprocess, as a
user would run it, with Beam's own S3 options (``--s3_endpoint_url``, ``--s3_region_name``) and
fake credentials in its environment; outputs are read back from the object store and compared
row by row with a local run of the same batch prediction. A fault proxy in front of moto injects
HTTP 500/503, connection resets and bodies cut short; the output must not change.
"""

import gzip
import json
import os
import time
import uuid

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from pipelines.job import build_pipeline, run
from tests import s3_fixtures as fx
from tests.builders import check_predictions, read_dead_letters, read_records, read_summary
from transforms.io.storage import (
  Storage,
  StorageConfig,
  StorageError,
  describe,
  output_leftovers,
  redact,
  remove_output_leftovers,
  s3_retry_config,
)

SAMPLES, SAMPLE_BUCKET = fx.SAMPLES, fx.SAMPLE_BUCKET
MANIFEST_KEY = 'output/batch-prediction/{bp}.manifest'

s3 = pytest.fixture(scope='module', name='s3')(fx.samples_s3)


@pytest.fixture
def out_bucket(s3):
  return s3.make_bucket(f'out-{uuid.uuid4().hex[:12]}')


@pytest.fixture
def aws(monkeypatch):
  """The fake AWS environment for in-process runs."""
  for name, value in fx.aws_env().items():
    if name.startswith(('AWS_', 'NO_GCE')):
      monkeypatch.setenv(name, value)


_LOCAL = {}
# Each bundled sample's id column, and whether its inputs have a header line.
SAMPLE_IDS = {'bp-sample-binary': ('customerId', True), 'bp-sample-multiclass': ('reviewId', False),
              'bp-sample-regression': ('houseId', True)}


def local_reference(bp: str, fmt: str, tmp_path_factory) -> str:
  """The local run of a bundled sample (rebased onto the checkout), once per module."""
  if (bp, fmt) not in _LOCAL:
    out = str(tmp_path_factory.mktemp(f'local-{bp}-{fmt}'))
    manifest = os.path.join(SAMPLES, MANIFEST_KEY.format(bp=bp))
    assert run(['--manifest', manifest, '--output', out, '--format', fmt,
                '--rebase_uri', f's3://{SAMPLE_BUCKET}/={SAMPLES}/']) == 0
    # The reference is itself checked, row by row, against the files read with csv and gzip.
    id_column, header = SAMPLE_IDS[bp]
    check_predictions(read_records(out), manifest, (f's3://{SAMPLE_BUCKET}/', f'{SAMPLES}/'),
                      header, id_column)
    _LOCAL[bp, fmt] = out
  return _LOCAL[bp, fmt]


def _normalised(rows: list[dict]) -> list[dict]:
  """Rows with the checkout path written as the sample bucket, so local and S3 runs compare."""
  text = json.dumps(rows, sort_keys=True).replace(f'{SAMPLES}/', f's3://{SAMPLE_BUCKET}/')
  return sorted(json.loads(text), key=lambda r: (r['input_uri'], r['row_number'] or 0))


def assert_same_output(s3, bucket: str, prefix: str, local_out: str, tmp_path) -> dict:
  """Downloads ``s3://bucket/prefix`` and compares it row by row with a local run."""
  got = str(tmp_path / f'download-{uuid.uuid4().hex[:6]}')
  s3.download_prefix(bucket, prefix, got)
  records, expected = read_records(got), read_records(local_out)
  assert records, 'no records were written to S3'
  assert _normalised(records) == _normalised(expected)
  assert _normalised(read_dead_letters(got)) == _normalised(read_dead_letters(local_out))
  summary = read_summary(got)
  assert summary['totals'] == read_summary(local_out)['totals']
  assert summary['ok'] and summary['identity']['holds']
  assert all(f.startswith(f's3://{bucket}/{prefix}records/') for f in
             summary['outputs']['records'])
  return summary


def _no_temp_files(s3, bucket: str, prefix: str) -> None:
  leftovers = [k for k in s3.keys(bucket, prefix) if 'beam-temp' in k]
  assert not leftovers, leftovers


# The storage layer on its own -----------------------------------------------------------------


@pytest.mark.parametrize('text, secret', [
    ('s3://AKIAIOSFODNN7EXAMPLE:wJalrXUtnFEMI@bucket/key', 'wJalrXUtnFEMI'),
    ('s3://id:sec@127.0.0.1:9000@bucket/key', 'sec'),
    ('cannot open https://b.s3.amazonaws.com/k?X-Amz-Signature=abcd1234&X-Amz-Date=1', 'abcd1234'),
    ('https://storage.googleapis.com/b/o?X-Goog-Signature=f00d&X-Goog-Credential=sa%40p',
     'f00d'),
    ('https://b.s3.amazonaws.com/o?AWSAccessKeyId=AKIAIOSFODNN7EXAMPLE&Signature=zz9',
     'zz9'),
    ('an error naming AKIAIOSFODNN7EXAMPLE in passing', 'AKIAIOSFODNN7EXAMPLE'),
    ('http://user:pa55@proxy:8080/ and s3://b/k?token=t0k3n', 'pa55'),
    ('http://user:pa55@proxy:8080/ and s3://b/k?token=t0k3n', 't0k3n'),
])
def test_redact_removes_secrets(text, secret):
  assert secret not in redact(text)
  assert '***' in redact(text)


def test_redact_keeps_ordinary_uris():
  for uri in ('s3://bucket/out/batch-prediction/bp-1.manifest', '/data/x@y.csv',
              's3://bucket/key@at-sign/x.csv', 'gs://b/k?generation=12'):
    assert redact(uri) == uri


def test_storage_config_takes_beams_s3_options_and_hides_secrets():
  from apache_beam.options.pipeline_options import PipelineOptions
  options = PipelineOptions([
      '--s3_endpoint_url', 'http://127.0.0.1:9', '--s3_region_name', 'eu-west-1',
      '--s3_access_key_id', fx.ACCESS_KEY_ID, '--s3_secret_access_key', fx.SECRET_ACCESS_KEY,
      '--s3_session_token', 'tok', '--s3_verify', 'false', '--s3_disable_ssl',
      '--s3_api_version', '2006-03-01'])
  config = StorageConfig.from_options(options)
  assert (config.s3_endpoint_url, config.s3_region_name, config.s3_access_key_id,
          config.s3_verify, config.s3_disable_ssl, config.s3_api_version) == (
              'http://127.0.0.1:9', 'eu-west-1', fx.ACCESS_KEY_ID, 'false', True, '2006-03-01')
  assert fx.SECRET_ACCESS_KEY not in repr(config) and fx.ACCESS_KEY_ID not in repr(config)
  client = Storage(config).s3_client()
  assert client.meta.endpoint_url == 'http://127.0.0.1:9'
  assert client.meta.region_name == 'eu-west-1'


def test_retry_settings_default_to_standard_and_follow_the_aws_environment(monkeypatch):
  monkeypatch.delenv('AWS_RETRY_MODE', raising=False)
  monkeypatch.delenv('AWS_MAX_ATTEMPTS', raising=False)
  assert s3_retry_config() == {'mode': 'standard', 'max_attempts': 8}
  monkeypatch.setenv('AWS_RETRY_MODE', 'adaptive')
  monkeypatch.setenv('AWS_MAX_ATTEMPTS', '3')
  assert s3_retry_config() == {'mode': 'adaptive', 'max_attempts': 3}


def test_reads_gunzips_and_reports_missing_objects(s3, aws):
  s3.client.put_object(Bucket=SAMPLE_BUCKET, Key='unit/data.csv.gz',
                       Body=gzip.compress(b'a,b\n1,2\n'))
  storage = Storage(StorageConfig(s3_endpoint_url=s3.endpoint))
  assert storage.read_bytes(f's3://{SAMPLE_BUCKET}/unit/data.csv.gz') == b'a,b\n1,2\n'
  assert storage.exists(f's3://{SAMPLE_BUCKET}/unit/data.csv.gz')
  assert not storage.exists(f's3://{SAMPLE_BUCKET}/unit/nothing.csv')
  assert not storage.exists('s3://no-such-bucket-here/x.csv')
  with pytest.raises(StorageError, match=f'cannot open s3://{SAMPLE_BUCKET}/unit/nothing.csv: '
                     'no such object'):
    storage.open(f's3://{SAMPLE_BUCKET}/unit/nothing.csv')


def test_transient_faults_are_retried_to_the_same_bytes(s3, aws):
  body = os.urandom(200_000)
  s3.client.put_object(Bucket=SAMPLE_BUCKET, Key='unit/random.bin', Body=body)
  proxy = fx.FaultProxy(s3.endpoint, share=0.6, seed='unit')
  try:
    storage = Storage(StorageConfig(s3_endpoint_url=proxy.endpoint))
    for _ in range(6):
      with storage.open(f's3://{SAMPLE_BUCKET}/unit/random.bin') as f:
        assert f.read() == body
    counts = proxy.counts()
  finally:
    proxy.stop()
  assert counts[fx.TRUNCATE] and sum(counts.values()) >= 3, counts


def test_a_body_that_keeps_failing_is_a_storage_error_naming_the_object(s3, aws, monkeypatch):
  monkeypatch.setenv('AWS_MAX_ATTEMPTS', '2')
  s3.client.put_object(Bucket=SAMPLE_BUCKET, Key='unit/broken.csv', Body=b'x\n')
  proxy = fx.FaultProxy(s3.endpoint, always={'/unit/broken.csv': fx.SLOW_DOWN})
  try:
    storage = Storage(StorageConfig(s3_endpoint_url=proxy.endpoint))
    with pytest.raises(StorageError) as e:
      storage.read_bytes(f's3://{SAMPLE_BUCKET}/unit/broken.csv')
  finally:
    proxy.stop()
  assert f's3://{SAMPLE_BUCKET}/unit/broken.csv' in describe(e.value)
  assert 'SlowDown' in describe(e.value)


# The whole job on S3 --------------------------------------------------------------------------


@pytest.mark.parametrize('fmt', ['parquet', 'avro'])
def test_cli_s3_manifest_shards_and_output_match_the_local_run(s3, out_bucket, tmp_path,
                                                               tmp_path_factory, fmt):
  manifest = f's3://{SAMPLE_BUCKET}/' + MANIFEST_KEY.format(bp='bp-sample-multiclass')
  result = fx.run_cli(['--manifest', manifest, '--output', f's3://{out_bucket}/enriched/',
                       '--format', fmt, *fx.s3_args(s3.endpoint)], fx.aws_env())
  assert result.returncode == 0, result.stderr
  assert f'summary: s3://{out_bucket}/enriched/summary.json' in result.stdout
  assert_same_output(s3, out_bucket, 'enriched/',
                     local_reference('bp-sample-multiclass', fmt, tmp_path_factory),
                     tmp_path)
  _no_temp_files(s3, out_bucket, '')


def test_cli_output_location_multi_process_workers(s3, out_bucket, tmp_path, tmp_path_factory):
  # Workers in other processes must get the S3 options from the pipeline options alone. The
  # doubled trailing slash still finds <location>/batch-prediction/<id>.manifest.
  location = f's3://{SAMPLE_BUCKET}/output//'
  result = fx.run_cli(['--output_location', location, '--batch_prediction_id',
                       'bp-sample-binary', '--output', f's3://{out_bucket}/o', '--format', 'jsonl',
                       '--direct_num_workers=2', '--direct_running_mode=multi_processing',
                       *fx.s3_args(s3.endpoint)], fx.aws_env())
  assert result.returncode == 0, result.stderr
  summary = assert_same_output(s3, out_bucket, 'o/',
                               local_reference('bp-sample-binary', 'jsonl', tmp_path_factory),
                               tmp_path)
  assert {s['manifest_uri'] for s in summary['shards']} == {
      f's3://{SAMPLE_BUCKET}/output/batch-prediction/bp-sample-binary.manifest'}


def test_missing_manifest_names_the_uri_it_looked_for(s3, out_bucket, aws, capsys):
  # No trailing slash on the location: exactly one is put between the parts.
  code = run(['--output_location', f's3://{SAMPLE_BUCKET}/output', '--batch_prediction_id',
              'bp-nope', '--output', f's3://{out_bucket}/o/', *fx.s3_args(s3.endpoint)])
  assert code == 2
  err = capsys.readouterr().err
  assert f'no manifest at s3://{SAMPLE_BUCKET}/output/batch-prediction/bp-nope.manifest' in err
  assert s3.keys(out_bucket) == []


def test_an_output_bucket_that_cannot_be_written_stops_at_launch(s3, aws):
  # No such bucket: one line naming the output, exit 2, as the command runs it.
  manifest = f's3://{SAMPLE_BUCKET}/' + MANIFEST_KEY.format(bp='bp-sample-binary')
  result = fx.run_cli(['--manifest', manifest, '--output', 's3://no-such-bucket-here/o/',
                       *fx.s3_args(s3.endpoint)], fx.aws_env())
  assert result.returncode == 2, result.stderr
  assert result.stderr.startswith('predjoin: error: cannot write to --output '
                                  's3://no-such-bucket-here/o/: '), result.stderr
  assert result.stderr.count('\n') == 1 and 'Traceback' not in result.stderr
  assert 'rows in' not in result.stdout  # nothing was joined


def test_faults_on_every_kind_of_request_do_not_change_the_output(s3, out_bucket, tmp_path,
                                                                   tmp_path_factory):
  proxy = fx.FaultProxy(s3.endpoint, share=0.3)
  try:
    start = time.monotonic()
    result = fx.run_cli(
        ['--manifest', f's3://{SAMPLE_BUCKET}/' + MANIFEST_KEY.format(bp='bp-sample-binary'),
         '--output', f's3://{out_bucket}/f/', '--format', 'jsonl',
         *fx.s3_args(proxy.endpoint)], fx.aws_env())
    elapsed = time.monotonic() - start
    counts = proxy.counts()
  finally:
    proxy.stop()
  assert result.returncode == 0, result.stderr
  assert all(counts.values()), f'every kind of fault should have been injected: {counts}'
  assert elapsed < 120
  assert_same_output(s3, out_bucket, 'f/',
                     local_reference('bp-sample-binary', 'jsonl', tmp_path_factory), tmp_path)
  _no_temp_files(s3, out_bucket, '')



def test_ranges_read_their_offsets_from_s3_through_faults(s3, out_bucket, tmp_path,
                                                          tmp_path_factory):
  # Shards of 12, 10 and 8 rows in ranges of 3 (4, 4 and 3 ranges): each range opens the input at its byte offset
  # and the gzip result at an access point of its index, with ranged reads on S3.
  proxy = fx.FaultProxy(s3.endpoint, share=0.2)
  try:
    result = fx.run_cli(
        ['--manifest', f's3://{SAMPLE_BUCKET}/' + MANIFEST_KEY.format(bp='bp-sample-binary'),
         '--output', f's3://{out_bucket}/r/', '--format', 'jsonl', '--range_rows', '3',
         '--direct_num_workers=2', '--direct_running_mode=multi_processing',
         *fx.s3_args(proxy.endpoint)], fx.aws_env())
  finally:
    proxy.stop()
  assert result.returncode == 0, result.stderr
  summary = assert_same_output(s3, out_bucket, 'r/',
                               local_reference('bp-sample-binary', 'jsonl', tmp_path_factory),
                               tmp_path)
  assert len(summary['outputs']['records']) == 4 + 4 + 3
  _no_temp_files(s3, out_bucket, '')

def test_missing_and_always_failing_objects_are_reported_others_complete(s3, out_bucket,
                                                                          tmp_path):
  # Shard 1 is whole; shard 2's result is missing; shard 3's input answers 503 to every
  # request (the client gives up after AWS_MAX_ATTEMPTS). The manifest also names a result
  # under a signed-looking key, which must never show in any output.
  bucket = s3.make_bucket(f'bp-{uuid.uuid4().hex[:12]}')
  s3.upload_tree(os.path.join(SAMPLES, 'input', 'binary'), bucket, 'input/')
  s3.upload_tree(os.path.join(SAMPLES, 'output'), bucket, 'output/')
  result_key = 'output/batch-prediction/result/bp-sample-binary-customers-{}.csv.gz'
  s3.client.delete_object(Bucket=bucket, Key=result_key.format(2))
  signed = '?X-Amz-Credential=AKIAIOSFODNN7EXAMPLE&X-Amz-Signature=5ec2e7519a7'
  manifest = {f's3://{bucket}/input/customers-{i}.csv':
              f's3://{bucket}/' + result_key.format(i) + (signed if i == 2 else '')
              for i in (1, 2, 3)}
  s3.client.put_object(Bucket=bucket, Key='output/batch-prediction/bp-broken.manifest',
                       Body=json.dumps(manifest).encode())
  proxy = fx.FaultProxy(s3.endpoint, always={'/input/customers-3.csv': fx.SLOW_DOWN})
  try:
    start = time.monotonic()
    # Credentials given as Beam options this time, not in the environment.
    env = {k: v for k, v in fx.aws_env({'AWS_MAX_ATTEMPTS': '3'}).items()
           if k not in ('AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY')}
    result = fx.run_cli(['--output_location', f's3://{bucket}/output/', '--batch_prediction_id',
                         'bp-broken', '--output', f's3://{out_bucket}/b/', '--format', 'jsonl',
                         '--s3_access_key_id', fx.ACCESS_KEY_ID,
                         '--s3_secret_access_key', fx.SECRET_ACCESS_KEY,
                         *fx.s3_args(proxy.endpoint)], env, timeout=120)
    elapsed = time.monotonic() - start
  finally:
    proxy.stop()
  assert result.returncode == 1, result.stderr
  assert elapsed < 100
  got = str(tmp_path / 'got')
  s3.download_prefix(out_bucket, 'b/', got)
  summary = read_summary(got)
  status = {os.path.basename(s['input_uri']): (s['status'], s['error'])
            for s in summary['shards']}
  assert status['customers-1.csv'] == ('ok', None)
  assert status['customers-2.csv'][0] == 'error'
  assert 'no such object' in status['customers-2.csv'][1]
  assert status['customers-3.csv'][0] == 'error'
  assert 'input unreadable' in status['customers-3.csv'][1]
  assert 'customers-3.csv' in status['customers-3.csv'][1]
  dead = read_dead_letters(got)
  assert {d['reason'] for d in dead} == {'result_unreadable', 'input_unreadable'}
  assert sum(d['reason'] == 'result_unreadable' for d in dead) == 10  # every row of shard 2
  assert {r['input_uri'] for r in read_records(got)} == {f's3://{bucket}/input/customers-1.csv'}
  everything = json.dumps([summary, dead]) + result.stdout + result.stderr
  for secret in ('AKIAIOSFODNN7EXAMPLE', '5ec2e7519a7', fx.ACCESS_KEY_ID, fx.SECRET_ACCESS_KEY):
    assert secret not in everything, secret


# Outputs: temporary files beside records/, leftovers of earlier runs removed --------------------


def test_output_leftovers_are_other_runs_part_files_and_temp_dirs(tmp_path):
  out = tmp_path / 'out'
  files = ['records/part-00000-of-00001.avro', 'records/part-00000-of-00002.avro',
           'records/part-00001-of-00002.avro', 'records/beam-temp-part-1a2b/u.part.avro',
           'records/README.txt', 'dead_letter/part-00000-of-00003.jsonl',
           'beam-temp-records-9f/x.records.avro', 'resubmit/.schema', 'summary.json']
  for name in files:
    (out / name).parent.mkdir(parents=True, exist_ok=True)
    (out / name).write_text('x')
  keep = [str(out / 'records' / 'part-00000-of-00001.avro')]
  stale = {os.path.relpath(p, out) for p in output_leftovers(str(out), keep)}
  assert stale == {'records/part-00000-of-00002.avro', 'records/part-00001-of-00002.avro',
                   'records/beam-temp-part-1a2b/u.part.avro',
                   'dead_letter/part-00000-of-00003.jsonl', 'beam-temp-records-9f/x.records.avro'}
  remove_output_leftovers(str(out), keep)
  left = sorted(os.path.relpath(os.path.join(d, f), out) for d, _, fs in os.walk(out) for f in fs)
  assert left == ['records/README.txt', 'records/part-00000-of-00001.avro', 'resubmit/.schema',
                  'summary.json']
  assert not [d for d in os.listdir(out) if d.startswith('beam-temp')]
  assert sorted(os.listdir(out / 'records')) == ['README.txt', 'part-00000-of-00001.avro']


def test_a_failed_run_leaves_nothing_under_records_and_a_rerun_cleans_up(
    s3, out_bucket, aws, monkeypatch, tmp_path, tmp_path_factory, capsys):
  # Every request for a final record file fails: the run dies while writing records/. Nothing
  # may show under records/.
  monkeypatch.setenv('AWS_MAX_ATTEMPTS', '2')
  manifest = f's3://{SAMPLE_BUCKET}/' + MANIFEST_KEY.format(bp='bp-sample-binary')
  args = ['--manifest', manifest, '--output', f's3://{out_bucket}/o/', '--format', 'jsonl']
  proxy = fx.FaultProxy(s3.endpoint, always={f'/{out_bucket}/o/records/part-': fx.SLOW_DOWN})
  # An earlier run's summary: it goes when the run starts, so a failed run never leaves a
  # summary beside files it does not describe.
  s3.client.put_object(Bucket=out_bucket, Key='o/summary.json', Body=b'{"ok": true}')
  try:
    assert run([*args, *fx.s3_args(proxy.endpoint)]) == 1
  finally:
    proxy.stop()
  err = capsys.readouterr().err
  # One line that says the job failed, and on which object.
  assert err.startswith('predjoin: error: the job failed: ') and err.count('\n') == 1, err
  assert 'SlowDown' in err and f'{out_bucket}/o/records/part-' in err
  keys = s3.keys(out_bucket)
  assert not [k for k in keys if k.startswith('o/records/')], keys
  assert 'o/summary.json' not in keys
  monkeypatch.delenv('AWS_MAX_ATTEMPTS')
  assert run([*args, *fx.s3_args(s3.endpoint)]) == 0
  _no_temp_files(s3, out_bucket, '')
  assert_same_output(s3, out_bucket, 'o/',
                     local_reference('bp-sample-binary', 'jsonl', tmp_path_factory), tmp_path)


# Refused manifests on S3: exit 2, nothing read but the manifest, nothing written ----------------

REFUSED = {
    'other_bucket': 's3://{other}/secret.csv',
    'etc_passwd': 'file:///etc/passwd',
    'dot_dot': 's3://{bucket}/output/../../{other}/secret.csv',
    'http': 'http://169.254.169.254/latest/meta-data/',
    'credentials_in_uri': 's3://AKIAIOSFODNN7EXAMPLE:s3cr3t@{other}/secret.csv',
}


@pytest.mark.parametrize('case', sorted(REFUSED))
def test_refused_manifest_reads_nothing_and_writes_nothing(s3, out_bucket, aws, capsys, case):
  bucket = s3.make_bucket(f'bp-{uuid.uuid4().hex[:12]}')
  other = s3.make_bucket(f'other-{uuid.uuid4().hex[:12]}')
  s3.client.put_object(Bucket=other, Key='secret.csv', Body=b'secret\n')
  s3.upload_tree(os.path.join(SAMPLES, 'input', 'binary'), bucket, 'input/')
  s3.upload_tree(os.path.join(SAMPLES, 'output'), bucket, 'output/')
  good_result = f's3://{bucket}/output/batch-prediction/result/bp-sample-binary-customers-1.csv.gz'
  manifest_key = 'output/batch-prediction/bp-evil.manifest'
  s3.client.put_object(Bucket=bucket, Key=manifest_key, Body=json.dumps({
      f's3://{bucket}/input/customers-1.csv': good_result,
      REFUSED[case].format(bucket=bucket, other=other): good_result}).encode())
  proxy = fx.FaultProxy(s3.endpoint)
  try:
    code = run(['--manifest', f's3://{bucket}/{manifest_key}', '--output',
                f's3://{out_bucket}/o/', *fx.s3_args(proxy.endpoint)])
    requests = proxy.log[:]
  finally:
    proxy.stop()
  assert code == 2
  err = capsys.readouterr().err
  assert 'refused to read what the manifest names' in err and '--allowed_prefix' in err
  assert 's3cr3t' not in err and 'AKIAIOSFODNN7EXAMPLE' not in err
  assert {path for _, path, _ in requests} == {f'/{bucket}/{manifest_key}'}
  assert s3.keys(out_bucket) == []


def test_allowed_prefix_admits_another_bucket(s3, out_bucket, aws, capsys):
  # Inputs in one bucket, results and manifest in another: the usual Amazon ML set-up.
  results = s3.make_bucket(f'res-{uuid.uuid4().hex[:12]}')
  s3.upload_tree(os.path.join(SAMPLES, 'output'), results, 'output/')
  pairs = {f's3://{SAMPLE_BUCKET}/input/binary/customers-{i}.csv':
           f's3://{results}/output/batch-prediction/result/bp-sample-binary-customers-{i}.csv.gz'
           for i in (1, 2, 3)}
  key = 'output/batch-prediction/bp-sample-binary.manifest'
  s3.client.put_object(Bucket=results, Key=key, Body=json.dumps(pairs).encode())
  args = ['--manifest', f's3://{results}/{key}', '--output', f's3://{out_bucket}/o/',
          *fx.s3_args(s3.endpoint)]
  assert run(args) == 2
  assert f'Allowed prefixes: s3://{results}/' in capsys.readouterr().err
  # Widened, the launch reads the inputs to plan the run (the whole job on S3 is run above).
  options = PipelineOptions([*args, '--allowed_prefix', f's3://{SAMPLE_BUCKET}/input/'])
  built = build_pipeline(beam.Pipeline(options=options), options)
  assert built.plan.schema.input_columns[:2] == ('customerId', 'age')
  assert s3.keys(out_bucket) == []


# GCS, through the emulator --------------------------------------------------------------------


@pytest.fixture(scope='module')
def gcs(tmp_path_factory):
  emulator = fx.GcsEmulator(str(tmp_path_factory.mktemp('gcs')))
  client = emulator.client()
  bucket = client.create_bucket(SAMPLE_BUCKET)
  for dirpath, _, files in os.walk(SAMPLES):
    for name in files:
      if not name.endswith('.py'):
        path = os.path.join(dirpath, name)
        bucket.blob(os.path.relpath(path, SAMPLES)).upload_from_filename(path)
  client.create_bucket('gcs-out')
  yield emulator
  emulator.stop()


@pytest.mark.parametrize('workers', [[], ['--direct_num_workers=2',
                                           '--direct_running_mode=multi_processing']])
def test_cli_gcs_manifest_shards_and_output_match_the_local_run(gcs, tmp_path,
                                                                tmp_path_factory, workers):
  # The bundled manifest names s3:// URIs; a rebase onto the GCS copy is the documented way.
  # With forked workers, the launcher's import keeps Beam's GCS modules (pipelines/localrun/workers.py).
  manifest = f'gs://{SAMPLE_BUCKET}/' + MANIFEST_KEY.format(bp='bp-sample-regression')
  result = fx.run_cli(['--manifest', manifest, '--rebase_uri',
                       f's3://{SAMPLE_BUCKET}/=gs://{SAMPLE_BUCKET}/', '--output',
                       'gs://gcs-out/r/', '--format', 'jsonl', *workers], fx.aws_env(gcs.env()))
  assert result.returncode == 0, result.stderr
  got = tmp_path / 'got'
  for blob in gcs.client().list_blobs('gcs-out', prefix='r/'):
    path = got / blob.name[len('r/'):]
    path.parent.mkdir(parents=True, exist_ok=True)
    blob.download_to_filename(str(path))
  local = local_reference('bp-sample-regression', 'jsonl', tmp_path_factory)
  normalise = lambda rows: _normalised(json.loads(json.dumps(rows).replace(  # noqa: E731
      f'gs://{SAMPLE_BUCKET}/', f's3://{SAMPLE_BUCKET}/')))
  assert normalise(read_records(str(got))) == _normalised(read_records(local))
  assert read_summary(str(got))['totals'] == read_summary(local)['totals']
  assert not [b.name for b in gcs.client().list_blobs('gcs-out') if 'beam-temp' in b.name]


# Output objects written with the process's shared clients -----------------------------------


def test_clients_are_made_once_per_process_and_settings():
  config = StorageConfig(s3_endpoint_url='http://127.0.0.1:1', s3_region_name='us-east-1')
  other = StorageConfig(s3_endpoint_url='http://127.0.0.1:2', s3_region_name='us-east-1')
  assert Storage(config).s3_client() is Storage(config).s3_client()
  assert Storage(other).s3_client() is not Storage(config).s3_client()
  assert Storage(other).s3_client().meta.endpoint_url == 'http://127.0.0.1:2'


def _writer_storage(endpoint: str) -> Storage:
  return Storage(StorageConfig(s3_endpoint_url=endpoint, s3_region_name=fx.REGION))


def test_a_small_object_is_one_request_and_appears_only_when_closed(s3, out_bucket, aws):
  proxy = fx.FaultProxy(s3.endpoint)
  try:
    storage = _writer_storage(proxy.endpoint)
    uri, temp = f's3://{out_bucket}/o/records/part-a.jsonl', f's3://{out_bucket}/o/tmp/part-a'
    f = storage.create(uri, temp, 'application/x-ndjson')
    f.write(b'{"a": 1}\n')
    f.write(memoryview(b'{"a": 2}\n'))
    assert f.tell() == 18 and s3.keys(out_bucket) == []
    f.close()
    f.close()  # closing twice makes it once
    assert [(m, p) for m, p, _ in proxy.log] == [('PUT', f'/{out_bucket}/o/records/part-a.jsonl')]
  finally:
    proxy.stop()
  body = s3.client.get_object(Bucket=out_bucket, Key='o/records/part-a.jsonl')
  assert body['Body'].read() == b'{"a": 1}\n{"a": 2}\n'
  assert body['ContentType'] == 'application/x-ndjson'
  with pytest.raises(ValueError, match='closed writer'):
    f.write(b'more')


def test_a_large_object_streams_to_its_temporary_name_and_moves_on_close(
    s3, out_bucket, aws, monkeypatch):
  from transforms.io import storage as storage_module
  monkeypatch.setattr(storage_module, 'UPLOAD_PART_BYTES', 5 * 1024 * 1024)  # S3's least part
  storage = _writer_storage(s3.endpoint)
  data = os.urandom(1024 * 1024) * 6 + b'tail'
  uri, temp = f's3://{out_bucket}/o/records/big', f's3://{out_bucket}/o/beam-temp-records-x/big'
  f = storage.create(uri, temp)
  for i in range(0, len(data), 1_000_000):
    f.write(data[i:i + 1_000_000])
  assert 'o/records/big' not in s3.keys(out_bucket)  # a multipart upload is under way
  f.close()
  assert s3.keys(out_bucket) == ['o/records/big']
  assert s3.client.get_object(Bucket=out_bucket, Key='o/records/big')['Body'].read() == data
  # An aborted writer leaves no object, no temporary object and no open upload.
  f = storage.create(f's3://{out_bucket}/o/records/gone', f's3://{out_bucket}/o/tmp/gone')
  f.write(data)
  f.abort()
  f.close()  # after abort: nothing more happens
  assert s3.keys(out_bucket) == ['o/records/big']
  assert not s3.client.list_multipart_uploads(Bucket=out_bucket).get('Uploads')


def test_a_dropped_small_writer_makes_no_object(s3, out_bucket, aws):
  f = _writer_storage(s3.endpoint).create(f's3://{out_bucket}/o/x', f's3://{out_bucket}/t/x')
  f.write(b'half of a file')
  del f
  assert s3.keys(out_bucket) == []


def test_write_errors_name_the_object(s3, out_bucket, aws, monkeypatch):
  monkeypatch.setenv('AWS_MAX_ATTEMPTS', '1')
  proxy = fx.FaultProxy(s3.endpoint, always={'/o/': fx.SLOW_DOWN})
  try:
    storage = Storage(StorageConfig(s3_endpoint_url=proxy.endpoint, s3_region_name=fx.REGION,
                                    s3_access_key_id='AKIAIOSFODNN7OTHER01'))
    f = storage.create(f's3://{out_bucket}/o/records/part-b.avro', f's3://{out_bucket}/o/t/b')
    f.write(b'x')
    with pytest.raises(StorageError, match=f'cannot write s3://{out_bucket}/o/records/part-b.avro'):
      f.close()
  finally:
    proxy.stop()


def test_gcs_objects_small_and_large_appear_whole_on_close(gcs, monkeypatch):
  from transforms.io import storage as storage_module
  monkeypatch.setattr(storage_module, 'UPLOAD_PART_BYTES', 256 * 1024)  # GCS's least chunk
  for name, value in gcs.env().items():
    monkeypatch.setenv(name, value)
  storage = Storage()
  small = storage.create('gs://gcs-out/w/records/small', 'gs://gcs-out/w/tmp/small', 'text/csv')
  small.write(b'a,b\n')
  large = storage.create('gs://gcs-out/w/records/large', 'gs://gcs-out/w/tmp/large')
  data = os.urandom(700 * 1024)
  large.write(data[:300 * 1024])
  large.write(data[300 * 1024:])
  dropped = storage.create('gs://gcs-out/w/records/dropped', 'gs://gcs-out/w/tmp/dropped')
  dropped.write(data)
  client = gcs.client()
  assert not [b.name for b in client.list_blobs('gcs-out', prefix='w/records/')]
  small.close()
  large.close()
  dropped.abort()
  assert sorted(b.name for b in client.list_blobs('gcs-out', prefix='w/')) == [
      'w/records/large', 'w/records/small']
  assert client.bucket('gcs-out').blob('w/records/large').download_as_bytes() == data
  blob = client.bucket('gcs-out').get_blob('w/records/small')
  assert blob.download_as_bytes() == b'a,b\n' and blob.content_type == 'text/csv'
