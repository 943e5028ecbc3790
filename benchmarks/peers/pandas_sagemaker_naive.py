"""Peer: pandas on a SageMaker transform job, naive: read_csv(header=None), as AWS's own sample
reads a .out, drops blank output lines, so every later row gets the next row's prediction.

python benchmarks/peers/pandas_sagemaker_naive.py JOB_JSON OUTDIR  ->  OUTDIR/<input name>.parquet
"""

import json
import os
import sys

import pandas as pd


def columns(job):
  """The input's column names: the user knows them (here, from the data set's schema)."""
  data = os.path.dirname(os.path.dirname(os.path.abspath(job)))
  with open(os.path.join(data, 'input', '.schema')) as f:
    return [a['attributeName'] for a in json.load(f)['attributes']]


def shards(job):
  with open(job) as f:
    description = json.load(f)
  prefix = description['TransformInput']['DataSource']['S3DataSource']['S3Uri']
  output = description['TransformOutput']['S3OutputPath']
  return [(os.path.join(prefix, name), os.path.join(output, name + '.out'))
          for name in sorted(os.listdir(prefix))]


def interpret(res):
  """A binary model's output: one probability of class 1 per line."""
  if res.shape[1] != 1:
    raise SystemExit(f'expected one probability per line, got {res.shape[1]} fields')
  score = res[0].astype('float64')
  answer = pd.array(score >= 0.5, dtype='boolean')
  answer[score.isna().to_numpy()] = pd.NA
  return pd.DataFrame({'score': score, 'best_answer': answer})


def write(outdir, input_path, frame):
  os.makedirs(outdir, exist_ok=True)
  name = os.path.splitext(os.path.basename(input_path))[0]
  frame.to_parquet(os.path.join(outdir, name + '.parquet'), index=False)


def main(job, outdir):
  names = columns(job)
  for input_path, output_path in shards(job):
    inp = pd.read_csv(input_path, header=None, names=names)
    res = pd.read_csv(output_path, header=None)
    write(outdir, input_path, pd.concat([inp, interpret(res)], axis=1))


if __name__ == '__main__':
  main(sys.argv[1], sys.argv[2])
