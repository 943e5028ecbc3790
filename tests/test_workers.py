"""Local multi-processing SDK workers: warm (forked, or started early) and ended promptly.

Real FnApiRunner jobs in multi-processing mode; the workers are real processes, checked with
their pids and exit.
"""

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline

from pipelines.job import local_runner
from pipelines.localrun import runner, workers
from pipelines.localrun.handover import GRPC_VERBOSITY_ENV

MP2 = ['--direct_num_workers=2', '--direct_running_mode=multi_processing']


class _WorkerIdentity(beam.DoFn):
  def process(self, element):
    spec = getattr(sys.modules['__main__'], '__spec__', None)
    yield (element, getattr(spec, 'name', None), os.getpid(),
           os.environ.get(workers.WARM_MARK_ENV))


def _identities(tmp_path, argv=MP2):
  """Runs a 2-worker job; returns [(element, worker main module, worker pid, warm mark)]."""
  out = tmp_path / 'seen.jsonl'
  options = PipelineOptions(argv)
  with TestPipeline(runner=local_runner(options, runner.LocalRunner), options=options) as p:
    _ = (p | beam.Create(list(range(8))) | beam.Reshuffle() | beam.ParDo(_WorkerIdentity())
         | beam.Map(json.dumps) | beam.io.WriteToText(str(out), shard_name_template=''))
  return [tuple(json.loads(line)) for line in out.read_text().splitlines()]


def _alive(pid):
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  try:  # a zombie (exited, not yet reaped) counts as gone
    with open(f'/proc/{pid}/stat') as f:
      return f.read().split(')')[-1].split()[0] != 'Z'
  except FileNotFoundError:
    return False


def _wait_gone(pids, seconds=30):
  deadline = time.monotonic() + seconds
  while time.monotonic() < deadline and any(_alive(p) for p in pids):
    time.sleep(0.1)
  return [p for p in pids if _alive(p)]


@pytest.mark.parametrize('argv, count', [
    (MP2, 2),
    (['--direct_running_mode', 'multi_processing'], 1),  # Beam's default: one worker
    (['--direct_running_mode=multi_processing', '--direct_num_workers=0'], os.cpu_count()),
    (['--direct_running_mode=multi_threading', '--direct_num_workers=2'], 0),
    (['--direct_num_workers=2'], 0),  # in-memory
    (['--runner', 'DataflowRunner', *MP2], 0),
    (['--runner=DirectRunner', *MP2, '--manifest', 'x'], 2),
    (['--direct_running_mode=multi_processing', '--direct_num_workers=two'], 0),
])
def test_which_runs_get_warm_workers(argv, count):
  assert workers.local_workers(argv) == count


def test_runner_uses_the_warm_workers_then_they_exit(tmp_path):
  pool = workers.prewarm(MP2)
  try:
    seen = _identities(tmp_path)
  finally:
    pool.close()
  warm_pids = {p.pid for p in pool.processes}
  assert sorted(e for e, *_ in seen) == list(range(8))
  assert {module for _, module, _, _ in seen} == {'pipelines.localrun.workers'}
  assert {mark for *_, mark in seen} == {'1'}
  assert {pid for _, _, pid, _ in seen} <= warm_pids
  assert all(p.returncode == 0 for p in pool.processes)
  assert not os.path.exists(pool.dir) and workers.WARM_DIR_ENV not in os.environ


def test_without_warm_workers_the_command_runs_the_harness_itself(tmp_path):
  seen = _identities(tmp_path)
  assert {module for _, module, _, _ in seen} == {'pipelines.localrun.workers'}
  assert {mark for *_, mark in seen} == {None}
  assert os.getpid() not in {pid for _, _, pid, _ in seen}


def test_a_warm_worker_that_died_is_skipped(tmp_path, monkeypatch):
  # A warm worker that died while starting: the worker commands stop waiting and run cold.
  directory = tmp_path / 'warm'
  directory.mkdir()
  dead = subprocess.run([sys.executable, '-c', 'import os; print(os.getpid())'],
                        capture_output=True, text=True, check=True).stdout.strip()
  (directory / '0.pending').write_text(dead)
  monkeypatch.setenv(workers.WARM_DIR_ENV, str(directory))
  seen = _identities(tmp_path)
  assert sorted(e for e, *_ in seen) == list(range(8))
  assert {mark for *_, mark in seen} == {None}


