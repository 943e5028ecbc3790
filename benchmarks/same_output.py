"""Whether two predjoin outputs hold the same records, dead letters, resubmit lines and summary.

Used to show that a change to the code leaves what a run writes unchanged: run predjoin into
two output prefixes (before and after, or with a setting on and off) and compare them::

    python -m benchmarks.same_output OUT_A OUT_B

Records are compared decoded (Avro and Parquet files differ in their bytes from run to run: an
Avro file's sync marker is random), sorted by input and row; dead letters and resubmit lines as
sorted lines; the summary with each output's own prefix written as ``<output>``. Exits 0 when
they are the same, 1 (and prints the first differences) when not.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys

import fastavro
import pyarrow.parquet as pq


def records(output: str) -> list[dict]:
  rows = []
  for path in sorted(glob.glob(os.path.join(output, 'records', 'part-*'))):
    if path.endswith('.avro'):
      with open(path, 'rb') as f:
        rows.extend(fastavro.reader(f))
    elif path.endswith('.parquet'):
      rows.extend(pq.read_table(path).to_pylist())
    elif path.endswith('.jsonl'):
      with open(path) as f:
        rows.extend(json.loads(line) for line in f if line.strip())
  return sorted(rows, key=lambda r: (r['input_uri'], r['row_number']))


def lines(output: str, directory: str) -> list[str]:
  out = []
  for path in sorted(glob.glob(os.path.join(output, directory, 'part-*'))):
    with open(path, encoding='utf-8') as f:
      out.extend(f.read().splitlines())
  return sorted(out)


def summary(output: str) -> dict:
  with open(os.path.join(output, 'summary.json')) as f:
    text = f.read()
  return json.loads(text.replace(os.path.abspath(output).rstrip('/'), '<output>').replace(
      output.rstrip('/'), '<output>'))


def differences(a: str, b: str) -> list[str]:
  """What differs between the outputs under ``a`` and ``b`` (empty when nothing)."""
  found = []
  for name, get in (('records', records),
                    ('dead letters', lambda o: lines(o, 'dead_letter')),
                    ('resubmit lines', lambda o: lines(o, 'resubmit')),
                    ('summary', summary)):
    left, right = get(a), get(b)
    if left == right:
      continue
    if isinstance(left, list):
      first = next((i for i, (x, y) in enumerate(zip(left, right, strict=False)) if x != y),
                   min(len(left), len(right)))
      found.append(f'{name}: {len(left)} vs {len(right)}; first difference at {first}: '
                   f'{left[first] if first < len(left) else None!r} vs '
                   f'{right[first] if first < len(right) else None!r}')
    else:
      keys = sorted(k for k in set(left) | set(right) if left.get(k) != right.get(k))
      found.append(f'{name}: differs in {keys}')
  return found


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('a')
  parser.add_argument('b')
  args = parser.parse_args(argv)
  found = differences(args.a, args.b)
  for line in found:
    print(line[:2000])
  return 1 if found else 0


if __name__ == '__main__':
  sys.exit(main())
