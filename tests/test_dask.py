"""The whole job on a real dask.distributed cluster, through Beam's DaskRunner.

The cluster is started here as a user starts one: ``dask scheduler`` and ``dask worker`` (two
worker processes, one thread each) as subprocesses on 127.0.0.1, with the fake AWS environment
of ``tests/s3_fixtures.py`` and nothing else from the developer's. ``predjoin --runner
DaskRunner --dask_client_address <scheduler>`` runs as a subprocess, so the records are pickled,
joined and written by other processes than the launcher; the outputs are read back (fastavro,
pyarrow) and compared by value with the same job's DirectRunner output, locally and through
moto's S3 server. Nothing here reaches anything but loopback.
"""

import json
import os
import subprocess
import sys
import uuid

import pytest

from benchmarks.same_output import differences
from pipelines import job
from pipelines.options import UsageError, check_arguments
from pipelines.runners import asks_for_dask, is_dask, launcher_judges
from tests import s3_fixtures as fx
from tests.builders import read_dead_letters, read_records, read_summary, write_bp
from tests.test_storage import (
  MANIFEST_KEY,
  SAMPLE_BUCKET,
  SAMPLES,
  assert_same_output,
  local_reference,
)

distributed = pytest.importorskip('distributed')  # the dask extra; make test installs it

DASK = ['--runner', 'DaskRunner']
NO_COUNTERS = 'predjoin: Beam counters are not available on this runner'


class DaskCluster:
  """``dask scheduler`` and ``dask worker --nworkers 2`` on 127.0.0.1, started with ``env``."""

  def __init__(self, tmp_dir: str, env: dict):
    self.scheduler_file = os.path.join(tmp_dir, 'scheduler.json')
    self.procs = []
    common = ['--no-dashboard', '--host', '127.0.0.1']
    self._start(['scheduler', '--scheduler-file', self.scheduler_file, '--port', '0', *common],
                env, tmp_dir, 'scheduler')
    self._start(['worker', '--scheduler-file', self.scheduler_file, '--nworkers', '2',
                 '--nthreads', '1', '--local-directory', tmp_dir, *common], env, tmp_dir,
                'worker')
    self.client = distributed.Client(scheduler_file=self._wait_for_file(), timeout=60)
    self.client.wait_for_workers(2, timeout=120)
    self.address = self.client.scheduler.address

  def _start(self, args, env, tmp_dir, name):
    log = open(os.path.join(tmp_dir, f'{name}.log'), 'wb')
    self.procs.append(subprocess.Popen([sys.executable, '-m', 'dask', *args], cwd=fx.ROOT,
                                       env=env, stdout=log, stderr=subprocess.STDOUT))

  def _wait_for_file(self) -> str:
    import time
    deadline = time.monotonic() + 60
    while not os.path.exists(self.scheduler_file):
      assert time.monotonic() < deadline, 'the Dask scheduler did not start'
      assert self.procs[0].poll() is None, 'the Dask scheduler exited'
      time.sleep(0.1)
    return self.scheduler_file

  def tasks_run(self) -> dict[str, int]:
    """Tasks each worker process has run so far, by worker address."""
    return self.client.run(lambda dask_worker: dask_worker.state.executed_count)

  def stop(self):
    self.client.close()
    for proc in reversed(self.procs):
      proc.terminate()
    for proc in self.procs:
      try:
        proc.wait(timeout=30)
      except subprocess.TimeoutExpired:
        proc.kill()


s3 = pytest.fixture(scope='module', name='s3')(fx.samples_s3)


@pytest.fixture(scope='module')
def cluster(tmp_path_factory):
  cluster = DaskCluster(str(tmp_path_factory.mktemp('dask')), fx.aws_env())
  yield cluster
  cluster.stop()


def _sample(bp: str) -> list[str]:
  return ['--manifest', os.path.join(SAMPLES, MANIFEST_KEY.format(bp=bp)),
          '--rebase_uri', f's3://{SAMPLE_BUCKET}/={SAMPLES}/']


