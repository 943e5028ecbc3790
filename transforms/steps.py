"""predjoin's Beam transforms: thin wrappers around the pure code in this package.

    manifests ──ReadManifests──> shards ──SpreadShards──JoinShards──> records/, dead_letter/,
                        + manifest problems                 │    resubmit/ (files per shard:
                                                            │    shard_files.py), or record
                                                            │    batches for BigQuery
                                                            └──> reports, file names and
                                                                 counts ──> summary.json

With ``--data_rearrangement``, ``CountInputRows`` first counts every shard's rows (in parallel)
and ``JoinShards`` takes the counts as a side input, to place the datasource's slice.

Elements between transforms are Arrow ``RecordBatch`` blocks of rows, not one dict per row;
``RecordsAsDicts`` gives the per-record view for users who want it.
"""

from __future__ import annotations

import json

import apache_beam as beam
import pyarrow as pa
from apache_beam import pvalue
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from transforms.aml import slices
from transforms.aml.manifest import ManifestError, batch_prediction_id, shards_of
from transforms.io import shard_files, sinks
from transforms.io.access import AccessError, AccessPolicy
from transforms.io.storage import (
  OUTPUT_DIRS,
  SUMMARY,
  Storage,
  StorageConfig,
  StorageError,
  redact,
  remove_output_leftovers,
  write_text,
)
from transforms.join import joiner
from transforms.report import verification

NAMESPACE = 'predjoin'


def _counter(name: str):
  return Metrics.counter(NAMESPACE, name)


class ReadManifestFn(beam.DoFn):
  """Manifest URI -> its shards; a manifest that cannot be used -> its report (a dict), on the
  same output: the join passes it on (``JoinShardFn``), so every report of the run leaves one
  stage and the summary needs no stage of its own to gather them (each Flatten of outputs
  from different stages is one more stage on the local runner)."""

  INDEXED = 'indexed_shards'  # (position in the manifest, shard), when with_index

  def __init__(self, storage_config: StorageConfig, rebase_rules=(),
               access_policy: AccessPolicy | None = None, with_index: bool = False):
    self._storage_config = storage_config
    self._with_index = with_index
    self._rebase_rules = list(rebase_rules)
    # Workers enforce the access limits too: a manifest may change after the launch checked it.
    self._access_policy = access_policy if access_policy is not None else \
        AccessPolicy.create((), self._rebase_rules)

  def setup(self):
    self._storage = Storage(self._storage_config)
    self._shards = _counter('shards')
    self._bad_manifests = _counter('manifests_bad')

  def process(self, uri: str):
    try:
      shards = shards_of(self._storage.read_bytes(uri), uri, self._rebase_rules)
      self._access_policy.check_shards(uri, shards)
    except (ManifestError, StorageError, AccessError) as e:
      self._bad_manifests.inc()
      report = joiner.ShardReport(batch_prediction_id=batch_prediction_id(uri),
                                   manifest_uri=redact(uri),
                                   input_uri=None, result_uri=None, input_rows=0,
                                   status=joiner.ERROR, error=redact(str(e)))
      yield report.as_dict()
      return
    self._shards.inc(len(shards))
    yield from shards
    if self._with_index:
      for index, shard in enumerate(shards):
        yield pvalue.TaggedOutput(self.INDEXED, (index, shard))


class CountInputRowsFn(beam.DoFn):
  """(index, shard) -> ``split.ShardSize``: a shard's rows, to place a datasource slice."""

  def __init__(self, plan: joiner.JoinPlan, storage_config: StorageConfig):
    self._plan = plan
    self._storage_config = storage_config

  def setup(self):
    self._joiner = joiner.ShardJoiner(self._plan, Storage(self._storage_config))

  def process(self, indexed):
    index, shard = indexed
    try:
      rows, error = self._joiner.count_rows(shard), None
    except (joiner.ShardProblem, *joiner._READ_ERRORS) as e:
      rows, error = None, redact(str(e))
    yield slices.ShardSize(shard.manifest_uri, index, shard.input_uri, rows, error)


