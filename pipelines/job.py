"""predjoin's main job: batch-prediction manifests -> enriched, interpreted records.

Run locally on the DirectRunner (waits, prints the summary, exits non-zero on bad shards)::

    predjoin --manifest 's3://bucket/out/batch-prediction/bp-1.manifest' --output out/ \\
        --format parquet --direct_num_workers=2 --direct_running_mode=multi_processing

or on a dask.distributed cluster (waits and judges the run as a local run does; needs
``pip install "predjoin[dask]"`` here and the same predjoin on the cluster's workers)::

    predjoin --runner DaskRunner --dask_client_address tcp://scheduler:8786 \\
        --manifest 's3://bucket/out/batch-prediction/bp-1.manifest' --output s3://bucket/out/bp-1/

or every batch prediction a glob finds that is not joined yet, each to ``<output>/<id>/``,
exactly once (``--incremental``: decided and claimed here, in the launcher; see
``build_incremental``)::

    predjoin --incremental --manifest 's3://bucket/out/batch-prediction/*.manifest' \\
        --output s3://bucket/enriched/ --format parquet

or on Dataflow (returns once the job is submitted; the job writes ``<output>/summary.json``)::

    python -m pipelines.job --runner DataflowRunner --project P --region R \\
        --temp_location gs://b/tmp --output_location s3://bucket/out/ \\
        --batch_prediction_id bp-1 --output gs://b/enriched/bp-1/

or as a streaming job on Dataflow that joins each manifest once, as it lands, each to
``<output>/<id>/`` (``--watch``: decided and claimed on the workers, per manifest; see
``build_watch`` and ``transforms/watch.py``)::

    python -m pipelines.job --runner DataflowRunner --project P --region R \\
        --temp_location gs://b/tmp --watch --output gs://b/enriched/ \\
        --manifest 's3://bucket/out/batch-prediction/*.manifest'
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import posixpath
import sys
import time
import uuid
from typing import NamedTuple

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import (
  DirectOptions,
  GoogleCloudOptions,
  PipelineOptions,
  StandardOptions,
  TestOptions,
)

from pipelines.options import (
  Options,
  OptionsError,
  PredjoinOptions,
  UsageError,
  check_arguments,
  is_incremental,
  validate,
  watching,
)
from pipelines.runners import LOCAL_RUNNERS, is_dask, launcher_judges, sdk_processes
from transforms import steps, watch
from transforms.aml import schema_file, service, slices
from transforms.aml.manifest import batch_prediction_id, manifest_uri, parse_rebase_rules
from transforms.io import access, bigquery, claims, resubmit
from transforms.io.storage import (
  OUTPUT_DIRS,
  Storage,
  StorageConfig,
  StorageError,
  check_writable,
  read_text,
  redact,
  remove_summary,
  write_text,
)
from transforms.join import record_schema
from transforms.join.plan import JoinPlan, PlanError, PlanSettings, make_plan
from transforms.report import prior_runs, readback, verification
from transforms.report.run_summary import TooManyBadShards
from transforms.sagemaker import job as jobs
from transforms.sagemaker.plan import TransformSettings, make_transform_plan

_LOG = logging.getLogger('predjoin')
_GLOB = set('*?[')


class LaunchError(ValueError):
  """The job cannot start; the message says what to fix."""


def manifest_uris(opts: PredjoinOptions, storage: Storage) -> list[str]:
  """The manifests to read: ``--manifest`` URIs and globs, or the one the service names."""
  if not opts.manifest:
    uri = manifest_uri(opts.output_location, opts.batch_prediction_id)
    if not storage.exists(uri):
      raise LaunchError(f'no manifest at {redact(uri)} (from --output_location '
                        f'{redact(opts.output_location)} and --batch_prediction_id '
                        f'{opts.batch_prediction_id})')
    return [uri]
  uris = []
  for pattern in opts.manifest:
    if _GLOB & set(pattern):
      matched = sorted(m.path for result in FileSystems.match([pattern])
                       for m in result.metadata_list)
      if not matched:
        raise LaunchError(f'--manifest {redact(pattern)} matches no file')
      uris.extend(matched)
    else:
      uris.append(pattern)
  return list(dict.fromkeys(uris))


def _dry_run(options: PipelineOptions) -> bool:
  return str(options.view_as(TestOptions).dry_run).lower() not in ('false', '0', 'none', '')


def one_worker_process(options: PipelineOptions) -> bool:
  """Whether the job's SDK work runs in a single process, which then has the cores to itself.

  Local runs are, except ``--direct_running_mode multi_processing`` with more than one worker.
  Dataflow and the other runners are not: Dataflow runs one SDK process per vCPU.
  """
  runner = options.view_as(StandardOptions).runner
  if runner not in LOCAL_RUNNERS:
    return False
  direct = options.view_as(DirectOptions)
  return sdk_processes(runner, direct.direct_running_mode, direct.direct_num_workers) <= 1


def check_table(opts: PredjoinOptions, schema, client=None) -> None:
  """Before a replace or an append: the existing table must take the records. Raises
  LaunchError."""
  table = bigquery.parse_table(opts.bigquery_table)
  try:
    differences = bigquery.check_existing_table(table, record_schema.bigquery_schema(schema), client,
                                                record_schema.never_null(schema))
  except Exception as e:  # noqa: BLE001  # credentials, permissions, network: say which table
    raise LaunchError(f'cannot read the schema of BigQuery table {table}: {redact(str(e))}') \
        from None
  if differences:
    raise LaunchError(
        f'BigQuery table {table} cannot take these records (--write_disposition '
        f'{opts.write_disposition}): ' + '; '.join(differences) + '. Load into another table, '
        'or use --write_disposition truncate to replace the table and its schema.')


def prepare_table(opts: PredjoinOptions, schema, dry_run: bool, client=None):
  """The run's way into its BigQuery table (``bigquery.TableLoad``). Unless it is a dry run,
  the table's schema is checked (replace and append) and the run's staging table is created,
  so a table the records cannot reach stops the launch. Raises LaunchError."""
  load = bigquery.TableLoad.create(opts.bigquery_table, record_schema.bigquery_schema(schema),
                                   opts.write_disposition)
  if dry_run:
    return load
  if opts.write_disposition != 'truncate':
    check_table(opts, schema, client)
  try:
    load.create_staging(client)
  except Exception as e:  # noqa: BLE001  # a missing dataset, permissions: say which table
    raise LaunchError(f'cannot create the staging table {load.staging}: {redact(str(e))}') \
        from None
  return load


class BuiltJob(NamedTuple):
  """What :func:`build_pipeline` added: the record batches (only when they go to BigQuery),
  each shard's outcome (``transforms.report.run_summary.ShardOutcome``), the summary, where it
  goes, the run's plan, and the BigQuery load (or None)."""

  records: beam.PCollection
  outcomes: beam.PCollection
  summary: beam.PCollection
  summary_uri: str
  plan: JoinPlan
  table_load: object | None


