"""The run summary: every shard's report, the identity checked against what each sink received.

Pure functions over typed parts (no Beam): each shard's :class:`ShardOutcome` (its report, the
files it wrote, the rows written to them), and for records that go to a sink of their own
(BigQuery), the :class:`SinkCounts` taken in front of that sink. ``transforms/steps.py`` gathers
them with one combine (``CollectRun``) and writes ``summary.json``. The summary holds URIs and
messages as read; it is redacted as a whole when it is written.
"""

from __future__ import annotations

import dataclasses

from transforms.io.storage import OUTPUT_DIRS, redact
from transforms.join.outcomes import BAD_STATUSES, MISALIGNED, ShardReport
from transforms.report import verification

RECORD_FILES, DEAD_LETTER_FILES, RESUBMIT_FILES = OUTPUT_DIRS  # the files' kinds: directories
SHARD_ERRORS_SHOWN = 10  # in the failed job's error; summary.json lists every one


def shard_key(batch_prediction_id: str, input_uri: str) -> tuple[str, str]:
  """The key of a shard's rows wherever they are counted: in a record's own columns (whose
  ``input_uri`` is shown redacted) as in the shard's report."""
  return batch_prediction_id, redact(input_uri)


@dataclasses.dataclass(frozen=True)
class ShardOutcome:
  """What one shard (or a manifest that could not be used: ``report.input_uri`` None) leaves
  for the summary: its report, the files it wrote (``RECORD_FILES``, ``DEAD_LETTER_FILES``,
  ``RESUBMIT_FILES``: a URI, or a tuple of them for a shard split into ranges), and the rows written to them: ``record_counts`` (ok, failed, not
  predicted) when its records went to files, else None, and ``dead_letter_rows``."""

  report: ShardReport
  files: dict = dataclasses.field(default_factory=dict)
  record_counts: tuple[int, int, int] | None = None
  dead_letter_rows: int = 0


@dataclasses.dataclass(frozen=True)
class SinkCounts:
  """Records counted by status, ``(ok, failed, not predicted)``, in front of a sink of their
  own (BigQuery), for one shard (``shard_key``)."""

  key: tuple[str, str]
  counts: tuple[int, int, int]


@dataclasses.dataclass(frozen=True)
class StagingJob:
  """A BigQuery job that staged records (``table <- job id``)."""

  text: str


@dataclasses.dataclass
class RunParts:
  """Everything the summary is made of, gathered from the whole run."""

  outcomes: list[ShardOutcome] = dataclasses.field(default_factory=list)
  sink_counts: dict[tuple[str, str], tuple[int, int, int]] = dataclasses.field(
      default_factory=dict)
  staging_jobs: list[str] = dataclasses.field(default_factory=list)

  def add(self, part: ShardOutcome | SinkCounts | StagingJob) -> RunParts:
    if isinstance(part, ShardOutcome):
      self.outcomes.append(part)
    elif isinstance(part, SinkCounts):
      self.sink_counts[part.key] = _add(self.sink_counts.get(part.key), part.counts)
    elif isinstance(part, StagingJob):
      self.staging_jobs.append(part.text)
    else:
      raise TypeError(f'not a part of the run summary: {part!r}')
    return self

  def merge(self, other: RunParts) -> RunParts:
    self.outcomes.extend(other.outcomes)
    for key, counts in other.sink_counts.items():
      self.sink_counts[key] = _add(self.sink_counts.get(key), counts)
    self.staging_jobs.extend(other.staging_jobs)
    return self

  def files(self, kind: str) -> list[str]:
    found = []
    for o in self.outcomes:
      uris = o.files.get(kind, ())
      found.extend([uris] if isinstance(uris, str) else uris)
    return sorted(found)


def _add(counts: tuple | None, more: tuple) -> tuple:
  return more if counts is None else tuple(a + b for a, b in zip(counts, more, strict=True))


class IdentityError(RuntimeError):
  """The outputs do not account for every input row: a bug, never a data problem."""


class TooManyBadShards(RuntimeError):
  """More bad shards (or manifests) than ``--max_bad_shards`` allows: the job fails with this."""


