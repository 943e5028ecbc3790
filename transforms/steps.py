"""predjoin's Beam steps: thin wrappers around the pure code of ``aml``, ``join``, ``io``, ``report``.

    manifests ──ReadManifests──> shards ──SpreadShards──JoinShards──> records/, dead_letter/,
                        + manifest problems                 │    resubmit/ (files per shard:
                                                            │    io/shard_files.py), or record
                                                            │    batches for BigQuery
                                                            └──> ShardOutcome per shard
                                                                 ──WriteSummary──> summary.json

With ``--data_rearrangement``, ``CountInputRows`` first counts every shard's rows (in parallel)
and ``JoinShards`` takes the counts as a side input, to place the datasource's slice.

A large shard is split by ``JoinShards`` after its pass 1 (``--range_rows``,
``transforms/join/ranges.py``): its ranges go through ``SpreadRanges`` to ``JoinRanges``, on
any worker, and ``MergeRanges`` adds their outcomes up into the shard's one ``ShardOutcome``::

    JoinShards ──ranges──SpreadRanges──JoinRanges──> files per range
                                           └──> range outcomes ──MergeRanges──> ShardOutcome

What passes between the steps is typed: ``aml.manifest.Shard`` pairs; Arrow ``RecordBatch``
blocks of records (not one dict per row); and for the summary one
``report.run_summary.ShardOutcome`` per shard (and per manifest that cannot be used), plus, for
records that go to BigQuery, ``SinkCounts`` and ``StagingJob`` s.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from typing import NamedTuple

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
from transforms.join.joiner import ShardJoiner, merge_ranges
from transforms.join.outcomes import (
  ERROR,
  MISALIGNED,
  DeadLetter,
  ResubmitLines,
  ShardProblem,
  ShardReport,
)
from transforms.join.plan import JoinPlan
from transforms.join.ranges import RangeWork, SplitShard
from transforms.join.shards import Shard
from transforms.report import prior_runs
from transforms.report.run_summary import (
  IdentityError,
  RunParts,
  ShardOutcome,
  SinkCounts,
  StagingJob,
  TooManyBadShards,
  bad_shards_message,
  shard_key,
  summarize,
)

NAMESPACE = 'predjoin'


def _counter(name: str):
  return Metrics.counter(NAMESPACE, name)


class ReadManifestFn(beam.DoFn):
  """Manifest URI -> its :class:`Shard` s; a manifest that cannot be used -> its
  :class:`ShardOutcome`, on the same output: the join passes it on (``JoinShardFn``), so every
  outcome of the run leaves one stage and the summary needs no stage of its own to gather them
  (each Flatten of outputs from different stages is one more stage on the local runner)."""

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
      yield ShardOutcome(ShardReport(batch_prediction_id(uri), uri, None, None, input_rows=0,
                                     status=ERROR, error=str(e)))
      return
    self._shards.inc(len(shards))
    yield from shards
    if self._with_index:
      for index, shard in enumerate(shards):
        yield pvalue.TaggedOutput(self.INDEXED, (index, shard))


class CountInputRowsFn(beam.DoFn):
  """(index, shard) -> ``slices.ShardSize``: a shard's rows, to place a datasource slice."""

  def __init__(self, plan: JoinPlan, storage_config: StorageConfig):
    self._plan = plan
    self._storage_config = storage_config

  def setup(self):
    self._joiner = ShardJoiner(self._plan, Storage(self._storage_config))

  def process(self, indexed):
    index, shard = indexed
    try:
      rows, error = self._joiner.count_rows(shard), None
    except ShardProblem as e:
      rows, error = None, str(e)
    yield slices.ShardSize(shard.manifest_uri, index, shard.input_uri, rows, error)


