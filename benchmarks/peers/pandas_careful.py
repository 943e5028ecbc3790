"""Peer: pandas, careful. Keeps blank result lines (failed observations) as NaN rows.

python benchmarks/peers/pandas_careful.py [--format F] MANIFEST OUTDIR  ->  OUTDIR/<input name>.F

``--format``: ``parquet`` (default, ``to_parquet``), ``jsonl`` (``to_json(orient='records',
lines=True, double_precision=15)``) or ``avro`` (fastavro, the usual way to write Avro from pandas). The join is
``join`` below, which polars_careful shares.
"""

import argparse
import json
import os

import numpy as np
import pandas as pd

AVRO_SLICE = 65_536  # rows turned into Python records at a time, so memory stays bounded


def shards(manifest):
  with open(manifest) as f:
    pairs = json.loads(f.read(), strict=False)
  return [(k.strip(), v.strip()) for k, v in pairs.items()]


def interpret(res):
  res.columns = [c.strip() for c in res.columns]
  if 'score' in res.columns:
    score = res['score'].astype('float64')
    out = pd.DataFrame({'score': score})
    if 'bestAnswer' in res.columns:
      answer = pd.array(score >= 0.5, dtype='boolean')
      answer[score.isna().to_numpy()] = pd.NA
      out['best_answer'] = answer
    return out
  labels = [c for c in res.columns if c not in ('tag', 'trueLabel', 'bestAnswer')]
  scores = res[labels].astype('float64')
  values = scores.to_numpy()
  failed = np.isnan(values).all(axis=1)
  best = np.argmax(np.where(np.isnan(values), -np.inf, values), axis=1)
  out = scores.copy()
  out['best_answer'] = pd.Series(np.array(labels, dtype=object)[best]).where(~failed, None)
  out['best_score'] = np.where(failed, np.nan, values.max(axis=1, initial=-np.inf))
  return out


def join(input_uri, result_uri):
  """One shard's input rows beside its interpreted result lines, as one DataFrame."""
  inp = pd.read_csv(input_uri)
  # skip_blank_lines=False: a blank line is a failed observation and becomes a NaN row.
  res = pd.read_csv(result_uri, skip_blank_lines=False)
  if len(res) != len(inp):
    raise SystemExit(f'{result_uri}: {len(res)} result lines for {len(inp)} input rows')
  return pd.concat([inp, interpret(res)], axis=1)


def _avro_type(series):
  kind = series.dtype.kind
  if kind == 'b' or str(series.dtype) == 'boolean':
    return 'boolean'
  if kind in 'iu':
    return 'long'
  if kind == 'f':
    return 'double'
  return 'string'


def write_avro(frame, path):
  import fastavro
  schema = {'type': 'record', 'name': 'Record', 'fields': [
      {'name': str(c), 'type': ['null', _avro_type(frame[c])]} for c in frame.columns]}
  names = [str(c) for c in frame.columns]

  def records():
    for start in range(0, len(frame), AVRO_SLICE):
      part = frame.iloc[start:start + AVRO_SLICE]
      columns = [part[c].astype(object).where(part[c].notna(), None).tolist() for c in part]
      for values in zip(*columns, strict=True):
        yield dict(zip(names, values, strict=True))

  with open(path, 'wb') as f:
    fastavro.writer(f, fastavro.parse_schema(schema), records())


def write(frame, outdir, input_uri, fmt):
  name = os.path.splitext(os.path.basename(input_uri))[0]
  path = os.path.join(outdir, f'{name}.{fmt}')
  if fmt == 'parquet':
    frame.to_parquet(path, index=False)
  elif fmt == 'jsonl':
    # double_precision=15, pandas' most: its default of 10 decimal places rounds small scores
    # (8.173957e-06 became 8.174e-06).
    frame.to_json(path, orient='records', lines=True, double_precision=15)
  else:
    write_avro(frame, path)


def arguments(formats):
  parser = argparse.ArgumentParser()
  parser.add_argument('--format', choices=formats, default=formats[0])
  parser.add_argument('manifest')
  parser.add_argument('outdir')
  return parser.parse_args()


def main(manifest, outdir, fmt='parquet'):
  os.makedirs(outdir, exist_ok=True)
  for input_uri, result_uri in shards(manifest):
    write(join(input_uri, result_uri), outdir, input_uri, fmt)


if __name__ == '__main__':
  args = arguments(('parquet', 'jsonl', 'avro'))
  main(args.manifest, args.outdir, args.format)