def test_unclaimed_warm_workers_are_stopped_by_close():
  pool = workers.prewarm(MP2)
  pids = [p.pid for p in pool.processes]
  assert all(_alive(p) for p in pids)
  pool.close()
  assert _wait_gone(pids, 10) == []
  assert not os.path.exists(pool.dir)


def test_warm_workers_stop_when_the_launcher_dies(tmp_path):
  launcher = ('import sys; from pipelines.localrun import workers; pool = workers.prewarm(sys.argv[1:]); '
              'print(*[p.pid for p in pool.processes], flush=True); import os; os._exit(3)')
  with open(tmp_path / 'pids', 'w+') as out:  # not a pipe: the workers inherit the launcher's
    done = subprocess.run([sys.executable, '-c', launcher, *MP2], stdout=out, timeout=60)
    out.seek(0)
    pids = [int(p) for p in out.read().split()]
  assert done.returncode == 3
  assert len(pids) == 2
  assert _wait_gone(pids, 60) == []


def test_no_writable_temporary_directory_means_no_warm_workers(tmp_path, monkeypatch):
  # The run then starts its workers the usual way.
  monkeypatch.setattr(workers.tempfile, 'tempdir', str(tmp_path / 'missing'))
  assert workers.prewarm(MP2) is None
  monkeypatch.undo()
  assert workers.WARM_DIR_ENV not in os.environ
  seen = _identities(tmp_path)
  assert sorted(e for e, *_ in seen) == list(range(8)) and {m for *_, m in seen} == {None}


# Forked warm workers (what the predjoin command does on Linux). Forking is only safe from a
# process that has started no thread, so these run their launcher in a fresh interpreter.
FORK_LAUNCHER = '''
import json, os, sys, pathlib
from pipelines.localrun import workers  # standard library only: nothing started yet
def warm_up():  # runs in each forked worker, before it waits for a claim
  with open(os.path.join(sys.argv[1], 'warmed-%%d' %% os.getpid()), 'w'):
    pass
pool = workers.prewarm(%(argv)r, fork=True, warm_up=warm_up)
assert all(type(p).__name__ == '_Forked' for p in pool.processes), pool.processes
out = {'warm': [p.pid for p in pool.processes], 'launcher': os.getpid()}
if %(run)r:
  from tests.test_workers import _identities
  out['seen'] = _identities(pathlib.Path(sys.argv[1]))
alive = [p.pid for p in pool.processes if p.poll() is None]
pool.close()
out.update(alive_before_close=alive, codes=[p.returncode for p in pool.processes],
           dir_left=os.path.exists(pool.dir))
print(json.dumps(out), flush=True)
'''


def _fork_launcher(tmp_path, run=True, argv=MP2):
  done = subprocess.run([sys.executable, '-c', FORK_LAUNCHER % {'argv': argv, 'run': run},
                         str(tmp_path)], capture_output=True, text=True, timeout=300,
                        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  assert done.returncode == 0, done.stderr
  return json.loads(done.stdout.splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='workers are forked on Linux')
def test_forked_warm_workers_run_the_job_then_exit(tmp_path):
  out = _fork_launcher(tmp_path)
  seen = out['seen']
  assert sorted(e for e, *_ in seen) == list(range(8))
  assert {mark for *_, mark in seen} == {'1'}
  assert {pid for _, _, pid, _ in seen} <= set(out['warm'])
  assert out['launcher'] not in {pid for _, _, pid, _ in seen}
  assert out['codes'] == [0, 0] and not out['dir_left']
  assert sorted(int(p.name.split('-')[1]) for p in tmp_path.glob('warmed-*')) == sorted(out['warm'])


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='workers are forked on Linux')
def test_unclaimed_forked_workers_are_stopped_by_close(tmp_path):
  out = _fork_launcher(tmp_path, run=False)
  assert sorted(out['alive_before_close']) == sorted(out['warm']) and len(out['warm']) == 2
  assert all(code != 0 for code in out['codes'])  # terminated, and reaped by close
  assert _wait_gone(out['warm'], 10) == [] and not out['dir_left']


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='workers are forked on Linux')
def test_forked_workers_stop_when_the_launcher_dies(tmp_path):
  launcher = ('import sys; from pipelines.localrun import workers; '
              'pool = workers.prewarm(sys.argv[1:], fork=True); '
              'print(*[p.pid for p in pool.processes], flush=True); import os; os._exit(3)')
  with open(tmp_path / 'pids', 'w+') as out:
    done = subprocess.run([sys.executable, '-c', launcher, *MP2], stdout=out, timeout=60)
    out.seek(0)
    pids = [int(p) for p in out.read().split()]
  assert done.returncode == 3 and len(pids) == 2
  assert _wait_gone(pids, 60) == []