def _listed(text: str | None) -> tuple[str, ...]:
  return tuple(item.strip() for item in text.split(',')) if text else ()


def transform_job(opts: PredjoinOptions, storage: Storage,
                  given: str | None = None) -> jobs.TransformJob:
  """The SageMaker transform job of ``--transform_job`` (a describe-transform-job response,
  inline or a URI; or ``given``, one an incremental run found), with the ``--transform_*``
  options' fields over it.

  Raises:
    LaunchError: the description cannot be read or is not one.
  """
  given = given or opts.transform_job
  try:
    if given is None:
      job = jobs.TransformJob(name='transform-job', input_uri=opts.transform_input,
                              output_path=opts.transform_output,
                              source='the --transform_* options')
    elif given.lstrip().startswith('{'):
      job = jobs.parse_description(given, 'the --transform_job JSON')
    else:
      access.check_given(given, '--transform_job')
      job = jobs.parse_description(storage.read_bytes(given).decode('utf-8', 'replace'),
                                   redact(given))
  except (jobs.JobError, StorageError) as e:
    raise LaunchError(str(e)) from None
  return jobs.with_settings(
      job, name=opts.transform_job_name, input_uri=opts.transform_input,
      output_path=opts.transform_output, input_type=opts.transform_input_type,
      split_type=opts.transform_split_type, accept=opts.transform_accept,
      join_source=opts.transform_join_source, output_filter=opts.transform_output_filter)


class _Context(NamedTuple):
  """What every batch prediction of a run is built with: the options, the storage settings,
  the rebase rules, the access policy, the service records and the plan's settings."""

  options: PipelineOptions
  opts: PredjoinOptions
  config: StorageConfig
  storage: Storage
  rules: list
  policy: access.AccessPolicy
  records: dict | None
  settings: PlanSettings
  bigquery_client: object | None


def _context(options: PipelineOptions, opts: PredjoinOptions, bigquery_client) -> _Context:
  # The DaskRunner gives its workers no pipeline options: they take the storage settings along.
  config = StorageConfig.from_options(
      options, set_worker_filesystems=is_dask(options.view_as(StandardOptions).runner))
  rules = parse_rebase_rules(opts.rebase_uri)
  policy = access.AccessPolicy.create(opts.allowed_prefix, rules)
  records = service.parse_records(opts.service_record, read_text) if opts.service_record \
      else None
  settings = PlanSettings(
      model_type=opts.model_type, input_header=opts.input_header, cutoff=opts.cutoff,
      min_score=opts.min_score, top_k=opts.top_k, block_rows=opts.block_rows,
      rebase_rules=tuple(rules), schema_uri=opts.schema, on_type_error=opts.on_type_error,
      data_rearrangement=slices.parse(opts.data_rearrangement) if opts.data_rearrangement
      else None,
      # CSV parsing threads only where they do not compete with other workers.
      parse_threads=one_worker_process(options),
      # Beam's DaskRunner hands every output of a step to each step that reads one of them,
      # and does not spread a Reshuffle's elements: ranges need both.
      range_rows=0 if is_dask(options.view_as(StandardOptions).runner) else opts.range_rows)
  return _Context(options, opts, config, Storage(config), rules, policy, records, settings,
                  bigquery_client)


class BuiltWatch(NamedTuple):
  """What :func:`build_pipeline` added for ``--watch``: what became of each manifest
  (``transforms.watch.UnitResult``), the globs watched, and the output prefix, under which
  each batch prediction has its own ``<id>/summary.json``."""

  results: beam.PCollection
  patterns: list[str]
  output: str


def watch_patterns(opts: PredjoinOptions) -> list[str]:
  """The globs ``--watch`` matches: ``--manifest``, else every manifest of
  ``--output_location``."""
  return list(opts.manifest) if opts.manifest else [
      manifest_uri(opts.output_location, 'BPID').replace('BPID', '*')]