def _run_on(cluster, args: list[str]) -> subprocess.CompletedProcess:
  return fx.run_cli([*args, *DASK, '--dask_client_address', cluster.address], fx.aws_env())


def _errors(stderr: str) -> list[str]:
  """stderr's lines but the one that says the Beam counters were not available."""
  return [line for line in stderr.splitlines() if line and not line.startswith(NO_COUNTERS)]


# The runner by name, its options, what it refuses ---------------------------------------------


@pytest.mark.parametrize('name', ['DaskRunner', 'daskrunner', 'dask',
                                  'apache_beam.runners.dask.dask_runner.DaskRunner'])
def test_dask_runner_names_are_dask_and_judged_by_the_launcher(name):
  assert is_dask(name) and launcher_judges(name)
  assert asks_for_dask(['--output', 'o', '--runner', name])
  assert asks_for_dask([f'--runner={name}'])


def test_other_runners_are_not_dask():
  assert not any(is_dask(n) for n in (None, 'DirectRunner', 'DataflowRunner', 'MyDaskRunner'))
  assert not launcher_judges('DataflowRunner')
  assert not asks_for_dask(['--runner', 'DirectRunner', '--output', 'dask'])
  assert asks_for_dask(['--dask_client_address', '127.0.0.1:8786'])


def test_dask_options_are_known_and_pass_through_to_the_runner():
  check_arguments([*DASK, '--dask_client_address', 'tcp://127.0.0.1:8786',
                   '--dask_connection_timeout', '5', '--dask_npartitions', '4'])
  options = job.Options(['--output', 'o', *DASK, '--dask_client_address', 'tcp://h:8786'])
  from apache_beam.runners.dask.dask_runner import DaskOptions, DaskRunner
  assert options.view_as(DaskOptions).address == 'tcp://h:8786'
  assert isinstance(job.dask_runner(options), DaskRunner)
  assert job.dask_runner(job.Options(['--output', 'o'])) is None
  with pytest.raises(UsageError, match='--dask_client_address'):
    check_arguments([*DASK, '--dask_client_adress', 'h:1'])


def _cli(args: list[str], code: str = '') -> subprocess.CompletedProcess:
  """``predjoin ARGS`` in a fresh interpreter, after ``code``."""
  script = f'import sys\n{code}\nfrom pipelines.cli import main\nmain(sys.argv[1:])'
  return subprocess.run([sys.executable, '-c', script, *args], cwd=fx.ROOT, env=fx.aws_env(),
                        capture_output=True, text=True, timeout=120)


def test_help_shows_the_dask_runner_and_its_options():
  beam_help = _cli(['--help-beam'])
  assert beam_help.returncode == 0
  assert 'DaskOptions' in beam_help.stdout and '--dask_client_address' in beam_help.stdout
  own = _cli(['--help'])
  assert '--runner DaskRunner --dask_client_address' in ' '.join(own.stdout.split())


# Without Dask installed: sys.modules[name] = None makes both the import and find_spec fail.
WITHOUT_DASK = "sys.modules['dask'] = sys.modules['distributed'] = None"


def test_without_dask_the_dask_runner_is_a_usage_error_and_help_says_what_to_install(tmp_path):
  result = _cli([*_sample('bp-sample-binary'), '--output', str(tmp_path), *DASK], WITHOUT_DASK)
  assert result.returncode == 2
  assert result.stderr.strip().splitlines() == [
      'predjoin: error: the DaskRunner and its --dask_* options need Dask: pip install '
      '"predjoin[dask]"']
  beam_help = _cli(['--help-beam'], WITHOUT_DASK)
  assert beam_help.returncode == 0 and 'pip install "predjoin[dask]"' in beam_help.stdout
  assert not os.listdir(tmp_path)