def test_no_fork_once_another_thread_runs():
  # A forked child keeps only the forking thread; locks the others held would stay locked.
  import threading
  stop = threading.Event()
  thread = threading.Thread(target=stop.wait)
  thread.start()
  try:
    assert not workers.can_fork()
    pool = workers.prewarm(MP2, fork=True)  # falls back to new interpreters
    try:
      assert all(isinstance(p, subprocess.Popen) for p in pool.processes)
    finally:
      pool.close()
  finally:
    stop.set()
    thread.join()


def test_the_harness_import_leaves_its_objects_to_no_garbage_collection():
  code = ('import gc; from pipelines.localrun import workers; workers.import_harness(); '
          'print(gc.get_freeze_count())')
  done = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                        timeout=120, check=True)
  assert int(done.stdout) > 50_000  # Beam's modules, classes and descriptors


def test_the_harness_import_runs_without_collections_and_leaves_the_collector_as_it_was():
  # The import creates no garbage worth a collection: none runs during it (each would walk
  # every object made so far), and the collector is back on afterwards (or stays off).
  code = ('import gc, sys; from pipelines.localrun import workers\n'
          'runs = []\n'
          'gc.callbacks.append(lambda phase, info: runs.append(phase))\n'
          'if sys.argv[1] == "off": gc.disable()\n'
          'workers.import_harness()\n'
          'print(len(runs), gc.isenabled(), gc.get_freeze_count() > 50_000)')
  for state, expected in (('on', '0 True True'), ('off', '0 False True')):
    done = subprocess.run([sys.executable, '-c', code, state], capture_output=True, text=True,
                          timeout=120, check=True)
    assert done.stdout.split() == expected.split(), state


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='workers are forked on Linux')
def test_ctrl_c_ends_forked_workers_quietly():
  # Ctrl-C interrupts the whole process group: the warm workers end without a traceback each
  # (the launcher reports the interrupt), and they never held the terminal's input.
  launcher = ('import sys, time; from pipelines.localrun import workers\n'
              'pool = workers.prewarm(sys.argv[1:], fork=True)\n'
              'print(*[p.pid for p in pool.processes], flush=True)\n'
              'try:\n  time.sleep(120)\n'
              'except KeyboardInterrupt:\n'
              '  time.sleep(2); print("interrupted", flush=True); pool.close()\n')
  process = subprocess.Popen([sys.executable, '-c', launcher, *MP2], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             start_new_session=True)
  pids = [int(p) for p in process.stdout.readline().split()]
  assert len(pids) == 2
  deadline = time.monotonic() + 10  # each worker points its input at /dev/null once forked
  while time.monotonic() < deadline and not all(
      os.readlink(f'/proc/{pid}/fd/0') == os.devnull for pid in pids):
    time.sleep(0.05)
  assert [os.readlink(f'/proc/{pid}/fd/0') for pid in pids] == [os.devnull] * 2
  time.sleep(0.5)  # the workers are waiting for a claim
  os.killpg(process.pid, signal.SIGINT)
  out, err = process.communicate(timeout=60)
  assert 'interrupted' in out
  assert 'Traceback' not in err, err
  assert _wait_gone(pids, 30) == []