def build_watch(p: beam.Pipeline, options: PipelineOptions) -> BuiltWatch:
  """Adds the streaming watch (``transforms/watch.py``) to ``p``, and marks the job streaming
  (Beam's ``--streaming``: Dataflow runs an unbounded source only in a streaming job).

  Raises:
    StorageError: the output cannot be written (a dry run does not try).
  """
  opts = options.view_as(PredjoinOptions)
  ctx = _context(options, opts, None)
  options.view_as(StandardOptions).streaming = True
  patterns = watch_patterns(opts)
  for pattern in patterns:
    access.check_given(pattern, '--manifest' if opts.manifest else '--output_location')
  # Plans are made per manifest when it lands; nothing of them is known now. The output must be
  # writable, though: a job that cannot write would run and join nothing.
  check_writable(opts.output, (), probe=not _dry_run(options))
  units = watch.UnitSettings(
      dataclasses.replace(ctx.settings, range_rows=0), ctx.config, opts.output, opts.format,
      tuple(ctx.rules), ctx.policy, opts.max_bad_shards, float(opts.claim_timeout),
      watch.job_token())
  start = time.time()
  watching_for = watch.WatchSettings(
      opts.watch_interval, start, start + opts.watch_for if opts.watch_for else None)
  # Beam's local runner does not wait out a splittable DoFn's delay: see WatchManifests.
  local = options.view_as(StandardOptions).runner in LOCAL_RUNNERS
  if local:  # Beam warns of Watch's state whether or not the match keeps any
    _quiet(FILEIO_LOGGER, HARMLESS_FILEIO_WARNINGS)
  results = p | 'Watch' >> watch.WatchManifests(patterns, units, watching_for, local=local)
  return BuiltWatch(results, patterns, opts.output)


def build_pipeline(p: beam.Pipeline, options: PipelineOptions,
                   bigquery_client=None) -> BuiltJob:
  """Adds the whole job to ``p``; returns its PCollections and plan so tests can assert on them.

  Raises:
    OptionsError, LaunchError, PlanError: before anything is added, with what to fix.
    AccessError: a manifest names a URI outside the allowed prefixes (``--allowed_prefix``);
      raised before any shard is read.

  ``bigquery_client`` (a ``google.cloud.bigquery.Client``) reads an existing table's schema
  before a replace or an append and creates the run's staging table; by default one is made
  from the environment's credentials. A dry run does neither.

  With ``--incremental`` this is :func:`build_incremental`, which returns an
  :class:`IncrementalJob` instead; with ``--watch``, :func:`build_watch` (a
  :class:`BuiltWatch`).
  """
  opts = validate(options)
  if is_incremental(opts):
    return build_incremental(p, options, bigquery_client)
  if watching(options):
    return build_watch(p, options)
  ctx = _context(options, opts, bigquery_client)
  transform = opts.transform_job is not None or opts.transform_input is not None
  if not transform:
    for given in opts.manifest or [opts.output_location]:
      access.check_given(given, '--manifest' if opts.manifest else '--output_location')
  sources = None if transform else manifest_uris(opts, ctx.storage)
  return _add_join(p, ctx, _prepare_join(ctx, sources, opts.output))


class _Prepared(NamedTuple):
  """A join whose launch checks passed (:func:`_prepare_join`), ready to be added."""

  sources: list
  output: str
  plan: JoinPlan
  source_facts: dict | None
  transform: bool
  table_load: object | None
  output_dirs: list
  unit: Unit | None


def _prepare_join(ctx: _Context, sources: list[str] | None, output: str,
                  unit: Unit | None = None, job_uri: str | None = None) -> _Prepared:
  """The launch checks of a join of ``sources`` (manifest URIs; None: the SageMaker transform
  job of the options, or the one at ``job_uri``) into ``output``: the plan, the BigQuery table, the output. Nothing is
  added to a pipeline yet, so a batch prediction that fails them leaves none of its steps.

  Raises:
    LaunchError, PlanError, AccessError, StorageError: with what to fix.
  """
  opts, options, storage, settings = ctx.opts, ctx.options, ctx.storage, ctx.settings
  transform = sources is None
  if transform:  # a SageMaker transform job: its shards are listed and paired here
    planned = make_transform_plan(
        transform_job(opts, storage, job_uri), storage, settings,
        TransformSettings(_listed(opts.class_labels), _listed(opts.output_fields),
                          opts.failed_marker), tuple(opts.allowed_prefix or ()))
    plan, sources, source_facts = planned.plan, list(planned.shards), planned.facts
  else:
    source_facts = None
    plan = make_plan(sources, storage, settings, ctx.policy)
  if opts.top_k and plan.layout.model_type != 'multiclass':
    raise LaunchError(f'--top_k applies to multiclass models; the results are those of a '
                      f'{plan.layout.model_type} model')
  to_table = opts.format == 'bigquery'
  table_load = prepare_table(opts, plan.schema, _dry_run(options), ctx.bigquery_client) \
      if to_table else None
  output_dirs = [d for d in OUTPUT_DIRS if not (to_table and d == 'records')]
  # The launch checks passed: make a local output's directories, and prove the output can be
  # written before any shard is read (a dry run writes nothing).
  check_writable(output, output_dirs, probe=not _dry_run(options))
  if not _dry_run(options):  # an earlier run's summary would not match the files while this runs
    try:
      remove_summary(output)
    except Exception as e:  # noqa: BLE001  # permissions, credentials: say which file
      raise LaunchError(f'cannot remove the earlier run\'s summary.json under '
                        f'{redact(output)}: {redact(str(e))}') from None
  return _Prepared(sources, output, plan, source_facts, transform, table_load, output_dirs, unit)


