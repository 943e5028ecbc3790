"""Checks a tool's output against the truth benchmarks.generate wrote.

Reads every Parquet, Avro or JSONL file under the output directory (``OUT/records/`` when it
exists, the way predjoin writes; else ``OUT/``, where the peers write ``<input name>.parquet``),
then checks:

* the row count equals the number of input rows, per shard and in total, with no row twice;
* for the sampled rows of truth.json (edges of every shard, rows right after blank result lines,
  the blank rows themselves and random rows): status, score, best answer and best score;
* the input side: ``customer_id`` encodes the shard and row it must sit beside.

Rows are identified by ``input_uri`` + ``row_number`` (predjoin), else by ``customer_id``
(any tool that keeps the input columns), else by file order (one file per shard).

Usage::

  python -m benchmarks.check --data benchmarks/data/D --output benchmarks/work/D/tool
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import os
import sys

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from benchmarks.generate import customer_id as expected_customer_id

FORMATS = {'.parquet': 'parquet', '.avro': 'avro', '.jsonl': 'jsonl', '.json': 'jsonl'}
SKIP_DIRS = ('dead_letter', 'beam-temp', '.temp', '_temp')
# Columns the checker may use; the others (input attributes) are not read.
WANTED = ('input_uri', 'row_number', 'status', 'score', 'best_answer', 'best_score', 'scores',
          'customer_id')
REL_TOL = 1e-9
MAX_REASONS = 5


class CheckFailed(Exception):
  pass


def output_files(output: str) -> list[str]:
  root = os.path.join(output, 'records')
  if not os.path.isdir(root):
    root = output
  found = []
  for path in glob.glob(os.path.join(root, '**', '*'), recursive=True):
    rel = os.path.relpath(path, root)
    if any(part.startswith('.') or any(s in part for s in SKIP_DIRS)
           for part in rel.split(os.sep)):
      continue
    ext = os.path.splitext(path)[1]
    if ext in FORMATS and os.path.isfile(path):
      found.append(path)
  return sorted(found)


def _read_parquet(files, wanted):
  import pyarrow.parquet as pq
  names = pq.read_schema(files[0]).names
  cols = [c for c in names if c in wanted]
  tables = [pq.read_table(f, columns=cols) for f in files]
  return tables


def _read_avro(files, wanted):
  """Avro files as tables of the wanted fields: polars where it can read them (about ten times
  faster than decoding records in Python), else fastavro (e.g. predjoin's ``scores`` map)."""
  try:
    return _read_avro_polars(files, wanted)
  except Exception:  # noqa: BLE001 - a type polars cannot read: the slow, complete reader
    return _read_avro_fastavro(files, wanted)


def _read_avro_polars(files, wanted):
  import polars as pl
  tables = []
  for path in files:
    names = pl.read_avro(path, n_rows=0).columns
    tables.append(pl.read_avro(path, columns=[c for c in names if c in wanted]).to_arrow())
  return tables


def _read_avro_fastavro(files, wanted):
  import fastavro
  tables = []
  for path in files:
    with open(path, 'rb') as f:
      reader = fastavro.reader(f)
      schema = reader.writer_schema
    fields = [fl for fl in schema['fields'] if fl['name'] in wanted]
    # A reader schema with only the wanted fields lets fastavro skip the others.
    sub = dict(schema, fields=fields)
    columns = {fl['name']: [] for fl in fields}
    with open(path, 'rb') as f:
      for record in fastavro.reader(f, reader_schema=sub):
        for name, values in columns.items():
          values.append(record[name])
    tables.append(pa.table({n: pa.array(v) for n, v in columns.items()}) if columns
                  else pa.table({'_': pa.nulls(0)}))
  return tables


def _read_jsonl(files, wanted):
  """JSON Lines files as tables of the wanted fields. Types are inferred from the first 10,000
  lines of each file (inferring them from every line took four times as long as the read); a
  value that does not fit them makes polars fail, and then every line is used."""
  try:
    return _read_jsonl_polars(files, wanted, 10_000)
  except Exception:  # noqa: BLE001 - a later line needs a wider type
    return _read_jsonl_polars(files, wanted, None)


def _read_jsonl_polars(files, wanted, infer):
  import polars as pl
  frame = pl.scan_ndjson(files, infer_schema_length=infer)
  cols = [c for c in frame.collect_schema().names() if c in wanted]
  tables = []
  for path in files:  # one table per file keeps the order mode possible
    tables.append(pl.scan_ndjson(path, infer_schema_length=infer).select(cols).collect()
                  .to_arrow())
  return tables


def read_output(files: list[str], wanted: set[str]) -> list[pa.Table]:
  kinds = {FORMATS[os.path.splitext(f)[1]] for f in files}
  if len(kinds) != 1:
    raise CheckFailed(f'mixed output formats: {sorted(kinds)}')
  kind = kinds.pop()
  return {'parquet': _read_parquet, 'avro': _read_avro, 'jsonl': _read_jsonl}[kind](files, wanted)


def _float(value) -> float:
  if value is None:
    return math.nan
  return float(value)


def _close(a: float, b: float) -> bool:
  if math.isnan(a) or math.isnan(b):
    return math.isnan(a) and math.isnan(b)
  return math.isclose(a, b, rel_tol=REL_TOL, abs_tol=1e-300)


def _as_bool(value):
  if value is None:
    return None
  if isinstance(value, float) and math.isnan(value):
    return None
  if isinstance(value, str):
    low = value.strip().lower()
    if low in ('1', 'true', 't', 'yes', 'y'):
      return True
    if low in ('0', 'false', 'f', 'no', 'n'):
      return False
    return value
  return bool(value)


def parse_line(truth: dict, line: str) -> dict | None:
  """Expected values of one result line; None for a blank line (failed observation)."""
  if not line.strip():
    return None
  header = [c.strip() for c in truth['result_header'].split(',')]
  cells = dict(zip(header, (c.strip() for c in line.split(',')), strict=True))
  if truth['model'] == 'binary':
    score = float(cells['score'])
    return {'score': score, 'best_answer': score >= 0.5}
  if truth['model'] == 'regression':
    return {'score': float(cells['score'])}
  scores = {label: float(cells[label]) for label in truth['labels']}
  best = max(scores.values())
  answer = next(label for label in truth['labels'] if scores[label] == best)  # first wins
  return {'scores': scores, 'best_score': best, 'best_answer': answer}


def _scores_of(value, labels):
  """predjoin's ``scores`` column as {label: float}, whatever container it came in."""
  if value is None:
    return None
  if isinstance(value, dict):
    return {str(k): _float(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    if value and isinstance(value[0], (tuple, list)) and len(value[0]) == 2:
      return {str(k): _float(v) for k, v in value}  # map as key/value pairs
    if value and isinstance(value[0], dict):
      keys = list(value[0].keys())
      if 'key' in keys and 'value' in keys:
        return {str(d['key']): _float(d['value']) for d in value}
      label_key = next((k for k in keys if k in ('label', 'class', 'name')), keys[0])
      value_key = next((k for k in keys if k in ('score', 'value', 'probability')), keys[-1])
      return {str(d[label_key]): _float(d[value_key]) for d in value}
    return dict(zip(labels, (_float(v) for v in value), strict=False))
  return None


def compare_row(truth: dict, expected: dict | None, got: dict) -> list[str]:
  """Differences between a record and its expected values (empty list if it matches)."""
  problems = []
  labels = truth['labels']
  if 'status' in got:
    want = 'failed' if expected is None else 'ok'
    if str(got['status']).lower() != want:
      problems.append(f'status {got["status"]!r}, expected {want!r}')
  if expected is None:
    for col in ('score', 'best_score'):
      if col in got and not math.isnan(_float(got[col])):
        problems.append(f'{col} {got[col]!r} for a failed observation, expected null')
    if 'best_answer' in got and _as_bool(got['best_answer']) is not None:
      problems.append(f'best_answer {got["best_answer"]!r} for a failed observation')
    for label in labels:
      if label in got and not math.isnan(_float(got[label])):
        problems.append(f'{label} {got[label]!r} for a failed observation, expected null')
    return problems
  if 'score' in expected:
    if 'score' not in got:
      problems.append('no score column')
    elif not _close(_float(got['score']), expected['score']):
      problems.append(f'score {got["score"]!r}, expected {expected["score"]!r}')
  if truth['model'] == 'binary' and 'best_answer' in got:
    if _as_bool(got['best_answer']) != expected['best_answer']:
      problems.append(f'best_answer {got["best_answer"]!r}, expected {expected["best_answer"]}')
  if truth['model'] == 'multiclass':
    if 'best_score' in got and not _close(_float(got['best_score']), expected['best_score']):
      problems.append(f'best_score {got["best_score"]!r}, expected {expected["best_score"]!r}')
    if 'best_answer' in got and got['best_answer'] != expected['best_answer']:
      problems.append(f'best_answer {got["best_answer"]!r}, expected {expected["best_answer"]!r}')
    if 'scores' in got:
      scores = _scores_of(got['scores'], labels)
      if scores is None or any(not _close(scores.get(k, math.nan), v)
                               for k, v in expected['scores'].items()):
        problems.append(f'scores {got["scores"]!r}, expected {expected["scores"]!r}')
    for label, value in expected['scores'].items():
      if label in got and not _close(_float(got[label]), value):
        problems.append(f'{label} {got[label]!r}, expected {value!r}')
    if not any(c in got for c in ('best_score', 'scores', *labels)):
      problems.append('no score columns (best_score, scores or one per class)')
  return problems


def _shard_of_uri(truth: dict) -> dict[str, int]:
  index = {}
  for shard in truth['shards']:
    path = shard['input']
    for form in (path, 'file://' + path, os.path.basename(path)):
      index[form] = shard['index']
  return index


def _to_int64(column: pa.ChunkedArray) -> np.ndarray:
  if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
    column = pc.cast(pc.utf8_trim_whitespace(column), pa.float64())
  return pc.cast(column, pa.int64()).to_numpy(zero_copy_only=False)


def check(data: str, output: str) -> dict:
  """Checks ``output`` against ``data``/truth.json.

  Returns:
    ``{'correct': bool, 'reason': str, 'rows': int, 'mode': str, 'samples': int}``.
  """
  with open(os.path.join(data, 'truth.json')) as f:
    truth = json.load(f)
  report = {'correct': False, 'reason': '', 'rows': 0, 'mode': None, 'samples': 0}
  try:
    _check(truth, output, report)
  except CheckFailed as e:
    report['reason'] = str(e)
    return report
  report['correct'] = True
  report['reason'] = (f'{report["rows"]} rows, {report["samples"]} sampled rows match '
                      f'(rows identified by {report["mode"]})')
  return report


def _check(truth: dict, output: str, report: dict) -> None:
  files = output_files(output)
  if not files:
    raise CheckFailed(f'no .parquet/.avro/.jsonl files under {output}')
  wanted = set(WANTED) | set(truth['labels'])
  tables = read_output(files, wanted)
  counts = [t.num_rows for t in tables]
  total = sum(counts)
  report['rows'] = total
  if total != truth['total_rows']:
    raise CheckFailed(f'{total} rows, expected {truth["total_rows"]}')
  table = pa.concat_tables(tables, promote_options='permissive')
  names = set(table.column_names)
  shards = truth['shards']
  rows_per = np.array([s['rows'] for s in shards], dtype=np.int64)

  # Which shard and 1-based row each output row claims to be.
  if {'input_uri', 'row_number'} <= names:
    report['mode'] = 'input_uri + row_number'
    uris = pc.utf8_trim_whitespace(table.column('input_uri')).combine_chunks().dictionary_encode()
    index = _shard_of_uri(truth)
    lookup = []
    for uri in uris.dictionary.to_pylist():
      if uri not in index and os.path.basename(uri) not in index:
        raise CheckFailed(f'input_uri {uri!r} is not an input of the manifest')
      lookup.append(index.get(uri, index.get(os.path.basename(uri))))
    shard = np.array(lookup, dtype=np.int64)[uris.indices.to_numpy(zero_copy_only=False)]
    row = _to_int64(table.column('row_number'))
  elif 'customer_id' in names:
    report['mode'] = 'customer_id'
    ids = _to_int64(table.column('customer_id'))
    shard = ids // 1_000_000_000 - 1
    row = ids % 1_000_000_000
  else:
    report['mode'] = 'file order'
    by_name = {s['name']: s['index'] for s in shards}
    stems = [os.path.splitext(os.path.basename(f))[0] for f in files]
    if len(files) == 1 and len(shards) == 1:
      stems = [shards[0]['name']]
    if any(s not in by_name for s in stems):
      raise CheckFailed('rows carry no input_uri/row_number nor customer_id, and the files are '
                        f'not named after the input shards: {stems[:3]}')
    shard = np.concatenate([np.full(c, by_name[s], dtype=np.int64)
                            for s, c in zip(stems, counts, strict=True)])
    row = np.concatenate([np.arange(1, c + 1, dtype=np.int64) for c in counts])

  bad = (shard < 0) | (shard >= len(shards))
  if bad.any():
    raise CheckFailed(f'{int(bad.sum())} rows name no shard of the manifest')
  bad = (row < 1) | (row > rows_per[shard])
  if bad.any():
    raise CheckFailed(f'{int(bad.sum())} rows have a row number outside their shard, '
                      f'e.g. shard {int(shard[bad][0])} row {int(row[bad][0])}')
  offsets = np.concatenate([[0], np.cumsum(rows_per)[:-1]])
  key = offsets[shard] + row - 1
  seen = np.bincount(key, minlength=int(rows_per.sum()))
  if (seen != 1).any():
    missing = int((seen == 0).sum())
    raise CheckFailed(f'{missing} input rows missing and as many duplicated '
                      f'(first missing: global row {int(np.argmin(seen))})')

  if report['mode'] != 'customer_id' and 'customer_id' in names:
    ids = _to_int64(table.column('customer_id'))
    bad = ids != expected_customer_id(shard, row)
    if bad.any():
      i = int(np.flatnonzero(bad)[0])
      raise CheckFailed(f'{int(bad.sum())} rows carry the input columns of another row, e.g. '
                        f'shard {int(shard[i])} row {int(row[i])} has customer_id {int(ids[i])}')

  if 'status' in names:
    failed = int(pc.sum(pc.equal(pc.utf8_lower(table.column('status')), 'failed')).as_py() or 0)
    if failed != truth['total_failed']:
      raise CheckFailed(f'{failed} rows with status failed, expected {truth["total_failed"]}')

  # The sampled rows, row by row.
  position = np.empty_like(key)
  position[key] = np.arange(len(key))
  sample_keys, expectations = [], []
  for s in shards:
    for row_number, line in s['samples'].items():
      sample_keys.append(offsets[s['index']] + int(row_number) - 1)
      expectations.append((s['index'], int(row_number), parse_line(truth, line)))
  taken = table.take(pa.array(position[np.array(sample_keys, dtype=np.int64)])).to_pylist()
  reasons = []
  for (shard_index, row_number, expected), got in zip(expectations, taken, strict=True):
    problems = compare_row(truth, expected, got)
    if problems:
      where = f'{shards[shard_index]["name"]} row {row_number}'
      reasons.append(f'{where}: {"; ".join(problems)}')
  report['samples'] = len(expectations)
  if reasons:
    raise CheckFailed(f'{len(reasons)} of {len(expectations)} sampled rows differ: '
                      + ' | '.join(reasons[:MAX_REASONS]))


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--data', required=True, help='directory benchmarks.generate wrote')
  parser.add_argument('--output', required=True, help="the tool's output directory")
  args = parser.parse_args(argv)
  report = check(args.data, args.output)
  print(json.dumps(report, indent=1))
  return 0 if report['correct'] else 1


if __name__ == '__main__':
  sys.exit(main())
