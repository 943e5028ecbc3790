"""Test data: batch predictions written to disk, and an oracle that reads them independently.

The oracle uses only the standard library (csv, gzip) and none of predjoin's code, so a test that
compares predjoin's output with it can fail when predjoin is wrong.
"""

from __future__ import annotations

import csv
import glob
import gzip
import io
import json
import os

import fastavro
import pyarrow.parquet as pq


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


def read_records(output: str) -> list[dict]:
  """All records under ``<output>/records/``, read back with fastavro, pyarrow or json."""
  rows = []
  for path in sorted(glob.glob(os.path.join(output, 'records', '*'))):
    if path.endswith('.avro'):
      with open(path, 'rb') as f:
        rows.extend(fastavro.reader(f))
    elif path.endswith('.parquet'):
      rows.extend(pq.read_table(path).to_pylist())
    elif path.endswith('.jsonl'):
      with open(path) as f:
        rows.extend(json.loads(line) for line in f if line.strip())
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