def _add_join(root, ctx: _Context, prepared: _Prepared) -> BuiltJob:
  """Adds a prepared join (:func:`_prepare_join`) to ``root`` (the pipeline, or an incremental
  run's unit)."""
  opts, options, plan, output = ctx.opts, ctx.options, prepared.plan, prepared.output
  transform, table_load, unit = prepared.transform, prepared.table_load, prepared.unit
  to_table = table_load is not None
  # Records (unless they go to BigQuery), dead letters and resubmit/ lines are written per shard
  # by the join (transforms/io/shard_files.py).
  enriched = (root
              | ('ListShards' if transform else 'ListManifests') >> beam.Create(
                  prepared.sources)
              | 'Enrich' >> steps.EnrichPredictions(plan, ctx.config, output, ctx.rules,
                                                    ctx.policy,
                                                    None if to_table else opts.format,
                                                    from_shards=transform))
  sink = {}
  if to_table:  # staging_jobs: the jobs that stage the records, which the summary publishes
    sink = {'records': enriched.records,
            'staging_jobs': enriched.records | 'LoadRecords' >> bigquery.WriteToTable(
                table_load)}
  schema_copy = None
  if plan.aml_schema is not None:
    schema_copy = schema_file.with_header_flag(plan.aml_schema, plan.header.has_header)
  # Where no launcher waits for the job to read its summary (Dataflow), the job itself fails when
  # there are too many bad shards; the local and Dask launchers judge the run themselves.
  fail_job = not launcher_judges(options.view_as(StandardOptions).runner)
  write_summary = steps.WriteSummary(steps.SummaryPlan(
      output, opts.max_bad_shards,
      verification.run_facts(plan, ctx.records, prepared.source_facts),
      resubmit.schema_uri(output) if schema_copy else None, schema_copy,
      tuple(prepared.output_dirs), fail_job, table_load, ctx.config,
      unit.facts() if unit is not None else None))
  summary = {'outcomes': enriched.outcomes, **sink} | 'WriteSummary' >> write_summary
  return BuiltJob(enriched.records, enriched.outcomes, summary, write_summary.uri, plan,
                  table_load)


# Incremental runs --------------------------------------------------------------------------------
#
# Every batch prediction the manifests' glob finds is a unit, joined to <output>/<id>/ by the
# rules of transforms/report/prior_runs.py (join, skip, redo, changed) under a claim
# (transforms/io/claims.py); one pipeline joins all the units this run holds claims on, each
# with its own plan, files and summary.json, as a run of that batch prediction alone would.

RUNS = 'runs'  # <output>/runs/<run id>.json: each incremental run's own summary


class Unit(NamedTuple):
  """One batch prediction of an incremental run: its ID, manifest, the digest of the
  manifest's bytes, its output prefix, the decision on it, the run and its claim (None in a
  dry run, which claims nothing)."""

  id: str
  manifest: str
  digest: str
  output: str
  decision: prior_runs.Decision
  run_id: str
  claim: str | None

  def facts(self) -> dict:
    return {'batch_prediction_id': self.id, 'manifest': redact(self.manifest),
            'manifest_sha256': self.digest, 'run_id': self.run_id, 'claim': self.claim,
            'decision': self.decision.as_dict()}


class _JoinUnit(beam.PTransform):
  """One unit's prepared join, under a label of its own (``Join <id>``), so units' steps do not
  clash."""

  def __init__(self, ctx: _Context, prepared: _Prepared):
    super().__init__()
    self._ctx = ctx
    self._prepared = prepared
    self.built: BuiltJob | None = None

  def expand(self, pbegin):
    self.built = _add_join(pbegin, self._ctx, self._prepared)
    return self.built.summary


class IncrementalJob(NamedTuple):
  """What :func:`build_incremental` added: the units joined (with their ``BuiltJob``), the
  run's own summary (``report``) and where it goes (None in a dry run)."""

  joined: list  # of (Unit, BuiltJob)
  report: dict
  report_uri: str | None


def new_run_id(now: datetime.datetime | None = None) -> str:
  """A run's ID: when it started (UTC, to the microsecond, so that runs sort in the order they
  started even within one second) and a random part."""
  now = now or datetime.datetime.now(datetime.UTC)
  return now.strftime('%Y%m%dT%H%M%S%fZ') + '-' + uuid.uuid4().hex[:8]


def incremental_manifests(opts: PredjoinOptions, storage: Storage) -> list[str]:
  """The manifests an incremental run considers: ``--manifest`` URIs and globs, or every
  ``<output_location>batch-prediction/*.manifest``; for SageMaker, the job descriptions of a
  ``--transform_job`` URI or glob. A glob that matches nothing is no error: a schedule finds
  nothing new some days."""
  if opts.transform_job:
    patterns = [opts.transform_job]
  else:
    patterns = opts.manifest or [
        manifest_uri(opts.output_location, 'BPID').replace('BPID', '*')]
  uris = []
  for pattern in patterns:
    if _GLOB & set(pattern):
      try:
        uris.extend(sorted(m.path for result in FileSystems.match([pattern])
                           for m in result.metadata_list))
      except Exception:  # noqa: BLE001  # S3 answers "nonexistent path" for an empty prefix
        continue
    else:
      uris.append(pattern)
  return list(dict.fromkeys(uris))


def _unit_output(output: str, unit_id: str) -> str:
  return FileSystems.join(output, unit_id) + '/'


def build_incremental(p: beam.Pipeline, options: PipelineOptions,
                      bigquery_client=None) -> IncrementalJob:
  """Decides, for every batch prediction found, whether to join it (``prior_runs.decide``),
  claims the ones to join, and adds one join per claimed unit to ``p``. Writes the run's own
  summary to ``<output>/runs/<run id>.json`` (not in a dry run, which claims nothing either).

  A unit whose launch checks fail (an unreadable manifest, a URI outside the allowed
  prefixes, no safe header decision) is reported as ``refused`` and its claim released; the
  others are joined.
  """
  opts = validate(options)
  ctx = _context(options, opts, bigquery_client)
  dry = _dry_run(options)
  option = '--transform_job' if opts.transform_job else \
      '--manifest' if opts.manifest else '--output_location'
  for given in opts.manifest or [opts.transform_job or opts.output_location]:
    access.check_given(given, option)
  run_id = new_run_id()
  report = {'run_id': run_id, 'output': redact(opts.output), 'dry_run': dry,
            'joined': [], 'skipped': [], 'redone': [], 'changed': [], 'claimed_elsewhere': [],
            'not_finished': [], 'refused': [], 'units': []}
  seen: dict[str, str] = {}
  found = [_found(uri, opts, ctx.storage) for uri in incremental_manifests(opts, ctx.storage)]
  for unit in found:  # before anything is claimed
    if unit.id in seen:
      raise LaunchError(f'two {"job descriptions" if opts.transform_job else "manifests"} '
                        f'name {unit.id}: {redact(seen[unit.id])} and {redact(unit.uri)}; give '
                        'globs that find each once')
    seen[unit.id] = unit.uri
  joined = []
  try:
    _decide_and_add(p, ctx, found, run_id, dry, report, joined)
  except BaseException:  # the launch fails: nothing will join what this run claimed
    for unit, _ in joined:
      if unit.claim is not None:
        claims.release(unit.claim, run_id, ctx.storage)
    raise
  report_uri = None
  if not dry:
    report_uri = FileSystems.join(opts.output, RUNS, f'{run_id}.json')
    write_run_report(report_uri, report)
  return IncrementalJob(joined, report, report_uri)


