"""Access limits: which URIs a manifest may name (pure), and that a refused manifest reads nothing.

Levels: ``transforms.access`` as pure functions; ``make_plan`` and ``ReadManifestFn`` with a
storage that records every open; the CLI (local paths here, S3 in test_storage.py), which must
exit 2 with a clear message before any shard is read or any output written.
"""

import json
import os

import pytest

from pipelines.job import run
from transforms.aml.manifest import Shard, parse_rebase_rules
from transforms.io.access import AccessError, AccessPolicy, Location, check_given, locate
from transforms.io.storage import Storage, StorageConfig
from transforms.join.plan import make_plan
from transforms.report.run_summary import ShardOutcome
from transforms.steps import ReadManifestFn

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLES = os.path.join(ROOT, 'samples')


def _shard(manifest, input_uri, result_uri):
  return Shard('bp', manifest, input_uri, result_uri)


def _refusal(manifest, uri, policy=None):
  policy = policy or AccessPolicy()
  return policy.refusal(uri, policy.allowed_for(manifest))


# Pure: locate and prefix matching ------------------------------------------------------------


def test_locate_object_stores_and_local_paths(tmp_path):
  assert locate('s3://bucket/a/b.csv') == Location('s3', 'bucket', ('a', 'b.csv'))
  assert locate('gs://bucket/a/') == Location('gs', 'bucket', ('a',))
  assert locate('s3://bucket') == Location('s3', 'bucket', ())
  assert locate('S3://bucket/k') == Location('s3', 'bucket', ('k',))
  real = os.path.realpath(str(tmp_path))
  assert locate(f'file://{tmp_path}/x/../y.csv') == locate(f'{real}/y.csv')
  assert str(locate(str(tmp_path))) == real + '/'


@pytest.mark.parametrize('uri, reason', [
    ('http://example.com/data.csv', 'scheme http://'),
    ('https://bucket.s3.amazonaws.com/k?X-Amz-Signature=abc', 'scheme https://'),
    ('ftp://host/x', 'scheme ftp://'),
    ('s3a://bucket/x', 'scheme s3a://'),
    ('hdfs://nn/x', 'scheme hdfs://'),
    ('s3://id:secret@bucket/key', 'not a plain bucket name'),
    ('s3://id:secret@127.0.0.1:9000@bucket/key', 'not a plain bucket name'),
    ('s3://bucket:443/key', 'not a plain bucket name'),
    ('s3://Bucket/key', 'not a plain bucket name'),
    ('s3:///key', 'not a plain bucket name'),
    ('s3:/bucket/key', 'expected s3://BUCKET/KEY'),
    ('s3://bucket/out/../other/key', '".." segment'),
    ('gs://bucket/./key', '".." segment'),
    ('s3://bucket/a\nb', 'control character'),
])
def test_locate_refuses(uri, reason):
  with pytest.raises(AccessError, match=reason.replace('.', r'\.').replace('?', r'\?')):
    locate(uri)


def test_refusal_messages_never_carry_secrets():
  with pytest.raises(AccessError) as e:
    locate('https://b.s3.amazonaws.com/k?X-Amz-Credential=AKIAIOSFODNN7EXAMPLE&'
           'X-Amz-Signature=0123abcd')
  assert 'AKIAIOSFODNN7EXAMPLE' not in str(e.value) and '0123abcd' not in str(e.value)
  with pytest.raises(AccessError) as e:
    locate('s3://id:topsecret@bucket/key')
  assert 'topsecret' not in str(e.value)


@pytest.mark.parametrize('uri, prefix, under', [
    ('s3://b1b/out/x.csv', 's3://b1b/out', True),
    ('s3://b1b/out/x.csv', 's3://b1b/out/', True),
    ('s3://b1b/out/x.csv', 's3://b1b/out//', True),
    ('s3://b1b/out', 's3://b1b/out/', True),
    ('s3://b1b/out-evil/x.csv', 's3://b1b/out', False),
    ('s3://b1b/outx', 's3://b1b/out', False),
    ('s3://b1b/o', 's3://b1b/out', False),
    ('s3://b1b-evil/out/x', 's3://b1b/out', False),
    ('s3://b1b/anything', 's3://b1b', True),
    ('gs://b1b/out/x', 's3://b1b/out', False),
    ('/data/out/x', '/data/out', True),
    ('/data/out-evil/x', '/data/out', False),
    ('/data/outx', '/data/out/', False),
    ('/etc/passwd', '/', True),
])
def test_prefixes_match_on_segment_boundaries(uri, prefix, under):
  assert locate(uri).is_under(locate(prefix)) is under


