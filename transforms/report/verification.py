"""The verification sections of the run summary: typing, alignment, audit, slice, service.

Pure functions over the shard reports (``ShardReport.as_dict()``) and the run's facts, which the
launcher takes from the plan (:func:`run_facts`); ``transforms/steps.py`` adds what they return
to ``summary.json``. The README ("Output contract") documents every key.
"""

from __future__ import annotations

from transforms.aml import service
from transforms.join import audit, outcomes
from transforms.join.plan import JoinPlan


def run_facts(plan: JoinPlan, service_records: dict | None = None,
              source: dict | None = None) -> dict:
  """What the summary needs to know about the run, as plain JSON values."""
  schema = plan.schema
  return {
      'model_type': plan.layout.model_type,
      'cutoff': plan.cutoff,
      'min_score': plan.min_score,
      'top_k': plan.top_k,
      'on_type_error': plan.on_type_error,
      'schema_uri': plan.aml_schema.uri if plan.aml_schema else None,
      'columns': [{'input': name, 'output': field, 'attribute_type': kind_from or None,
                   'type': kind}
                  for name, field, kind_from, kind in zip(
                      schema.input_columns, schema.input_fields,
                      schema.input_types or [''] * len(schema.input_fields),
                      schema.input_kinds, strict=True)],
      'checks': [check.name for check in plan.checks],
      'input_header': plan.header.as_dict(),
      'data_rearrangement': plan.split.as_dict() if plan.split else None,
      'service_records': service_records,
      'source': source,
  }


def _shards(reports: list[dict]) -> list[dict]:
  return [r for r in reports if r['input_uri'] is not None]


def typing_section(shards: list[dict], facts: dict) -> dict:
  per_column: dict[str, int] = {}
  for r in shards:
    for name, count in (r.get('type_errors') or {}).items():
      per_column[name] = per_column.get(name, 0) + count
  return {
      'schema': facts['schema_uri'],
      'on_type_error': facts['on_type_error'],
      'columns': facts['columns'],
      'type_error_rows': sum(r.get('type_error_rows', 0) for r in shards),
      'values_not_fitting': per_column,
      'rule': 'NUMERIC -> double (empty -> null), BINARY -> boolean (0 n no f false / '
              '1 y yes t true, any case, spaces ignored; empty -> null), other types, '
              'excluded attributes and columns without a schema -> string',
  }


# The input rules every shard is read by (README, "Rules predjoin follows").
ROWS_RULE = ('a shard\'s rows are its input lines, less its header line when the run decided '
             'inputs have one, and less the empty lines at the end of the file; every row needs '
             'exactly one result line, and row k is answered by result line k + 1 (line 1 is the '
             'result\'s header)')
EMPTY_LINES_RULE = ('an empty input line (nothing on it, or only the \\r of \\r\\n) at the start or '
                    'in the middle of a file is an observation, answered by its own result line; '
                    'empty lines after the last line with anything on it are not observations')


def header_section(facts: dict) -> dict:
  return {**facts['input_header'], 'rows_rule': ROWS_RULE, 'empty_lines_rule': EMPTY_LINES_RULE}


def alignment_section(shards: list[dict], facts: dict) -> dict:
  checked = [r for r in shards if r.get('checks')]
  misaligned = [{'input_uri': r['input_uri'], 'result_uri': r['result_uri'], **r['misaligned']}
                for r in shards if r.get('misaligned')]
  by_method = {method: sum(r.get('alignment') == method for r in shards)
               for method in (outcomes.VERIFIED, outcomes.POSITIONAL, outcomes.REFUSED)}
  return {'checks': facts['checks'], 'shards_checked': len(checked),
          'shards_verified': by_method[outcomes.VERIFIED],
          'shards_positional': by_method[outcomes.POSITIONAL],
          'shards_refused': by_method[outcomes.REFUSED],
          'misaligned_shards': len(misaligned), 'misaligned': misaligned}