class _Found(NamedTuple):
  """A manifest (or SageMaker job description) an incremental run found: its URI, the ID of
  its batch prediction (a job's TransformJobName), its bytes, a job's status, and why it could
  not be read (``error``)."""

  uri: str
  id: str
  data: bytes | None
  status: str | None = None
  error: str | None = None


# A SageMaker job in these states has not finished writing its outputs: it is left for later.
UNFINISHED_JOB = ('InProgress', 'Stopping')


def _found(uri: str, opts: PredjoinOptions, storage: Storage) -> _Found:
  if not opts.transform_job:
    return _Found(uri, batch_prediction_id(uri), None)
  stem = posixpath.basename(uri).rsplit('.', 1)[0]
  try:
    access.check_given(uri, '--transform_job')
    data = storage.read_bytes(uri)
    job = jobs.parse_description(data.decode('utf-8', 'replace'), redact(uri))
  except (ValueError, StorageError) as e:
    return _Found(uri, stem, None, error=redact(str(e)))
  return _Found(uri, job.name or stem, data, job.status)


def _decide_and_add(p: beam.Pipeline, ctx: _Context, found: list[_Found], run_id: str,
                    dry: bool, report: dict, joined: list) -> None:
  """:func:`build_incremental` for each manifest (or job description) ``found``: decides,
  claims, prepares and adds its join to ``p``; fills in ``report`` and ``joined``."""
  opts = ctx.opts
  for item in found:
    manifest, unit_id = item.uri, item.id
    output = _unit_output(opts.output, unit_id)
    if unit_id == RUNS:  # its outputs would mix with the runs' own summaries
      report['units'].append({'batch_prediction_id': unit_id, 'manifest': redact(manifest),
                              'output': redact(output), 'action': 'refused',
                              'reason': f'a batch prediction named {RUNS!r} would write where '
                              'the runs\' own summaries go'})
      report['refused'].append(unit_id)
      continue
    entry = {'batch_prediction_id': unit_id, 'manifest': redact(manifest),
             'output': redact(output)}
    report['units'].append(entry)
    try:
      if item.error:
        raise LaunchError(item.error)
      if item.status in UNFINISHED_JOB:
        entry.update(action='not_finished', reason=f'the transform job is {item.status}')
        report['not_finished'].append(unit_id)
        continue
      if item.data is None:
        access.check_given(manifest, '--manifest')
      digest = prior_runs.manifest_digest(item.data if item.data is not None
                                          else ctx.storage.read_bytes(manifest))
      decision = prior_runs.decide(output, digest, ctx.storage)
      claim = None
      if decision.joins and not dry:
        claim = claims.claim_uri(output)
        if not claims.try_claim(claim, run_id, stale_after_s=opts.claim_timeout,
                                storage=ctx.storage):
          held = claims.read_claim(claim, ctx.storage)
          entry.update(manifest_sha256=digest, action='claimed_elsewhere',
                       reason=f'another run holds its claim'
                       f'{f" ({held.owner})" if held and held.owner else ""}')
          report['claimed_elsewhere'].append(unit_id)
          continue
        # Decided again under the claim: a run that held it may have finished it meanwhile.
        decision = prior_runs.decide(output, digest, ctx.storage)
        if not decision.joins:
          claims.release(claim, run_id, ctx.storage)
      entry.update(manifest_sha256=digest, action=decision.action, reason=decision.reason)
      if not decision.joins:
        report['skipped'].append(unit_id)
        continue
      unit = Unit(unit_id, manifest, digest, output, decision, run_id, claim)
      try:
        join = _JoinUnit(ctx, _prepare_join(ctx, None if opts.transform_job else [manifest],
                                            output, unit, manifest))
      except BaseException:
        if claim is not None:
          claims.release(claim, run_id, ctx.storage)
        raise
      _ = p | f'Join {unit_id}' >> join
      joined.append((unit, join.built))
      report[{'join': 'joined', 'redo': 'redone', 'changed': 'changed'}[decision.action]] \
          .append(unit_id)
    except (LaunchError, PlanError, ValueError, StorageError) as e:
      entry.update(action='refused', reason=redact(str(e)))
      report['refused'].append(unit_id)


def write_run_report(uri: str, report: dict) -> None:
  try:
    write_text(uri, json.dumps(report, indent=2) + '\n')
  except Exception as e:  # noqa: BLE001  # the units' own summaries are what counts
    _LOG.warning('could not write the run summary %s: %s', redact(uri), redact(str(e)))


def _counters(result) -> dict[str, int] | None:
  """predjoin's Beam counters, summed over steps; None where the runner reports no metrics
  (Beam's DaskRunner)."""
  try:
    metrics = result.metrics()
  except NotImplementedError:
    return None
  counters = metrics.query(MetricsFilter().with_namespace(steps.NAMESPACE))['counters']
  totals: dict[str, int] = {}
  for counter in counters:
    totals[counter.key.metric.name] = totals.get(counter.key.metric.name, 0) + counter.committed
  return totals


