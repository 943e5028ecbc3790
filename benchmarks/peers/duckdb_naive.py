"""Peer: DuckDB, naive. Default read_csv drops blank result lines, so rows misalign.

python benchmarks/peers/duckdb_naive.py MANIFEST OUTDIR  ->  OUTDIR/<input name>.parquet
"""

import json
import os
import sys

import duckdb


def main(manifest, outdir):
  os.makedirs(outdir, exist_ok=True)
  with open(manifest) as f:
    pairs = json.loads(f.read(), strict=False)
  con = duckdb.connect()
  for input_uri, result_uri in pairs.items():
    input_uri, result_uri = input_uri.strip(), result_uri.strip()
    names = [row[0] for row in con.sql(f"DESCRIBE SELECT * FROM read_csv('{result_uri}')").fetchall()]
    if 'score' in names:
      extra = ['r.score']
      if 'bestAnswer' in names:
        extra.append('r.score >= 0.5 AS best_answer')
    else:
      labels = [n for n in names if n not in ('tag', 'trueLabel', 'bestAnswer')]
      best = 'greatest(' + ', '.join(f'r."{n}"' for n in labels) + ')'
      case = ' '.join(f"WHEN r.\"{n}\" = {best} THEN '{n}'" for n in labels)
      extra = [f'r."{n}"' for n in labels] + [f'CASE {case} END AS best_answer',
                                              f'{best} AS best_score']
    name = os.path.splitext(os.path.basename(input_uri))[0]
    out = os.path.join(outdir, name + '.parquet')
    con.execute(f"""
      COPY (SELECT i.*, {', '.join(extra)}
            FROM read_csv('{input_uri}') AS i POSITIONAL JOIN read_csv('{result_uri}') AS r)
      TO '{out}' (FORMAT parquet)
    """)


if __name__ == '__main__':
  main(sys.argv[1], sys.argv[2])