@pytest.mark.parametrize('argv, polars', [
    ([], True),  # avro, the default
    (['--format', 'jsonl'], True),
    (['--format=parquet'], False),
    (['--format', 'xml'], False),  # the launcher reports it; the warm-up does nothing
    (['--format'], False),
])
def test_the_warm_up_preloads_what_a_first_bundle_imports_quietly(argv, polars):
  code = ('import json, logging, sys; from pipelines.localrun import workers; '
          'workers.warm_up(sys.argv[1:]); '
          'print(json.dumps(["polars" in sys.modules, "numpy.ma" in sys.modules, '
          'len(logging.root.handlers)]))')
  done = subprocess.run([sys.executable, '-c', code, *argv], capture_output=True, text=True,
                        timeout=120, check=True)
  # No root handler: the worker's harness would print every INFO line on stderr through it.
  assert json.loads(done.stdout) == [polars, True, 0] and done.stderr == ''


def _stand_in_warm_worker(directory, code):
  """A socket where a warm worker waits: keeps the environment it is given, replies ``code``."""
  server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
  server.bind(str(directory / '0.sock'))
  server.listen(1)
  got = {}

  def serve():
    conn, _ = server.accept()
    with conn:
      got.update(json.loads(conn.makefile('rb').readline()))
      conn.sendall(f'{code}\n'.encode())
    server.close()

  thread = threading.Thread(target=serve, daemon=True)
  thread.start()
  return got, thread


def test_the_runners_worker_command_hands_over_without_site_packages(tmp_path):
  # The command LocalRunner gives the FnApiRunner, run through a shell as the runner runs it.
  got, thread = _stand_in_warm_worker(tmp_path, 7)
  env = dict(os.environ, WORKER_ID='worker_9', **{workers.WARM_DIR_ENV: str(tmp_path)})
  env.pop(GRPC_VERBOSITY_ENV, None)
  command = f'{shlex.quote(sys.executable)} -X importtime {runner.OUR_WORKER}'
  done = subprocess.run(command, shell=True, env=env, capture_output=True, text=True,
                        timeout=60)
  thread.join(10)
  assert done.returncode == 7  # the warm worker's exit code, relayed
  assert got['WORKER_ID'] == 'worker_9' and workers.WARM_DIR_ENV not in got
  assert got[GRPC_VERBOSITY_ENV] == 'ERROR'  # none was set: gRPC's INFO lines are not shown
  imported = [line.rsplit('|', 1)[-1].strip() for line in done.stderr.splitlines()
              if line.startswith('import time:')]
  assert 'socket' in imported and 'site' not in imported
  assert not [m for m in imported if m.split('.')[0] in ('pipelines', 'apache_beam', 'grpc')]


_GRPC_CLIENT = """
import sys
if sys.argv[1] == 'launcher':
  from pipelines.localrun.handover import quiet_grpc  # what localrun.start does first
  quiet_grpc()
import grpc
grpc.insecure_channel('[::1]:1').close()
"""


@pytest.mark.parametrize('setup, verbosity, quiet', [
    ('launcher', None, True),
    ('launcher', 'INFO', False),  # the user's own setting stays
    ('none', None, False),  # what the launcher prevents
])
def test_the_launcher_keeps_grpc_core_info_lines_off_stderr(setup, verbosity, quiet):
  # CI once failed on gRPC core's INFO line "Got goaway ... Cancelling all calls", printed by
  # a worker when the runner's servers stopped; whether it shows is a race. GRPC_TRACE=api
  # makes gRPC core log INFO lines every time (grpc_channel_destroy, grpc_shutdown), through
  # the same logging the GOAWAY line goes through.
  env = {k: v for k, v in os.environ.items() if k != GRPC_VERBOSITY_ENV}
  env['GRPC_TRACE'] = 'api'
  if verbosity:
    env[GRPC_VERBOSITY_ENV] = verbosity
  done = subprocess.run([sys.executable, '-c', _GRPC_CLIENT, setup], env=env,
                        capture_output=True, text=True, timeout=60, check=True)
  info = [line for line in done.stderr.splitlines() if re.match(r'I\d{4} .*\.cc:\d+\]', line)]
  assert (info == []) is quiet, done.stderr
  if quiet:
    assert done.stderr == ''


