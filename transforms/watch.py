"""The streaming watch (``--watch``): every manifest that lands is joined once, as one unit.

::

    --manifest glob ──MatchContinuously──> new manifest URIs ──SpreadUnits──JoinUnits──>
        <output>/<id>/records/, dead_letter/, resubmit/, summary.json   (one prefix per unit)

Beam's ``fileio.MatchContinuously`` polls each ``--manifest`` glob every ``--watch_interval``
seconds and hands on each manifest path once (its own deduplication, by path). A manifest is a
unit: one batch prediction, joined whole by one ``JoinUnitFn`` call into its own prefix
``<output>/<id>/`` (``<id>``: the manifest's name without ``.manifest``, the batch prediction's
ID), with its own plan, made from that manifest when it lands (columns, header decision,
model type), and its own ``summary.json``, written once, after every file it lists.

Joining a unit in one call keeps the streaming job free of windows and triggers: nothing is
grouped across units, so nothing waits for a window to close, and a unit's summary is written
by the same call that wrote its files. The price: a unit's shards are joined one after the other
on one worker; several units are joined at once on as many workers.

The same unit is never joined twice: ``MatchContinuously`` hands each path on once per job, and
before joining, the unit's earlier summary is judged (``transforms/report/prior_runs.py``: a
complete summary of the same manifest content is skipped) and the unit is claimed
(``transforms/io/claims.py``: a concurrent batch run, or another watch, holds it), so a restarted
job, or a batch run over the same output, does not join a complete unit again.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import uuid

import apache_beam as beam
from apache_beam import pvalue
from apache_beam.io import fileio
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.utils.timestamp import MAX_TIMESTAMP, Timestamp

from transforms import steps
from transforms.aml import schema_file, slices
from transforms.aml.manifest import ManifestError, batch_prediction_id, shards_of
from transforms.io import claims, resubmit
from transforms.io.access import AccessError, AccessPolicy
from transforms.io.storage import (
  OUTPUT_DIRS,
  SUMMARY,
  Storage,
  StorageConfig,
  StorageError,
  prepare_output,
  redact,
  remove_summary,
)
from transforms.join.outcomes import ERROR, ShardReport
from transforms.join.plan import PlanError, PlanSettings, make_plan
from transforms.report import prior_runs, verification
from transforms.report.run_summary import IdentityError, RunParts, ShardOutcome

_LOG = logging.getLogger('predjoin')

JOINED, SKIPPED, CLAIMED = 'joined', 'skipped', 'claimed_elsewhere'


def unit_id(manifest_uri: str) -> str:
  """The unit a manifest is joined as: its batch prediction's ID (``bp-x.manifest`` ->
  ``bp-x``)."""
  return batch_prediction_id(manifest_uri)


def job_token() -> str:
  """A name for one watch job's claims, made when the job is built."""
  return f'watch-{uuid.uuid4().hex[:16]}'


def unit_output(output: str, manifest_uri: str) -> str:
  """``<output>/<id>/``: where a unit's records, dead letters, resubmit lines and summary go."""
  return FileSystems.join(output, unit_id(manifest_uri)) + '/'


@dataclasses.dataclass(frozen=True)
class UnitSettings:
  """What joining a unit needs besides its manifest: the plan settings (``PlanSettings``; a
  unit's plan is made when it lands), the storage settings, the output prefix, the records'
  format (avro, parquet or jsonl), the URI rebase rules and access policy, the bad shards a unit
  may have and still be ok, after how long another run's claim on a unit counts as dead, and
  the job's own name for its claims (one per job: see :func:`job_token`)."""

  plan_settings: PlanSettings
  storage_config: StorageConfig
  output: str
  record_format: str
  rebase_rules: tuple[tuple[str, str], ...] = ()
  access_policy: AccessPolicy | None = None
  max_bad_shards: int = 0
  stale_after_s: float = 6 * 3600.0
  job_token: str = 'watch'  # this job's claims are ``<job_token>:<unit id>``


@dataclasses.dataclass(frozen=True)
class UnitResult:
  """What became of one manifest: ``action`` (joined, skipped: done before; claimed_elsewhere:
  another run holds it), why, and for a joined unit, whether its summary says ok."""

  manifest_uri: str
  unit_id: str
  action: str
  reason: str
  summary_uri: str
  ok: bool | None = None


def _manifest_problem(uri: str, error: str) -> ShardOutcome:
  return ShardOutcome(ShardReport(batch_prediction_id(uri), uri, None, None, input_rows=0,
                                  status=ERROR, error=error))


def unit_facts(uri: str, digest: str, owner: str, claim: str | None,
               decision: prior_runs.Decision) -> dict:
  """What a unit's summary records of it (``steps.SummaryPlan.unit``, as an incremental run's):
  its ID, manifest and the manifest's digest, who joined it and why; and the claim the summary's
  step releases once the summary is written."""
  return {'batch_prediction_id': unit_id(uri), 'manifest': redact(uri),
          'manifest_sha256': digest, 'run_id': owner, 'claim': claim,
          'decision': decision.as_dict()}


