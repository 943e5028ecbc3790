"""SDK worker processes for local multi-processing runs, started early and ended promptly.

Beam's FnApiRunner starts each multi-processing SDK worker only when the first stage runs, as
``python -m apache_beam.runners.worker.sdk_worker_main``; the new process then spends 2.5-3 s
importing Beam before it does any work, after the launcher has already spent as long importing
Beam and building the pipeline. And at the end of the job the runner waits for each worker in
turn while it tears down its interpreter (another 1-1.5 s each).

This module, standard library only so it loads in milliseconds:

- ``prewarm(argv, fork)``: for a local ``--direct_running_mode multi_processing`` run, readies
  the workers' processes before the runner asks for them. Each waits on a Unix socket, with
  Beam's SDK harness and predjoin's transforms imported:
  - ``fork=True`` (what the ``predjoin`` command does on Linux): the launcher imports them once,
    then forks the workers, before it has started any thread of its own (gRPC, thread pools)
    or read any data. Three processes no longer import Beam at once on two cores: the
    launcher's own import is the only one, and the workers share its memory pages.
  - otherwise: starts them as ``python -m pipelines.localrun.workers --warm SOCKET``, before the
    launcher imports Beam, so their imports overlap the launcher's.
- The worker command the runner starts (``pipelines/localrun/handover.py``, set by
  ``pipelines/localrun/runner.py``) hands its environment (the runner's control and logging endpoints,
  pipeline options, worker id) to a warm process and relays that process's exit code. With
  no warm process (a pipeline run without ``pipelines/cli.py``, such as a test's, or a warm
  process that died), it becomes ``python -m pipelines.localrun.workers``, which runs the harness
  itself, as Beam's command would.
- Every worker exits as soon as its harness returns: its work is done and Beam's log handler
  has flushed by then.

Warm processes that are never claimed are stopped by ``WarmPool.close`` and stop by themselves
when the launcher is gone.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable

from pipelines.localrun.handover import POLL_S as _POLL_S
from pipelines.localrun.handover import WARM_DIR_ENV
from pipelines.runners import LOCAL_RUNNERS, sdk_processes

WARM_MARK_ENV = 'PREDJOIN_WARM_WORKER'  # set in a warm worker, for tests and diagnostics


def exit_now(code: int) -> None:
  """Ends the process now, after flushing logs and standard streams (no interpreter teardown)."""
  logging.shutdown()
  sys.stdout.flush()
  sys.stderr.flush()
  os._exit(code)


def local_workers(argv: list[str]) -> int:
  """How many multi-processing SDK workers a local run of ``argv`` starts (0: none)."""
  parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
  parser.add_argument('--runner')
  parser.add_argument('--direct_running_mode')
  parser.add_argument('--direct_num_workers', type=int, default=1)
  try:
    known, _ = parser.parse_known_args(argv)
  except SystemExit:  # a malformed value: Beam's own parser reports it
    return 0
  return sdk_processes(known.runner, known.direct_running_mode, known.direct_num_workers)


def os_threads() -> int | None:
  """How many threads this process runs, counted by the operating system (None: cannot tell).

  Python's ``threading`` sees only the threads Python started; NumPy's BLAS and Arrow's
  allocator start their own.
  """
  try:
    return len(os.listdir('/proc/self/task'))
  except OSError:
    return None


def can_fork() -> bool:
  """Whether warm workers can be forked from this process now: Linux, and no other thread of
  any kind.

  A forked child has only the thread that forked; locks other threads held stay locked in it.
  macOS's system libraries are not safe to use after a fork, so it starts workers anew.
  """
  return (sys.platform.startswith('linux') and threading.active_count() == 1
          and os_threads() == 1)


# Settings under which importing the harness starts no thread, so the launcher can still fork:
# NumPy's OpenBLAS would start a thread pool, and Arrow's jemalloc a background purging thread.
# Neither is used by the join (no BLAS calls; the same time and memory without the purging
# thread). A user's own setting stays.
SINGLE_THREADED_IMPORT = {'OPENBLAS_NUM_THREADS': '1',
                          'JE_ARROW_MALLOC_CONF': 'background_thread:false'}


# Modules Beam imports only when it can, each inside ``try ... except ImportError`` (so Beam runs
# without its [gcp] extra): the Dataflow API client (for the DataflowRunner), the BigQuery IO
# (and after it, in the same ``try``, Pub/Sub, the GCS client and the cross-language IOs), the
# GCS filesystem, and apitools (Beam's retry filters recognise its HttpError and, in the same
# ``try``, google-api-core's errors: only Google's clients raise them). A local run that uses
# no Google Cloud service never calls them, and importing them is a large part of the import.
GOOGLE_CLOUD_ONLY = ('google.cloud.dataflow', 'apache_beam.io.gcp.bigquery',
                     'apache_beam.io.gcp.gcsfilesystem', 'apitools')
# Beam's S3 and Azure filesystems (imported inside ``try ... except ImportError``, as the GCS
# one). Beam uses a filesystem for the paths in the arguments only; inputs named by manifests
# are read by smart_open.
AWS_ONLY = ('apache_beam.io.aws.s3filesystem',)
AZURE_ONLY = ('apache_beam.io.azure.blobstoragefilesystem',)


def _runner_and_format(argv: list[str]):
  """``--runner`` and ``--format`` of ``argv`` (a namespace), or None when they do not parse."""
  parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
  parser.add_argument('--runner')
  parser.add_argument('--format')
  try:
    return parser.parse_known_args(argv)[0]
  except SystemExit:
    return None


def _uses_scheme(argv: list[str], known, scheme: str) -> bool:
  """Whether a run of ``argv`` (``known``: its ``_runner_and_format``) may use ``scheme``
  through Beam: a runner other than the local one, or such a path in any argument (outputs,
  manifests, temp and staging locations)."""
  return (known is None or known.runner not in LOCAL_RUNNERS
          or any(f'{scheme}://' in arg for arg in argv))


def _uses_google_cloud(argv: list[str], known) -> bool:
  return _uses_scheme(argv, known, 'gs') or known.format == 'bigquery'


def uses_google_cloud(argv: list[str]) -> bool:
  """Whether a run of ``argv`` may use Google Cloud through Beam: a runner other than the local
  one, ``--format bigquery``, or a ``gs://`` path in any argument (inputs named by manifests
  are read by smart_open, not Beam)."""
  return _uses_google_cloud(argv, _runner_and_format(argv))


def uses_s3(argv: list[str]) -> bool:
  """Whether a run of ``argv`` may use S3 through Beam (``_uses_scheme``)."""
  return _uses_scheme(argv, _runner_and_format(argv), 's3')


# What Beam's MongoDB IO imports, inside ``try ... except ImportError`` (predjoin never uses
# it). Without them, Beam logs a warning at import time, "Could not find a compatible bson
# package."; ``import_harness`` drops it.
MONGODB_ONLY = ('bson', 'pymongo')
_MONGODB_IO_LOGGER = 'apache_beam.io.mongodbio'


def not_needed(argv: list[str]) -> tuple[str, ...]:
  """The modules the launcher's import of a local run of ``argv`` leaves out (``_Without``):
  MongoDB's always, Google Cloud's, S3's and Azure's Beam modules when no argument can use
  them (``benchmarks/README.md`` has what each saves)."""
  known = _runner_and_format(argv)
  names = MONGODB_ONLY
  if not _uses_google_cloud(argv, known):
    names += GOOGLE_CLOUD_ONLY
  if not _uses_scheme(argv, known, 's3'):
    names += AWS_ONLY
  if not _uses_scheme(argv, known, 'azfs'):
    names += AZURE_ONLY
  return names


def _no_bson_warning(record: logging.LogRecord) -> bool:
  return 'bson' not in record.getMessage()


class _Without:
  """An import finder that makes ``names`` look not installed (``ModuleNotFoundError``)."""

  def __init__(self, names):
    self._names = frozenset(names)

  def find_spec(self, name, path=None, target=None):
    if name in self._names:
      raise ModuleNotFoundError(f'No module named {name!r} (not imported by this run)',
                                name=name)
    return None


def import_harness(without: tuple[str, ...] = ()) -> None:
  """Imports what a worker runs: Beam's SDK harness, and the transforms its DoFns unpickle into.

  ``without``: modules (``not_needed``) that look not installed during the import, so Beam
  and smart_open skip them as they do when those libraries are missing. Anything importing
  them later gets them.

  Then moves every object that exists by now (modules, classes, functions, protobuf
  descriptors: about 200,000, alive until the process ends) out of the garbage collector's
  sight (``gc.freeze``): each full collection would walk them all, in workers and launcher
  alike; frozen before a fork, they also stay shared with the forked workers instead of being
  copied when the collector touches them.

  The collector is also off during the import: the import only adds objects, and every
  collection it would trigger walks all those made so far. The cycles the import leaves behind
  (about 2,000 objects) are frozen with the rest instead of collected.
  """
  enabled = gc.isenabled()
  gc.disable()
  finder = _Without(without) if without else None
  mongodb_io = logging.getLogger(_MONGODB_IO_LOGGER)
  if finder is not None:
    sys.meta_path.insert(0, finder)
    mongodb_io.addFilter(_no_bson_warning)
  try:
    import apache_beam.runners.worker.sdk_worker_main  # noqa: F401  # 2-3 s

    import transforms.steps  # noqa: F401
  finally:
    if finder is not None:
      sys.meta_path.remove(finder)
      mongodb_io.removeFilter(_no_bson_warning)
    gc.freeze()
    if enabled:
      gc.enable()


class _Forked:
  """A forked warm worker, with the part of ``subprocess.Popen``'s interface the pool uses."""

  def __init__(self, pid: int):
    self.pid = pid
    self.returncode: int | None = None

  def poll(self) -> int | None:
    if self.returncode is None:
      try:
        pid, status = os.waitpid(self.pid, os.WNOHANG)
      except ChildProcessError:  # reaped elsewhere
        self.returncode = -1
      else:
        if pid:
          self.returncode = os.waitstatus_to_exitcode(status)
    return self.returncode

  def _signal(self, number: int) -> None:
    if self.poll() is None:
      try:
        os.kill(self.pid, number)
      except ProcessLookupError:
        pass

  def terminate(self) -> None:
    self._signal(signal.SIGTERM)

  def kill(self) -> None:
    self._signal(signal.SIGKILL)

  def wait(self, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while self.poll() is None:
      if time.monotonic() > deadline:
        raise subprocess.TimeoutExpired(f'warm worker {self.pid}', timeout)
      time.sleep(_POLL_S)
    return self.returncode


def _listen(socket_path: str) -> socket.socket:
  """A listening socket at ``socket_path``, which appears only once it accepts (claimable)."""
  server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
  server.bind(socket_path + '.tmp')
  server.listen(1)
  os.rename(socket_path + '.tmp', socket_path)
  return server


def _fork_warm(socket_path: str, warm_up: Callable[[], None] | None) -> _Forked:
  server = _listen(socket_path)
  sys.stdout.flush()  # or the child would write the parent's buffered output again
  sys.stderr.flush()
  launcher = os.getpid()
  pid = os.fork()
  if pid == 0:  # the warm worker
    code = 1
    try:
      devnull = os.open(os.devnull, os.O_RDONLY)  # as a started worker's: not the terminal
      os.dup2(devnull, 0)
      os.close(devnull)
      if warm_up is not None:
        _try_warm_up(warm_up)
      code = _serve(server, socket_path, launcher)
    except KeyboardInterrupt:  # Ctrl-C reaches the whole process group: the launcher says it
      code = 130
    except BaseException:  # noqa: BLE001  # it must never return into the launcher's code
      traceback.print_exc()
    finally:
      exit_now(code)
  server.close()
  return _Forked(pid)


def warm_up(argv: list[str]) -> None:
  """What each forked worker does while the launcher builds the pipeline: imports what its
  first bundle would otherwise import: ``numpy.ma`` (pyarrow looks it up on the first
  ``pa.array`` of a NumPy array) and polars, the block encoder of Avro and JSON Lines records.

  ``--format`` is read with predjoin's own argument definitions on a plain parser: Beam's
  option parsing logs through the root logger, which would give the worker a stderr handler.
  """
  import numpy.ma  # noqa: F401

  from pipelines.options import PredjoinOptions  # imported by now, with the harness
  from transforms.io.sinks import POLARS_FORMATS
  parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False, exit_on_error=False)
  PredjoinOptions._add_argparse_args(parser)
  try:
    fmt = parser.parse_known_args(argv)[0].format
  except argparse.ArgumentError:  # the launcher reports it
    return
  if fmt in POLARS_FORMATS:
    import polars  # noqa: F401