def check_counters(summary: dict, counters: dict[str, int]) -> list[str]:
  """Differences between the Beam counters and the summary (none on a correct run)."""
  t = summary['totals']
  pairs = [('rows_in', t['input_rows']), ('rows_joined', t['joined_rows']),
           ('rows_failed', t['failed_rows']), ('rows_not_predicted', t['not_predicted_rows']),
           ('rows_dead_lettered', t['dead_letter_rows']),
           ('records_to_sink', t['joined_rows'] + t['failed_rows'] + t['not_predicted_rows']),
           ('dead_letters_to_sink', t['dead_letter_rows']),
           ('shards_misaligned', t['misaligned_shards'])]
  return [f'counter {name} = {counters.get(name, 0)}, summary says {want}'
          for name, want in pairs if counters.get(name, 0) != want]


def format_summary(summary: dict, summary_uri: str) -> str:
  t = summary['totals']
  lines = [f'summary: {summary_uri}',
           f'rows in {t["input_rows"]}, joined {t["joined_rows"]}, failed {t["failed_rows"]}, '
           + (f'not predicted {t["not_predicted_rows"]}, ' if t['not_predicted_rows'] else '') +
           f'dead-lettered {t["dead_letter_rows"]}; shards {t["shards"]} '
           f'({t["bad_shards"]} bad)'
           + ('' if 'sagemaker' in summary else f', bad manifests {t["bad_manifests"]}')]
  for s in summary['shards']:
    if s['input_uri'] is None:
      lines.append(f'  manifest {s["manifest_uri"]}: {s["status"]}: {s["error"]}')
      continue
    not_predicted = s.get('not_predicted_rows')
    lines.append(f'  {s["input_uri"]}: {s["status"]}, in {s["input_rows"]}, joined '
                 f'{s["joined_rows"]}, failed {s["failed_rows"]}, '
                 + (f'not predicted {not_predicted}, ' if not_predicted else '') +
                 f'dead-lettered {s["dead_letter_rows"]}' + (f': {s["error"]}' if s['error']
                                                             else ''))
  lines.extend(f'warning: {w}' for w in summary.get('warnings', []))
  return '\n'.join(lines)


# What every local multi-processing run's workers log at WARNING, relayed by the runner, that
# says nothing about the run: the workers see predjoin's own options, which Beam's parser does
# not know, and Beam's local workers have no staging directory.
HARMLESS_WORKER_WARNINGS = (
    'Discarding unparseable args',
    'No semi_persistent_directory found',
)
WORKER_LOGGER = 'apache_beam.runners.portability.local_job_service'


# What Beam's DaskRunner logs at WARNING on every run: how it partitions the elements of a
# Create, which for predjoin are the few manifest URIs.
HARMLESS_DASK_WARNINGS = ('The new default partition size is',)
DASK_LOGGER = 'apache_beam.runners.dask.transform_evaluator'


# What Beam's MatchContinuously logs at WARNING whenever it is built, though the local watch
# (transforms/watch.py) uses it without the state the warning is about.
HARMLESS_FILEIO_WARNINGS = ('Matching Continuously is stateful',)
FILEIO_LOGGER = 'apache_beam.io.fileio'


class HarmlessWorkerWarnings(logging.Filter):
  """Drops the warnings above (``known``: the relayed worker warnings unless told otherwise);
  every other message passes."""

  def __init__(self, known: tuple[str, ...] = HARMLESS_WORKER_WARNINGS):
    super().__init__()
    self.known = known

  def filter(self, record: logging.LogRecord) -> bool:
    if record.levelno > logging.WARNING:
      return True
    message = record.getMessage()
    return not any(known in message for known in self.known)


def _quiet(logger_name: str, known: tuple[str, ...]) -> None:
  logger = logging.getLogger(logger_name)
  if not any(isinstance(f, HarmlessWorkerWarnings) for f in logger.filters):
    logger.addFilter(HarmlessWorkerWarnings(known))


def local_runner(options: PipelineOptions, runner_class=None):
  """The runner for ``--runner DirectRunner`` (the default): Beam's FnApiRunner, never Prism.

  Since Beam 2.68 the DirectRunner first tries the Prism runner, which downloads a Go binary
  from GitHub at run time; offline that costs a failed lookup and about a second, online it
  runs the job on a runner predjoin is not tested on. This builds what the DirectRunner falls
  back to, with the pipeline options handed to the workers the same way, so
  ``--direct_num_workers`` and ``--direct_running_mode`` work as documented.
  ``runner_class``: a subclass of FnApiRunner to build instead (the ``predjoin`` command's
  quick-starting local runs, ``pipelines.localrun``). Returns None for any other runner
  (``--runner PrismRunner`` still picks Prism).
  """
  name = options.view_as(StandardOptions).runner
  if name not in LOCAL_RUNNERS:
    return None
  from apache_beam.portability.api import beam_provision_api_pb2
  from apache_beam.runners.portability.fn_api_runner import fn_runner
  from apache_beam.runners.portability.portable_runner import JobServiceHandle

  encoded = JobServiceHandle.encode_pipeline_options(options.get_all_options())
  _quiet(WORKER_LOGGER, HARMLESS_WORKER_WARNINGS)
  return (runner_class or fn_runner.FnApiRunner)(provision_info=fn_runner.ExtendedProvisionInfo(
      beam_provision_api_pb2.ProvisionInfo(pipeline_options=encoded)))


def dask_runner(options: PipelineOptions):
  """Beam's DaskRunner for ``--runner DaskRunner`` (or ``dask``, or its full path): Beam's
  registry of runner names does not list it, so only its full path would resolve. None for any
  other runner. It connects to ``--dask_client_address`` (Beam's ``DaskOptions``), or starts a
  local cluster without one."""
  if not is_dask(options.view_as(StandardOptions).runner):
    return None
  from apache_beam.runners.dask.dask_runner import DaskRunner
  _quiet(DASK_LOGGER, HARMLESS_DASK_WARNINGS)
  # The cluster's INFO lines (a local cluster's start, workers coming and going) would bury the
  # summary; its warnings and errors still show.
  logging.getLogger('distributed').setLevel(logging.WARNING)
  return DaskRunner()