def join_unit(uri: str, data: bytes, facts: dict, settings: UnitSettings,
              storage: Storage) -> dict:
  """Joins one manifest (its bytes ``data``; ``facts``: :func:`unit_facts`, with the digest of
  those bytes) into ``<output>/<id>/`` and writes the unit's summary, which releases the unit's
  claim; returns the summary.

  A manifest that cannot be read, refers outside the allowed prefixes, or whose shards cannot be
  planned is the unit's one bad manifest: its summary says so (``ok`` false), and a later run
  (or a restarted watch) joins it again.

  Raises:
    IdentityError: the outputs do not account for every input row (after the summary that says
      so was written): a bug, never a data problem.
  """
  output = unit_output(settings.output, uri)
  rules = list(settings.rebase_rules)
  policy = settings.access_policy if settings.access_policy is not None else \
      AccessPolicy.create((), rules)
  parts = RunParts()
  plan = None
  try:
    shards = shards_of(data, uri, rules)
    policy.check_shards(uri, shards)
    plan = make_plan([uri], storage, dataclasses.replace(settings.plan_settings, range_rows=0),
                     policy)
  except (ManifestError, AccessError, PlanError, StorageError) as e:
    parts.add(_manifest_problem(uri, str(e)))
  dirs = OUTPUT_DIRS
  prepare_output(output, dirs)
  # An earlier run's summary would not match the files while they are replaced: like a batch
  # run, the unit has no summary until this join has written every file.
  remove_summary(output)
  if plan is not None:
    join = steps.JoinShardFn(plan, settings.storage_config, output, settings.record_format)
    join.setup()
    sizes = _sizes(plan, settings.storage_config, shards) if plan.split is not None else None
    for shard in shards:
      for item in join.process(shard, sizes):
        if not (isinstance(item, pvalue.TaggedOutput) and item.tag == join.OUTCOMES):
          raise RuntimeError(f'a unit\'s join emitted {item!r}: only outcomes are expected')
        parts.add(item.value)
  schema_copy = None
  if plan is not None and plan.aml_schema is not None:
    schema_copy = schema_file.with_header_flag(plan.aml_schema, plan.header.has_header)
  summary_plan = steps.SummaryPlan(
      output, settings.max_bad_shards,
      verification.run_facts(plan) if plan is not None else None,
      resubmit.schema_uri(output) if schema_copy else None, schema_copy, dirs,
      fail_job=False, storage_config=settings.storage_config, unit=facts)
  return steps.write_summary(parts, summary_plan)


def _sizes(plan, storage_config: StorageConfig, shards) -> list[slices.ShardSize]:
  """Every shard's rows, to place the datasource's slice (``--data_rearrangement``)."""
  counter = steps.CountInputRowsFn(plan, storage_config)
  counter.setup()
  return [size for indexed in enumerate(shards) for size in counter.process(indexed)]