def _try_warm_up(warm_up: Callable[[], None]) -> None:
  try:
    warm_up()
  except Exception:  # noqa: BLE001  # only a head start: the harness meets the problem again
    logging.getLogger(__name__).debug('warm-up failed', exc_info=True)


class WarmPool:
  """Warm worker processes waiting in a private directory; ``close`` stops the unclaimed ones.

  ``fork``: fork them from this process (which has imported the harness: ``import_harness``)
  instead of starting new interpreters that import it themselves. ``warm_up``: what each forked
  worker does first, while the launcher builds the pipeline on the other core (see
  ``prewarm``).
  """

  def __init__(self, count: int, fork: bool = False,
               warm_up: Callable[[], None] | None = None):
    self.dir = tempfile.mkdtemp(prefix='predjoin-workers-')
    self.processes = []
    try:
      for i in range(count):
        path = os.path.join(self.dir, f'{i}.sock')
        if fork:
          self.processes.append(_fork_warm(path, warm_up))
          continue
        process = subprocess.Popen(
            [sys.executable, '-m', 'pipelines.localrun.workers', '--warm', path, str(os.getpid())],
            stdin=subprocess.DEVNULL)
        self.processes.append(process)
        with open(os.path.join(self.dir, f'{i}.pending'), 'w') as f:
          f.write(str(process.pid))
    except OSError:
      self.close()
      raise
    os.environ[WARM_DIR_ENV] = self.dir  # the runner's worker commands inherit it

  def close(self) -> None:
    if os.environ.get(WARM_DIR_ENV) == self.dir:
      del os.environ[WARM_DIR_ENV]
    for process in self.processes:
      if process.poll() is None and not _claimed(self.dir, process.pid):
        process.terminate()
    for process in self.processes:
      try:
        process.wait(timeout=10)
      except subprocess.TimeoutExpired:
        process.kill()
    shutil.rmtree(self.dir, ignore_errors=True)


