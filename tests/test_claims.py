"""Claims and the decision on earlier runs, against the stores themselves: local files, moto's S3
server and the GCS emulator (which the fixture makes honour ``ifGenerationMatch`` as GCS does)."""

import json
import os
import threading
import time

import pytest

from tests import s3_fixtures as fx
from transforms.io import claims
from transforms.io.storage import Storage, StorageConfig
from transforms.report import prior_runs


@pytest.fixture(scope='module')
def moto():
  server = fx.MotoS3()
  server.make_bucket('claims-bucket')
  yield server
  server.stop()


@pytest.fixture(scope='module')
def gcs(tmp_path_factory):
  emulator = fx.GcsEmulator(str(tmp_path_factory.mktemp('gcs')))
  emulator.client().create_bucket('claims-bucket')
  yield emulator
  emulator.stop()


@pytest.fixture(params=['local', 's3', 'gs'])
def store(request, tmp_path, monkeypatch):
  """(a prefix unique to the test, the Storage that reaches it)."""
  name = request.node.name.replace('[', '-').replace(']', '')
  if request.param == 'local':
    return str(tmp_path / 'out'), Storage()
  if request.param == 's3':
    server = request.getfixturevalue('moto')
    for key, value in fx.aws_env().items():
      if key.startswith('AWS_'):
        monkeypatch.setenv(key, value)
    return f's3://claims-bucket/{name}', Storage(StorageConfig(
        s3_endpoint_url=server.endpoint, s3_region_name=fx.REGION))
  emulator = request.getfixturevalue('gcs')
  for key, value in emulator.env().items():
    monkeypatch.setenv(key, value)
  return f'gs://claims-bucket/{name}', Storage()


def test_one_claim_wins_and_only_its_owner_releases_it(store):
  prefix, storage = store
  uri = claims.claim_uri(prefix + '/bp-1/')
  assert uri == prefix + '/bp-1/_predjoin_claim.json'
  assert claims.read_claim(uri, storage) is None
  assert claims.try_claim(uri, 'run-a', stale_after_s=3600, storage=storage)
  assert not claims.try_claim(uri, 'run-b', stale_after_s=3600, storage=storage)
  # A retried claim of the same owner (its first request went through) still holds it.
  assert claims.try_claim(uri, 'run-a', stale_after_s=3600, storage=storage)
  held = claims.read_claim(uri, storage)
  assert held.owner == 'run-a' and held.body['owner'] == 'run-a'
  assert not claims.release(uri, 'run-b', storage)
  assert claims.read_claim(uri, storage).owner == 'run-a'
  assert claims.release(uri, 'run-a', storage)
  assert claims.read_claim(uri, storage) is None
  assert not claims.release(uri, 'run-a', storage)
  assert claims.try_claim(uri, 'run-b', stale_after_s=3600, storage=storage)
  assert claims.read_claim(uri, storage).owner == 'run-b'


def test_many_runs_claiming_at_once_one_wins(store):
  prefix, storage = store
  uri = claims.claim_uri(prefix + '/bp-race/')
  barrier = threading.Barrier(6)
  won = []

  def attempt(owner):
    mine = Storage(storage._config)  # a run of its own: its own clients
    barrier.wait()
    if claims.try_claim(uri, owner, stale_after_s=3600, storage=mine):
      won.append(owner)

  threads = [threading.Thread(target=attempt, args=(f'run-{i}',)) for i in range(6)]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  assert len(won) == 1, won
  assert claims.read_claim(uri, storage).owner == won[0]


def test_a_stale_claim_is_taken_over_by_exactly_one_run(store):
  prefix, storage = store
  uri = claims.claim_uri(prefix + '/bp-stale/')
  assert claims.try_claim(uri, 'crashed', stale_after_s=60, storage=storage)
  later = time.time() + 120  # judged two minutes on, the claim is stale; not within the hour
  assert not claims.try_claim(uri, 'run-a', stale_after_s=3600, storage=storage, now=later)
  # The takers judge by the clock: the crashed run's claim is older than 2 s, the one a taker
  # writes is not (S3 keeps whole seconds: up to 1 s older than it is).
  time.sleep(2.5)
  barrier = threading.Barrier(4)
  won = []

  def attempt(owner):
    mine = Storage(storage._config)
    barrier.wait()
    if claims.try_claim(uri, owner, stale_after_s=2, storage=mine):
      won.append(owner)

  threads = [threading.Thread(target=attempt, args=(f'taker-{i}',)) for i in range(4)]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  # The new claim is fresh (the store's time): the others, looking again, see it held.
  assert len(won) == 1, won
  assert claims.read_claim(uri, storage).owner == won[0]
  # The crashed run, back, cannot release the claim of the run that took it over.
  assert not claims.release(uri, 'crashed', storage)
  assert claims.read_claim(uri, storage).owner == won[0]


def test_a_conditional_replace_of_a_changed_claim_fails(store):
  prefix, storage = store
  uri = claims.claim_uri(prefix + '/bp-cas/')
  assert claims.try_claim(uri, 'run-a', stale_after_s=60, storage=storage)
  old = claims.read_claim(uri, storage)
  backend = claims._backend(uri, storage)
  assert backend.replace(uri, old.token, claims.claim_body('run-b'))
  assert not backend.replace(uri, old.token, claims.claim_body('run-c'))
  assert not backend.delete(uri, old.token)
  assert claims.read_claim(uri, storage).owner == 'run-b'