# Pure: the default and trusted prefixes -------------------------------------------------------


def test_object_store_default_is_the_manifest_bucket():
  manifest = 's3://bkt/out/batch-prediction/bp.manifest'
  assert _refusal(manifest, 's3://bkt/input/data.csv') is None
  assert _refusal(manifest, 's3://bkt/out/batch-prediction/result/bp-data.csv.gz') is None
  assert 'outside the allowed prefixes' in _refusal(manifest, 's3://other-bucket/data.csv')
  assert 'outside' in _refusal(manifest, 'gs://bkt/input/data.csv')
  assert 'outside' in _refusal(manifest, '/etc/passwd')
  assert 'outside' in _refusal(manifest, 'file:///etc/passwd')


def test_local_default_is_the_manifest_directory_tree(tmp_path):
  manifest = str(tmp_path / 'out' / 'bp.manifest')
  assert _refusal(manifest, str(tmp_path / 'out' / 'result' / 'r.csv.gz')) is None
  assert _refusal(manifest, f'file://{tmp_path}/out/r.csv.gz') is None
  assert 'outside' in _refusal(manifest, str(tmp_path / 'input' / 'x.csv'))
  assert 'outside' in _refusal(manifest, f'{tmp_path}/out/../input/x.csv')
  assert 'outside' in _refusal(manifest, f'{tmp_path}/out-evil/x.csv')
  assert 'outside' in _refusal(manifest, 'file:///etc/passwd')
  assert 'outside' in _refusal(manifest, 's3://bkt/x.csv')


def test_dot_dot_that_stays_inside_a_local_tree_is_resolved_not_refused(tmp_path):
  manifest = str(tmp_path / 'out' / 'bp.manifest')
  assert _refusal(manifest, f'{tmp_path}/out/result/../r.csv.gz') is None


def test_a_symlink_out_of_the_tree_is_refused(tmp_path):
  (tmp_path / 'out').mkdir()
  (tmp_path / 'secret').mkdir()
  os.symlink(tmp_path / 'secret', tmp_path / 'out' / 'link')
  manifest = str(tmp_path / 'out' / 'bp.manifest')
  assert 'outside' in _refusal(manifest, str(tmp_path / 'out' / 'link' / 'x.csv'))


def test_allowed_prefixes_and_rebase_targets_widen_the_set(tmp_path):
  manifest = 's3://bkt/out/batch-prediction/bp.manifest'
  policy = AccessPolicy.create(['s3://inputs/shared/', str(tmp_path)],
                               parse_rebase_rules(['s3://bkt/=gs://mirror/copy/']))
  assert _refusal(manifest, 's3://inputs/shared/x.csv', policy) is None
  assert 'outside' in _refusal(manifest, 's3://inputs/shared-evil/x.csv', policy)
  assert 'outside' in _refusal(manifest, 's3://inputs/x.csv', policy)
  assert _refusal(manifest, str(tmp_path / 'x.csv'), policy) is None
  assert _refusal(manifest, 'gs://mirror/copy/input/x.csv', policy) is None
  assert 'outside' in _refusal(manifest, 'gs://mirror/other/x.csv', policy)


