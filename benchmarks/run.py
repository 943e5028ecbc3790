"""Benchmark: predjoin against whole-file peers on generated batch predictions.

For each data set, after one warm-up read of its files and one untimed warm-up run of every
tool, every tool runs as a whole process (``runs`` times, interleaved, each after an
``os.sync()`` so no tool waits for the previous one's writes to reach the disk); the table shows the median wall and CPU time and the largest memory
seen. Memory is measured two ways: the kernel's peak RSS of the largest single process of the tree
(``wait4`` rusage, which covers reaped descendants), and the summed RSS of the process tree sampled
every 50 ms with psutil (predjoin's multi-processing workers are separate processes). Each tool's
last output is checked by benchmarks.check. Each predjoin format is judged against the peers
writing that format. The data sets read from S3 are served by moto's S3 server, which this
harness starts on 127.0.0.1.

The peers (pandas, DuckDB, pyarrow, polars and fastavro scripts) run with the interpreter ``PREDJOIN_PEERS_PYTHON``
names (``make bench`` sets it to ``.venv-peers``, built from requirements-peers.txt), default
this one. predjoin runs from its own environment, which has no pandas: with pandas installed
beside it, Beam imports pandas when it starts, 0.4-0.5 s of CPU in every predjoin process.

Writes benchmarks/results/latest.md, latest.png and latest.json (``latest-quick.*`` with
``--quick``) and appends a line to benchmarks/results/history.md.

Usage::

  python -m benchmarks.run --quick            # tiny data, about 10 minutes
  python -m benchmarks.run                    # full size: 38M rows, about 35 min; run once
  python -m benchmarks.run --quick --runs 1 --datasets main --tools duckdb_careful,predjoin-parquet
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib.metadata
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time

from benchmarks import check as checker
from benchmarks import generate

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
DATA = os.path.join(HERE, 'data')
WORK = os.path.join(HERE, 'work')
RESULTS = os.path.join(HERE, 'results')
PEERS = os.path.join(HERE, 'peers')
DEFAULT_PREDJOIN = os.path.join(REPO, '.venv', 'bin', 'predjoin')
SAMPLE_SECONDS = 0.05
RESCAN_SECONDS = 0.25  # how often the sampler looks for new processes in the tree
CPU_SECONDS = 1.0  # how often it reads their CPU times (for workers never reaped)
MB = 1024 * 1024


@dataclasses.dataclass(frozen=True)
class Dataset:
  role: str  # main, multiclass, mem-large, mem-small, big, sagemaker, tiny-s3, tiny-s3-one
  shards: int
  rows: int  # per shard
  model: str = 'binary'
  classes: int = 5
  failed_rate: float = 0.01
  seed: int = 1
  tools: tuple[str, ...] | None = None  # None: every tool of its source
  source: str = 'aml'  # aml: a batch prediction's manifest; sagemaker: a transform job
  storage: str = 'local'  # local files, or s3: uploaded to the moto S3 server the harness starts
  # The untimed round that reads every tool's program files once. Without it (the 1 x 4M and
  # 1 x 16M sets, where a round takes 1-4 minutes) only the tools that have not run yet in this
  # invocation get a warm-up run; the others' files are in the page cache already.
  warm_up_round: bool = True

  @property
  def name(self) -> str:
    model = '' if self.model in self.role else f'-{self.model}'
    return f'{self.role}{model}-{self.shards}x{_count(self.rows)}'

  @property
  def total_rows(self) -> int:
    return self.shards * self.rows


def _count(n: int) -> str:
  for unit, size in (('M', 1_000_000), ('k', 1_000)):
    if n >= size and n % (size // 10) == 0:
      text = f'{n / size:g}'
      return text + unit
  return str(n)


FORMATS = ('parquet', 'avro', 'jsonl')
# The careful peers of every format: each predjoin format is judged against those writing it.
CAREFUL = ('pandas_careful', 'duckdb_careful', 'pyarrow_careful', 'pandas_careful_jsonl',
           'duckdb_careful_jsonl', 'polars_careful_jsonl', 'pandas_careful_avro',
           'polars_careful_avro')
LARGE_TOOLS = ('predjoin-parquet', 'predjoin-avro', 'predjoin-jsonl', *CAREFUL, 'floor')
# One shard of 16M rows: predjoin's three formats, Parquet with 2 and 1 workers, both Parquet
# peers that were fastest on 1 x 4M, and the fastest JSON Lines and Avro peers there (a round
# of every peer here would take 5 minutes).
BIG_TOOLS = ('predjoin-parquet', 'predjoin-parquet-1w', 'predjoin-avro', 'predjoin-jsonl',
             'pandas_careful', 'duckdb_careful', 'duckdb_careful_jsonl', 'polars_careful_avro')
SMALL_TOOLS = ('predjoin-parquet', 'floor')  # the memory baseline of the 16M set
SAGEMAKER_TOOLS = ('predjoin-parquet', 'predjoin-parquet-1w', 'pandas_sagemaker_careful',
                   'pandas_sagemaker_naive')
S3_TOOLS = ('predjoin-parquet',)
FULL = (
    Dataset('main', 8, 1_000_000),
    Dataset('multiclass', 4, 250_000, model='multiclass', seed=2),
    Dataset('mem-large', 1, 4_000_000, seed=3, tools=LARGE_TOOLS, warm_up_round=False),
    Dataset('mem-small', 1, 1_000_000, seed=4, tools=SMALL_TOOLS),
    Dataset('big', 1, 16_000_000, seed=6, tools=BIG_TOOLS, warm_up_round=False),
    Dataset('sagemaker', 8, 1_000_000, seed=5, source='sagemaker', tools=SAGEMAKER_TOOLS),
    Dataset('tiny-s3', 200, 50, seed=7, storage='s3', tools=S3_TOOLS),
    Dataset('tiny-s3-one', 1, 50, seed=8, storage='s3', tools=S3_TOOLS),
)
QUICK = (
    Dataset('main', 8, 5_000),
    Dataset('multiclass', 4, 2_500, model='multiclass', seed=2),
    Dataset('mem-large', 1, 40_000, seed=3, tools=LARGE_TOOLS, warm_up_round=False),
    Dataset('mem-small', 1, 10_000, seed=4, tools=SMALL_TOOLS),
    Dataset('big', 1, 160_000, seed=6, tools=BIG_TOOLS, warm_up_round=False),
    Dataset('sagemaker', 8, 2_500, seed=5, source='sagemaker', tools=SAGEMAKER_TOOLS),
    Dataset('tiny-s3', 20, 50, seed=7, storage='s3', tools=S3_TOOLS),
    Dataset('tiny-s3-one', 1, 50, seed=8, storage='s3', tools=S3_TOOLS),
)


@dataclasses.dataclass(frozen=True)
class Remote:
  """Where a data set sits on the S3 server: its manifest, the prefix predjoin may read, the
  options and environment that point predjoin at the server."""
  manifest: str
  prefix: str
  args: tuple[str, ...]
  env: dict


@dataclasses.dataclass(frozen=True)
class Tool:
  name: str
  kind: str  # predjoin, careful, naive, floor
  fmt: str = 'parquet'
  workers: int = 0
  mode: str = 'multi_processing'  # the DirectRunner's running mode for predjoin
  source: str = 'aml'  # the data sets it reads: aml, sagemaker, or any (predjoin)
  runner: str = 'DirectRunner'  # predjoin's runner: DirectRunner or DaskRunner
  roles: tuple[str, ...] | None = None  # the data sets it runs on (None: every one)
  script: str = ''  # a peer's script in peers/ (default: its name), run with --format unless
                    # it writes Parquet

  def command(self, truth: dict, out: str, predjoin: str, data_dir: str,
              remote: Remote | None = None) -> list[str]:
    job = truth.get('transform_job') if self.source != 'aml' else None
    if self.kind != 'predjoin':
      script = os.path.join(PEERS, (self.script or self.name) + '.py')
      fmt = [] if self.fmt == 'parquet' else ['--format', self.fmt]
      return [peers_python(), script, *fmt, job or truth['manifest'], out]
    # The generated inputs sit beside batch-prediction/, outside the manifest's directory:
    # predjoin reads them only under a prefix it is told to trust. A transform job's inputs
    # have no header; the data set's schema names and types their columns.
    source = ['--manifest', truth['manifest']] if job is None else [
        '--transform_job', job, '--model_type', truth['model'], '--input_header', 'false',
        '--schema', os.path.join(data_dir, 'input', '.schema')]
    prefix = data_dir.rstrip('/') + '/'
    if remote is not None:
      source, prefix = ['--manifest', remote.manifest, *remote.args], remote.prefix
    command = [predjoin, *source, '--output', out, '--format', self.fmt,
               '--allowed_prefix', prefix]
    if self.runner == 'DaskRunner':
      # Without --dask_client_address Beam's DaskRunner starts a local cluster, one worker
      # process of one thread per core: `workers` on the 2-core machine the benchmark is for.
      return [*command, '--runner', 'DaskRunner']
    return [*command, f'--direct_num_workers={self.workers}',
            f'--direct_running_mode={self.mode}']


def peers_python() -> str:
  """The interpreter of the peers' environment (``PREDJOIN_PEERS_PYTHON``), else this one."""
  return os.environ.get('PREDJOIN_PEERS_PYTHON') or sys.executable


