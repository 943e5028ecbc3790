"""Test data: batch predictions written to disk, and an oracle that reads them independently.

The oracle uses only the standard library (csv, gzip) and none of predjoin's code, so a test that
compares predjoin's output with it can fail when predjoin is wrong. (``multiclass_batch`` builds
records in predjoin's output schema for the writers' tests; it is not part of the oracle.)
"""

from __future__ import annotations

import csv
import glob
import gzip
import io
import json
import os

import fastavro
import pyarrow as pa
import pyarrow.parquet as pq

from transforms.aml import result_header
from transforms.join import record_schema


def write_bp(root, bp_id: str, shards: list[tuple[list[str], list[str]]], *,
             input_header: str | None = 'id,name,amount', result_header: str = 'bestAnswer,score',
             schema: dict | None = None, input_suffix: str = '.csv') -> str:
  """Writes a batch prediction under ``root``; returns the manifest path.

  Args:
    shards: per shard, the input data lines (no header) and the result lines (no header; ''
      for a failed observation). Lines are written joined by '\\n' with a final '\\n'.
  """
  root = str(root)
  pairs = {}
  for i, (inputs, results) in enumerate(shards, start=1):
    name = f'part-{i}{input_suffix}'
    input_path = os.path.join(root, 'input', bp_id, name)
    os.makedirs(os.path.dirname(input_path), exist_ok=True)
    lines = ([input_header] if input_header is not None else []) + inputs
    with open(input_path, 'w', newline='') as f:
      f.write(''.join(line + '\n' for line in lines))
    if schema is not None:
      with open(input_path + '.schema', 'w') as f:
        json.dump(schema, f)
    result_path = os.path.join(root, 'out', 'batch-prediction', 'result', f'{bp_id}-{name}.gz')
    os.makedirs(os.path.dirname(result_path), exist_ok=True)
    with open(result_path, 'wb') as f:
      f.write(gzip.compress(''.join(line + '\n' for line in [result_header] + results).encode()))
    pairs[input_path] = result_path
  manifest = os.path.join(root, 'out', 'batch-prediction', f'{bp_id}.manifest')
  with open(manifest, 'w') as f:
    json.dump(pairs, f)
  return manifest


def oracle_rows(manifest: str, has_header: bool = True) -> list[dict]:
  """Every input row with its raw result line, read with csv and gzip only."""
  with open(manifest) as f:
    pairs = json.load(f)
  rows = []
  for input_path, result_path in pairs.items():
    with open(input_path, newline='') as f:
      records = list(csv.reader(f))
    if has_header:
      records = records[1:]
    text = gzip.decompress(open(result_path, 'rb').read()).decode()
    lines = text.split('\n')
    if lines[-1] == '':
      lines.pop()
    results = lines[1:]
    assert len(results) == len(records), 'the oracle expects matching shards'
    for number, (values, result) in enumerate(zip(records, results, strict=True), start=1):
      rows.append({'input_uri': input_path, 'row_number': number, 'values': values,
                   'result': result.strip()})
  return rows