class JoinShardFn(beam.DoFn):
  """Shard -> its records, dead letters and resubmit lines, written to files of its own
  (``transforms/io/shard_files.py``), and its :class:`ShardOutcome` (``OUTCOMES``). A
  manifest's outcome (from ``ReadManifestFn``) passes through.

  With ``record_format`` None the records are not written but emitted (main output, record
  batches) for a sink of their own (BigQuery).
  """

  OUTCOMES = 'outcomes'
  RANGES = 'ranges'  # the ranges of split shards (``RangeWork``), for JoinRangeFn

  def __init__(self, plan: JoinPlan, storage_config: StorageConfig, output: str,
               record_format: str | None = None):
    self._plan = plan
    self._storage_config = storage_config
    self._output = output
    self._record_format = record_format

  def setup(self):
    self._storage_config.configure_filesystems()  # the shard's files go through FileSystems
    self._joiner = ShardJoiner(self._plan, Storage(self._storage_config))
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

  def process(self, shard: Shard | ShardOutcome, sizes=None):
    if isinstance(shard, ShardOutcome):  # a manifest that could not be used
      yield pvalue.TaggedOutput(self.OUTCOMES, shard)
      return
    shard_slice = slice_error = None
    if self._plan.split is not None:
      try:
        shard_slice = slices.shard_slice(self._plan.split, sizes or [], shard.manifest_uri,
                                         shard.input_uri)
      except slices.SplitError as e:
        slice_error = str(e)
    files = shard_files.ShardFiles(self._output, shard, self._plan.header_line, self._writers)
    try:
      yield from self._join(shard, shard_slice, slice_error, files)
    except BaseException:
      files.discard()
      raise

  def _join(self, shard, shard_slice, slice_error, files: shard_files.ShardFiles):
    yield from self._emit(self._joiner.join(shard, shard_slice, slice_error), files)

  def _emit(self, items, files: shard_files.ShardFiles):
    for item in items:
      if isinstance(item, SplitShard):  # joined by JoinRangeFn, a range at a time
        for work in item.work:
          yield pvalue.TaggedOutput(self.RANGES, work)
      elif isinstance(item, pa.RecordBatch):
        self._batch_rows.update(item.num_rows)
        if self._writers is None:
          yield item
        else:
          files.records(item)
      elif isinstance(item, DeadLetter):
        files.dead_letter(item)
      elif isinstance(item, ResubmitLines):
        files.resubmit(item.text)
      else:
        yield pvalue.TaggedOutput(self.OUTCOMES, self._finish(item, files))

  def _finish(self, report: ShardReport, files: shard_files.ShardFiles) -> ShardOutcome:
    """Moves the shard's files into place and counts its rows."""
    outcome = self._commit(report, files)
    self._count_shard(report)
    return outcome

  def _commit(self, report: ShardReport, files: shard_files.ShardFiles) -> ShardOutcome:
    """Moves the files into place and counts the rows they hold."""
    written = files.commit()
    self._dead_to_sink.inc(files.dead_letter_rows)
    if self._writers is not None:
      self._records_to_sink.inc(sum(files.record_counts))
    self._joined.inc(report.joined_rows)
    self._failed.inc(report.failed_rows)
    self._not_predicted.inc(report.not_predicted_rows)
    self._dead.inc(report.dead_letter_rows)
    return ShardOutcome(report, written,
                        files.record_counts if self._writers is not None else None,
                        files.dead_letter_rows)

  def _count_shard(self, report: ShardReport) -> None:
    self._rows_in.inc(report.input_rows or 0)
    self._misaligned.inc(report.status == MISALIGNED)
    (self._shards_bad if report.bad else self._shards_ok).inc()


class JoinRangeFn(JoinShardFn):
  """One range of a split shard (``RangeWork``) -> its records, dead letters and resubmit
  lines, in files of its own (``-r<range>``), and ``(shard key, (range, ShardOutcome))``
  (``OUTCOMES``) holding the range's counts, for :func:`merge_range_outcomes`."""

  def process(self, work: RangeWork):
    files = shard_files.ShardFiles(self._output, work.shard, self._plan.header_line,
                                   self._writers, part=work.range.index)
    try:
      for item in self._emit(self._joiner.join_range(work), files):
        if isinstance(item, pvalue.TaggedOutput):  # the range's own outcome
          yield pvalue.TaggedOutput(self.OUTCOMES, (range_key(work.shard), (work, item.value)))
        else:
          yield item
    except BaseException:
      files.discard()
      raise

  def _finish(self, report: ShardReport, files: shard_files.ShardFiles) -> ShardOutcome:
    return self._commit(report, files)  # the shard is counted once, when its ranges merge