def _one_line(error: BaseException) -> str:
  """An error's type and the first line of its message, shortened: for the console."""
  text = ' '.join(str(error).strip().split('\n', 1)[0].split())
  text = text if len(text) <= 600 else text[:597] + '...'
  return f'{type(error).__name__}: {text}'


def launch_message(result, options: PipelineOptions, summary_uri: str) -> str:
  """What the launcher says once a Dataflow run is handed over: the job it submitted, or, for a
  Flex Template launch (``--template_location``), the job file the Dataflow service then starts
  the job from. Such a run submits no job itself: its result has none."""
  template = options.view_as(GoogleCloudOptions).template_location
  if _dry_run(options):
    return 'dry run: the job was translated for Dataflow and not submitted'
  done = 'for each batch prediction when it is joined' if '<id>' in summary_uri else \
      'when it is done'
  if template:
    return (f'wrote the Dataflow job to {template}; the Dataflow service runs it, and the job '
            f'writes {summary_uri} {done}')
  job = result.job_id() if getattr(result, 'has_job', False) else None  # a dry run has none
  return (f'submitted to Dataflow{f" as job {job}" if job else ""}; the job writes '
          f'{summary_uri} {done}')


def _read_summary(uri: str) -> dict | None:
  """The run's summary, or None when the job failed before it wrote one (or it is unreadable:
  the job's own error is what the command reports then)."""
  try:
    return json.loads(read_text(uri))
  except Exception:  # noqa: BLE001
    return None


def verify_outputs(result, summary: dict, records_in_files: bool) -> list[str]:
  """Differences between the run and its summary (none on a correct run): the Beam counters
  (``check_counters``), or where the runner reports none, the files the summary lists, read
  back (``transforms.report.readback``); it says so once on stderr then."""
  counters = _counters(result)
  if counters is not None:
    return check_counters(summary, counters)
  print('predjoin: Beam counters are not available on this runner; the run is checked against '
        'the record and dead-letter files summary.json lists', file=sys.stderr)
  try:
    return readback.check(summary, records_in_files)
  except Exception as e:  # noqa: BLE001  # a file that cannot be read is a failed check
    return [f'the output files could not be read back: {redact(_one_line(e))}']


def _close(result) -> None:
  """Closes what a finished run holds: a DaskRunner result holds its Dask client (and, without
  --dask_client_address, the local cluster the client started)."""
  client = getattr(result, 'client', None)
  if client is not None:
    client.close()


def run(argv: list[str] | None = None, runner_class=None) -> int:
  """Builds and runs the job; returns the exit code (0 ok, 1 bad shards or identity, 2 usage).

  On Dataflow it returns once the job is submitted. On the local runner and the DaskRunner it
  waits, prints the summary, checks the run (:func:`verify_outputs`) and decides the exit code;
  on any other runner the job itself fails when the bad shards exceed ``--max_bad_shards``
  (``steps.WriteSummary``), and the command says why.
  ``runner_class``: the FnApiRunner subclass of a local run (see :func:`local_runner`).
  """
  argv = sys.argv[1:] if argv is None else list(argv)
  try:
    check_arguments(argv)
  except UsageError as e:
    print(f'predjoin: error: {e}', file=sys.stderr)
    return 2
  options = Options(argv)
  opts = options.view_as(PredjoinOptions)
  runner = str(options.view_as(StandardOptions).runner or 'DirectRunner')
  p = beam.Pipeline(runner=local_runner(options, runner_class) or dask_runner(options),
                    options=options)
  try:
    built = build_pipeline(p, options)
  except (OptionsError, LaunchError, PlanError, ValueError, StorageError) as e:
    print(f'predjoin: error: {redact(str(e))}', file=sys.stderr)
    return 2
  dataflow = 'Dataflow' in runner
  if isinstance(built, IncrementalJob):
    return _run_incremental(p, built, options, opts, dataflow)
  result, failure = _start(p, dataflow)
  watched = isinstance(built, BuiltWatch)
  summary_uri = FileSystems.join(opts.output, '<id>', 'summary.json') if watched else \
      built.summary_uri
  if dataflow:  # the launcher returns once the job is handed over
    print(launch_message(result, options, summary_uri))
    return 0
  try:
    if watched:
      return _judge_watch(failure, built)
    return _judge(result, failure, opts, built.summary_uri)
  finally:
    _close(result)


def _start(p: beam.Pipeline, dataflow: bool):
  """Runs the pipeline, and waits for it unless it goes to Dataflow: ``(result, failure)``.

  A local job's failure is kept, to be judged beside what it wrote; on Dataflow, a job that
  could not be submitted raises (Beam's own error says why)."""
  result = failure = None
  try:
    result = p.run()
    if not dataflow:
      result.wait_until_finish()
  except Exception as e:  # noqa: BLE001  # the runner logged the worker's traceback already
    if dataflow:
      raise
    failure = e
  return result, failure


def unit_summaries(output: str) -> dict[str, dict | None]:
  """Every ``<output>/<id>/summary.json`` there is, read (None: unreadable), by URI."""
  pattern = FileSystems.join(output, '*', 'summary.json')
  try:
    uris = sorted(m.path for r in FileSystems.match([pattern]) for m in r.metadata_list)
  except Exception:  # noqa: BLE001  # nothing there yet
    uris = []
  return {uri: _read_summary(uri) for uri in uris}


