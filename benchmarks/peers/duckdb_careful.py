"""Peer: DuckDB, careful. Reads each result file as whole lines so blank lines survive.

The result is read as a single VARCHAR column with a delimiter that never occurs; a blank line
is a NULL row in its place. Input and result are then put side by side with POSITIONAL JOIN.

python benchmarks/peers/duckdb_careful.py [--format F] MANIFEST OUTDIR  ->  OUTDIR/<input name>.F

``--format``: ``parquet`` (default) or ``jsonl`` (``COPY ... (FORMAT JSON)``, one object per line).
"""

import argparse
import gzip
import json
import os

import duckdb

NEVER = '\x01'  # a delimiter that never occurs in a result file


def sql_str(text):
  return "'" + text.replace("'", "''") + "'"


def ident(name):
  return '"' + name.replace('"', '""') + '"'


def result_columns(header):
  """(parsed cells of the split line ``c``, derived columns) for the header's model."""
  names = [c.strip() for c in header.split(',')]

  def cell(name):
    return f"CAST(NULLIF(trim(c[{names.index(name) + 1}]), '') AS DOUBLE)"

  if 'score' in names:
    derived = ['p.score >= 0.5 AS best_answer'] if 'bestAnswer' in names else []
    return [f'{cell("score")} AS score'], derived
  labels = [n for n in names if n not in ('tag', 'trueLabel', 'bestAnswer')]
  best = 'greatest(' + ', '.join(f'p.{ident(n)}' for n in labels) + ')'
  case = ' '.join(f'WHEN p.{ident(n)} = {best} THEN {sql_str(n)}' for n in labels)
  return ([f'{cell(n)} AS {ident(n)}' for n in labels],
          [f'CASE {case} END AS best_answer', f'{best} AS best_score'])


COPY_FORMATS = {'parquet': 'parquet', 'jsonl': 'json'}


def main(manifest, outdir, fmt='parquet'):
  os.makedirs(outdir, exist_ok=True)
  with open(manifest) as f:
    pairs = json.loads(f.read(), strict=False)
  con = duckdb.connect()
  for input_uri, result_uri in pairs.items():
    input_uri, result_uri = input_uri.strip(), result_uri.strip()
    with gzip.open(result_uri, 'rt') as f:
      header = f.readline().rstrip('\r\n')
    name = os.path.splitext(os.path.basename(input_uri))[0]
    out = os.path.join(outdir, f'{name}.{fmt}')
    cells, derived = result_columns(header)
    con.execute(f"""
      COPY (
        WITH r AS (
          SELECT string_split(line, ',') AS c
          FROM read_csv({sql_str(result_uri)}, columns = {{'line': 'VARCHAR'}},
            delim = {sql_str(NEVER)}, quote = '', escape = '', header = false, skip = 1,
            auto_detect = false)
        ),
        p AS (SELECT {', '.join(cells)} FROM r)
        SELECT {', '.join(['i.*', 'p.*'] + derived)}
        FROM read_csv({sql_str(input_uri)}, header = true) AS i POSITIONAL JOIN p
      ) TO {sql_str(out)} (FORMAT {COPY_FORMATS[fmt]})
    """)


if __name__ == '__main__':
  parser = argparse.ArgumentParser()
  parser.add_argument('--format', choices=tuple(COPY_FORMATS), default='parquet')
  parser.add_argument('manifest')
  parser.add_argument('outdir')
  args = parser.parse_args()
  main(args.manifest, args.outdir, args.format)
