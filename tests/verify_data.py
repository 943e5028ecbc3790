"""Shared data for the verification tests (typing, alignment, audit): schemas and a CLI runner."""

from __future__ import annotations

import json
import os

from pipelines.job import run
from tests.builders import read_dead_letters, read_records, read_summary, write_bp


def attributes(*pairs) -> list[dict]:
  return [{'attributeName': name, 'attributeType': kind} for name, kind in pairs]


def schema(pairs, header: bool = True, row_id=None, target=None, excluded=(), legacy=False):
  if legacy:
    return {'version': '1.0', 'recordAnnotationFieldName': row_id, 'targetFieldName': target,
            'dataFileContainsHeader': header,
            'attributes': [{'fieldName': n, 'fieldType': t} for n, t in pairs],
            'excludedVariableNames': list(excluded)}
  return {'version': '1.0', 'rowId': row_id, 'targetAttributeName': target,
          'dataFormat': 'CSV', 'dataFileContainsHeader': header, 'attributes': attributes(*pairs),
          'excludedAttributeNames': list(excluded)}


CUSTOMERS = [('customerId', 'CATEGORICAL'), ('age', 'NUMERIC'), ('member', 'BINARY'),
             ('note', 'TEXT'), ('willRespond', 'BINARY')]
CUSTOMER_HEADER = 'customerId,age,member,note,willRespond'


def customers(n: int, start: int = 0) -> list[str]:
  """Input rows whose willRespond alternates (yes/no spelled several ways)."""
  spellings = [('yes', 'no'), ('1', '0'), ('T', 'F'), (' Y ', ' n '), ('True', 'FALSE')]
  rows = []
  for i in range(start, start + n):
    yes, no = spellings[i % len(spellings)]
    rows.append(f'C{i},{20 + i % 50}.5,{yes if i % 3 else no},"note, {i}",'
                f'{yes if i % 2 else no}')
  return rows


def binary_results(n: int, start: int = 0, tag=True, true_label=True, blanks=()) -> list[str]:
  out = []
  for i in range(start, start + n):
    if i in blanks:
      out.append('')
      continue
    score = ((i * 37) % 100) / 100
    cells = ([f'C{i}'] if tag else []) + ([str(i % 2)] if true_label else []) + \
        [str(int(score >= 0.5)), f'{score:.6E}']
    out.append(','.join(cells))
  return out


def binary_header(tag=True, true_label=True) -> str:
  return ','.join((['tag'] if tag else []) + (['trueLabel'] if true_label else []) +
                  ['bestAnswer', 'score'])


_RUNS = 0


def cli(root, manifest: str, *args: str, fmt: str = 'jsonl') -> tuple[int, str]:
  """Runs the job in-process; returns ``(exit code, output prefix)``."""
  global _RUNS
  _RUNS += 1
  out = os.path.join(str(root), f'predjoin-out-{_RUNS}')
  code = run(['--manifest', manifest, '--output', out, '--format', fmt,
              '--allowed_prefix', str(root), *args])
  return code, out


def results_of(out: str) -> tuple[list[dict], list[dict], dict]:
  return read_records(out), read_dead_letters(out), read_summary(out)


def write(root, bp_id, shards, **kwargs) -> str:
  return write_bp(root, bp_id, shards, **kwargs)


def dump(path, obj) -> str:
  with open(path, 'w') as f:
    json.dump(obj, f)
  return str(path)