def range_key(shard: Shard) -> str:
  """The key the ranges of one shard are grouped by (a string: a deterministic key)."""
  return json.dumps([shard.batch_prediction_id, shard.manifest_uri, shard.input_uri,
                     shard.result_uri])


def merge_range_outcomes(keyed) -> ShardOutcome:
  """A split shard's ranges' outcomes -> the shard's one outcome: pass 1's report with the
  ranges' counts added up, and every range's files.

  Raises:
    RuntimeError: a range is missing or twice (a bug: the identity would not hold).
  """
  _, parts = keyed
  parts = sorted(parts, key=lambda part: part[0].range.index)
  works = [work for work, _ in parts]
  if [w.range.index for w in works] != list(range(works[0].ranges)):
    raise RuntimeError(f'{works[0].shard.input_uri}: ranges '
                       f'{[w.range.index for w in works]} of {works[0].ranges} were joined')
  outcomes = [outcome for _, outcome in parts]
  report = merge_ranges(works[0].report, [o.report for o in outcomes])
  files = {}
  for outcome in outcomes:
    for kind, uri in outcome.files.items():
      files[kind] = (*files.get(kind, ()), uri)
  counts = None if outcomes[0].record_counts is None else tuple(
      sum(column) for column in zip(*(o.record_counts for o in outcomes), strict=True))
  _counter('rows_in').inc(report.input_rows or 0)
  _counter('shards_ok').inc()
  return ShardOutcome(report, files, counts, sum(o.dead_letter_rows for o in outcomes))


class Enriched(NamedTuple):
  """What :class:`EnrichPredictions` returns: ``records``, the record batches (empty when they
  are written to files), and ``outcomes``, one :class:`ShardOutcome` per shard and per manifest
  that cannot be used."""

  records: beam.PCollection
  outcomes: beam.PCollection


class EnrichPredictions(beam.PTransform):
  """PCollection of manifest URIs (or, ``from_shards``, of shards already listed: a SageMaker
  transform job's) -> :class:`Enriched`; each shard's records (with
  ``record_format``: avro, parquet or jsonl), dead letters and resubmit lines go to files
  under ``output`` (``transforms/io/shard_files.py``). Without ``record_format``, ``records``
  holds the record batches, for a sink of their own.
  """

  def __init__(self, plan: JoinPlan, storage_config: StorageConfig, output: str,
               rebase_rules=(), access_policy: AccessPolicy | None = None,
               record_format: str | None = None, from_shards: bool = False):
    super().__init__()
    self._from_shards = from_shards
    if record_format is not None and record_format not in sinks.SUFFIX:
      raise ValueError(f'no record files of format {record_format!r}')
    self._output = output
    self._record_format = record_format
    self._plan = plan
    self._storage_config = storage_config
    self._rebase_rules = rebase_rules
    self._access_policy = access_policy

  def expand(self, manifests):
    if self._from_shards:  # the shards are listed already (a SageMaker transform job)
      return self._join(manifests, {})
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
    return self._join(shards.shards, side)

  def _join(self, shards, side: dict) -> Enriched:
    joined = (
        shards
        | 'SpreadShards' >> beam.Reshuffle()
        | 'JoinShards' >> beam.ParDo(JoinShardFn(self._plan, self._storage_config, self._output,
                                                 self._record_format),
                                     **side).with_outputs(JoinShardFn.OUTCOMES,
                                                          JoinShardFn.RANGES, main='records'))
    joined.records.element_type = pa.RecordBatch  # coded by sinks.RecordBatchCoder
    if not self._plan.range_rows:
      return Enriched(joined.records, joined[JoinShardFn.OUTCOMES])
    ranged = (
        joined[JoinShardFn.RANGES]
        | 'SpreadRanges' >> beam.Reshuffle()
        | 'JoinRanges' >> beam.ParDo(JoinRangeFn(self._plan, self._storage_config, self._output,
                                                 self._record_format)).with_outputs(
                                                     JoinRangeFn.OUTCOMES, main='records'))
    ranged.records.element_type = pa.RecordBatch
    merged = (ranged[JoinRangeFn.OUTCOMES]
              | 'GroupRanges' >> beam.GroupByKey()
              | 'MergeRanges' >> beam.Map(merge_range_outcomes))
    records = (joined.records, ranged.records) | 'AllRecords' >> beam.Flatten()
    records.element_type = pa.RecordBatch
    outcomes = (joined[JoinShardFn.OUTCOMES], merged) | 'AllOutcomes' >> beam.Flatten()
    return Enriched(records, outcomes)