TOOLS = (
    Tool('predjoin-parquet', 'predjoin', 'parquet', 2, source='any'),
    Tool('predjoin-avro', 'predjoin', 'avro', 2, source='any'),
    Tool('predjoin-jsonl', 'predjoin', 'jsonl', 2, source='any'),
    Tool('predjoin-parquet-1w', 'predjoin', 'parquet', 1, source='any',
         roles=('big', 'sagemaker')),
    # Not a target row: 2 threads in one process (pyarrow releases the GIL), no worker start-up.
    Tool('predjoin-parquet-2threads', 'predjoin', 'parquet', 2, mode='multi_threading',
         source='any', roles=('main',)),
    # Beam's DaskRunner on the local dask.distributed cluster it starts (2 worker processes
    # here); reported, not judged by the targets (its workers run Dask's machinery too).
    Tool('predjoin-dask-parquet', 'predjoin', 'parquet', 2, runner='DaskRunner', roles=('main',),
         source='any'),
    Tool('pandas_careful', 'careful'),
    Tool('duckdb_careful', 'careful'),
    Tool('pyarrow_careful', 'careful'),
    # The same careful joins writing JSON Lines and Avro, so each predjoin format is compared
    # with peers writing that format.
    # pandas builds a shard's whole JSON text in memory (1.7 GB for 1M rows) and takes about
    # 5 s per million rows: shards of 1M rows at most.
    Tool('pandas_careful_jsonl', 'careful', 'jsonl', script='pandas_careful',
         roles=('main', 'multiclass')),
    Tool('duckdb_careful_jsonl', 'careful', 'jsonl', script='duckdb_careful'),
    Tool('polars_careful_jsonl', 'careful', 'jsonl', script='polars_careful'),
    # fastavro encodes records built in Python: 12-25 s of CPU per million rows, eight times
    # polars' write_avro on the same frame, so it runs where that costs seconds.
    Tool('pandas_careful_avro', 'careful', 'avro', script='pandas_careful',
         roles=('multiclass',)),
    Tool('polars_careful_avro', 'careful', 'avro', script='polars_careful'),
    Tool('pandas_naive', 'naive'),
    Tool('duckdb_naive', 'naive'),
    Tool('floor', 'floor'),
    Tool('pandas_sagemaker_careful', 'careful', source='sagemaker'),
    Tool('pandas_sagemaker_naive', 'naive', source='sagemaker'),
)


# ---------------------------------------------------------------------------------------------
# Measuring one process tree.


