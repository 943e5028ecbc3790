"""Writes the bundled sample batch predictions under ``samples/`` (deterministic bytes).

Three batch predictions, laid out as the service lays them out, with manifests that name
``s3://predjoin-samples/...`` URIs (``make run`` rebases them onto this checkout):

- ``bp-sample-binary``: 3 shards with headers, ``trueLabel,bestAnswer,score``; failed (blank)
  observations first, in the middle and last; a score exactly at the 0.5 cut-off.
- ``bp-sample-multiclass``: 3 header-less shards under a prefix with its ``.schema``; result
  header ``tag, 1_star, 2_stars, 3_stars`` (spaces after commas), a tie, scientific notation.
- ``bp-sample-regression``: 2 shards with headers and no schema (the header is inferred from
  the first lines: text above numbers); one result shard ends with a blank failed observation.

And two SageMaker Batch Transform jobs under ``sagemaker/``, each an input prefix, an output
path of ``.out`` objects and the job's ``describe-transform-job`` response (``bt-*.json``):

- ``bt-sample-churn``: a binary model on CSV inputs without a header in two dated folders,
  ``InputFilter $[1:]`` (the id is not sent to the model), ``JoinSource Input`` and
  ``OutputFilter $[0,-1]``: each output line is the row's id and its probability.
- ``bt-sample-species``: a multiclass model answering in JSON Lines (``score`` per class and
  ``predicted_label``); the job failed on its third input, which has no ``.out``.

Run ``python samples/make_samples.py`` to regenerate.
"""

import gzip
import json
import os
import random

ROOT = os.path.dirname(os.path.abspath(__file__))
BUCKET = 's3://predjoin-samples/'


def _write(relative: str, text: str, gz: bool = False) -> None:
  path = os.path.join(ROOT, relative)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  data = text.encode('utf-8')
  if gz:
    data = gzip.compress(data, mtime=0)
  with open(path, 'wb') as f:
    f.write(data)


def _score(rng: random.Random) -> str:
  value = rng.random()
  return f'{value:.6E}' if rng.random() < 0.5 else f'{value:.5f}'


def _manifest(bp_id: str, inputs: list[str]) -> None:
  pairs = {f'{BUCKET}{i}': f' {BUCKET}output/batch-prediction/result/{bp_id}-'
           f'{os.path.basename(i)}.gz' for i in inputs}
  # Real manifests carry a space, even a line break, right after the value's opening quote.
  body = ',\n'.join(f'"{k}":"\n{v}"' for k, v in pairs.items())
  _write(f'output/batch-prediction/{bp_id}.manifest', '{' + body + '}\n')


def binary(rng: random.Random) -> None:
  bp = 'bp-sample-binary'
  segments = ['retail', 'wholesale', 'online']
  inputs = []
  for shard, (rows, blanks) in enumerate([(12, {1, 6}), (10, {10}), (8, {4})], start=1):
    name = f'input/binary/customers-{shard}.csv'
    lines = ['customerId,age,income,segment,comment,willRespond']
    results = ['trueLabel,bestAnswer,score']
    for row in range(1, rows + 1):
      label = rng.choice(['0', '1'])
      comment = rng.choice(['"called, left message"', 'no answer', '"new, loyal"', ''])
      lines.append(f'C{shard}{row:03d},{rng.randint(18, 90)},{rng.randint(10, 200) * 1000},'
                   f'{rng.choice(segments)},{comment},{label}')
      if row in blanks:
        results.append('')
      elif shard == 3 and row == 2:
        results.append(f'{label},1,0.5')  # exactly at the cut-off: best answer 1
      else:
        score = _score(rng)
        results.append(f'{label},{int(float(score) >= 0.5)},{score}')
    _write(name, '\n'.join(lines) + '\n')
    _write(f'output/batch-prediction/result/{bp}-{os.path.basename(name)}.gz',
           '\n'.join(results) + '\n', gz=True)
    inputs.append(name)
  _manifest(bp, inputs)


def multiclass(rng: random.Random) -> None:
  bp = 'bp-sample-multiclass'
  schema = {
      'version': '1.0', 'rowId': 'reviewId', 'rowWeight': None,
      'targetAttributeName': 'stars', 'dataFormat': 'CSV', 'dataFileContainsHeader': False,
      'attributes': [
          {'attributeName': 'reviewId', 'attributeType': 'CATEGORICAL'},
          {'attributeName': 'product', 'attributeType': 'CATEGORICAL'},
          {'attributeName': 'review text', 'attributeType': 'TEXT'},
          {'attributeName': 'helpful', 'attributeType': 'BINARY'},
          {'attributeName': 'stars', 'attributeType': 'CATEGORICAL'},
      ],
      'excludedAttributeNames': []}
  _write('input/multiclass/.schema', json.dumps(schema, indent=2) + '\n')
  labels = ['1_star', '2_stars', '3_stars']
  inputs = []
  for shard, (rows, blanks) in enumerate([(9, {5}), (7, {1, 7}), (6, set())], start=1):
    name = f'input/multiclass/reviews-{shard}.csv'
    lines, results = [], ['tag, 1_star, 2_stars, 3_stars']
    for row in range(1, rows + 1):
      review = f'R{shard}-{row}'
      text = rng.choice(['"great, works"', 'broke after a week', '"ok, I guess"'])
      lines.append(f'{review},P{rng.randint(1, 4)},{text},{rng.choice(["yes", "no"])},'
                   f'{rng.choice(labels)}')
      if row in blanks:
        results.append('')
      elif shard == 3 and row == 3:
        results.append(f'{review},4.0E-1,4.0E-1,2.0E-1')  # a tie: the first column wins
      else:
        weights = [rng.random() for _ in labels]
        total = sum(weights)
        results.append(review + ',' + ','.join(f'{w / total:.6E}' for w in weights))
    _write(name, '\r\n'.join(lines) + '\r\n')
    _write(f'output/batch-prediction/result/{bp}-{os.path.basename(name)}.gz',
           '\n'.join(results) + '\n', gz=True)
    inputs.append(name)
  _manifest(bp, inputs)