def test_relative_local_prefixes_are_resolved_at_creation(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  policy = AccessPolicy.create(['data/'])
  monkeypatch.chdir('/')
  assert _refusal('s3://bkt/m.manifest', str(tmp_path / 'data' / 'x.csv'), policy) is None


@pytest.mark.parametrize('bad', ['http://example.com/', 's3://bkt/a/../b', 's3://u:p@bkt/'])
def test_untrustable_allowed_prefixes_are_refused_with_the_option_named(bad):
  with pytest.raises(AccessError, match='--allowed_prefix'):
    AccessPolicy.create([bad])
  with pytest.raises(AccessError, match='--rebase_uri target'):
    AccessPolicy.create([], [('s3://bkt/', bad)])


def test_check_shards_lists_the_first_refusals_and_how_to_widen():
  manifest = 's3://bkt/out/bp.manifest'
  shards = [_shard(manifest, f's3://evil/in-{i}.csv', f's3://bkt/out/r-{i}.gz')
            for i in range(5)]
  with pytest.raises(AccessError) as e:
    AccessPolicy().check_shards(manifest, shards)
  message = str(e.value)
  assert message.startswith('s3://bkt/out/bp.manifest: refused')
  assert 's3://evil/in-0.csv' in message and '(and 2 more)' in message
  assert 'Allowed prefixes: s3://bkt/' in message and '--allowed_prefix' in message
  AccessPolicy.create(['s3://evil/']).check_shards(manifest, shards)


def test_check_given_refuses_unreadable_manifest_locations():
  check_given('s3://bkt/out/bp.manifest', '--manifest')
  check_given('gs://bkt/out/*.manifest', '--manifest')
  with pytest.raises(AccessError, match='--manifest .*scheme https://'):
    check_given('https://example.com/bp.manifest', '--manifest')


def test_the_policy_pickles():
  import pickle
  policy = AccessPolicy.create(['s3://inputs/x/'], [('s3://aaa/', 'gs://bbb/c/')])
  assert pickle.loads(pickle.dumps(policy)) == policy


# make_plan and ReadManifestFn read nothing a refused manifest names ---------------------------


class RecordingStorage(Storage):
  """A local Storage that records every URI it opens."""

  def __init__(self):
    super().__init__(StorageConfig())
    self.opened = []

  def open(self, uri, *args, **kwargs):
    self.opened.append(uri)
    return super().open(uri, *args, **kwargs)


def _write(path, text):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, 'w') as f:
    f.write(text)
  return str(path)


def _manifest(tmp_path, pairs, name='bp-evil'):
  return _write(str(tmp_path / 'out' / 'batch-prediction' / f'{name}.manifest'),
                json.dumps(pairs))


def _inside_shard(tmp_path):
  """An input and result inside the manifest's tree (readable, would be sampled first)."""
  result = tmp_path / 'out' / 'batch-prediction' / 'result' / 'bp-ok.csv.gz'
  os.makedirs(result.parent, exist_ok=True)
  import gzip
  result.write_bytes(gzip.compress(b'bestAnswer,score\n1,0.9\n'))
  data = _write(str(tmp_path / 'out' / 'batch-prediction' / 'in' / 'ok.csv'), 'a,b\n1,2\n')
  return data, str(result)


REFUSED_CASES = {
    'other_tree': lambda tmp: f'{tmp}/elsewhere/data.csv',
    'etc_passwd': lambda tmp: 'file:///etc/passwd',
    'dot_dot': lambda tmp: f'{tmp}/out/batch-prediction/../../elsewhere/data.csv',
    'http': lambda tmp: 'http://127.0.0.1:9/data.csv',
    'other_bucket': lambda tmp: 's3://another-bucket/data.csv',
}


@pytest.mark.parametrize('case', sorted(REFUSED_CASES))
def test_make_plan_refuses_before_reading_any_shard(tmp_path, case):
  _write(str(tmp_path / 'elsewhere' / 'data.csv'), 'secret\n')
  good_input, good_result = _inside_shard(tmp_path)
  # The refused pair comes second: the plan would sample the good first shard if it read any.
  manifest = _manifest(tmp_path, {good_input: good_result,
                                  REFUSED_CASES[case](tmp_path): good_result})
  storage = RecordingStorage()
  with pytest.raises(AccessError, match='refused'):
    make_plan([manifest], storage)
  assert storage.opened == [manifest]


def test_make_plan_checks_every_manifest_before_reading_a_shard(tmp_path):
  good_input, good_result = _inside_shard(tmp_path)
  good = _manifest(tmp_path, {good_input: good_result}, 'bp-good')
  evil = _manifest(tmp_path, {'/etc/passwd': good_result}, 'bp-evil')
  storage = RecordingStorage()
  with pytest.raises(AccessError, match='bp-evil.manifest: refused'):
    make_plan([good, evil], storage)
  assert storage.opened == [good, evil]


def test_read_manifest_fn_reports_a_refused_manifest_and_emits_no_shard(tmp_path):
  good_input, good_result = _inside_shard(tmp_path)
  manifest = _manifest(tmp_path, {good_input: good_result, 'file:///etc/passwd': good_result})
  fn = ReadManifestFn(StorageConfig(), [], AccessPolicy())
  fn.setup()
  fn._storage = RecordingStorage()
  out = list(fn.process(manifest))
  assert len(out) == 1 and isinstance(out[0], ShardOutcome)  # the manifest's, no shard
  report = out[0].report
  assert report.status == 'error' and report.input_uri is None
  assert 'refused' in report.error and '/etc/passwd' in report.error
  assert fn._storage.opened == [manifest]