def test_a_direct_runner_run_does_not_import_dask(tmp_path):
  code = ('from pipelines.job import run\n'
          f'code = run({[*_sample("bp-sample-binary"), "--output", str(tmp_path)]!r})\n'
          "print('dask imported' if 'dask' in sys.modules else 'no dask', code)\nsys.exit(0)")
  result = subprocess.run([sys.executable, '-c', 'import sys\n' + code], cwd=fx.ROOT,
                          env=fx.aws_env(), capture_output=True, text=True, timeout=120)
  assert result.stdout.splitlines()[-1] == 'no dask 0', result.stderr


@pytest.mark.parametrize('extra, refused', [
    (['--format', 'bigquery', '--bigquery_table', 'demo-project:warehouse.predictions'], '--format bigquery'),
    (['--data_rearrangement', '{"splitting":{"percentBegin":0,"percentEnd":50}}'],
     '--data_rearrangement'),
])
def test_what_the_dask_runner_cannot_run_is_refused_at_launch(tmp_path, extra, refused):
  out = tmp_path / 'out'
  result = _cli([*_sample('bp-sample-binary'), '--output', str(out), *DASK, *extra])
  assert result.returncode == 2, result.stderr
  (line,) = result.stderr.strip().splitlines()
  assert line.startswith(f'predjoin: error: {refused} does not run on the DaskRunner')
  assert not out.exists()


# The whole job on the cluster -------------------------------------------------------------------


@pytest.mark.parametrize('bp, fmt', [('bp-sample-binary', 'avro'),
                                     ('bp-sample-multiclass', 'parquet'),
                                     ('bp-sample-regression', 'jsonl')])
def test_the_job_on_a_dask_cluster_writes_what_the_direct_runner_writes(cluster, tmp_path,
                                                                          tmp_path_factory, bp,
                                                                          fmt):
  direct = local_reference(bp, fmt, tmp_path_factory)  # itself checked against the oracle
  before = cluster.tasks_run()
  out = str(tmp_path / 'dask')
  result = _run_on(cluster, [*_sample(bp), '--output', out, '--format', fmt])
  assert result.returncode == 0, result.stderr
  assert 'Traceback' not in result.stderr
  assert result.stderr.count(NO_COUNTERS) == 1 and not _errors(result.stderr)
  assert f'summary: {out}/summary.json' in result.stdout
  # The join ran in the cluster's worker processes, not in the launcher.
  after = cluster.tasks_run()
  assert sum(after.values()) > sum(before.values())
  assert read_records(out), 'no records'
  assert differences(direct, out) == []


def test_a_sagemaker_job_on_a_dask_cluster_writes_what_the_direct_runner_writes(cluster,
                                                                                 tmp_path):
  """A transform job's shards are listed at launch: --dask_npartitions cuts them into that many
  partitions. One of its inputs failed in the job: its rows are dead letters on both runners."""
  args = ['--transform_job', os.path.join(SAMPLES, 'sagemaker', 'bt-sample-species.json'),
          '--model_type', 'multiclass', '--class_labels', 'setosa,versicolor,virginica',
          '--max_bad_shards', '1', '--rebase_uri', f's3://{SAMPLE_BUCKET}/={SAMPLES}/',
          '--format', 'parquet']
  direct = str(tmp_path / 'direct')
  assert job.run([*args, '--output', direct]) == 0
  out = str(tmp_path / 'dask')
  result = _run_on(cluster, [*args, '--output', out, '--dask_npartitions', '3'])
  assert result.returncode == 0, result.stderr
  assert not _errors(result.stderr), result.stderr
  assert read_records(out) and read_dead_letters(out)
  assert differences(direct, out) == []