class JoinShardFn(beam.DoFn):
  """Shard -> its records, dead letters and resubmit lines, written to files of its own
  (``transforms/shard_files.py``), and its report. A manifest problem's report (a dict from
  ``ReadManifestFn``) passes through.

  With ``record_format`` None the records are not written but emitted (main output, record
  batches) for a sink of their own (BigQuery).
  ``RUN_PARTS`` carries ``(kind, value)`` elements for the summary (``CollectRun``): the
  reports (``'reports'``), the files written, and the records (``RECORD_COUNTS``) and dead
  letters (``DEAD_COUNTS``) each shard wrote.
  """

  RUN_PARTS = 'run_parts'

  def __init__(self, plan: joiner.JoinPlan, storage_config: StorageConfig, output: str,
               record_format: str | None = None):
    self._plan = plan
    self._storage_config = storage_config
    self._output = output
    self._record_format = record_format

  def setup(self):
    self._joiner = joiner.ShardJoiner(self._plan, Storage(self._storage_config))
    self._writers = None if self._record_format is None else \
        sinks.RecordWriters(self._record_format, self._plan.schema)
    self._records_to_sink = _counter('records_to_sink')
    self._rows_in = _counter('rows_in')
    self._joined = _counter('rows_joined')
    self._failed = _counter('rows_failed')
    self._dead = _counter('rows_dead_lettered')
    self._not_predicted = _counter('rows_not_predicted')
    self._misaligned = _counter('shards_misaligned')
    self._shards_ok = _counter('shards_ok')
    self._shards_bad = _counter('shards_bad')
    self._batch_rows = Metrics.distribution(NAMESPACE, 'batch_rows')
    self._dead_to_sink = _counter('dead_letters_to_sink')

  def process(self, shard, sizes=None):
    if isinstance(shard, dict):  # a manifest that could not be used: its report
      yield pvalue.TaggedOutput(self.RUN_PARTS, (REPORTS, shard))
      return
    shard_slice = slice_error = None
    if self._plan.split is not None:
      try:
        shard_slice = slices.shard_slice(self._plan.split, sizes or [], shard.manifest_uri,
                                            shard.input_uri)
      except slices.SplitError as e:
        slice_error = redact(str(e))
    files = shard_files.ShardFiles(self._output, shard, self._plan.header_line, self._writers)
    try:
      yield from self._join(shard, shard_slice, slice_error, files)
    except BaseException:
      files.discard()
      raise

  def _join(self, shard, shard_slice, slice_error, files: shard_files.ShardFiles):
    for kind, value in self._joiner.join(shard, shard_slice, slice_error):
      if kind == joiner.RECORDS:
        self._batch_rows.update(value.num_rows)
        if self._writers is None:
          yield value
        else:
          files.records(value)
      elif kind == joiner.DEAD_LETTER:
        files.dead_letter(value)
      elif kind == joiner.RESUBMIT:
        files.resubmit(value)
      else:
        for file_kind, uri in files.commit().items():
          yield pvalue.TaggedOutput(self.RUN_PARTS, (file_kind, uri))
        self._dead_to_sink.inc(files.dead_letter_rows)
        yield pvalue.TaggedOutput(self.RUN_PARTS,
                                  (DEAD_COUNTS, (files.key, (files.dead_letter_rows, 0, 0))))
        if self._writers is not None:
          self._records_to_sink.inc(sum(files.record_counts))
          yield pvalue.TaggedOutput(self.RUN_PARTS,
                                    (RECORD_COUNTS, (files.key, files.record_counts)))
        self._rows_in.inc(value.input_rows or 0)
        self._joined.inc(value.joined_rows)
        self._failed.inc(value.failed_rows)
        self._not_predicted.inc(value.not_predicted_rows)
        self._dead.inc(value.dead_letter_rows)
        self._misaligned.inc(value.status == joiner.MISALIGNED)
        bad = value.status in joiner.BAD_STATUSES
        (self._shards_bad if bad else self._shards_ok).inc()
        report = value.as_dict()
        report['input_uri'] = redact(report['input_uri'])
        report['result_uri'] = redact(report['result_uri'])
        report['manifest_uri'] = redact(report['manifest_uri'])
        yield pvalue.TaggedOutput(self.RUN_PARTS, (REPORTS, report))