def _judge_watch(failure: Exception | None, built: BuiltWatch) -> int:
  """After a local watch ended (``--watch_for``): each unit's summary under the output, and the
  exit code: 1 when the job failed or a unit's summary says it failed."""
  summaries = unit_summaries(built.output)
  for uri, summary in summaries.items():
    if summary is None:
      print(f'{uri}: unreadable')
      continue
    t = summary['totals']
    print(f'{uri}: {"ok" if summary["ok"] else "FAILED"}, rows in {t["input_rows"]}, joined '
          f'{t["joined_rows"]}, failed {t["failed_rows"]}, dead-lettered '
          f'{t["dead_letter_rows"]}; shards {t["shards"]} ({t["bad_shards"]} bad)')
  if not summaries:
    print(f'no batch prediction joined under {built.output} (watched: '
          f'{", ".join(built.patterns)})')
  if failure is not None:
    print(f'predjoin: error: the job failed: {redact(_one_line(failure))}', file=sys.stderr)
  bad = [uri for uri, summary in summaries.items() if not (summary or {}).get('ok')]
  if bad:
    print(f'predjoin: {len(bad)} batch prediction(s) failed: see their summary.json',
          file=sys.stderr)
  return 1 if failure is not None or bad else 0


def _run_incremental(p: beam.Pipeline, built: IncrementalJob, options: PipelineOptions,
                     opts: PredjoinOptions, dataflow: bool) -> int:
  """Runs an incremental job (:func:`build_incremental`): prints what was decided for each
  batch prediction, runs the joins, and judges each as a run of its own would be. The exit code
  is the worst of them: 2 when a batch prediction was refused at launch, 1 when one failed."""
  report = built.report
  for entry in report['units']:
    print(f'{entry["batch_prediction_id"]}: {entry["action"]}: {entry["reason"]}')
  if built.report_uri:
    print(f'run summary: {built.report_uri}')
  refused = 2 if report['refused'] else 0
  if not built.joined and not dataflow:
    print('nothing to join')
    return refused
  if not built.joined:
    # A Flex Template launch must hand the Dataflow service a job: one that only says so.
    _ = p | 'NothingToJoin' >> beam.Create([built.report_uri or 'nothing to join'])
  result, failure = _start(p, dataflow)
  if dataflow:
    print(launch_message(result, options, FileSystems.join(
        opts.output, '<batch prediction id>', 'summary.json')))
    return refused
  try:
    codes, summaries = [], []
    for unit, job in built.joined:
      print(f'== {unit.id} ({unit.decision.action})')
      code = _judge(None, failure, opts, job.summary_uri, unit.output)
      codes.append(code)
      summary = _read_summary(job.summary_uri)
      if summary is not None:
        summaries.append(summary)
      entry = next(e for e in report['units'] if e['batch_prediction_id'] == unit.id)
      entry['ok'] = code == 0
    # Counters are the job's, over every unit: checked against the units' summaries added up.
    if failure is None and result is not None and summaries:
      totals = {name: sum(s['totals'][name] for s in summaries)
                for name in summaries[0]['totals']}
      combined = {'totals': totals, 'shards': [r for s in summaries for r in s['shards']],
                  'outputs': {name: [f for s in summaries for f in s['outputs'][name]]
                              for name in summaries[0]['outputs']}}
      differences = verify_outputs(result, combined, opts.format != 'bigquery')
      for line in differences:
        print(f'predjoin: error: {line}', file=sys.stderr)
      if differences:
        codes.append(1)
    if built.report_uri:
      write_run_report(built.report_uri, report)
    return max([refused, *codes])
  finally:
    for unit, _ in built.joined:  # the job releases them; a failed one may not have
      if unit.claim is not None:
        try:
          claims.release(unit.claim, unit.run_id, Storage(StorageConfig.from_options(options)))
        except Exception as e:  # noqa: BLE001  # it goes stale: the next runs take it over
          _LOG.warning('could not release the claim %s: %s', redact(unit.claim), e)
    _close(result)


def _judge(result, failure: Exception | None, opts: PredjoinOptions, summary_uri: str,
           output: str | None = None) -> int:
  """Prints where the outputs are (under ``output``: --output unless given) and the summary,
  checks the run (without ``result``: the summary alone), and returns the exit code."""
  output = output or opts.output
  why = '' if failure is None else f': {redact(_one_line(failure))}'
  summary = _read_summary(summary_uri)
  if summary is None:
    print(f'predjoin: error: the job failed{why}' if failure is not None else
          f'predjoin: error: the job ended without writing {summary_uri}',
          file=sys.stderr)
    return 1
  if isinstance(failure, TooManyBadShards) and not summary['ok']:
    # The job failed itself on its bad shards, after writing the summary (a runner whose job
    # does, with the error as raised): the summary and the line below say it all.
    failure = None
  if opts.format == 'bigquery':
    published = (summary.get('bigquery') or {}).get('published')
    print(f'records: BigQuery table {bigquery.parse_table(opts.bigquery_table)} '
          f'({opts.write_disposition}; {"published" if published else "unchanged"})')
  else:
    print(f'records: {FileSystems.join(output, "records")}/ ({opts.format})')
  print(f'dead letters: {FileSystems.join(output, "dead_letter")}/')
  print(format_summary(summary, summary_uri))
  differences = [] if failure is not None or result is None else \
      verify_outputs(result, summary, opts.format != 'bigquery')
  for line in differences:
    print(f'predjoin: error: {line}', file=sys.stderr)
  if failure is not None:
    print(f'predjoin: error: the job failed{why}', file=sys.stderr)
  if not summary['ok'] or differences or failure is not None:
    bad = summary['totals']['bad_shards'] + summary['totals']['bad_manifests']
    print(f'predjoin: {bad} bad shard(s) or manifest(s), --max_bad_shards '
          f'{summary["max_bad_shards"]}', file=sys.stderr)
    return 1
  return 0


def main() -> None:
  """The ``predjoin`` command (``pipelines/cli.py``): exits with ``run``'s code."""
  from pipelines import cli
  cli.main()


if __name__ == '__main__':
  main()
