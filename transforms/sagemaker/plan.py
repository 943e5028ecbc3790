"""The plan of a run over a SageMaker Batch Transform job, made at launch.

The launcher reads the job's description, refuses settings that give no line correspondence,
lists and pairs its inputs and ``.out`` outputs (``transforms/sagemaker/pairing.py``), decides
whether inputs start with a header line (``--input_header``, else inferred from their first
lines, as for Amazon ML), and learns the output lines' layout from the first paired output
(``transforms/sagemaker/output.py``). The join core then treats every shard as it treats an
Amazon ML shard: row k with its k-th answer, exact counts, one header decision, refusals whole.
"""

from __future__ import annotations

import dataclasses

from transforms.aml import schema_file
from transforms.io.access import AccessPolicy, Location, locate
from transforms.io.storage import Storage, StorageError, redact
from transforms.join import align, coltypes, record_schema
from transforms.join.header import HeaderUndecided
from transforms.join.lines import LineReader
from transforms.join.plan import (
  JoinPlan,
  PlanError,
  PlanSettings,
  decide_header,
  input_columns,
  sample_input,
)
from transforms.join.shards import Shard
from transforms.sagemaker import job as jobs
from transforms.sagemaker import output as outputs
from transforms.sagemaker import pairing

SAMPLE_LINES = 50  # output lines the layout is learned from


@dataclasses.dataclass(frozen=True)
class TransformSettings:
  """What the options say of a SageMaker run beyond the plan's common settings:
  ``--class_labels``, ``--output_fields`` and ``--failed_marker``."""

  class_labels: tuple[str, ...] = ()
  output_fields: tuple[str, ...] = ()
  failed_marker: str | None = None


@dataclasses.dataclass(frozen=True)
class TransformPlan:
  """The join plan of a transform job's run, its shards, and what the summary says of the job."""

  plan: JoinPlan
  shards: tuple[Shard, ...]
  facts: dict


def default_prefixes(job: jobs.TransformJob) -> tuple[Location, ...]:
  """What a job's own description lets a run read: its input's bucket and its output path."""
  found = []
  for uri in (job.input_uri, job.output_path):
    try:
      where = locate(uri)
    except Exception:  # noqa: BLE001  # an unusable URI is refused when it is checked
      continue
    found.append(Location(where.kind, where.bucket, ()) if where.kind != 'local' else where)
  return tuple(found)


def _output_lines(storage: Storage, shard: Shard, leading: int,
                  fmt_marker: str | None) -> list[str]:
  """The first answers of an output that are not failed records."""
  with storage.open(shard.result_uri) as f:
    reader = LineReader(f)
    for _ in range(leading):
      reader.readline()
    lines = []
    while len(lines) < SAMPLE_LINES:
      line = reader.readline()
      if line is None:
        break
      text = line.decode('utf-8', 'replace').strip()
      if text and text != fmt_marker:
        lines.append(text)
  return lines


def make_transform_plan(job: jobs.TransformJob, storage: Storage, settings: PlanSettings,
                        transform: TransformSettings = TransformSettings(),
                        allowed: tuple[str, ...] = ()) -> TransformPlan:
  """Plans a run over a transform job (see the module docstring).

  Raises:
    PlanError: the job's settings give no line correspondence, its inputs cannot be listed, no
      output could be read to learn its layout, the options do not fit the outputs, or whether
      inputs start with a header cannot be decided.
    AccessError: an input or output lies outside the job's own prefixes and ``allowed``.
  """
  try:
    jobs.check(job)
  except jobs.JobError as e:
    raise PlanError(str(e)) from None
  rules = list(settings.rebase_rules)
  try:
    paired = pairing.list_job(job, storage, rules)
  except (pairing.PairingError, StorageError) as e:
    raise PlanError(f'the transform job {job.name}: {e}') from None
  if not paired.shards:
    raise PlanError(f'the transform job {job.name} has no input object under {job.input_uri}')
  policy = AccessPolicy.create(allowed, rules)
  policy.check_shards(job.source or job.input_uri, paired.shards,
                      extra_allowed=default_prefixes(job))
  readable = [s for s in paired.shards if s.result_problem is None]
  if not readable:
    raise PlanError(f'the transform job {job.name} has no output to join: '
                    + '; '.join(s.result_problem[1] for s in paired.shards[:3]))
  try:  # --schema: an Amazon ML .schema file names and types the input's columns
    given = schema_file.load_schema(settings.schema_uri, storage) if settings.schema_uri \
        else None
  except schema_file.SchemaError as e:
    raise PlanError(str(e)) from None
  problems = []
  for shard in readable:
    first = sample_input(storage, shard)
    if first is None:
      problems.append(f'cannot read {redact(shard.input_uri)}')
      continue
    try:
      decision = decide_header(settings.input_header, given, first, [list(readable)], shard,
                               storage)
      columns = input_columns(shard, decision, first.data, given)
      lines = _output_lines(storage, shard, int(decision.has_header), transform.failed_marker)
      if not lines:  # every record of this input failed: learn from the next one
        problems.append(f'{redact(shard.result_uri)} has no answer that is not a failed record')
        continue
      fmt, layout = outputs.learn(job, lines, len(columns.names), settings.model_type,
                                  transform.class_labels, transform.output_fields,
                                  transform.failed_marker)
    except (HeaderUndecided, schema_file.SchemaError, outputs.OutputError) as e:
      raise PlanError(f'{redact(shard.result_uri)}: {e}' if isinstance(e, outputs.OutputError)
                      else str(e)) from None
    except (StorageError, OSError, EOFError) as e:
      problems.append(str(e))
      continue
    types = [given.output_type(name) if given else '' for name in columns.names]
    kinds = [coltypes.kind_of(t or None) for t in types]
    schema = record_schema.output_schema(layout, columns.names, kinds, types,
                                         top_k=settings.top_k)
    # The output's copy of an input field may be re-written (a JSON number for the CSV text
    # 10.50): numbers are compared by exact decimal value, other values as written.
    checks = tuple(align.Check(outputs.echo_name(c), c, columns.names[c], schema_file.NUMERIC,
                               f'the output\'s copy of {columns.names[c]}')
                   for _, c in fmt.echo)
    plan = JoinPlan(layout=layout, schema=schema, header=decision, aml_schema=given,
                    schema_given=given is not None, checks=checks,
                    header_line=columns.header_line, cutoff=settings.cutoff,
                    min_score=settings.min_score, block_rows=settings.block_rows,
                    on_type_error=settings.on_type_error, top_k=settings.top_k,
                    parse_threads=settings.parse_threads, result_format=fmt,
                    range_rows=settings.range_rows)
    facts = {'service': 'sagemaker', 'transform_job': job.as_dict(),
             'pairing': paired.as_dict(), 'output': {
                 'format': job.accept, 'fields': list(fmt.names),
                 'echoed_input_columns': [columns.names[c] for _, c in fmt.echo],
                 'failed_marker': transform.failed_marker}}
    return TransformPlan(plan, paired.shards, facts)
  raise PlanError(f'no output of the transform job {job.name} could be learned from:\n  - '
                  + '\n  - '.join(problems))