def check_predictions(records: list[dict], manifest: str, rebase: tuple[str, str] = ('', ''),
                      has_header: bool = True, id_column: str = 'id') -> None:
  """Asserts that ``records`` (sorted by input and row) hold, row by row, each input row's id and
  the prediction of its own result line, by value, for any model type; read with csv and gzip.

  ``rebase``: the manifest's URI prefix and where those files are here. The prediction is read
  off the result header: ``score`` (binary, regression) or one score per class (multiclass).
  """
  text = open(manifest).read().replace(rebase[0], rebase[1]) if rebase[0] else open(manifest).read()
  pairs = {k.strip(): v.strip() for k, v in json.loads(text, strict=False).items()}
  expected = []
  for input_path, result_path in sorted(pairs.items()):
    with open(input_path, newline='') as f:
      rows = list(csv.reader(f))[1 if has_header else 0:]
    lines = gzip.decompress(open(result_path, 'rb').read()).decode().split('\n')
    if lines[-1] == '':
      lines.pop()
    header = [name.strip() for name in lines[0].split(',')]
    assert len(lines) - 1 == len(rows), 'the oracle expects matching shards'
    for number, (values, line) in enumerate(zip(rows, lines[1:], strict=True), start=1):
      expected.append((input_path, number, values[0], header, line))
  assert len(records) == len(expected)
  for got, (input_path, number, row_id, header, line) in zip(records, expected, strict=True):
    where = f'{input_path} row {number}'
    assert os.path.basename(got['input_uri']) == os.path.basename(input_path), where
    assert (got['row_number'], str(got[id_column])) == (number, row_id), where
    assert got['input_line_number'] == number + has_header and \
        got['result_line_number'] == number + 1, where
    if not line.strip():
      assert got['status'] == 'failed', where
      continue
    cells = dict(zip(header, [cell.strip() for cell in line.split(',')], strict=True))
    assert got['status'] == 'ok', where
    if 'score' in cells:
      assert got['score'] == float(cells['score']), where
    else:
      classes = [name for name in header if name not in ('tag', 'trueLabel', 'bestAnswer')]
      assert [(e['label'], e['score']) for e in got['scores']] == [
          (name, float(cells[name])) for name in classes], where
    if 'tag' in cells:
      assert got['tag'] == cells['tag'], where


def read_records_file(path: str) -> list[dict]:
  """The records of one file, in file order, read back with fastavro, pyarrow or json."""
  if path.endswith('.avro'):
    with open(path, 'rb') as f:
      return list(fastavro.reader(f))
  if path.endswith('.parquet'):
    return pq.read_table(path).to_pylist()
  if path.endswith('.jsonl'):
    with open(path) as f:
      return [json.loads(line) for line in f if line.strip()]
  return []


def read_records(output: str) -> list[dict]:
  """All records under ``<output>/records/``, sorted by input and row."""
  rows = []
  for path in sorted(glob.glob(os.path.join(output, 'records', '*'))):
    rows.extend(read_records_file(path))
  return sorted(rows, key=lambda r: (r['input_uri'], r['row_number']))


def read_dead_letters(output: str) -> list[dict]:
  rows = []
  for path in sorted(glob.glob(os.path.join(output, 'dead_letter', '*'))):
    with open(path) as f:
      rows.extend(json.loads(line) for line in f if line.strip())
  return sorted(rows, key=lambda r: (r['input_uri'], r['row_number'] or 0))


def read_summary(output: str) -> dict:
  with open(os.path.join(output, 'summary.json')) as f:
    return json.load(f)


def gz_bytes(text: str) -> bytes:
  buf = io.BytesIO()
  with gzip.GzipFile(fileobj=buf, mode='wb', mtime=0) as g:
    g.write(text.encode())
  return buf.getvalue()


def multiclass_batch(rows: int) -> tuple[pa.RecordBatch, record_schema.OutputSchema]:
  """A block of multiclass records (every 7th failed) with quoted, multi-line text."""
  schema = record_schema.output_schema(result_header.detect_layout(('tag', '1_star', '2_stars', '3_stars')),
                             ['customer id', 'comment'])
  arrow = record_schema.arrow_schema(schema)
  records = []
  for i in range(rows):
    failed = i % 7 == 3
    scores = [(i % 10) / 20, 0.25, 0.75 - (i % 10) / 20]
    best = max(range(3), key=scores.__getitem__)
    record = {name: None for name in arrow.names}
    record.update(batch_prediction_id='bp-1', input_uri='s3://b/in/data-1.csv', row_number=i + 1,
                  input_line_number=i + 2, result_line_number=i + 2,
                  status='failed' if failed else 'ok', tag=f't{i}',
                  customer_id=str(1000 + i), comment=f'"quoted, {i}"\nnext line é')
    if not failed:
      record.update(best_answer=f'{best + 1}_star', best_score=scores[best], unknown=False,
                    scores=[{'label': f'{k + 1}_star', 'score': s} for k, s in enumerate(scores)],
                    margin=sorted(scores)[-1] - sorted(scores)[-2], score_sum_off=False)
    records.append(record)
  return pa.RecordBatch.from_pylist(records, schema=arrow), schema