class EnrichPredictions(beam.PTransform):
  """PCollection of manifest URIs -> ``{'records', 'reports', 'run_parts'}``; each shard's
  records (with ``record_format``: avro, parquet or jsonl), dead letters and resubmit lines go
  to files under ``output`` (``transforms/shard_files.py``). ``run_parts`` holds what the
  summary needs (``JoinShardFn.RUN_PARTS``), ``reports`` the shards' and bad manifests'
  reports (dicts). Without ``record_format``, ``records`` holds the record batches (else it is
  empty).
  """

  def __init__(self, plan: joiner.JoinPlan, storage_config: StorageConfig, output: str,
               rebase_rules=(), access_policy: AccessPolicy | None = None,
               record_format: str | None = None):
    super().__init__()
    if record_format is not None and record_format not in sinks.SUFFIX:
      raise ValueError(f'no record files of format {record_format!r}')
    self._output = output
    self._record_format = record_format
    self._plan = plan
    self._storage_config = storage_config
    self._rebase_rules = rebase_rules
    self._access_policy = access_policy

  def expand(self, manifests):
    sliced = self._plan.split is not None
    shards = manifests | 'ReadManifests' >> beam.ParDo(
        ReadManifestFn(self._storage_config, self._rebase_rules,
                       self._access_policy, with_index=sliced)).with_outputs(
            ReadManifestFn.INDEXED, main='shards')
    side = {}
    if sliced:
      side['sizes'] = pvalue.AsList(
          shards[ReadManifestFn.INDEXED]
          | 'SpreadCounts' >> beam.Reshuffle()
          | 'CountInputRows' >> beam.ParDo(CountInputRowsFn(self._plan, self._storage_config)))
    joined = (
        shards.shards
        | 'SpreadShards' >> beam.Reshuffle()
        | 'JoinShards' >> beam.ParDo(JoinShardFn(self._plan, self._storage_config, self._output,
                                                 self._record_format),
                                     **side).with_outputs(JoinShardFn.RUN_PARTS, main='records'))
    joined.records.element_type = pa.RecordBatch  # coded by sinks.RecordBatchCoder
    run_parts = joined[JoinShardFn.RUN_PARTS]
    reports = run_parts | 'Reports' >> beam.FlatMap(
        lambda part: [part[1]] if part[0] == REPORTS else [])
    return {'records': joined.records, 'reports': reports, 'run_parts': run_parts}


class RecordsAsDicts(beam.PTransform):
  """Record batches -> one dict per record, for users who want the per-record view."""

  def expand(self, batches):
    return batches | 'BatchToDicts' >> beam.FlatMap(lambda batch: batch.to_pylist())


def _record_counts(batch: pa.RecordBatch):
  """(ok, failed, not_predicted) records of a batch, keyed by shard."""
  key = (batch.column('batch_prediction_id')[0].as_py(), batch.column('input_uri')[0].as_py())
  return key, shard_files.status_counts(batch)


def _add(counts: tuple | None, more: tuple) -> tuple:
  return more if counts is None else tuple(a + b for a, b in zip(counts, more, strict=True))


RECORD_COUNTS, DEAD_COUNTS = 'record_counts', 'dead_counts'
REPORTS = 'reports'
_LISTS = (REPORTS, shard_files.RECORD_FILES, shard_files.DEAD_LETTER_FILES,
          shard_files.RESUBMIT_FILES)


class CollectRun(beam.CombineFn):
  """Everything ``summary.json`` needs, gathered by one combine: ``(kind, value)`` elements.

  ``reports``, ``record_files``, ``dead_letter_files``, ``resubmit_files``: listed.
  ``record_counts``, ``dead_counts``: ``(shard key, counts)``, summed per shard key. They are
  summed where they are made (Beam lifts the combine into the producing stages), so only one
  small accumulator per bundle crosses a stage boundary.
  """

  def create_accumulator(self):
    return {**{kind: [] for kind in _LISTS}, RECORD_COUNTS: {}, DEAD_COUNTS: {}}

  def add_input(self, acc, element):
    kind, value = element
    if kind in (RECORD_COUNTS, DEAD_COUNTS):
      key, counts = value
      acc[kind][key] = _add(acc[kind].get(key), counts)
    else:
      acc[kind].append(value)
    return acc

  def merge_accumulators(self, accs):
    merged = self.create_accumulator()
    for acc in accs:
      for kind in _LISTS:
        merged[kind].extend(acc[kind])
      for kind in (RECORD_COUNTS, DEAD_COUNTS):
        for key, counts in acc[kind].items():
          merged[kind][key] = _add(merged[kind].get(key), counts)
    return merged

  def extract_output(self, acc):
    return acc


def _counted(element, key_and_counts, counter: str, kind: str):
  key, counts = key_and_counts(element)
  _counter(counter).inc(sum(counts))
  return kind, (key, counts)


class IdentityError(RuntimeError):
  """The outputs do not account for every input row: a bug, never a data problem."""


class TooManyBadShards(RuntimeError):
  """More bad shards (or manifests) than ``--max_bad_shards`` allows: the job fails with this."""


SHARD_ERRORS_SHOWN = 10  # in the job's error; summary.json lists every one


