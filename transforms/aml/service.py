"""Reconciliation with the service: what Amazon ML reported against what predjoin read.

``--service_record`` takes the ``GetBatchPrediction`` response, and optionally the
``GetMLModel`` response, saved as JSON (``aws machinelearning get-batch-prediction ... >
bp.json``): inline JSON text or a URI, repeatable; a value may hold one response or a list of
them. The summary compares (``docs/amazon-ml-format.md`` section 7):

- ``TotalRecordCount`` with the result lines read (the rows the service answered);
- ``InvalidRecordCount`` with the failed observations (blank result lines);
- ``Status`` with ``COMPLETED``;
- the model's ``MLModelType`` with the model type read from the result header, and the batch
  prediction's ``MLModelId`` with the model's;
- a binary model's ``ScoreThreshold`` with ``--cutoff``, and with the interval the file's own
  ``bestAnswer`` values imply.

Every difference is a warning in the summary; none fails the run. Pure functions.
"""

from __future__ import annotations

import json

MODEL_TYPES = {'BINARY': 'binary', 'MULTICLASS': 'multiclass', 'REGRESSION': 'regression'}


class ServiceRecordError(ValueError):
  """A ``--service_record`` that cannot be used; says which and why."""


def parse_records(values: list[str], read_text=None) -> dict:
  """``{'batch_predictions': {id: response}, 'models': {id: response}}`` from the option values.

  Args:
    values: inline JSON (starting with ``{`` or ``[``) or URIs of JSON files.
    read_text: reads a URI (``transforms.storage.read_text``).

  Raises:
    ServiceRecordError: not JSON, or an object that is neither response.
  """
  out = {'batch_predictions': {}, 'models': {}}
  for value in values or []:
    text = value.strip()
    where = '--service_record (inline JSON)'
    if not text.startswith(('{', '[')):
      where = f'--service_record {value}'
      try:
        text = read_text(value)
      except (OSError, ValueError) as e:
        raise ServiceRecordError(f'{where}: cannot be read ({e})') from None
    try:
      obj = json.loads(text)
    except json.JSONDecodeError as e:
      raise ServiceRecordError(f'{where}: not valid JSON ({e})') from None
    for record in obj if isinstance(obj, list) else [obj]:
      if isinstance(record, dict) and 'MLModelType' in record:
        out['models'][record.get('MLModelId')] = record
      elif isinstance(record, dict) and 'BatchPredictionId' in record:
        out['batch_predictions'][record['BatchPredictionId']] = record
      else:
        raise ServiceRecordError(
            f'{where}: expected a GetBatchPrediction response (with BatchPredictionId) or a '
            'GetMLModel response (with MLModelType)')
  return out


def _compare(name: str, service, read, warnings: list, why: str, agrees=None) -> dict:
  agrees = (service == read) if agrees is None else agrees
  if service is not None and read is not None and not agrees:
    warnings.append(why)
  return {'field': name, 'service': service, 'read': read,
          'agrees': None if service is None or read is None else agrees}


def reconcile(records: dict, shards: list[dict], model_type: str, cutoff: float | None,
              threshold_between: list | None) -> dict:
  """The summary's ``reconciliation`` section.

  Args:
    records: from :func:`parse_records`.
    shards: the summary's shard entries (manifest problems have ``input_uri`` None).
    model_type: the run's model type, from the result header.
    cutoff: ``--cutoff`` (binary models).
    threshold_between: ``[highest score answered 0, lowest answered 1]`` from the audit.
  """
  warnings: list[str] = []
  by_bp: dict[str, list[dict]] = {}
  for shard in shards:
    if shard['input_uri'] is not None:
      by_bp.setdefault(shard['batch_prediction_id'], []).append(shard)
  models = records.get('models', {})
  checked = []
  for bp_id, record in sorted(records.get('batch_predictions', {}).items()):
    mine = by_bp.get(bp_id)
    entry = {'batch_prediction_id': bp_id, 'checks': []}
    checked.append(entry)
    if mine is None:
      warnings.append(f'{bp_id}: a service record was given, but this run read no shard of '
                      'that batch prediction')
      continue
    complete = all(s['result_rows'] is not None for s in mine)
    result_rows = sum(s['result_rows'] or 0 for s in mine) if complete else None
    failed = sum(s['failed_rows'] for s in mine)
    checks = entry['checks']
    checks.append(_compare(
        'Status', record.get('Status'), 'COMPLETED', warnings,
        f'{bp_id}: the service reports Status {record.get("Status")!r}, not COMPLETED'))
    checks.append(_compare(
        'TotalRecordCount', record.get('TotalRecordCount'), result_rows, warnings,
        f'{bp_id}: the service reports TotalRecordCount {record.get("TotalRecordCount")}, '
        f'but the result files hold {result_rows} lines'))
    if not complete:
      warnings.append(f'{bp_id}: TotalRecordCount not compared: a result file could not be read')
    checks.append(_compare(
        'InvalidRecordCount', record.get('InvalidRecordCount'), failed, warnings,
        f'{bp_id}: the service reports InvalidRecordCount {record.get("InvalidRecordCount")}, '
        f'but the result files hold {failed} failed (blank) lines'))
    model = models.get(record.get('MLModelId'))
    if model is None and len(models) == 1 and None in models:
      model = models[None]
    if model is not None:
      entry['model'] = model.get('MLModelId')
      checks.extend(_model_checks(bp_id, model, model_type, cutoff, threshold_between, warnings))
    elif models:
      warnings.append(f'{bp_id}: its MLModelId {record.get("MLModelId")!r} matches no given '
                      'GetMLModel record')
  for model_id, model in sorted(models.items(), key=lambda kv: str(kv[0])):
    if not any(e.get('model') == model_id for e in checked):
      entry = {'ml_model_id': model_id, 'checks': _model_checks(
          model_id, model, model_type, cutoff, threshold_between, warnings)}
      checked.append(entry)
  return {'records': checked, 'warnings': warnings,
          'rule': 'TotalRecordCount = result lines read, InvalidRecordCount = failed (blank) '
                  'lines, MLModelType = the result header\'s model type, ScoreThreshold = '
                  '--cutoff and within the interval the file\'s bestAnswer values imply'}


def _model_checks(who, model: dict, model_type: str, cutoff, threshold_between,
                  warnings: list) -> list[dict]:
  service_type = model.get('MLModelType')
  checks = [_compare(
      'MLModelType', service_type, model_type, warnings,
      f'{who}: the model is {service_type}, but the result header is that of a {model_type} '
      'model', agrees=MODEL_TYPES.get(str(service_type).upper()) == model_type)]
  threshold = model.get('ScoreThreshold')
  if model_type == 'binary' and threshold is not None:
    checks.append(_compare(
        'ScoreThreshold', threshold, cutoff, warnings,
        f'{who}: the model\'s ScoreThreshold is {threshold}, but best_answer was recomputed '
        f'with --cutoff {cutoff}', agrees=abs(float(threshold) - float(cutoff)) < 1e-12))
    low, high = threshold_between or (None, None)
    inside = (low is None or float(threshold) > low) and (high is None or float(threshold) <= high)
    checks.append(_compare(
        'ScoreThreshold in the file', threshold, [low, high], warnings,
        f'{who}: the model\'s ScoreThreshold {threshold} does not explain the file\'s '
        f'bestAnswer values, which imply a threshold above {low} and at most {high}',
        agrees=inside))
  return checks