class TreeSampler(threading.Thread):
  """Samples the RSS of the descendants of a process (the timing wrapper) until stopped."""

  def __init__(self, pid: int):
    super().__init__(daemon=True)
    self.pid = pid
    self.peak_tree = 0  # bytes, largest sum over the tree at one instant
    self.peak_process = 0  # bytes, largest single process seen
    self.max_processes = 0
    self.cpu = {}  # pid -> last seen user+system seconds (for trees whose workers are not reaped)
    self._halt = threading.Event()

  def run(self):
    try:
      import psutil
    except ImportError:  # no tree sampling; rusage still gives the largest process
      return
    try:
      root = psutil.Process(self.pid)
    except psutil.Error:
      return
    procs, scanned, timed = [], 0.0, 0.0
    while not self._halt.is_set():
      # Sampling perturbs what it measures: walking the tree reads every process's /proc
      # entry, and reading a busy multi-threaded process's CPU times makes the kernel bring
      # every thread's clock up to date. Memory (cheap) is read every SAMPLE_SECONDS, the tree
      # every RESCAN_SECONDS, CPU times every CPU_SECONDS. With all three at 50 ms, predjoin's
      # 7-process 8x1M runs took 1.3-2 s (about 10%) longer than unobserved, in 4 of 4 pairs;
      # now the difference is within the machine's noise.
      now = time.monotonic()
      if now - scanned >= RESCAN_SECONDS or not procs:
        try:
          procs = root.children(recursive=True)
        except psutil.Error:
          break
        scanned = now
      read_cpu = now - timed >= CPU_SECONDS
      timed = now if read_cpu else timed
      total = 0
      for p in procs:
        try:
          rss = p.memory_info().rss
          if read_cpu:
            times = p.cpu_times()
            self.cpu[p.pid] = times.user + times.system
        except psutil.Error:
          continue
        total += rss
        self.peak_process = max(self.peak_process, rss)
      self.peak_tree = max(self.peak_tree, total)
      self.max_processes = max(self.max_processes, len(procs))
      self._halt.wait(SAMPLE_SECONDS)

  def stop(self):
    self._halt.set()
    self.join()


TIME = '/usr/bin/time'
# Fallback when GNU time is missing: a tiny wrapper with the same output line.
_WRAPPER = (
    'import os, sys, time\n'
    't = time.perf_counter(); pid = os.fork()\n'
    'if pid == 0:\n'
    '    os.execvp(sys.argv[2], sys.argv[2:])\n'
    '_, st, ru = os.wait4(pid, 0); rc = os.waitstatus_to_exitcode(st)\n'
    'open(sys.argv[1], "w").write("%.2f %.2f %.2f %d %d\\n" % (time.perf_counter() - t, '
    'ru.ru_utime, ru.ru_stime, ru.ru_maxrss, rc))\n'
    'sys.exit(rc if rc >= 0 else 128 - rc)\n'
)


def measure(cmd: list[str], log_prefix: str, timeout: float, env: dict | None = None) -> dict:
  """Runs ``cmd`` to completion; wall, CPU, memory and exit code.

  The command runs under GNU time (or a tiny Python stand-in), never forked straight from this
  harness: Linux records the pre-exec memory of a forked child in its ``ru_maxrss``, which would
  charge the harness's own memory (the checker's tables) to the tool.
  """
  rusage_file = log_prefix + '.rusage'
  if _executable(TIME):
    wrapped = [TIME, '-f', '%e %U %S %M %x', '-o', rusage_file, *cmd]
  else:
    wrapped = [sys.executable, '-S', '-c', _WRAPPER, rusage_file, *cmd]
  with open(log_prefix + '.stdout', 'wb') as out, open(log_prefix + '.stderr', 'wb') as err:
    start = time.perf_counter()
    # A session of its own, so a timeout can end the whole tree this harness started.
    proc = subprocess.Popen(wrapped, stdout=out, stderr=err, start_new_session=True, env=env)
    sampler = TreeSampler(proc.pid)
    sampler.start()
    timer = threading.Timer(timeout, lambda: _kill_group(proc.pid))
    timer.start()
    proc.wait()
    wall = time.perf_counter() - start
    timer.cancel()
    sampler.stop()
  try:
    with open(rusage_file) as f:
      fields = f.read().split('\n')[-2].split()  # GNU time may write a status line first
    user, system, max_rss_kb = float(fields[1]), float(fields[2]), int(fields[3])
  except (OSError, IndexError, ValueError):
    user = system = 0.0
    max_rss_kb = 0
  cpu = user + system
  return {
      'returncode': proc.returncode,
      'wall': wall,
      # Workers that are never reaped would be missing from rusage; the sampler saw them.
      'cpu': max(cpu, sum(sampler.cpu.values())),
      'cpu_rusage': cpu,
      'max_process_rss_mb': max(max_rss_kb * 1024, sampler.peak_process) / MB,
      'peak_tree_rss_mb': max(sampler.peak_tree, max_rss_kb * 1024) / MB,
      'processes': sampler.max_processes,
      'timed_out': wall >= timeout,
  }


def _kill_group(pid: int) -> None:
  try:
    os.killpg(pid, signal.SIGKILL)
  except ProcessLookupError:
    pass


def _tail(path: str, lines: int = 6) -> str:
  try:
    with open(path, errors='replace') as f:
      return ' / '.join(line.strip() for line in f.read().splitlines()[-lines:] if line.strip())
  except OSError:
    return ''


def warm_up(truth: dict) -> int:
  """Reads every file of the data set once so all tools start from the page cache."""
  total = 0
  for shard in truth['shards']:
    paths = [shard['input'], shard['result']]
    if 'transform_input' in shard:  # the SageMaker view: its inputs and .out objects
      name = os.path.basename(shard['transform_input'])
      paths += [shard['transform_input'], os.path.join(
          os.path.dirname(os.path.dirname(shard['transform_input'])), 'output', name + '.out')]
    for path in paths:
      with open(path, 'rb') as f:
        while chunk := f.read(1 << 22):
          total += len(chunk)
  return total


# ---------------------------------------------------------------------------------------------
# The run.


def ensure_data(ds: Dataset) -> dict:
  out = os.path.join(DATA, ds.name)
  sagemaker = ds.source == 'sagemaker'
  params = {'shards': ds.shards, 'rows': ds.rows, 'model': ds.model, 'failed_rate': ds.failed_rate,
            'seed': ds.seed, 'classes': ds.classes if ds.model == 'multiclass' else None,
            'crlf': False, 'schema': True, 'sagemaker': sagemaker}
  truth_path = os.path.join(out, 'truth.json')
  if os.path.exists(truth_path):
    with open(truth_path) as f:
      truth = json.load(f)
    if truth.get('params') == params and all(
        os.path.exists(s['input']) and os.path.exists(s['result']) for s in truth['shards']):
      return truth
  shutil.rmtree(out, ignore_errors=True)
  start = time.perf_counter()
  truth = generate.generate(out, ds.shards, ds.rows, ds.model, ds.failed_rate, ds.seed, ds.classes,
                            sagemaker=sagemaker)
  print(f'generated {ds.name} ({ds.total_rows} rows) in {time.perf_counter() - start:.1f} s',
        flush=True)
  return truth