def bad_shards_message(summary: dict, summary_uri: str) -> str:
  """Why a run with too many bad shards failed: the count, the limit and the shards' errors."""
  bad = [s for s in summary['shards']
         if s['input_uri'] is None or s['status'] in joiner.BAD_STATUSES]
  errors = [f'{s["input_uri"] or "manifest " + s["manifest_uri"]}: {s["status"]}: {s["error"]}'
            for s in bad[:SHARD_ERRORS_SHOWN]]
  more = f'; and {len(bad) - SHARD_ERRORS_SHOWN} more' if len(bad) > SHARD_ERRORS_SHOWN else ''
  return (f'{len(bad)} bad shard(s) or manifest(s), more than --max_bad_shards '
          f'{summary["max_bad_shards"]} allows (see {summary_uri}): '
          + '; '.join(errors) + more)


def summarize(reports: list[dict], record_counts: dict, dead_counts: dict, record_files: list,
              dead_files: list, max_bad_shards: int, run: dict | None = None,
              resubmit_files: list = (), resubmit_schema: str | None = None) -> dict:
  """The run summary, with the identity checked per shard against what reached the sinks.

  With ``run`` (``report.run_facts``), the verification sections are added (typing, alignment,
  audit, data_rearrangement, reconciliation, resubmit, warnings).
  """
  shards = sorted(reports, key=lambda r: (r['batch_prediction_id'] or '', r['manifest_uri'],
                                          r['input_uri'] or ''))
  problems = []
  totals = dict(input_rows=0, joined_rows=0, failed_rows=0, not_predicted_rows=0,
                dead_letter_rows=0, shards=0, bad_shards=0, misaligned_shards=0, bad_manifests=0)
  for r in shards:
    if r['input_uri'] is None:
      totals['bad_manifests'] += 1
      continue
    r.setdefault('not_predicted_rows', 0)
    totals['shards'] += 1
    totals['bad_shards'] += r['status'] in joiner.BAD_STATUSES
    totals['misaligned_shards'] += r['status'] == joiner.MISALIGNED
    for name in ('joined_rows', 'failed_rows', 'not_predicted_rows', 'dead_letter_rows'):
      totals[name] += r[name]
    totals['input_rows'] += r['input_rows'] or 0
    key = (r['batch_prediction_id'], r['input_uri'])
    written_ok, written_failed, written_np = record_counts.get(key, (0, 0, 0))
    written_dead = dead_counts.get(key, (0, 0, 0))[0]
    where = r['input_uri']
    reported = (r['joined_rows'], r['failed_rows'], r['not_predicted_rows'],
                r['dead_letter_rows'])
    if r['input_rows'] is not None and r['input_rows'] != sum(reported):
      problems.append(f'{where}: input_rows {r["input_rows"]} != joined + failed + '
                      'not predicted + dead letter')
    if (written_ok, written_failed, written_np, written_dead) != reported:
      problems.append(f'{where}: the sinks received {written_ok} joined, {written_failed} failed, '
                      f'{written_np} not predicted and {written_dead} dead-letter rows; the join '
                      f'reported {", ".join(str(n) for n in reported)}')
  extra = (set(record_counts) | {k for k, v in dead_counts.items() if v[0]}) - {
      (r['batch_prediction_id'], r['input_uri']) for r in shards}
  problems.extend(f'{key[1]}: rows reached a sink with no shard report' for key in sorted(extra))
  bad = totals['bad_shards'] + totals['bad_manifests']
  summary = {
      'ok': bad <= max_bad_shards and not problems,
      'batch_prediction_ids': sorted({r['batch_prediction_id'] for r in shards
                                      if r['batch_prediction_id']}),
      'totals': totals,
      'max_bad_shards': max_bad_shards,
      'identity': {'holds': not problems, 'problems': problems,
                   'rule': 'input_rows = joined_rows + failed_rows + not_predicted_rows + '
                           'dead_letter_rows, per shard, checked against the rows each sink '
                           'received'},
      'shards': shards,
      'outputs': {'records': sorted(record_files), 'dead_letter': sorted(dead_files),
                  'resubmit': sorted(resubmit_files)},
  }
  if run is not None:
    summary.update(verification.sections(shards, run, list(resubmit_files), resubmit_schema))
  return summary


def publish_records(table_load, summary: dict, jobs: list[str], client=None) -> dict:
  """The BigQuery section of the summary: the staged records published when the run is ok
  (``bigquery.TableLoad.publish``), or why they were not."""
  if not summary['ok']:
    return {'table': table_load.table, 'write_disposition': table_load.disposition,
            'published': False, 'reason': 'the run failed (see "ok"): the table is unchanged'}
  t = summary['totals']
  return table_load.publish(
      sorted({r['batch_prediction_id'] for r in summary['shards'] if r['input_uri'] is not None}),
      jobs, t['joined_rows'] + t['failed_rows'] + t['not_predicted_rows'], client)


