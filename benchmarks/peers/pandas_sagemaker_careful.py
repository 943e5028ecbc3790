"""Peer: pandas on a SageMaker transform job, careful. Keeps blank output lines as NaN rows.

python benchmarks/peers/pandas_sagemaker_careful.py JOB_JSON OUTDIR  ->  OUTDIR/<input name>.parquet
"""

import sys

import pandas as pd
from pandas_sagemaker_naive import columns, interpret, shards, write


def main(job, outdir):
  names = columns(job)
  for input_path, output_path in shards(job):
    inp = pd.read_csv(input_path, header=None, names=names)
    # skip_blank_lines=False: a blank line is a failed record and becomes a NaN row (the
    # column is named: a blank first line would leave pandas nothing to count columns from).
    res = pd.read_csv(output_path, header=None, names=[0], skip_blank_lines=False)
    if len(res) != len(inp):
      raise SystemExit(f'{output_path}: {len(res)} output lines for {len(inp)} input rows')
    write(outdir, input_path, pd.concat([inp, interpret(res)], axis=1))


if __name__ == '__main__':
  main(sys.argv[1], sys.argv[2])