class S3Server:
  """moto's S3 server on 127.0.0.1 (the one the tests use), holding the data sets read from S3.

  Each such data set is uploaded under ``s3://BUCKET/<data set>/`` as generated, with a manifest
  naming the uploaded objects; predjoin gets the server's endpoint and fake credentials.
  """

  BUCKET = 'predjoin-bench'

  def __init__(self):
    import logging

    from tests import s3_fixtures
    logging.getLogger('werkzeug').setLevel(logging.ERROR)  # not a line per request
    self._fixtures = s3_fixtures
    self._server = s3_fixtures.MotoS3()
    self._server.make_bucket(self.BUCKET)
    self.endpoint = self._server.endpoint

  def upload(self, name: str, data_dir: str, truth: dict) -> Remote:
    root = f's3://{self.BUCKET}/{name}/'
    client = self._server.client

    def put(path: str) -> str:
      key = f'{name}/{os.path.relpath(path, data_dir)}'
      client.upload_file(path, self.BUCKET, key)
      return f's3://{self.BUCKET}/{key}'

    put(os.path.join(data_dir, 'input', '.schema'))
    pairs = {put(s['input']): put(s['result']) for s in truth['shards']}
    key = f'{name}/batch-prediction/{truth["bp_id"]}.manifest'
    client.put_object(Bucket=self.BUCKET, Key=key, Body=json.dumps(pairs).encode())
    return Remote(manifest=f's3://{self.BUCKET}/{key}', prefix=root,
                  args=tuple(self._fixtures.s3_args(self.endpoint)), env=self._fixtures.aws_env())

  def stop(self):
    self._server.stop()


def run_dataset(ds: Dataset, tools: list[Tool], runs: int, predjoin: str, timeout: float,
                s3: S3Server | None = None, warmed: set | None = None) -> list:
  """Runs ``tools`` on ``ds``; ``warmed`` holds the names of the tools that have run already
  in this invocation (and gets this data set's added)."""
  warmed = set() if warmed is None else warmed
  truth = ensure_data(ds)
  data_dir = os.path.join(DATA, ds.name)
  remote = s3.upload(ds.name, data_dir, truth) if ds.storage == 's3' else None
  warm_up(truth)
  load = os.getloadavg()[0]
  rows = []
  measurements = {t.name: [] for t in tools}
  available = {t.name: t.kind != 'predjoin' or _executable(predjoin) for t in tools}
  # Round 0 is a warm-up, not timed: each tool's program files (predjoin's environment is 1.6
  # GB of modules) are read from disk once, as the data files were. With its environment out
  # of the page cache, predjoin's first multiclass run took 2.8-3.3 s instead of 1.9 s.
  for run in range(-1, runs):
    for tool in tools:
      if not available[tool.name]:
        continue
      if run < 0 and not ds.warm_up_round and tool.name in warmed:
        continue
      warmed.add(tool.name)
      base = os.path.join(WORK, ds.name, tool.name)
      out = os.path.join(base, 'out')
      shutil.rmtree(out, ignore_errors=True)
      os.makedirs(base, exist_ok=True)
      # The previous tools' outputs (3.2 GB of JSON Lines on 8 x 1M) go to disk now, not while
      # this tool runs: the kernel would throttle this tool's writes while it flushes them.
      os.sync()
      log = os.path.join(base, f'run-{run}' if run >= 0 else 'warm-up')
      m = measure(tool.command(truth, out, predjoin, data_dir, remote), log, timeout,
                  env=remote.env if remote and tool.kind == 'predjoin' else None)
      m['stderr_tail'] = _tail(log + '.stderr') if m['returncode'] else ''
      label = f'run {run + 1}/{runs}' if run >= 0 else 'warm-up run (not counted)'
      print(f'  {ds.name} {tool.name} {label}: {m["wall"]:.2f} s wall, '
            f'{m["cpu"]:.2f} s CPU, {m["max_process_rss_mb"]:.0f} MB max process, '
            f'{m["peak_tree_rss_mb"]:.0f} MB tree, exit {m["returncode"]}', flush=True)
      if run >= 0:
        measurements[tool.name].append(m)
  for tool in tools:
    row = {'dataset': ds.name, 'role': ds.role, 'tool': tool.name, 'kind': tool.kind,
           'format': tool.fmt, 'rows': ds.total_rows, 'shards': ds.shards,
           'load_before': round(load, 2)}
    ms = measurements[tool.name]
    if not available[tool.name]:
      row.update(status='not available', correct=None,
                 reason=f'{predjoin} does not exist or is not executable')
      rows.append(row)
      continue
    wall = statistics.median(m['wall'] for m in ms)
    row.update(
        status='ran',
        runs=len(ms),
        wall=wall,
        walls=[round(m['wall'], 3) for m in ms],
        cpu=statistics.median(m['cpu'] for m in ms),
        rows_per_s=ds.total_rows / wall if wall > 0 else None,
        max_process_rss_mb=max(m['max_process_rss_mb'] for m in ms),
        peak_tree_rss_mb=max(m['peak_tree_rss_mb'] for m in ms),
        processes=max(m['processes'] for m in ms),
    )
    failed_runs = [m for m in ms if m['returncode'] != 0]
    out = os.path.join(WORK, ds.name, tool.name, 'out')
    if failed_runs:
      m = failed_runs[0]
      row.update(correct=False, reason=f'exit code {m["returncode"]}'
                 + (' (timed out)' if m['timed_out'] else '') + f': {m["stderr_tail"]}')
    elif tool.kind == 'floor':
      row.update(correct=None, reason='writes no output')
    else:
      report = checker.check(data_dir, out)
      row.update(correct=report['correct'], reason=report['reason'])
    if tool.kind != 'predjoin' or row['correct'] is not False:
      shutil.rmtree(out, ignore_errors=True)  # keep a failing predjoin output to look at
    rows.append(row)
    print(f'{ds.name} {tool.name}: {_fmt_rate(row.get("rows_per_s"))} rows/s, '
          f'correct={row["correct"]} ({row["reason"][:160]})', flush=True)
  return rows


def _executable(path: str) -> bool:
  return os.path.isfile(path) and os.access(path, os.X_OK)


