"""Peer: pandas, naive. Default read_csv drops blank result lines, so rows misalign.

python benchmarks/peers/pandas_naive.py MANIFEST OUTDIR  ->  OUTDIR/<input name>.parquet
"""

import json
import os
import sys

import pandas as pd


def main(manifest, outdir):
  os.makedirs(outdir, exist_ok=True)
  with open(manifest) as f:
    pairs = json.loads(f.read(), strict=False)
  for input_uri, result_uri in pairs.items():
    input_uri, result_uri = input_uri.strip(), result_uri.strip()
    inp = pd.read_csv(input_uri)
    res = pd.read_csv(result_uri)
    res.columns = [c.strip() for c in res.columns]
    if 'score' in res.columns:
      out = pd.DataFrame({'score': res['score']})
      if 'bestAnswer' in res.columns:
        out['best_answer'] = res['score'] >= 0.5
    else:
      labels = [c for c in res.columns if c not in ('tag', 'trueLabel', 'bestAnswer')]
      out = res[labels].copy()
      out['best_answer'] = res[labels].idxmax(axis=1)
      out['best_score'] = res[labels].max(axis=1)
    out = pd.concat([inp, out], axis=1)
    name = os.path.splitext(os.path.basename(input_uri))[0]
    out.to_parquet(os.path.join(outdir, name + '.parquet'), index=False)


if __name__ == '__main__':
  main(sys.argv[1], sys.argv[2])