@pytest.mark.parametrize('argv, uses', [
    ([*MP2, '--output', 'out/', '--manifest', 'm.manifest'], False),
    ([*MP2, '--output', 's3://b/out/', '--manifest', 's3://b/m.manifest'], False),
    ([*MP2, '--output', 'gs://b/out/'], True),
    ([*MP2, '--manifest', 'gs://b/bp/*.manifest'], True),
    ([*MP2, '--temp_location=gs://b/tmp'], True),
    ([*MP2, '--format', 'bigquery', '--bigquery_table', 'p:d.t'], True),
    ([*MP2, '--format=parquet'], False),
    (['--runner', 'DataflowRunner'], True),
    (['--runner=DirectRunner'], False),
])
def test_a_run_uses_google_cloud_when_its_arguments_say_so(argv, uses):
  assert workers.uses_google_cloud(argv) is uses
  assert (set(workers.GOOGLE_CLOUD_ONLY) <= set(workers.not_needed(argv))) is not uses


@pytest.mark.parametrize('argv, uses', [
    ([*MP2, '--output', 'out/', '--manifest', 'm.manifest'], False),
    ([*MP2, '--output', 'gs://b/out/', '--manifest', 'gs://b/m.manifest'], False),
    ([*MP2, '--output', 's3://b/out/'], True),
    ([*MP2, '--manifest=s3://b/bp/*.manifest'], True),
    ([*MP2, '--allowed_prefix', 's3://b/in/'], True),  # the only way to read S3 inputs here
    ([*MP2, '--rebase_uri', 'gs://b/=s3://c/'], True),
    ([*MP2, '--s3_endpoint_url', 'http://127.0.0.1:9000'], False),
    (['--runner', 'DataflowRunner'], True),
])
def test_a_run_uses_s3_through_beam_when_its_arguments_say_so(argv, uses):
  assert workers.uses_s3(argv) is uses
  names = workers.not_needed(argv)
  assert (set(workers.AWS_ONLY) <= set(names)) is not uses
  assert set(workers.MONGODB_ONLY) <= set(names)  # always: predjoin never uses MongoDB


@pytest.mark.parametrize('argv, uses', [
    ([*MP2, '--output', 'out/', '--manifest', 's3://b/m.manifest'], False),
    ([*MP2, '--output', 'azfs://account/container/out/'], True),
    (['--runner', 'DataflowRunner'], True),
])
def test_beams_azure_filesystem_is_imported_when_an_argument_names_azfs(argv, uses):
  assert (set(workers.AZURE_ONLY) <= set(workers.not_needed(argv))) is not uses


def test_the_harness_imports_without_cloud_modules_a_local_run_never_uses():
  # Beam skips them as it does when those libraries are missing, quietly; afterwards they
  # import again.
  code = ('import sys; from pipelines.localrun import workers\n'
          'workers.import_harness(without=workers.not_needed(["--output", "out/"]))\n'
          'print(sorted(m for m in sys.modules if m.startswith(("google.cloud.dataflow", '
          '"google.cloud.bigquery", "google.cloud.pubsub", "apache_beam.io.gcp.bigquery", '
          '"apache_beam.io.gcp.gcsfilesystem", "apache_beam.io.aws.s3filesystem", '
          '"pymongo", "bson", "apitools", "oauth2client", '
          '"apache_beam.io.azure.blobstoragefilesystem"))))\n'
          'import apache_beam as beam\n'
          'print(hasattr(beam.io, "WriteToBigQuery"), '
          'any(isinstance(f, workers._Without) for f in sys.meta_path))\n'
          'from apache_beam.io.gcp.bigquery import WriteToBigQuery\n'
          'from apache_beam.io.gcp.gcsfilesystem import GCSFileSystem\n'
          'from apache_beam.io.filesystems import FileSystems\n'
          'print(type(FileSystems.get_filesystem("gs://b/x")).__name__)\n'
          'from apache_beam.io.aws.s3filesystem import S3FileSystem\n'
          'print(type(FileSystems.get_filesystem("s3://b/x")).__name__)\n')
  done = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                        timeout=120, check=True)
  assert done.stdout.splitlines()[0] == '[]'
  assert done.stdout.splitlines()[1] == 'False False'  # skipped; the finder is gone
  assert done.stdout.splitlines()[2:] == ['GCSFileSystem', 'S3FileSystem']
  assert done.stderr == ''  # nor "Failed to import", nor Beam's "compatible bson" warning