# ---------------------------------------------------------------------------------------------
# Targets.


def _find(rows: list, role: str, tool: str) -> dict | None:
  return next((r for r in rows if r['role'] == role and r['tool'] == tool), None)


def _usable(row: dict | None) -> bool:
  return bool(row) and row.get('status') == 'ran' and row.get('correct') is True


def _fastest_peer(rows: list, role: str, fmt: str) -> dict | None:
  """The fastest peer of ``role`` writing ``fmt`` whose output passed the checker."""
  peers = [r for r in rows if r['role'] == role and r['kind'] in ('careful', 'naive')
           and r.get('format', 'parquet') == fmt and _usable(r)]
  return max(peers, key=lambda r: r['rows_per_s'], default=None)


def _ran(*rows) -> bool:
  return all(r and r.get('status') == 'ran' for r in rows)


# The data sets every format is judged on, against the fastest correct peer writing it.
FORMAT_ROLES = ('main', 'multiclass', 'mem-large', 'big')
ROLE_LABELS = {'main': '8 x 1M binary', 'multiclass': '4 x 250k multiclass',
               'mem-large': '1 x 4M binary', 'mem-small': '1 x 1M binary',
               'big': '1 x 16M binary', 'sagemaker': 'SageMaker 8 x 1M binary',
               'tiny-s3': '200 x 50 rows on S3'}


def targets(rows: list) -> list[dict]:
  """The project's performance targets, each PASS, FAIL or N/A with the numbers behind it."""
  out = []

  def add(name, value, limit, op, detail, usable=True, why=''):
    if value is None or not usable:
      verdict = 'N/A' if value is None else 'FAIL'
      out.append({'target': name, 'value': value, 'limit': limit, 'op': op, 'verdict': verdict,
                  'detail': why or detail})
      return
    ok = value >= limit if op == '>=' else value <= limit
    out.append({'target': name, 'value': value, 'limit': limit, 'op': op,
                'verdict': 'PASS' if ok else 'FAIL', 'detail': detail})

  # rows/s: every format on each data set, against the fastest correct peer writing that format.
  # The SageMaker data set's peers write Parquet.
  pairs = [(role, fmt) for role in FORMAT_ROLES for fmt in FORMATS] + [('sagemaker', 'parquet')]
  for role, fmt in pairs:
    tool = f'predjoin-{fmt}'
    best = _fastest_peer(rows, role, fmt)
    row = _find(rows, role, tool)
    name = f'{tool} rows/s vs fastest correct {fmt} peer ({ROLE_LABELS[role]})'
    if not _ran(row) or best is None:
      add(name, None, 1.0, '>=', '', why='no correct peer' if _ran(row) else 'predjoin not run')
      continue
    add(name, row['rows_per_s'] / best['rows_per_s'], 1.0, '>=',
        f'{_fmt_rate(row["rows_per_s"])} vs {best["tool"]} {_fmt_rate(best["rows_per_s"])}',
        usable=row['correct'] is True, why=f'output incorrect: {row["reason"][:120]}')

  # CPU-seconds per million rows, Parquet, against the fastest correct Parquet peer's.
  for role in ('main', 'mem-large'):
    row, best = _find(rows, role, 'predjoin-parquet'), _fastest_peer(rows, role, 'parquet')
    name = f'predjoin-parquet CPU s per M rows vs fastest correct parquet peer ({ROLE_LABELS[role]})'
    if not _ran(row) or best is None:
      add(name, None, 1.0, '<=', '', why='no correct peer' if _ran(row) else 'predjoin not run')
      continue
    mine, theirs = row['cpu'] / row['rows'] * 1e6, best['cpu'] / best['rows'] * 1e6
    add(name, mine / theirs, 1.0, '<=', f'{mine:.2f} vs {best["tool"]} {theirs:.2f} s per M rows',
        usable=row['correct'] is True, why=f'output incorrect: {row["reason"][:120]}')

  name = '2 workers vs 1 worker rows/s (1 x 16M binary, one shard)'
  two, one = _find(rows, 'big', 'predjoin-parquet'), _find(rows, 'big', 'predjoin-parquet-1w')
  if _ran(two, one):
    add(name, two['rows_per_s'] / one['rows_per_s'], 1.7, '>=',
        f'{_fmt_rate(two["rows_per_s"])} vs {_fmt_rate(one["rows_per_s"])}',
        usable=two['correct'] is True and one['correct'] is True, why='output incorrect')
  else:
    add(name, None, 1.7, '>=', '', why='predjoin not run')

  name = 'CPU s per shard, tiny shards (50 rows) read from S3'
  tiny, single = _find(rows, 'tiny-s3', 'predjoin-parquet'), _find(rows, 'tiny-s3-one',
                                                                   'predjoin-parquet')
  if _ran(tiny):
    detail = f'{tiny["cpu"]:.2f} s CPU for {tiny["shards"]} shards'
    if _ran(single) and tiny['shards'] > 1:
      marginal = (tiny['cpu'] - single['cpu']) / (tiny['shards'] - 1)
      detail += (f'; 1 shard {single["cpu"]:.2f} s, so {marginal:.3f} s per shard beyond the '
                 'first')
    add(name, tiny['cpu'] / tiny['shards'], 0.05, '<=', detail,
        usable=tiny['correct'] is True, why=f'output incorrect: {tiny["reason"][:120]}')
  else:
    add(name, None, 0.05, '<=', '', why='predjoin not run')

  # "Per worker": the multi-processing rows, where every worker is a process of its own. The
  # 2-threads row runs the launcher and both workers in one process; it is reported, not judged.
  processes = {t.name for t in TOOLS if t.kind == 'predjoin' and t.mode == 'multi_processing'
               and t.runner == 'DirectRunner'}
  pj = [r for r in rows if r['tool'] in processes and r.get('status') == 'ran']
  name = 'peak RSS per worker: largest process of any multi-processing predjoin run (MB)'
  if pj:
    worst = max(pj, key=lambda r: r['max_process_rss_mb'])
    add(name, worst['max_process_rss_mb'], 400, '<=',
        f'{worst["tool"]} on {worst["dataset"]}; '
        f'tree peak there {worst["peak_tree_rss_mb"]:.0f} MB')
  else:
    add(name, None, 400, '<=', '', why='predjoin not run')

  name = '1 x 16M vs 1 x 1M: peak RSS ratio (largest process, predjoin-parquet)'
  large, small = _find(rows, 'big', 'predjoin-parquet'), _find(rows, 'mem-small',
                                                               'predjoin-parquet')
  if _ran(large, small):
    ratio = large['max_process_rss_mb'] / small['max_process_rss_mb']
    tree = large['peak_tree_rss_mb'] / small['peak_tree_rss_mb']
    add(name, ratio, 1.25, '<=',
        f'{large["max_process_rss_mb"]:.0f} MB vs {small["max_process_rss_mb"]:.0f} MB '
        f'(tree {large["peak_tree_rss_mb"]:.0f} vs {small["peak_tree_rss_mb"]:.0f} MB, '
        f'ratio {tree:.2f})')
  else:
    add(name, None, 1.25, '<=', '', why='predjoin not run')
  return out