def slice_section(shards: list[dict], facts: dict) -> dict | None:
  if not facts.get('data_rearrangement'):
    return None
  per_bp: dict[str, dict] = {}
  for r in shards:
    piece = r.get('data_slice')
    entry = per_bp.setdefault(r['batch_prediction_id'], {
        'datasource_rows': None, 'begin_row': None, 'end_row': None, 'predicted_rows': 0,
        'not_predicted_rows': 0, 'boundary': None})
    entry['not_predicted_rows'] += r.get('not_predicted_rows', 0)
    if piece is None:
      continue
    for key in ('datasource_rows', 'begin_row', 'end_row'):
      entry[key] = piece[key]
    entry['predicted_rows'] += piece['predicted_rows']
    boundary = piece.get('boundary')
    if piece['predicted_rows'] and boundary is not None:
      order = ('misaligned', 'unchecked', 'unconfirmed', 'confirmed')
      entry['boundary'] = boundary if entry['boundary'] is None else \
          min(entry['boundary'], boundary, key=order.index)
  return {**facts['data_rearrangement'], 'batch_predictions': per_bp}


def audit_section(shards: list[dict], facts: dict) -> dict:
  stats = None
  for r in shards:
    stats = audit.merge(stats, r.get('audit'))
  return audit.describe(stats, facts['model_type'], facts['cutoff'], facts['min_score'],
                        facts['top_k'])


def sections(reports: list[dict], facts: dict, resubmit_files: list[str],
             resubmit_schema: str | None) -> dict:
  """``input_header``, ``typing``, ``alignment``, ``audit``, ``data_rearrangement``,
  ``reconciliation``, ``resubmit`` and ``warnings`` for the summary."""
  shards = _shards(reports)
  out = {
      'input_header': header_section(facts),
      'typing': typing_section(shards, facts),
      'alignment': alignment_section(shards, facts),
      'audit': audit_section(shards, facts),
      'data_rearrangement': slice_section(shards, facts),
  }
  warnings = []
  for m in out['alignment']['misaligned']:
    warnings.append(f'{m["input_uri"]}: misaligned at row {m["row_number"]} ({m["check"]}: '
                    f'input {m["input_value"]!r}, result {m["result_value"]!r})')
  nulled = out['typing']['values_not_fitting']
  if nulled and facts['on_type_error'] == 'null':
    warnings.append('values that did not fit their column\'s type were made null: ' +
                    ', '.join(f'{name} {count}' for name, count in sorted(nulled.items())))
  for bp_id, entry in ((out['data_rearrangement'] or {}).get('batch_predictions') or {}).items():
    if entry['boundary'] in ('unconfirmed', 'unchecked'):
      warnings.append(f'{bp_id}: the slice boundary is {entry["boundary"]}: the result has no '
                      'tag or trueLabel values that would differ one row off')
  source = facts.get('source')
  if source and source.get('service') == 'sagemaker':
    out['sagemaker'] = {'transform_job': source['transform_job'], 'pairing': source['pairing'],
                        'output': source['output']}
    job, pairs = source['transform_job'], source['pairing']
    if job.get('status') not in (None, 'Completed'):
      warnings.append(f'the transform job {job["name"]} is {job["status"]}'
                      + (f': {job["failure_reason"]}' if job.get('failure_reason') else ''))
    if pairs['unmatched_outputs']:
      warnings.append(f'{len(pairs["unmatched_outputs"])} .out object(s) answer no input of '
                      f'the job: {", ".join(pairs["unmatched_outputs"][:5])}')
  records = facts.get('service_records')
  if records:
    between = out['audit'].get('service_threshold_between')
    out['reconciliation'] = service.reconcile(records, shards, facts['model_type'],
                                              facts['cutoff'], between)
    warnings.extend(out['reconciliation']['warnings'])
  else:
    out['reconciliation'] = None
  out['resubmit'] = {'rows': sum(r['failed_rows'] for r in shards),
                     'files': sorted(resubmit_files),
                     'schema': resubmit_schema if resubmit_files else None}
  out['warnings'] = warnings
  return out