def regression(rng: random.Random) -> None:
  bp = 'bp-sample-regression'
  inputs = []
  for shard, (rows, blanks) in enumerate([(8, {3}), (6, {6})], start=1):
    name = f'input/regression/houses-{shard}.csv'
    lines, results = ['houseId,sqft,rooms,city'], ['score']
    for row in range(1, rows + 1):
      lines.append(f'H{shard}{row:02d},{rng.randint(40, 300)},{rng.randint(1, 8)},'
                   f'{rng.choice(["Lyon", "Oslo", "Porto"])}')
      value = rng.uniform(-5, 900000)
      results.append('' if row in blanks else rng.choice([f'{value:.6E}', f'{value:.2f}']))
    _write(name, '\n'.join(lines) + '\n')
    _write(f'output/batch-prediction/result/{bp}-{os.path.basename(name)}.gz',
           '\n'.join(results) + '\n', gz=True)
    inputs.append(name)
  _manifest(bp, inputs)


def _transform_job(name: str, folder: str, accept: str, status: str = 'Completed',
                   processing: dict | None = None, failure: str | None = None) -> None:
  """The job's description as ``aws sagemaker describe-transform-job`` prints it (CLI v2)."""
  job = {
      'TransformJobName': name,
      'TransformJobArn': f'arn:aws:sagemaker:eu-west-1:111122223333:transform-job/{name}',
      'TransformJobStatus': status,
      **({'FailureReason': failure} if failure else {}),
      'ModelName': f'{name}-model', 'MaxConcurrentTransforms': 1, 'MaxPayloadInMB': 6,
      'BatchStrategy': 'MultiRecord', 'Environment': {},
      'TransformInput': {
          'DataSource': {'S3DataSource': {'S3DataType': 'S3Prefix',
                                          'S3Uri': f'{BUCKET}sagemaker/{folder}/input/'}},
          'ContentType': 'text/csv', 'CompressionType': 'None', 'SplitType': 'Line'},
      'TransformOutput': {'S3OutputPath': f'{BUCKET}sagemaker/{folder}/output',
                          'Accept': accept, 'AssembleWith': 'Line'},
      'TransformResources': {'InstanceType': 'ml.m5.large', 'InstanceCount': 1},
      'CreationTime': '2026-11-30T06:00:04.118000+00:00',
      'TransformStartTime': '2026-11-30T06:03:40.502000+00:00',
      'TransformEndTime': '2026-11-30T06:08:12.930000+00:00',
      **({'DataProcessing': processing} if processing else {})}
  _write(f'sagemaker/{name}.json', json.dumps(job, indent=4) + '\n')


def churn(rng: random.Random) -> None:
  """A binary model's job whose outputs repeat each row's id (JoinSource Input)."""
  for folder, count in [('2026-11-28', 9), ('2026-11-29', 7)]:
    lines, outs = [], []
    for row in range(1, count + 1):
      account = f'A{folder[-2:]}{row:03d}'
      lines.append(f'{account},{rng.randint(1, 72)},{rng.uniform(10, 120):.2f},'
                   f'{rng.randint(0, 9)}')
      outs.append(f'{account},{rng.random():.6f}')
    _write(f'sagemaker/churn/input/{folder}/accounts.csv', '\n'.join(lines) + '\n')
    _write(f'sagemaker/churn/output/{folder}/accounts.csv.out', '\n'.join(outs) + '\n')
  _transform_job('bt-sample-churn', 'churn', 'text/csv', processing={
      'InputFilter': '$[1:]', 'JoinSource': 'Input', 'OutputFilter': '$[0,-1]'})


def species(rng: random.Random) -> None:
  """A multiclass model's JSON Lines outputs; the third input failed, so it has no .out."""
  for part, count in [(1, 6), (2, 5), (3, 4)]:
    lines, outs = [], []
    for _ in range(count):
      lines.append(','.join(f'{rng.uniform(0.1, 7.9):.1f}' for _ in range(4)))
      weights = [rng.random() for _ in range(3)]
      total = sum(weights)
      scores = [round(w / total, 6) for w in weights]
      outs.append(json.dumps({'score': scores, 'predicted_label': scores.index(max(scores))}))
    _write(f'sagemaker/species/input/flowers-{part}.csv', '\n'.join(lines) + '\n')
    if part != 3:
      _write(f'sagemaker/species/output/flowers-{part}.csv.out', '\n'.join(outs) + '\n')
  _transform_job('bt-sample-species', 'species', 'application/jsonlines', status='Failed',
                 failure='AlgorithmError: See job logs for more information')


if __name__ == '__main__':
  rng = random.Random(20261123)
  binary(rng)
  multiclass(rng)
  regression(rng)
  churn(rng)
  species(rng)
