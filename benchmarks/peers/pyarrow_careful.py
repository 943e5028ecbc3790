"""Peer: pyarrow, careful. Whole-shard reads; the result is read as whole lines so blank lines
(failed observations) survive as rows, then split and parsed with pyarrow.compute.

python benchmarks/peers/pyarrow_careful.py MANIFEST OUTDIR  ->  OUTDIR/<input name>.parquet
"""

import gzip
import json
import os
import sys

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

LINES = dict(
    read_options=pacsv.ReadOptions(column_names=['line'], skip_rows=1),
    # A delimiter that never occurs, no quoting, and keep empty lines: one row per line.
    parse_options=pacsv.ParseOptions(delimiter='\x01', quote_char=False, ignore_empty_lines=False),
    convert_options=pacsv.ConvertOptions(column_types={'line': pa.string()},
                                         strings_can_be_null=False),
)


def result_columns(header, lines):
  names = [c.strip() for c in header.split(',')]
  line = lines.column('line')
  line = pc.if_else(pc.equal(line, ''), pa.scalar(None, pa.string()), line)
  parts = pc.split_pattern(line, ',')

  def cell(name):
    text = pc.utf8_trim_whitespace(pc.list_element(parts, names.index(name)))
    return pc.cast(text, pa.float64())

  if 'score' in names:
    score = cell('score')
    cols = {'score': score}
    if 'bestAnswer' in names:
      cols['best_answer'] = pc.greater_equal(score, 0.5)
    return cols
  labels = [n for n in names if n not in ('tag', 'trueLabel', 'bestAnswer')]
  cols = {n: cell(n) for n in labels}
  best = pc.max_element_wise(*cols.values())
  answer = pa.nulls(len(best), pa.string())
  for n in reversed(labels):  # the first column wins a tie
    answer = pc.if_else(pc.equal(cols[n], best), pa.scalar(n), answer)
  cols['best_answer'] = answer
  cols['best_score'] = best
  return cols


def main(manifest, outdir):
  os.makedirs(outdir, exist_ok=True)
  with open(manifest) as f:
    pairs = json.loads(f.read(), strict=False)
  for input_uri, result_uri in pairs.items():
    input_uri, result_uri = input_uri.strip(), result_uri.strip()
    with gzip.open(result_uri, 'rt') as f:
      header = f.readline().rstrip('\r\n')
    table = pacsv.read_csv(input_uri)
    lines = pacsv.read_csv(result_uri, **LINES)
    if lines.num_rows != table.num_rows:
      raise SystemExit(f'{result_uri}: {lines.num_rows} result lines for {table.num_rows} rows')
    for name, column in result_columns(header, lines).items():
      table = table.append_column(name, column)
    name = os.path.splitext(os.path.basename(input_uri))[0]
    pq.write_table(table, os.path.join(outdir, name + '.parquet'))


if __name__ == '__main__':
  main(sys.argv[1], sys.argv[2])