def count_records(batch: pa.RecordBatch) -> SinkCounts:
  """A batch's records by status, keyed by their shard, as they go to a sink of their own."""
  counts = shard_files.status_counts(batch)
  _counter('records_to_sink').inc(sum(counts))
  key = shard_key(batch.column('batch_prediction_id')[0].as_py(),
                  batch.column('input_uri')[0].as_py())
  return SinkCounts(key, counts)


class CollectRun(beam.CombineFn):
  """Everything ``summary.json`` needs, gathered by one combine into a ``RunParts``.

  Beam lifts the combine into the stages that make the parts, so only one small accumulator
  per bundle crosses a stage boundary.
  """

  def create_accumulator(self):
    return RunParts()

  def add_input(self, acc, element):
    return acc.add(element)

  def merge_accumulators(self, accs):
    merged = RunParts()
    for acc in accs:
      merged.merge(acc)
    return merged

  def extract_output(self, acc):
    return acc


@dataclasses.dataclass(frozen=True)
class SummaryPlan:
  """How the summary is written: where (``output``), the bad shards allowed, the run's facts
  (``report.verification.run_facts``), the copy of the input's schema beside the resubmit files
  (``resubmit_schema`` URI and its text), the output directories whose leftovers go, whether
  the job itself fails on too many bad shards (``fail_job``: where no launcher waits to read
  the summary, such as Dataflow), the BigQuery load to publish (``io.bigquery.TableLoad``), and
  the run's storage settings (``io.storage.StorageConfig``: written through FileSystems).
  """

  output: str
  max_bad_shards: int = 0
  run: dict | None = None
  resubmit_schema: str | None = None
  resubmit_schema_text: str | None = None
  output_dirs: tuple[str, ...] = OUTPUT_DIRS
  fail_job: bool = False
  table_load: object | None = None
  storage_config: StorageConfig = StorageConfig()
  # An incremental run's batch prediction (``pipelines.job.Unit.facts``): its id, the digest
  # of its manifest the summary records, the run, and the claim released once it is written.
  unit: dict | None = None

  @property
  def uri(self) -> str:
    return FileSystems.join(self.output, SUMMARY)


def publish_records(table_load, summary: dict, jobs: list[str], client=None,
                    batch_prediction_ids: list[str] | None = None) -> dict:
  """The BigQuery section of the summary: the staged records published when the run is ok
  (``bigquery.TableLoad.publish``), or why they were not. ``batch_prediction_ids``: whose rows
  a ``replace`` replaces (an incremental run's one batch prediction, even when none of its
  shards gave a record); by default those of the shards joined."""
  if not summary['ok']:
    return {'table': table_load.table, 'write_disposition': table_load.disposition,
            'published': False, 'reason': 'the run failed (see "ok"): the table is unchanged'}
  t = summary['totals']
  if batch_prediction_ids is None:
    batch_prediction_ids = sorted({r['batch_prediction_id'] for r in summary['shards']
                                   if r['input_uri'] is not None})
  return table_load.publish(batch_prediction_ids, jobs,
                            t['joined_rows'] + t['failed_rows'] + t['not_predicted_rows'], client)


def release_unit_claim(unit: dict, config: StorageConfig) -> None:
  """Releases an incremental run's claim on its batch prediction once its summary is written
  (``transforms/io/claims.py``); a failure to do so only leaves the claim to go stale."""
  if not unit.get('claim'):
    return
  from transforms.io import claims
  try:
    claims.release(unit['claim'], unit['run_id'], Storage(config))
  except Exception as e:  # noqa: BLE001  # the summary is written: the unit is done regardless
    logging.getLogger('predjoin').warning('could not release the claim %s: %s',
                                          redact(unit['claim']), redact(str(e)))


