"""Re-thresholding audit: per-block figures about the answers, merged per shard and per run.

Pure functions over whole columns (NumPy); no Python runs per row.

- Binary: how many recomputed answers (``score >= cutoff``) differ from the file's
  ``bestAnswer``, in each direction; how the scores fall around the cut-off; and the interval
  the service's own threshold must lie in, ``(highest score answered 0, lowest answered 1]``.
- Multiclass: ``unknown`` answers (best score below ``--min_score``), rows whose scores do not
  sum to 1 within :data:`SUM_TOLERANCE`, and how the margins (best minus second score) fall.

Figures are plain dicts of numbers so they travel in shard reports; :func:`merge` adds two,
:func:`describe` turns one into the summary's form.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from transforms.join import arrays, record_schema

SUM_TOLERANCE = 1e-3
# Bin edges of the scores, as offsets from the cut-off; the bins are [a, b), plus one below the
# first edge and one from the last edge up.
CUTOFF_OFFSETS = (-0.1, -0.05, -0.01, 0.0, 0.01, 0.05, 0.1)
MARGIN_EDGES = (0.01, 0.05, 0.1, 0.25, 0.5)


def _flags(array: pa.Array) -> np.ndarray:
  return pc.fill_null(array, False).to_numpy(zero_copy_only=False)


def _bins(values: np.ndarray, edges) -> list[int]:
  index = np.searchsorted(np.asarray(edges, dtype=np.float64), values, side='right')
  return np.bincount(index, minlength=len(edges) + 1).tolist()


def block_stats(layout: record_schema.ResultLayout, fields: dict[str, pa.Array], ok: np.ndarray,
                cutoff: float) -> dict:
  """The audit figures of one block's prediction fields; ``ok`` marks the rows with an answer."""
  rows = int(ok.sum())
  if layout.model_type == record_schema.BINARY:
    # ok rows have a score and an answer: the values of null slots are never looked at. The
    # service's own answer may be missing (a SageMaker output of a probability only).
    score = arrays.values(fields['score'])[ok]
    mine = arrays.values(fields['best_answer'])[ok]
    given = arrays.valid(fields['service_best_answer'])[ok]
    theirs = np.where(given, arrays.values(fields['service_best_answer'])[ok], -1)
    changed = given & (mine != theirs)
    zero, one = score[theirs == 0], score[theirs == 1]
    return {
        'rows': rows,
        'answers_changed': int(changed.sum()),
        'changed_to_1': int((changed & (mine == 1)).sum()),
        'changed_to_0': int((changed & (mine == 0)).sum()),
        'score_bins': _bins(score, [cutoff + d for d in CUTOFF_OFFSETS]),
        'service_0_max_score': float(zero.max()) if len(zero) else None,
        'service_1_min_score': float(one.min()) if len(one) else None,
    }
  if layout.model_type == record_schema.MULTICLASS:
    return {
        'rows': rows,
        'unknown_rows': int(_flags(fields['unknown'])[ok].sum()),
        'score_sum_off_rows': int(_flags(fields['score_sum_off'])[ok].sum()),
        'margin_bins': _bins(arrays.values(fields['margin'])[ok], MARGIN_EDGES),
    }
  return {'rows': rows}


def _pick(a, b, fn):
  if a is None:
    return b
  if b is None:
    return a
  return fn(a, b)


def merge(a: dict | None, b: dict | None) -> dict | None:
  """Two sets of figures added together (either may be None or empty)."""
  if not a:
    return b
  if not b:
    return a
  out = {}
  for key in [*a, *(k for k in b if k not in a)]:
    x, y = a.get(key), b.get(key)
    if key == 'service_0_max_score':
      out[key] = _pick(x, y, max)
    elif key == 'service_1_min_score':
      out[key] = _pick(x, y, min)
    elif isinstance(x, list) or isinstance(y, list):
      out[key] = [p + q for p, q in zip(x or [0] * len(y), y or [0] * len(x), strict=True)]
    else:
      out[key] = (x or 0) + (y or 0)
  return out


def _labelled(edges, counts) -> list[dict]:
  bounds = [None, *[round(e, 6) for e in edges], None]
  return [{'from': lo, 'to': hi, 'rows': n}
          for lo, hi, n in zip(bounds[:-1], bounds[1:], counts, strict=True)]


def describe(stats: dict | None, model_type: str, cutoff: float, min_score: float | None,
             top_k: int | None) -> dict:
  """The summary's ``audit`` section from merged figures."""
  stats = stats or {}
  if model_type == record_schema.BINARY:
    bins = stats.get('score_bins') or [0] * (len(CUTOFF_OFFSETS) + 1)
    return {
        'cutoff': cutoff,
        'rows_with_answer': stats.get('rows', 0),
        'answers_changed': stats.get('answers_changed', 0),
        'changed_to_1': stats.get('changed_to_1', 0),
        'changed_to_0': stats.get('changed_to_0', 0),
        'rule': 'best_answer = 1 when score >= cutoff; answer_changed when it differs from the '
                'file\'s bestAnswer',
        'scores_around_cutoff': _labelled([cutoff + d for d in CUTOFF_OFFSETS], bins),
        'service_threshold_between': [stats.get('service_0_max_score'),
                                      stats.get('service_1_min_score')],
    }
  if model_type == record_schema.MULTICLASS:
    bins = stats.get('margin_bins') or [0] * (len(MARGIN_EDGES) + 1)
    return {
        'min_score': min_score,
        'top_k': top_k,
        'rows_with_answer': stats.get('rows', 0),
        'unknown_rows': stats.get('unknown_rows', 0),
        'score_sum_off_rows': stats.get('score_sum_off_rows', 0),
        'score_sum_tolerance': SUM_TOLERANCE,
        'margins': _labelled(MARGIN_EDGES, bins),
    }
  return {'rows_with_answer': stats.get('rows', 0)}