# The decision on earlier runs ------------------------------------------------------------------


def _put(storage, uri, data: bytes):
  if '://' not in uri:
    os.makedirs(os.path.dirname(uri), exist_ok=True)
    with open(uri, 'wb') as f:
      f.write(data)
    return
  if uri.startswith('s3://'):
    bucket, _, key = uri[5:].partition('/')
    storage.s3_client().put_object(Bucket=bucket, Key=key, Body=data)
    return
  bucket, _, key = uri[5:].partition('/')
  storage.gcs_client().bucket(bucket).blob(key).upload_from_string(data)


def test_digest_is_of_the_bytes():
  assert prior_runs.manifest_digest(b'{}') == (
      'sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a')
  assert prior_runs.manifest_digest(b'{} ') != prior_runs.manifest_digest(b'{}')


def test_decide_reads_the_units_summary(store):
  prefix, storage = store
  unit = prefix + '/bp-d/'
  digest = prior_runs.manifest_digest(b'manifest-1')
  claim = claims.claim_uri(unit)
  assert claims.try_claim(claim, 'me', stale_after_s=60, storage=storage)
  decision = prior_runs.decide(unit, digest, storage)
  assert (decision.action, decision.joins) == ('join', True)  # the claim alone is no output
  _put(storage, unit + 'records/part-x.avro', b'x')
  assert prior_runs.decide(unit, digest, storage).action == 'redo'  # files, no summary
  good = {'ok': True, 'identity': {'holds': True}, prior_runs.SUMMARY_KEY: digest}
  _put(storage, unit + 'summary.json', json.dumps(good).encode())
  decision = prior_runs.decide(unit, digest, storage)
  assert (decision.action, decision.joins) == ('skip', False)
  changed = prior_runs.decide(unit, prior_runs.manifest_digest(b'manifest-2'), storage)
  assert changed.action == 'changed' and changed.previous_digest == digest
  assert digest in changed.reason
  _put(storage, unit + 'summary.json', json.dumps({**good, 'ok': False}).encode())
  assert prior_runs.decide(unit, digest, storage).action == 'redo'
  _put(storage, unit + 'summary.json', b'{"ok": tr')
  assert prior_runs.decide(unit, digest, storage).action == 'redo'


@pytest.mark.parametrize('summary, action', [
    ({'ok': True, 'identity': {'holds': True}}, 'redo'),  # no digest recorded
    ({'ok': True, 'identity': {'holds': False}, 'manifest_sha256': 'sha256:a'}, 'redo'),
    ({'ok': True, 'identity': {'holds': True}, 'manifest_sha256': 'sha256:a',
      'bigquery': {'published': False}}, 'redo'),
    ({'ok': True, 'identity': {'holds': True}, 'manifest_sha256': 'sha256:a',
      'bigquery': {'published': True}}, 'skip'),
    ({'ok': True, 'identity': {'holds': True}, 'manifest_sha256': 'sha256:b'}, 'changed'),
    ([], 'redo'),
])
def test_judge(summary, action):
  assert prior_runs.judge(summary, 'sha256:a').action == action


def test_the_stores_answer_preconditions_as_s3_and_gcs_do(moto, gcs):
  """moto's S3 server honours If-None-Match and If-Match itself; gcp-storage-emulator ignores
  ifGenerationMatch, and the fixture (``s3_fixtures.honour_generation_preconditions``) makes it
  answer as GCS does. Without that, the GCS tests above would prove nothing."""
  from botocore.exceptions import ClientError
  from google.api_core.exceptions import PreconditionFailed
  s3 = moto.client
  first = s3.put_object(Bucket='claims-bucket', Key='pre/k', Body=b'1', IfNoneMatch='*')
  with pytest.raises(ClientError, match='PreconditionFailed'):
    s3.put_object(Bucket='claims-bucket', Key='pre/k', Body=b'2', IfNoneMatch='*')
  s3.put_object(Bucket='claims-bucket', Key='pre/k', Body=b'3', IfMatch=first['ETag'])
  with pytest.raises(ClientError, match='PreconditionFailed'):
    s3.put_object(Bucket='claims-bucket', Key='pre/k', Body=b'4', IfMatch=first['ETag'])
  with pytest.raises(ClientError, match='PreconditionFailed'):
    s3.delete_object(Bucket='claims-bucket', Key='pre/k', IfMatch=first['ETag'])
  bucket = gcs.client().bucket('claims-bucket')
  blob = bucket.blob('pre/k')
  blob.upload_from_string(b'1', if_generation_match=0)
  generation = blob.generation
  with pytest.raises(PreconditionFailed):
    bucket.blob('pre/k').upload_from_string(b'2', if_generation_match=0)
  bucket.blob('pre/k').upload_from_string(b'3', if_generation_match=generation)
  with pytest.raises(PreconditionFailed):
    bucket.blob('pre/k').upload_from_string(b'4', if_generation_match=generation)
  with pytest.raises(PreconditionFailed):
    bucket.blob('pre/k').delete(if_generation_match=generation)
  assert bucket.blob('pre/k').download_as_bytes() == b'3'