def _claimed(directory: str, pid: int) -> bool:
  return os.path.exists(os.path.join(directory, f'{pid}.claimed'))


def prewarm(argv: list[str], fork: bool = False,
            warm_up: Callable[[], None] | None = None) -> WarmPool | None:
  """Starts the SDK workers a local multi-processing run of ``argv`` will use; None otherwise.

  ``fork``: import the harness here, then fork the workers (only if ``can_fork()``; callers
  pass it where this process has started nothing yet). Otherwise new interpreters.
  ``warm_up``: with ``fork``, called first in each worker (imports a bundle would otherwise
  do; it may start threads, which is safe after the fork); its errors are ignored.

  None when they cannot be started (no Unix sockets, no writable temporary directory): the run
  then starts its workers the usual way, only slower.
  """
  count = local_workers(argv)
  if not count or not hasattr(socket, 'AF_UNIX'):
    return None
  fork = fork and can_fork()
  if fork:  # the launcher's import, which the forked workers share
    for name, value in SINGLE_THREADED_IMPORT.items():
      os.environ.setdefault(name, value)
    import_harness(without=not_needed(argv))
    fork = can_fork()  # a library may have started a thread anyway: then start them anew
  try:
    return WarmPool(count, fork, warm_up)
  except OSError as e:
    logging.getLogger(__name__).info('workers not started early: %s', e)
    return None


