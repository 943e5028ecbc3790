"""The SDK worker command of local multi-processing runs: hands over to a warm worker, quickly.

The FnApiRunner starts this once per SDK worker, when the first stage runs, as
``python -I -S .../pipelines/localrun/handover.py`` (``pipelines/localrun/runner.py``). It gives its environment
(the runner's control and logging endpoints, pipeline options, worker id) to a warm worker
(``pipelines/localrun/workers.py``) and relays that worker's exit code. With no warm worker (a pipeline
run without ``pipelines/cli.py``, such as a test's, or one that died), it becomes
``python -m pipelines.localrun.workers``, which runs Beam's SDK harness itself.

It imports a few standard modules only and runs without ``site`` (``-S``), so it starts in a
fraction of the time a module run with site-packages takes (path hooks, the editable install's
finder, ``logging``, ``subprocess``): it is on the first stage's critical path.
"""

import glob
import json
import os
import socket
import sys
import time

WARM_DIR_ENV = 'PREDJOIN_WARM_WORKERS'  # where warm workers' sockets appear (set by prewarm)
WAIT_FOR_WARM_S = 120.0  # a claimed-for worker waits this long for a warm one that is starting
POLL_S = 0.02
GRPC_VERBOSITY_ENV = 'GRPC_VERBOSITY'


def quiet_grpc() -> None:
  """gRPC's core logs routine events on stderr at INFO level (grpcio initializes absl logging
  with an INFO threshold), such as a worker's ``Got goaway ... Cancelling all calls`` when the
  runner's servers stop at the end of a job. Unless the user set ``GRPC_VERBOSITY`` themselves,
  keep it to errors, for this process and those it starts; it must be set before gRPC starts.
  """
  os.environ.setdefault(GRPC_VERBOSITY_ENV, 'ERROR')


def _pending_alive(directory: str) -> bool:
  for path in glob.glob(os.path.join(directory, '*.pending')):
    try:
      with open(path) as f:
        os.kill(int(f.read()), 0)
      return True
    except (OSError, ValueError):
      continue
  return False


def hand_over(directory: str) -> int | None:
  """Gives this worker's environment to a warm worker; its exit code, or None if none is left."""
  deadline = time.monotonic() + WAIT_FOR_WARM_S
  while True:
    for path in sorted(glob.glob(os.path.join(directory, '*.sock'))):
      taken = f'{path}.{os.getpid()}'
      try:
        os.rename(path, taken)  # atomic: exactly one worker command claims each warm worker
      except FileNotFoundError:
        continue
      client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
      try:
        client.connect(taken)
        client.sendall(json.dumps(dict(os.environ)).encode() + b'\n')
        reply = client.makefile('rb').readline()
      except OSError:
        continue  # it died before it could work: try another, or run here
      finally:
        client.close()
      return int(reply) if reply.strip() else 1
    if not _pending_alive(directory) or time.monotonic() > deadline:
      return None
    time.sleep(POLL_S)


def main() -> None:
  quiet_grpc()  # for a warm worker started by a launcher that did not set it, and for the exec
  directory = os.environ.pop(WARM_DIR_ENV, None)
  if directory and os.path.isdir(directory):
    code = hand_over(directory)
    if code is not None:
      sys.stdout.flush()
      sys.stderr.flush()
      os._exit(code)
  # No warm worker: run the harness here, with site-packages (and without WARM_DIR_ENV).
  os.execv(sys.executable, [sys.executable, '-m', 'pipelines.localrun.workers'])


if __name__ == '__main__':
  main()