def test_read_manifest_fn_enforces_the_default_policy_when_given_none(tmp_path):
  good_input, good_result = _inside_shard(tmp_path)
  manifest = _manifest(tmp_path, {'/etc/passwd': good_result})
  fn = ReadManifestFn(StorageConfig())
  fn.setup()
  out = list(fn.process(manifest))
  assert len(out) == 1 and out[0].report.status == 'error' and 'refused' in out[0].report.error


def test_read_manifest_fn_passes_shards_under_the_allowed_prefixes(tmp_path):
  good_input, good_result = _inside_shard(tmp_path)
  elsewhere = _write(str(tmp_path / 'elsewhere' / 'data.csv'), 'a,b\n1,2\n')
  manifest = _manifest(tmp_path, {good_input: good_result, elsewhere: good_result})
  fn = ReadManifestFn(StorageConfig(), [], AccessPolicy.create([str(tmp_path / 'elsewhere')]))
  fn.setup()
  shards = list(fn.process(manifest))
  assert [s.input_uri for s in shards] == [good_input, elsewhere]


# The CLI --------------------------------------------------------------------------------------


@pytest.mark.parametrize('case', sorted(REFUSED_CASES))
def test_cli_refuses_with_exit_2_and_writes_nothing(tmp_path, capsys, case):
  good_input, good_result = _inside_shard(tmp_path)
  manifest = _manifest(tmp_path, {good_input: good_result,
                                  REFUSED_CASES[case](tmp_path): good_result})
  out = tmp_path / 'output'
  assert run(['--manifest', manifest, '--output', str(out)]) == 2
  err = capsys.readouterr().err
  assert err.startswith('predjoin: error: ') and 'refused to read what the manifest names' in err
  assert '--allowed_prefix' in err
  assert not out.exists()


def test_cli_allowed_prefix_lets_a_trusted_manifest_run(tmp_path):
  import gzip
  inputs = _write(str(tmp_path / 'input' / 'data.csv'), 'id,v\n1,a\n2,b\n')
  result = tmp_path / 'out' / 'batch-prediction' / 'result' / 'bp-data.csv.gz'
  os.makedirs(result.parent)
  result.write_bytes(gzip.compress(b'bestAnswer,score\n1,0.9\n0,0.1\n'))
  manifest = _manifest(tmp_path, {inputs: str(result)}, 'bp-data')
  out = str(tmp_path / 'output')
  assert run(['--manifest', manifest, '--output', out]) == 2
  assert run(['--manifest', manifest, '--output', out, '--format', 'jsonl',
              '--allowed_prefix', str(tmp_path / 'input')]) == 0
  with open(os.path.join(out, 'summary.json')) as f:
    assert json.load(f)['totals']['joined_rows'] == 2


def test_cli_refuses_an_http_manifest_and_a_bad_allowed_prefix(tmp_path, capsys):
  out = tmp_path / 'output'
  assert run(['--manifest', 'http://127.0.0.1:9/bp.manifest', '--output', str(out)]) == 2
  assert '--manifest http://127.0.0.1:9/bp.manifest: the scheme http://' in capsys.readouterr().err
  manifest = os.path.join(SAMPLES, 'output', 'batch-prediction', 'bp-sample-binary.manifest')
  assert run(['--manifest', manifest, '--output', str(out),
              '--allowed_prefix', 'https://example.com/?sig=s3cr3t']) == 2
  err = capsys.readouterr().err
  assert '--allowed_prefix' in err and 's3cr3t' not in err
  assert not out.exists()


def test_cli_samples_run_through_their_rebase_target(tmp_path):
  manifest = os.path.join(SAMPLES, 'output', 'batch-prediction', 'bp-sample-regression.manifest')
  out = str(tmp_path / 'output')
  # Without the rebase the manifest names s3://predjoin-samples/, another place than its own
  # directory: refused. The rebase target is the user's word, so it is trusted.
  assert run(['--manifest', manifest, '--output', out]) == 2
  assert run(['--manifest', manifest, '--output', out, '--format', 'jsonl',
              '--rebase_uri', f's3://predjoin-samples/={SAMPLES}/']) == 0