class JoinUnitFn(beam.DoFn):
  """Manifest URI -> :class:`UnitResult`: the manifest joined into ``<output>/<id>/`` unless an
  earlier run did so completely for the same content, or another run holds it now.

  ``remember``: where the same manifest comes again on every match (the local runner's watch,
  :class:`WatchManifests`), each worker hands on what it has handled once only.
  """

  def __init__(self, settings: UnitSettings, remember: bool = False):
    self._settings = settings
    self._remember = remember

  def setup(self):
    self._handled = set()  # with ``remember``: the manifests this worker has handled
    self._settings.storage_config.configure_filesystems()
    self._storage = Storage(self._settings.storage_config)
    self._joined = Metrics.counter(steps.NAMESPACE, 'units_joined')
    self._skipped = Metrics.counter(steps.NAMESPACE, 'units_skipped')
    self._failed = Metrics.counter(steps.NAMESPACE, 'units_failed')

  def process(self, uri: str):
    if self._remember and uri in self._handled:
      return
    result = self._handle(uri)
    if self._remember:  # only once handled: a retried bundle handles it again
      self._handled.add(uri)
    yield result

  def _handle(self, uri: str) -> UnitResult:
    output = unit_output(self._settings.output, uri)
    summary_uri = FileSystems.join(output, SUMMARY)
    unit = unit_id(uri)
    try:
      data = self._storage.read_bytes(uri)
    except StorageError as e:  # gone since it was matched: nothing to join
      self._skipped.inc()
      return UnitResult(uri, unit, SKIPPED, f'cannot read the manifest: {e}', summary_uri)
    digest = prior_runs.manifest_digest(data)
    decision = prior_runs.decide(output, digest, storage=self._storage)
    if decision.action == 'skip':
      self._skipped.inc()
      return UnitResult(uri, unit, SKIPPED, decision.reason, summary_uri)
    claim = claims.claim_uri(output)
    # The same owner for a retry of the same unit in this job: a retry after a worker died
    # takes its own claim back rather than waiting for it to go stale.
    owner = f'{self._settings.job_token}:{unit}'
    if not claims.try_claim(claim, owner, stale_after_s=self._settings.stale_after_s,
                            storage=self._storage):
      self._skipped.inc()
      return UnitResult(uri, unit, CLAIMED, 'another run is joining it', summary_uri)
    try:
      # Judged again under the claim: a run that held it may have finished it meanwhile.
      decision = prior_runs.decide(output, digest, storage=self._storage)
      if decision.action == 'skip':
        self._skipped.inc()
        return UnitResult(uri, unit, SKIPPED, decision.reason, summary_uri)
      _LOG.info('joining %s into %s (%s)', redact(uri), redact(output), decision.reason)
      try:
        summary = join_unit(uri, data, unit_facts(uri, digest, owner, claim, decision),
                            self._settings, self._storage)
      except IdentityError as e:  # written to the summary already; retrying would not help
        self._failed.inc()
        _LOG.error('%s: %s', redact(summary_uri), e)
        return UnitResult(uri, unit, JOINED, decision.reason, summary_uri, ok=False)
    finally:  # released with the summary; here when the join stopped before it
      claims.release(claim, owner, storage=self._storage)
    # A failed unit does not fail the streaming job (it would be retried for ever): its summary
    # says so, and so do the job's log and the units_failed counter.
    (self._joined if summary['ok'] else self._failed).inc()
    if not summary['ok']:
      _LOG.error('%s: the unit failed: %s', redact(uri), json.dumps(summary['totals']))
    return UnitResult(uri, unit, JOINED, decision.reason, summary_uri, ok=summary['ok'])


@dataclasses.dataclass(frozen=True)
class WatchSettings:
  """How the globs are watched: every ``interval`` seconds, from ``start`` (epoch seconds;
  default: when the pipeline is built) until ``stop`` (epoch seconds; None: until the job is
  cancelled or drained)."""

  interval: float = 60.0
  start: float | None = None
  stop: float | None = None


def log_result(result: UnitResult) -> UnitResult:
  """Says in the job's log what became of a manifest."""
  _LOG.info('%s: %s (%s)%s', redact(result.manifest_uri), result.action, result.reason,
            '' if result.ok is None else f'; {result.summary_uri} ok: {result.ok}')
  return result


class WatchManifests(beam.PTransform):
  """PBegin -> PCollection of :class:`UnitResult`: the manifests matching ``patterns`` (globs),
  found by Beam's ``MatchContinuously`` and joined as units (:class:`JoinUnitFn`).

  On Dataflow (and any runner that honours a splittable DoFn's resume delay),
  ``MatchContinuously`` hands each path on once (its ``Watch``, deduplicating by path) and the
  units are spread over the workers (``SpreadUnits``).

  ``local``: Beam's local runner (the FnApiRunner) re-runs a deferred splittable DoFn at once,
  without its delay: ``Watch`` would make its polls back to back, so ``--watch_for`` would end
  after a fraction of a second. There the globs are matched on ``PeriodicImpulse`` instead
  (``MatchContinuously`` without deduplication), whose ticks follow the clock; every match lists
  every manifest again, and each is joined in the same stage as it is found: the worker
  remembers what it has handled, and the exactly-once rule skips what another worker joined.
  """

  def __init__(self, patterns: list[str], unit_settings: UnitSettings,
               watch: WatchSettings = WatchSettings(), local: bool = False):
    super().__init__()
    self._patterns = list(patterns)
    self._units = unit_settings
    self._watch = watch
    self._local = local

  def expand(self, pbegin):
    start = Timestamp.of(self._watch.start) if self._watch.start is not None else \
        Timestamp.now()
    stop = Timestamp.of(self._watch.stop) if self._watch.stop is not None else MAX_TIMESTAMP
    matched = [
        pbegin | f'Match{i}' >> fileio.MatchContinuously(
            pattern, interval=self._watch.interval, start_timestamp=start,
            stop_timestamp=stop, has_deduplication=not self._local)
        for i, pattern in enumerate(self._patterns)]
    found = matched[0] if len(matched) == 1 else matched | 'AllMatches' >> beam.Flatten()
    paths = found | 'ManifestPaths' >> beam.Map(
        lambda metadata: metadata.path).with_output_types(str)
    if not self._local:
      # A unit is joined on any worker, and a retried join does not poll again.
      paths = paths | 'SpreadUnits' >> beam.Reshuffle()
    return (paths
            | 'JoinUnits' >> beam.ParDo(JoinUnitFn(self._units, remember=self._local))
            | 'LogUnits' >> beam.Map(log_result))