def run_harness() -> int:
  """Runs Beam's SDK harness, configured by the runner through the environment; its exit code."""
  from apache_beam.runners.worker import sdk_worker_main
  try:
    sdk_worker_main.main(sys.argv)
  except SystemExit as e:
    return e.code if isinstance(e.code, int) else 1
  except BaseException:  # noqa: BLE001  # the harness logged it; say it on stderr too
    traceback.print_exc()
    return 1
  return 0


def serve_warm(socket_path: str, launcher: int) -> int:
  """A warm worker started anew: imports the harness, then serves (``_serve``)."""
  pending = os.path.splitext(socket_path)[0] + '.pending'
  try:
    import_harness()  # the 2-3 s this saves
    server = _listen(socket_path)
  finally:
    if os.path.exists(pending):
      os.remove(pending)
  return _serve(server, socket_path, launcher)


def _serve(server: socket.socket, socket_path: str, launcher: int) -> int:
  """Waits for one claim on ``server``, then runs the harness with the claimer's environment.

  ``launcher`` is the pid of the process that started this worker; once that is gone, nobody
  can claim it and it exits.
  """
  server.settimeout(1.0)
  while True:
    try:
      conn, _ = server.accept()
      break
    except TimeoutError:
      if os.getppid() != launcher:
        return 0  # the launcher is gone: nobody will claim this worker
  server.close()
  with open(os.path.join(os.path.dirname(socket_path), f'{os.getpid()}.claimed'), 'w'):
    pass
  with conn:
    env = json.loads(conn.makefile('rb').readline())
    os.environ.clear()
    os.environ.update(env)
    os.environ[WARM_MARK_ENV] = '1'
    code = run_harness()
    conn.sendall(f'{code}\n'.encode())
  return code


if __name__ == '__main__':
  if len(sys.argv) == 4 and sys.argv[1] == '--warm':
    exit_now(serve_warm(sys.argv[2], int(sys.argv[3])))
  # The worker command (pipelines/localrun/handover.py) found no warm worker: run the harness here.
  exit_now(run_harness())
