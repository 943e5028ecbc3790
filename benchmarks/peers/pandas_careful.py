"""Peer: pandas, careful. Keeps blank result lines (failed observations) as NaN rows.

python benchmarks/peers/pandas_careful.py MANIFEST OUTDIR  ->  OUTDIR/<input name>.parquet
"""

import json
import os
import sys

import numpy as np
import pandas as pd


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


def main(manifest, outdir):
  os.makedirs(outdir, exist_ok=True)
  for input_uri, result_uri in shards(manifest):
    inp = pd.read_csv(input_uri)
    # skip_blank_lines=False: a blank line is a failed observation and becomes a NaN row.
    res = pd.read_csv(result_uri, skip_blank_lines=False)
    if len(res) != len(inp):
      raise SystemExit(f'{result_uri}: {len(res)} result lines for {len(inp)} input rows')
    out = pd.concat([inp, interpret(res)], axis=1)
    name = os.path.splitext(os.path.basename(input_uri))[0]
    out.to_parquet(os.path.join(outdir, name + '.parquet'), index=False)


if __name__ == '__main__':
  main(sys.argv[1], sys.argv[2])