def bad_shards_message(summary: dict, summary_uri: str) -> str:
  """Why a run with too many bad shards failed: the count, the limit and the shards' errors."""
  bad = [s for s in summary['shards']
         if s['input_uri'] is None or s['status'] in BAD_STATUSES]
  errors = [f'{s["input_uri"] or "manifest " + s["manifest_uri"]}: {s["status"]}: {s["error"]}'
            for s in bad[:SHARD_ERRORS_SHOWN]]
  more = f'; and {len(bad) - SHARD_ERRORS_SHOWN} more' if len(bad) > SHARD_ERRORS_SHOWN else ''
  return redact(f'{len(bad)} bad shard(s) or manifest(s), more than --max_bad_shards '
                f'{summary["max_bad_shards"]} allows (see {summary_uri}): '
                + '; '.join(errors) + more)


def _identity(outcomes: list[ShardOutcome], sink_counts: dict) -> list[str]:
  """What the sinks received against what each shard reported; [] when every row is there."""
  problems = []
  for outcome in outcomes:
    r = outcome.report
    if r.input_uri is None:
      continue
    key = shard_key(r.batch_prediction_id, r.input_uri)
    records = outcome.record_counts if outcome.record_counts is not None else \
        sink_counts.get(key, (0, 0, 0))
    reported = (r.joined_rows, r.failed_rows, r.not_predicted_rows, r.dead_letter_rows)
    if r.input_rows is not None and r.input_rows != sum(reported):
      problems.append(f'{r.input_uri}: input_rows {r.input_rows} != joined + failed + '
                      'not predicted + dead letter')
    written = (*records, outcome.dead_letter_rows)
    if written != reported:
      problems.append(f'{r.input_uri}: the sinks received {written[0]} joined, {written[1]} '
                      f'failed, {written[2]} not predicted and {written[3]} dead-letter rows; '
                      f'the join reported {", ".join(str(n) for n in reported)}')
  known = {shard_key(o.report.batch_prediction_id, o.report.input_uri) for o in outcomes
           if o.report.input_uri is not None}
  problems.extend(f'{key[1]}: rows reached a sink with no shard report'
                  for key in sorted(set(sink_counts) - known))
  return problems


def summarize(parts: RunParts, max_bad_shards: int, run: dict | None = None,
              resubmit_schema: str | None = None) -> dict:
  """The run summary, with the identity checked per shard against what reached the sinks.

  With ``run`` (``verification.run_facts``), the verification sections are added (header
  decision, typing, alignment, audit, data_rearrangement, reconciliation, resubmit, warnings).
  """
  outcomes = sorted(parts.outcomes, key=lambda o: (o.report.batch_prediction_id or '',
                                                   o.report.manifest_uri,
                                                   o.report.input_uri or ''))
  shards = [o.report.as_dict() for o in outcomes]
  totals = dict(input_rows=0, joined_rows=0, failed_rows=0, not_predicted_rows=0,
                dead_letter_rows=0, shards=0, bad_shards=0, misaligned_shards=0, bad_manifests=0)
  for r in shards:
    if r['input_uri'] is None:
      totals['bad_manifests'] += 1
      continue
    totals['shards'] += 1
    totals['bad_shards'] += r['status'] in BAD_STATUSES
    totals['misaligned_shards'] += r['status'] == MISALIGNED
    for name in ('joined_rows', 'failed_rows', 'not_predicted_rows', 'dead_letter_rows'):
      totals[name] += r[name]
    totals['input_rows'] += r['input_rows'] or 0
  problems = _identity(outcomes, parts.sink_counts)
  bad = totals['bad_shards'] + totals['bad_manifests']
  resubmit_files = parts.files(RESUBMIT_FILES)
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
      'outputs': {'records': parts.files(RECORD_FILES) or sorted(parts.staging_jobs),
                  'dead_letter': parts.files(DEAD_LETTER_FILES), 'resubmit': resubmit_files},
  }
  if run is not None:
    summary.update(verification.sections(shards, run, resubmit_files, resubmit_schema))
  return summary