# ---------------------------------------------------------------------------------------------
# Projections.

PROJECTED_ROWS = 100_000_000
PROJECTED_WORKERS = (1, 8, 64)
RANGE_ROWS = 1_000_000  # predjoin's --range_rows default: one large shard is cut into these
# Not measured here: the time Dataflow takes to start worker VMs and their containers before
# the first row is read. A few minutes is usual; this is the assumption the "with start-up"
# columns add, on every worker.
STARTUP_SECONDS = 240


def projections(rows: list) -> dict | None:
  """Dataflow vCPU-hours and wall-clock for PROJECTED_ROWS rows, from the per-core rates.

  A per-core rate is rows per CPU-second of predjoin-parquet: on the 8 x 1M set (many shards,
  each joined whole) and on the 1 x 16M set (one shard joined in row ranges). Both include the
  launcher's and workers' start-up, so they understate the steady rate a little.
  """
  rates = {}
  for role, layout in (('main', 'shards'), ('big', 'ranges')):
    row = _find(rows, role, 'predjoin-parquet')
    if _ran(row) and row['cpu'] > 0:
      rates[layout] = {'dataset': row['dataset'], 'rows_per_cpu_s': row['rows'] / row['cpu']}
  if not rates:
    return None
  cases = []
  # 100 shards of 1M rows, or one shard of 100M rows cut into ranges of RANGE_ROWS: 100 units
  # of work either way, the first at the many-shards rate, the second at the ranges rate.
  for layout, units, label in (('shards', 100, '100 shards'),
                               ('ranges', -(-PROJECTED_ROWS // RANGE_ROWS), 'one shard')):
    if layout not in rates:
      continue
    rate = rates[layout]['rows_per_cpu_s']
    unit_seconds = PROJECTED_ROWS / units / rate
    for workers in PROJECTED_WORKERS:
      busy = min(workers, units)
      wall = -(-units // busy) * unit_seconds
      cases.append({
          'layout': label, 'units': units, 'workers': workers, 'busy_workers': busy,
          'unit_seconds': unit_seconds, 'wall_s': wall, 'vcpu_hours': busy * wall / 3600,
          'wall_with_startup_s': wall + STARTUP_SECONDS,
          'vcpu_hours_with_startup': busy * (wall + STARTUP_SECONDS) / 3600,
      })
  return {'rows': PROJECTED_ROWS, 'range_rows': RANGE_ROWS, 'startup_s': STARTUP_SECONDS,
          'rates': rates, 'cases': cases, 'formula': PROJECTION_FORMULA}


PROJECTION_FORMULA = (
    'rate = rows / CPU-seconds of predjoin-parquet (per core: one worker is one vCPU, '
    'n1-standard-1); units = shards, or ceil(rows / range_rows) ranges of one shard; '
    'unit_s = rows / units / rate; busy = min(workers, units); '
    'wall = ceil(units / busy) x unit_s; vCPU-hours = busy x wall / 3600. '
    'With start-up: wall + S and busy x (wall + S) / 3600, S = Dataflow\'s worker start-up.')


def _fmt_duration(seconds: float) -> str:
  if seconds >= 3600:
    return f'{seconds / 3600:.1f} h'
  if seconds >= 60:
    return f'{seconds / 60:.1f} min'
  return f'{seconds:.0f} s'


def projection_lines(proj: dict | None) -> list[str]:
  if not proj:
    return ['No projection: predjoin-parquet did not run on the 8 x 1M or 1 x 16M set.']
  lines = [f'{proj["rows"] / 1e6:g} M rows on Dataflow, from the per-core rates measured here:',
           '']
  for layout, r in proj['rates'].items():
    what = 'many shards' if layout == 'shards' else 'one shard in row ranges'
    lines.append(f'- {what}: {_fmt_rate(r["rows_per_cpu_s"])} rows per CPU-second '
                 f'(predjoin-parquet on {r["dataset"]})')
  lines += ['', f'Formula: {proj["formula"]}', '',
            f'Assumptions: one vCPU per worker runs one unit at a time at the measured rate; '
            f'reads from and writes to cloud storage cost no more CPU than local files did here; '
            f'workers idle in the last round are not billed (autoscaling); the "with start-up" '
            f'columns add S = {proj["startup_s"] / 60:g} min, an assumed Dataflow worker '
            f'start-up, not measured here.', '',
            '| layout | units | workers | wall | vCPU-hours | wall with start-up | '
            'vCPU-hours with start-up |', '|---|---:|---:|---:|---:|---:|---:|']
  for c in proj['cases']:
    lines.append(f'| {c["layout"]} | {c["units"]} | {c["workers"]} | '
                 f'{_fmt_duration(c["wall_s"])} | {c["vcpu_hours"]:.2f} | '
                 f'{_fmt_duration(c["wall_with_startup_s"])} | '
                 f'{c["vcpu_hours_with_startup"]:.2f} |')
  return lines


# ---------------------------------------------------------------------------------------------
# Reports.


def _fmt_rate(value) -> str:
  if value is None:
    return '-'
  if value >= 1e6:
    return f'{value / 1e6:.2f}M'
  if value >= 1e3:
    return f'{value / 1e3:.1f}k'
  return f'{value:.0f}'


def _version(package: str, python: str | None = None) -> str:
  """A package's version here, or in the environment of ``python``."""
  if python is not None and python != sys.executable:
    done = subprocess.run([python, '-c', 'import importlib.metadata, sys; '
                           'print(importlib.metadata.version(sys.argv[1]))', package],
                          capture_output=True, text=True, check=False)
    return done.stdout.strip() if done.returncode == 0 else 'not installed'
  try:
    return importlib.metadata.version(package)
  except importlib.metadata.PackageNotFoundError:
    return 'not installed'


def machine_info() -> dict:
  cpu = 'unknown'
  try:
    with open('/proc/cpuinfo') as f:
      cpu = next((line.split(':', 1)[1].strip() for line in f if line.startswith('model name')),
                 'unknown')
  except OSError:
    pass
  mem = 'unknown'
  try:
    with open('/proc/meminfo') as f:
      kb = int(next(line for line in f if line.startswith('MemTotal')).split()[1])
      mem = f'{kb / 1024 / 1024:.1f} GiB'
  except (OSError, StopIteration):
    pass

  def git(*args):
    try:
      return subprocess.run(['git', '-C', REPO, *args], capture_output=True, text=True,
                            check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
      return ''

  commit = git('rev-parse', '--short=12', 'HEAD') or 'unknown'
  if git('status', '--porcelain', '--untracked-files=no'):
    commit += '+dirty'
  return {
      'nproc': os.cpu_count(),
      'cpu': cpu,
      'memory': mem,
      'os': platform.platform(),
      'python': platform.python_version(),
      'versions': {p: _version(p) for p in ('apache-beam', 'pyarrow', 'polars', 'numpy',
                                            'fastavro', 'psutil', 'matplotlib')},
      'peer_versions': {p: _version(p, peers_python())
                        for p in ('pandas', 'duckdb', 'polars', 'fastavro', 'pyarrow', 'numpy')},
      'commit': commit,
  }


def _mb(value) -> str:
  return '-' if value is None else f'{value:.0f}'


def write_markdown(path: str, rows: list, goals: list, info: dict, quick: bool, runs: int,
                   started: str, elapsed: float, proj: dict | None = None) -> None:
  lines = [
      f'# predjoin benchmark{" (QUICK: tiny data, startup-dominated)" if quick else ""}',
      '',
      f'Run {started}, {elapsed / 60:.1f} min, commit `{info["commit"]}`. Each tool is a whole '
      f'process; wall and CPU are medians of {runs} run(s) after a warm-up read of the files and '
      f'one untimed warm-up run of every tool (on the one-shard sets of 4M and 16M rows, of the '
      f'tools that had not run yet); '
      'memory is the largest of the runs. "max proc" is the peak RSS of the largest single '
      'process (kernel rusage); "tree" is the summed RSS of the process tree sampled every '
      '50 ms. "correct" is benchmarks.check on the last run\'s output.',
      '',
      '| data set | tool | rows | wall s | rows/s | CPU s | max proc MB | tree MB | procs | correct |',
      '|---|---|---:|---:|---:|---:|---:|---:|---:|---|',
  ]
  for r in rows:
    if r.get('status') != 'ran':
      lines.append(f'| {r["dataset"]} | {r["tool"]} | {r["rows"]} | - | - | - | - | - | - | '
                   f'{r["status"]} |')
      continue
    correct = {True: 'yes', False: 'NO', None: 'n/a'}[r['correct']]
    lines.append(
        f'| {r["dataset"]} | {r["tool"]} | {r["rows"]} | {r["wall"]:.2f} | '
        f'{_fmt_rate(r["rows_per_s"])} | {r["cpu"]:.2f} | {_mb(r["max_process_rss_mb"])} | '
        f'{_mb(r["peak_tree_rss_mb"])} | {r["processes"]} | {correct} |')
  lines += ['', '## Targets', '']
  if quick:
    lines += ['Quick data is too small for these to mean anything; they only show the harness '
              'works.', '']
  lines += ['| target | value | limit | verdict | detail |', '|---|---:|---:|---|---|']
  for g in goals:
    value = '-' if g['value'] is None else f'{g["value"]:.2f}'
    op = g['op']
    lines.append(f'| {g["target"]} | {value} | {op} {g["limit"]:g} | {g["verdict"]} | '
                 f'{g["detail"]} |')
  lines += ['', '## Projection: 100 M rows on Dataflow', '', *projection_lines(proj)]
  lines += ['', '## Why outputs are incorrect', '']
  wrong = [r for r in rows if r.get('correct') is False]
  lines += [f'- {r["dataset"]} {r["tool"]}: {r["reason"][:400]}' for r in wrong] or ['- none']
  lines += ['', '## Machine', '',
            f'- nproc {info["nproc"]}, CPU {info["cpu"]}, memory {info["memory"]}',
            f'- {info["os"]}, Python {info["python"]}',
            '- predjoin\'s environment: ' + ', '.join(f'{k} {v}' for k, v in
                                                     info['versions'].items()),
            '- the peers\' environment (benchmarks/requirements-peers.txt): ' + ', '.join(
                f'{k} {v}' for k, v in info.get('peer_versions', {}).items()),
            '- load average (1 min) before each data set: '
            + ', '.join(sorted({f'{r["dataset"]} {r["load_before"]}' for r in rows})),
            '- peers: benchmarks/peers/*.py; naive peers drop blank result lines on purpose and '
            'must show as incorrect (duckdb_naive happens to keep them for one-column results, '
            'i.e. regression).',
            '']
  with open(path, 'w') as f:
    f.write('\n'.join(lines))


def write_chart(path: str, rows: list, title: str) -> None:
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  import matplotlib.ticker

  datasets = list(dict.fromkeys(r['dataset'] for r in rows if r.get('status') == 'ran'))
  if not datasets:
    return
  fig, axes = plt.subplots(len(datasets), 2, figsize=(13, 2.6 + 0.32 * 10 * len(datasets)),
                           squeeze=False)
  colours = {'predjoin': '#1f77b4', 'careful': '#2ca02c', 'naive': '#d62728', 'floor': '#7f7f7f'}
  for ax_rate, ax_mem, ds in zip(axes[:, 0], axes[:, 1], datasets, strict=True):
    ran = [r for r in rows if r['dataset'] == ds and r.get('status') == 'ran']
    names = [r['tool'] + ('' if r['correct'] is not False else ' (WRONG)') for r in ran]
    ys = range(len(ran))
    bars = ax_rate.barh(ys, [r['rows_per_s'] for r in ran],
                        color=[colours[r['kind']] for r in ran])
    ax_rate.bar_label(bars, [_fmt_rate(r['rows_per_s']) for r in ran], fontsize=7, padding=2)
    ax_rate.set_xscale('log')  # the floor is orders of magnitude faster than any parser
    ax_rate.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    rates = [r['rows_per_s'] for r in ran if r['rows_per_s']]
    if rates:
      ax_rate.set_xlim(min(rates) / 3, max(rates) * 3)
    ax_rate.set_yticks(list(ys), names, fontsize=8)
    ax_rate.invert_yaxis()
    ax_rate.set_title(f'{ds}: rows/s (median wall, log scale)', fontsize=9)
    ax_rate.tick_params(axis='x', labelsize=8)
    height = 0.4
    ax_mem.barh([y - height / 2 for y in ys], [r['max_process_rss_mb'] for r in ran], height,
                color=[colours[r['kind']] for r in ran], label='largest process')
    ax_mem.barh([y + height / 2 for y in ys], [r['peak_tree_rss_mb'] for r in ran], height,
                color=[colours[r['kind']] for r in ran], alpha=0.45, label='process tree')
    ax_mem.set_yticks(list(ys), names, fontsize=8)
    ax_mem.invert_yaxis()
    ax_mem.set_title(f'{ds}: peak RSS MB (solid: largest process, light: tree)', fontsize=9)
    ax_mem.tick_params(axis='x', labelsize=8)
  fig.suptitle(title, fontsize=10)
  fig.tight_layout()
  fig.savefig(path, dpi=90)
  plt.close(fig)


def append_history(path: str, rows: list, goals: list, info: dict, quick: bool,
                   started: str) -> None:
  new = not os.path.exists(path)
  pj = _find(rows, 'main', 'predjoin-parquet')
  best = _fastest_peer(rows, 'main', 'parquet')
  passed = sum(g['verdict'] == 'PASS' for g in goals)
  pj_text = ('not available' if not pj or pj.get('status') != 'ran'
             else f'{_fmt_rate(pj["rows_per_s"])}{"" if pj["correct"] else " (incorrect)"}')
  best_text = f'{best["tool"]} {_fmt_rate(best["rows_per_s"])}' if best else '-'
  with open(path, 'a') as f:
    if new:
      f.write('# Benchmark history\n\nOne line per `python -m benchmarks.run`; details of the '
              'latest run in latest.md (latest-quick.md for --quick).\n\n'
              '| date | commit | mode | main data set | predjoin parquet rows/s | fastest correct '
              'peer | targets passed |\n|---|---|---|---|---:|---|---|\n')
    main = next((r['dataset'] for r in rows if r['role'] == 'main'), '-')
    f.write(f'| {started} | {info["commit"]} | {"quick" if quick else "full"} | {main} | '
            f'{pj_text} | {best_text} | {passed}/{len(goals)} |\n')


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--quick', action='store_true', help='tiny data sets')
  parser.add_argument('--runs', type=int, default=3, help='runs per tool (median)')
  parser.add_argument('--datasets', default='', help='comma-separated roles: main,multiclass,'
                      'mem-large,mem-small,big,sagemaker,tiny-s3,tiny-s3-one (default all)')
  parser.add_argument('--tools', default='', help='comma-separated tool names (default all)')
  parser.add_argument('--predjoin', default=DEFAULT_PREDJOIN, help='the predjoin command')
  parser.add_argument('--timeout', type=float, default=None, help='seconds per run')
  parser.add_argument('--no-history', action='store_true', help='do not append to history.md')
  args = parser.parse_args(argv)

  datasets = QUICK if args.quick else FULL
  if args.datasets:
    roles = args.datasets.split(',')
    datasets = [d for d in datasets if d.role in roles]
  wanted = args.tools.split(',') if args.tools else [t.name for t in TOOLS]
  unknown = set(wanted) - {t.name for t in TOOLS}
  if unknown:
    parser.error(f'unknown tools {sorted(unknown)}')
  timeout = args.timeout or (600 if args.quick else 3600)
  if not _executable(args.predjoin):
    print(f'predjoin: {args.predjoin} not found; its rows will say "not available"', flush=True)

  started = datetime.datetime.now().strftime('%Y-%m-%d %H:%M')
  t0 = time.perf_counter()
  rows = []
  s3 = S3Server() if any(ds.storage == 's3' for ds in datasets) else None
  warmed = set()
  try:
    for ds in datasets:
      tools = [t for t in TOOLS if t.name in wanted and (ds.tools is None or t.name in ds.tools)
               and t.source in ('any', ds.source) and (t.roles is None or ds.role in t.roles)]
      print(f'== {ds.name}: {ds.total_rows} rows, tools {", ".join(t.name for t in tools)}',
            flush=True)
      rows += run_dataset(ds, tools, args.runs, args.predjoin, timeout, s3, warmed)
  finally:
    if s3 is not None:
      s3.stop()
  elapsed = time.perf_counter() - t0

  goals = targets(rows)
  proj = projections(rows)
  info = machine_info()
  os.makedirs(RESULTS, exist_ok=True)
  stem = 'latest-quick' if args.quick else 'latest'
  write_markdown(os.path.join(RESULTS, stem + '.md'), rows, goals, info, args.quick, args.runs,
                 started, elapsed, proj)
  with open(os.path.join(RESULTS, stem + '.json'), 'w') as f:
    json.dump({'started': started, 'quick': args.quick, 'runs': args.runs, 'machine': info,
               'rows': rows, 'targets': goals, 'projections': proj}, f, indent=1)
  try:
    write_chart(os.path.join(RESULTS, stem + '.png'), rows,
                f'predjoin benchmark {started}, commit {info["commit"]}'
                + (' (QUICK)' if args.quick else ''))
  except ImportError as e:
    print(f'no chart: {e}', flush=True)
  if not args.no_history:
    append_history(os.path.join(RESULTS, 'history.md'), rows, goals, info, args.quick, started)

  print()
  with open(os.path.join(RESULTS, stem + '.md')) as f:
    print(f.read())
  for g in goals:
    value = '-' if g['value'] is None else f'{g["value"]:.2f}'
    print(f'{g["verdict"]:4}  {g["target"]}: {value} ({g["op"]} {g["limit"]:g}) {g["detail"]}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