def _write_summary(run_parts: dict, uri, max_bad_shards, run=None, resubmit_schema=None,
                   output_dirs=OUTPUT_DIRS, resubmit_schema_text=None, fail_job=False,
                   table_load=None):
  resubmit_files = run_parts[shard_files.RESUBMIT_FILES]
  record_files = run_parts[shard_files.RECORD_FILES]
  dead_files = run_parts[shard_files.DEAD_LETTER_FILES]
  summary = summarize(run_parts[REPORTS], run_parts[RECORD_COUNTS], run_parts[DEAD_COUNTS],
                      record_files, dead_files,
                      max_bad_shards, run, sorted(resubmit_files), resubmit_schema)
  if table_load is not None:  # the records are staged in BigQuery: publish them, or not
    summary['bigquery'] = publish_records(table_load, summary, record_files)
  if resubmit_files and resubmit_schema and resubmit_schema_text:
    write_text(resubmit_schema, resubmit_schema_text)  # the copy beside resubmit/part-*.csv
  # Files of earlier runs into the same output (another shard count, a failed run's temporary
  # files) go before the summary that lists this run's files is written.
  remove_output_leftovers(
      FileSystems.split(uri)[0],
      [*record_files, *dead_files, *resubmit_files],
      output_dirs)
  write_text(uri, json.dumps(summary, indent=2, sort_keys=False) + '\n')
  if table_load is not None:  # published or not, the rows have left the staging table
    table_load.discard()
  if not summary['identity']['holds']:
    raise IdentityError('the outputs do not account for every input row: ' +
                        '; '.join(summary['identity']['problems']))
  if fail_job and not summary['ok']:
    raise TooManyBadShards(bad_shards_message(summary, uri))
  return summary


class WriteSummary(beam.PTransform):
  """Shard reports + what reached each sink + written files -> ``<output>/summary.json``.

  Takes a dict of PCollections: ``run_parts`` (``EnrichPredictions``' ``(kind, value)``
  elements: reports, the files each shard wrote, its records and dead letters counted as
  written); when the records go to a sink of their own (BigQuery), also ``records`` (the record
  batches as they go to it) and ``record_files`` (what that sink returns). All go into one
  combine (``CollectRun``), whose result writes the summary once every sink has finished. With
  ``resubmit_schema_text``,
  it also writes the copy of the input's schema beside the resubmit files, when there are any.

  With ``fail_job``, a run with more bad shards than ``max_bad_shards`` fails once the summary
  is written (``TooManyBadShards``, naming the shards' errors), so the job ends failed where no
  launcher waits for it to read the summary (Dataflow); the local launcher reads the summary
  and sets the exit code instead.

  With ``table_load`` (``bigquery.TableLoad``), ``record_files`` are the jobs that staged the
  records in BigQuery: before the summary is written they are published into the table when
  the run is ok (``publish_records``), and the staging table is dropped after.
  """

  def __init__(self, output: str, max_bad_shards: int, run: dict | None = None,
               resubmit_schema: str | None = None, output_dirs=OUTPUT_DIRS,
               resubmit_schema_text: str | None = None, fail_job: bool = False,
               table_load=None):
    super().__init__()
    self.uri = FileSystems.join(output, SUMMARY)
    self._max_bad_shards = max_bad_shards
    self._run = run
    self._resubmit_schema = resubmit_schema
    self._output_dirs = tuple(output_dirs)  # the directories whose leftovers go
    self._resubmit_schema_text = resubmit_schema_text
    self._fail_job = fail_job
    self._table_load = table_load

  def expand(self, inputs):
    parts = [
        inputs['run_parts'],
        *([inputs['records'] | 'CountRecords' >> beam.Map(
            _counted, _record_counts, 'records_to_sink', RECORD_COUNTS)]
          if 'records' in inputs else []),
        *[inputs[kind] | f'Tag_{kind}' >> beam.Map(lambda value, kind=kind: (kind, value))
          for kind in _LISTS if kind in inputs],
    ]
    # A Flatten is a stage of its own on the local runner: only when there is more than one.
    collected = parts[0] if len(parts) == 1 else parts | 'Flatten' >> beam.Flatten()
    return (collected
            # Never empty: every manifest (there is at least one) reports a problem or has
            # shards, and every shard reports. Without Beam's default value for an empty
            # input: one stage and three DoFns fewer.
            | 'CollectRun' >> beam.CombineGlobally(CollectRun()).without_defaults()
            | 'WriteSummaryJson' >> beam.Map(
                _write_summary, self.uri, self._max_bad_shards, self._run,
                self._resubmit_schema, self._output_dirs, self._resubmit_schema_text,
                self._fail_job, self._table_load))