def test_the_command_of_the_full_runner_path_starts_a_local_cluster(tmp_path, tmp_path_factory):
  """Without --dask_client_address, Beam's DaskRunner starts a local cluster of its own."""
  direct = local_reference('bp-sample-binary', 'jsonl', tmp_path_factory)
  out = str(tmp_path / 'dask')
  result = fx.run_cli([*_sample('bp-sample-binary'), '--output', out, '--format', 'jsonl',
                       '--runner', 'apache_beam.runners.dask.dask_runner.DaskRunner'],
                      fx.aws_env())
  assert result.returncode == 0, result.stderr
  # Dask's own warnings may show (another cluster's dashboard on its port): none of predjoin's.
  assert 'Traceback' not in result.stderr
  assert not [line for line in _errors(result.stderr) if line.startswith('predjoin')]
  assert 'rows in 30, joined 26, failed 4, dead-lettered 0; shards 3 (0 bad)' in result.stdout
  assert differences(direct, out) == []


def test_the_job_on_a_dask_cluster_reads_and_writes_s3(cluster, s3, tmp_path, tmp_path_factory):
  """The workers reach moto through the options the job carries, with the credentials of their
  own environment (the cluster's); the launcher's are the same fake ones."""
  bucket = s3.make_bucket(f'out-{uuid.uuid4().hex[:12]}')
  manifest = f's3://{SAMPLE_BUCKET}/' + MANIFEST_KEY.format(bp='bp-sample-multiclass')
  result = _run_on(cluster, ['--manifest', manifest, '--output', f's3://{bucket}/enriched/',
                             '--format', 'parquet', *fx.s3_args(s3.endpoint)])
  assert result.returncode == 0, result.stderr
  assert not _errors(result.stderr), result.stderr
  local = local_reference('bp-sample-multiclass', 'parquet', tmp_path_factory)
  summary = assert_same_output(s3, bucket, 'enriched/', local, tmp_path)
  assert summary['totals']['input_rows'] == 22
  assert not [k for k in s3.keys(bucket) if 'beam-temp' in k]


def _with_a_bad_shard(root) -> list[str]:
  """A batch prediction whose second shard's result is a line short: the arguments to read it."""
  good = (['r1,a,1', 'r2,b,2'], ['1,0.9', '0,0.1'])
  short = (['r3,c,3', 'r4,d,4', 'r5,e,5'], ['1,0.8', '0,0.2'])
  return ['--manifest', write_bp(root, 'bp-bad', [good, short]), '--allowed_prefix', f'{root}/']


def test_a_bad_shard_on_dask_fails_the_run_in_one_line_after_the_summary(cluster, tmp_path):
  out = str(tmp_path / 'out')
  result = _run_on(cluster, [*_with_a_bad_shard(tmp_path / 'data'), '--output', out,
                             '--format', 'jsonl'])
  assert result.returncode == 1
  assert 'Traceback' not in result.stderr
  assert _errors(result.stderr) == ['predjoin: 1 bad shard(s) or manifest(s), --max_bad_shards 0']
  assert 'part-2.csv: row_count_mismatch' in result.stdout
  summary = read_summary(out)
  assert not summary['ok'] and summary['totals']['bad_shards'] == 1
  assert len(read_records(out)) == 2  # the good shard's rows


def test_a_dask_job_that_fails_itself_on_bad_shards_is_judged_the_same(cluster, tmp_path,
                                                                         monkeypatch, capsys):
  """Were the job to fail itself on its bad shards (as where no launcher waits for it), the
  launcher still prints the summary and one line, and exits 1."""
  args = [*_with_a_bad_shard(tmp_path / 'data'), '--format', 'jsonl', *DASK,
          '--dask_client_address', cluster.address]
  assert job.run([*args, '--output', str(tmp_path / 'first')]) == 1
  judged = capsys.readouterr()
  monkeypatch.setattr(job, 'launcher_judges', lambda runner: False)
  assert job.run([*args, '--output', str(tmp_path / 'second')]) == 1
  failed = capsys.readouterr()
  assert failed.out.replace('second', 'first') == judged.out
  assert _errors(failed.err) == _errors(judged.err) == [
      'predjoin: 1 bad shard(s) or manifest(s), --max_bad_shards 0']
  assert NO_COUNTERS in failed.err and 'Traceback' not in failed.err
  assert json.loads((tmp_path / 'second' / 'summary.json').read_text())['ok'] is False