def test_the_modules_a_local_run_leaves_out_are_ones_beams_harness_imports():
  # If the pinned Beam stopped importing one of them, leaving it out would no longer save
  # anything (or Beam's import layout changed under it): this fails then.
  left_out = (*workers.GOOGLE_CLOUD_ONLY, *workers.AWS_ONLY, *workers.AZURE_ONLY,
              *workers.MONGODB_ONLY)
  code = ('import json, sys; from pipelines.localrun import workers; workers.import_harness(); '
          f'print(json.dumps([m for m in {list(left_out)!r} if m not in sys.modules]))')
  done = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                        timeout=120, check=True)
  assert json.loads(done.stdout) == []


class _Stop(Exception):
  pass


def test_beams_worker_command_is_the_one_the_local_runner_replaces():
  # The pinned Beam's FnApiRunner starts multi-processing workers with
  # "python -m apache_beam.runners.worker.sdk_worker_main": if that changes, the command would
  # no longer be replaced (workers would start the slow way) and this fails.
  from apache_beam.portability import python_urns
  seen = {}

  class Captured(runner.LocalRunner):
    def run_via_runner_api(self, pipeline_proto, options):
      seen['replaced'] = runner.use_our_worker(pipeline_proto)
      seen['commands'] = [env.payload.decode() for env in
                          pipeline_proto.components.environments.values()
                          if env.urn == python_urns.SUBPROCESS_SDK]
      raise _Stop()

  p = beam.Pipeline(runner=Captured(), options=PipelineOptions(MP2))
  _ = p | beam.Create([1]) | beam.Map(str)
  with pytest.raises(_Stop):
    p.run()
  assert seen['replaced'] == 1
  assert [c.endswith(runner.OUR_WORKER) for c in seen['commands']] == [True]


def test_no_fork_while_a_thread_python_does_not_know_of_runs():
  # A thread started outside threading (as NumPy's BLAS or Arrow's allocator start theirs):
  # threading sees one thread, the system two.
  code = ('import _thread, threading, time; from pipelines.localrun import workers\n'
          'before = workers.can_fork()\n'
          '_thread.start_new_thread(time.sleep, (5,)); time.sleep(0.2)\n'
          'print(before, threading.active_count(), workers.os_threads(), workers.can_fork())')
  done = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                        timeout=60, check=True)
  assert done.stdout.split() == ['True', '1', '2', 'False']


def test_the_launchers_import_starts_no_thread_so_it_can_fork():
  code = ('import os; from pipelines.localrun import workers\n'
          'for name, value in workers.SINGLE_THREADED_IMPORT.items(): os.environ[name] = value\n'
          'workers.import_harness(workers.not_needed([]))\n'
          'import numpy, pyarrow; pyarrow.array(list(range(1000)))\n'
          'print(workers.os_threads(), workers.can_fork())')
  done = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                        timeout=120, check=True)
  assert done.stdout.split() == ['1', 'True']


def test_the_switch_turns_the_quick_start_off(monkeypatch):
  from pipelines import localrun
  argv = [*MP2, '--output', 'out/']
  monkeypatch.setenv(localrun.SWITCH_ENV, '0')
  assert localrun.start(argv) is None
  monkeypatch.delenv(localrun.SWITCH_ENV)
  assert localrun.start([]) is None  # in-memory: nothing to start


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='workers are forked on Linux')
def test_the_output_is_the_same_with_the_quick_start_off(tmp_path):
  from benchmarks.same_output import differences
  from tests.builders import write_bp
  manifest = write_bp(tmp_path, 'bp-q', [([f'{i},n{i},{i}' for i in range(40)],
                                          ['' if i % 7 == 0 else f'{i % 2},0.{i:02d}'
                                           for i in range(40)])] * 3)
  predjoin = os.path.join(os.path.dirname(sys.executable), 'predjoin')
  outs = []
  for switch in ('1', '0'):
    out = str(tmp_path / f'out-{switch}')
    env = {**os.environ, 'PREDJOIN_FORK_WORKERS': switch}
    done = subprocess.run([predjoin, '--manifest', manifest, '--output', out, '--format', 'jsonl',
                           '--allowed_prefix', f'{tmp_path}/', *MP2], capture_output=True,
                          text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    outs.append(out)
  assert differences(*outs) == []