def write_summary(parts: RunParts, plan: SummaryPlan) -> dict:
  """Writes ``summary.json`` (and the resubmit schema copy), once every sink has finished;
  publishes BigQuery's staged records when the run is ok. Raises after writing it when the
  identity does not hold, or (``fail_job``) when there are too many bad shards."""
  plan.storage_config.configure_filesystems()
  resubmit_schema = plan.resubmit_schema if plan.resubmit_schema_text else None
  summary = summarize(parts, plan.max_bad_shards, plan.run, resubmit_schema)
  unit = plan.unit
  if unit is not None:  # what the next incremental run compares (report/prior_runs.py)
    summary[prior_runs.SUMMARY_KEY] = unit['manifest_sha256']
    summary['incremental'] = {k: unit[k] for k in ('run_id', 'batch_prediction_id', 'manifest',
                                                  'decision')}
  if plan.table_load is not None:  # the records are staged in BigQuery: publish them, or not
    summary['bigquery'] = publish_records(
        plan.table_load, summary, sorted(parts.staging_jobs),
        batch_prediction_ids=[unit['batch_prediction_id']] if unit is not None else None)
  outputs = summary['outputs']
  if outputs['resubmit'] and resubmit_schema:
    write_text(resubmit_schema, plan.resubmit_schema_text)  # beside resubmit/part-*.csv
  # Files of earlier runs into the same output (another shard count, a failed run's temporary
  # files) go before the summary that lists this run's files is written.
  written = [*outputs['records'], *outputs['dead_letter'], *outputs['resubmit']]
  remove_output_leftovers(FileSystems.split(plan.uri)[0], written, plan.output_dirs)
  # What the summary shows of URIs and messages leaves the job here: redacted once, whole.
  shown = json.loads(redact(json.dumps(summary)))
  write_text(plan.uri, json.dumps(shown, indent=2, sort_keys=False) + '\n')
  if plan.table_load is not None:  # published or not, the rows have left the staging table
    plan.table_load.discard()
  if unit is not None:  # the batch prediction is done, well or not: the next run judges it
    release_unit_claim(unit, plan.storage_config)
  if not shown['identity']['holds']:
    raise IdentityError('the outputs do not account for every input row: ' +
                        '; '.join(shown['identity']['problems']))
  if plan.fail_job and not shown['ok']:
    raise TooManyBadShards(bad_shards_message(shown, plan.uri))
  return shown


class WriteSummary(beam.PTransform):
  """Shard outcomes + what reached a sink of their own -> ``<output>/summary.json``.

  Takes a dict of PCollections: ``outcomes`` (``Enriched.outcomes``); when the records go to a
  sink of their own (BigQuery), also ``records`` (the record batches as they go to it, counted
  here) and ``staging_jobs`` (the jobs that sink returns, as ``table <- job id`` strings). All
  go into one combine (``CollectRun``), whose result writes the summary once every sink has
  finished (:func:`write_summary`).
  """

  def __init__(self, plan: SummaryPlan):
    super().__init__()
    self.plan = plan
    self.uri = plan.uri

  def expand(self, inputs):
    parts = [
        inputs['outcomes'],
        *([inputs['records'] | 'CountRecords' >> beam.Map(count_records)]
          if 'records' in inputs else []),
        *([inputs['staging_jobs'] | 'StagingJobs' >> beam.Map(StagingJob)]
          if 'staging_jobs' in inputs else []),
    ]
    # A Flatten is a stage of its own on the local runner: only when there is more than one.
    collected = parts[0] if len(parts) == 1 else parts | 'Flatten' >> beam.Flatten()
    return (collected
            # Never empty: every manifest (there is at least one) has an outcome or shards, and
            # every shard has one. Without Beam's default value for an empty input: one stage
            # and three DoFns fewer.
            | 'CollectRun' >> beam.CombineGlobally(CollectRun()).without_defaults()
            | 'WriteSummaryJson' >> beam.Map(write_summary, self.plan))
