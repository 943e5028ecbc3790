"""Deterministic generator of Amazon ML batch predictions of any size.

Writes, under a directory D::

  D/input/<name>.csv                                   input shards, header line + one row per obs
  D/input/.schema                                      Amazon ML schema for the input prefix
  D/batch-prediction/<bp-id>.manifest                  {"/abs/input.csv": "/abs/result.csv.gz", ...}
  D/batch-prediction/result/<bp-id>-<name>.csv.gz      gzip CSV, header + one line per input row
  D/truth.json                                         counts and sampled expected rows for check.py

and with ``--sagemaker`` the same predictions as a SageMaker Batch Transform job would leave them
(docs/sagemaker-format.md)::

  D/transform/input/<name>.csv                         the input rows, no header line
  D/transform/output/<name>.csv.out                    one output line per row: the model's CSV
                                                       (binary: the probability), blank if failed
  D/transform/job.json                                 the job's describe-transform-job response

A failed observation is a blank result line at its position (docs/amazon-ml-format.md, section 4); the generator
also forces the awkward places: a run of consecutive blank lines, a blank first data line and a
blank last line of a shard.

Everything is derived from ``--seed`` (one child seed per shard index), so the same arguments give
the same bytes. Lines are built as fixed-width byte matrices with a filler byte that is removed at
the end, which keeps the work in numpy rather than in a per-row Python loop.

Usage::

  python -m benchmarks.generate --out benchmarks/data/demo --shards 8 --rows 1000000 \\
      --model binary --failed-rate 0.01 --seed 1
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
import time

import numpy as np
import polars as pl

MODELS = ('binary', 'multiclass', 'regression')
FILL = 0  # filler byte of the line matrices; never part of the output
SAMPLES_RANDOM = 200  # random sampled rows per shard
SAMPLES_AFTER_BLANK = 150  # sampled rows right after a blank line, per shard

INPUT_COLUMNS = [
    # (name, Amazon ML attribute type)
    ('customer_id', 'CATEGORICAL'),
    ('age', 'NUMERIC'),
    ('income', 'NUMERIC'),
    ('balance', 'NUMERIC'),
    ('segment', 'CATEGORICAL'),
    ('region', 'CATEGORICAL'),
    ('is_member', 'BINARY'),
    ('has_card', 'BINARY'),
    ('visits', 'NUMERIC'),
    ('rating', 'NUMERIC'),
    ('comment', 'TEXT'),
    ('signup_date', 'CATEGORICAL'),
]

_SEGMENTS = ['A', 'B', 'C', 'D', 'E']
_REGIONS = ['north', 'south', 'east', 'west', 'central']
_PHRASES = [
    'great service', 'slow delivery', 'would buy again', 'too expensive', 'fine',
    'asked for a refund', 'loves the app', 'called support twice', 'no comment', 'ok',
    'price went up', 'friendly staff', 'late payment', 'moved house', 'new customer',
    'prefers email', 'did not answer', 'happy', 'wants a call back', 'billing issue',
]


def class_labels(n: int) -> list[str]:
  """``1_star, 2_stars, ...``: the labels of a multiclass model with ``n`` classes."""
  return [f'{i}_star' if i == 1 else f'{i}_stars' for i in range(1, n + 1)]


def customer_id(shard: int, row_number: int | np.ndarray):
  """The unique id of an observation; encodes its shard and 1-based row number."""
  return (shard + 1) * 1_000_000_000 + row_number


# ---------------------------------------------------------------------------------------------
# Number formatting into byte matrices.


def _digits(values: np.ndarray, width: int) -> np.ndarray:
  """Decimal digits (ASCII) of non-negative ints, most significant first, zero-padded."""
  powers = 10 ** np.arange(width - 1, -1, -1, dtype=np.int64)
  return ((values[:, None] // powers) % 10 + ord('0')).astype(np.uint8)


def _strip_trailing_zeros(digits: np.ndarray, keep: int = 1) -> np.ndarray:
  """Replaces trailing '0' digits with FILL, keeping at least ``keep`` digits."""
  zero = digits == ord('0')
  trailing = np.flip(np.cumprod(np.flip(zero, axis=1), axis=1), axis=1).astype(bool)
  trailing[:, :keep] = False
  out = digits.copy()
  out[trailing] = FILL
  return out


def _strip_leading_zeros(digits: np.ndarray, keep: int = 1) -> np.ndarray:
  zero = digits == ord('0')
  leading = np.cumprod(zero, axis=1).astype(bool)
  leading[:, digits.shape[1] - keep:] = False
  out = digits.copy()
  out[leading] = FILL
  return out


def _column(values: np.ndarray, char: str | None = None) -> np.ndarray:
  if char is not None:
    return np.full((len(values), 1), ord(char), dtype=np.uint8)
  return values.astype(np.uint8).reshape(-1, 1)


def _scientific(values: np.ndarray, decimals: np.ndarray) -> np.ndarray:
  """``-1.526385E1`` / ``8.7642E-3``: one digit, up to 6 decimals (trailing zeros cut), exponent."""
  n = len(values)
  negative = values < 0
  a = np.maximum(np.abs(values), 1e-30)
  e = np.floor(np.log10(a)).astype(np.int64)
  # log10 rounding can leave a / 10**e just outside [1, 10): renormalise.
  m = a / 10.0 ** e
  e = np.where(m < 1.0, e - 1, np.where(m >= 10.0, e + 1, e))
  scale = (10 ** decimals).astype(np.int64)
  mant = np.rint(a / 10.0 ** e * scale).astype(np.int64)
  over = mant >= 10 * scale  # 9.9999996 rounds up to 10.000000 = 1.000000E(e+1)
  mant[over] = scale[over]
  e[over] += 1
  # Mantissa as 7 digits regardless of the row's precision: d.dddddd
  mant7 = mant * (10 ** (6 - decimals)).astype(np.int64)
  digits = _digits(mant7, 7)
  frac = _strip_trailing_zeros(digits[:, 1:], keep=1)
  sign = np.where(negative, ord('-'), FILL)
  exp_sign = np.where(e < 0, ord('-'), FILL)
  exp_digits = _strip_leading_zeros(_digits(np.abs(e), 2), keep=1)
  return np.hstack([
      _column(sign), digits[:, :1], _column(np.zeros(n), '.'), frac, _column(np.zeros(n), 'E'),
      _column(exp_sign), exp_digits,
  ])


def _plain(values: np.ndarray, decimals: int, int_digits: int) -> np.ndarray:
  """``0.46317`` / ``-152.6385``: fixed decimals with trailing zeros cut (at least one kept)."""
  n = len(values)
  negative = values < 0
  scaled = np.rint(np.abs(values) * 10 ** decimals).astype(np.int64)
  int_part = scaled // 10 ** decimals
  frac_part = scaled % 10 ** decimals
  sign = np.where(negative & (scaled > 0), ord('-'), FILL)
  return np.hstack([
      _column(sign), _strip_leading_zeros(_digits(int_part, int_digits), keep=1),
      _column(np.zeros(n), '.'), _strip_trailing_zeros(_digits(frac_part, decimals), keep=1),
  ])


def format_numbers(values: np.ndarray, rng: np.random.Generator, plain_decimals: int = 5,
                   int_digits: int = 1) -> np.ndarray:
  """Formats floats as a byte matrix mixing scientific and plain notation, row by row."""
  n = len(values)
  decimals = rng.integers(3, 7, size=n)  # scientific precision per value, 3..6 decimals
  use_plain = rng.random(n) < 0.5
  a = np.abs(values)
  # Plain notation only where it keeps the value readable and fits the integer digits.
  use_plain &= (a >= 10.0 ** -(plain_decimals - 2)) & (a < 10.0 ** int_digits - 1)
  sci = _scientific(values, decimals)
  plain = _plain(np.where(use_plain, values, 0.0), plain_decimals, int_digits)
  width = max(sci.shape[1], plain.shape[1])
  sci = np.pad(sci, ((0, 0), (0, width - sci.shape[1])), constant_values=FILL)
  plain = np.pad(plain, ((0, 0), (0, width - plain.shape[1])), constant_values=FILL)
  return np.where(use_plain[:, None], plain, sci)


def _join(matrices: list[np.ndarray]) -> bytes:
  """Concatenates row-aligned byte matrices and drops the filler bytes."""
  joined = np.hstack(matrices)
  flat = joined.ravel()
  return flat[flat != FILL].tobytes()


def _line_strings(matrix: np.ndarray, rows: np.ndarray) -> list[str]:
  out = []
  for r in rows:
    b = matrix[r]
    out.append(b[b != FILL].tobytes().decode('ascii').rstrip('\n'))
  return out


# ---------------------------------------------------------------------------------------------
# Shards.


def result_header(model: str, labels: list[str]) -> str:
  if model == 'binary':
    return 'bestAnswer,score'
  if model == 'regression':
    return 'score'
  # Amazon ML writes multiclass headers with a space after each comma (docs/amazon-ml-format.md, section 4).
  return ', '.join(labels)


def result_lines(model: str, n: int, failed: np.ndarray, rng: np.random.Generator,
                 labels: list[str]) -> np.ndarray:
  """The result body as a byte matrix, one row per observation, each ending in newline."""
  if model == 'binary':
    logit = rng.normal(0.0, 4.0, size=n)
    score = 1.0 / (1.0 + np.exp(-logit))
    # Rounding to 4..7 significant digits must not move a score across the 0.5 threshold, or
    # the file's bestAnswer would contradict its score: keep scores clear of it.
    near = np.abs(score - 0.5) < 1e-4
    score[near] = np.where(score[near] < 0.5, 0.4998, 0.5002)
    answer = np.where(score >= 0.5, ord('1'), ord('0'))
    parts = [_column(answer), _column(np.zeros(n), ','), format_numbers(score, rng)]
  elif model == 'regression':
    value = rng.normal(100.0, 300.0, size=n)
    parts = [format_numbers(value, rng, plain_decimals=4, int_digits=5)]
  else:
    k = len(labels)
    z = rng.normal(0.0, 1.5, size=(n, k))
    p = np.exp(z)
    p /= p.sum(axis=1, keepdims=True)
    parts = []
    for j in range(k):
      if j:
        parts.append(_column(np.zeros(n), ','))
      parts.append(format_numbers(p[:, j], rng))
  matrix = np.hstack(parts + [_column(np.zeros(n), '\n')])
  matrix[failed, :-1] = FILL
  return matrix


def input_frame(shard: int, n: int, rng: np.random.Generator) -> pl.DataFrame:
  """The 12 mixed input columns for one shard."""
  rows = np.arange(1, n + 1, dtype=np.int64)
  rating = np.round(rng.uniform(1.0, 5.0, n), 1)
  rating_missing = rng.random(n) < 0.05
  start = np.datetime64('2015-01-01')
  frame = pl.DataFrame({
      'customer_id': customer_id(shard, rows),
      'age': rng.integers(18, 91, n),
      'income': np.round(rng.lognormal(10.5, 0.6, n), 2),
      'balance': np.round(rng.normal(1500.0, 4000.0, n), 2),
      'segment': pl.Series(_SEGMENTS).gather(rng.integers(0, len(_SEGMENTS), n)),
      'region': pl.Series(_REGIONS).gather(rng.integers(0, len(_REGIONS), n)),
      'is_member': pl.Series(['false', 'true']).gather(rng.random(n) < 0.3),
      'has_card': pl.Series(['no', 'yes']).gather(rng.random(n) < 0.6),
      'visits': rng.poisson(4.0, n),
      'rating': rating,
      '_rating_missing': rating_missing,
      '_first': pl.Series(_PHRASES).gather(rng.integers(0, len(_PHRASES), n)),
      '_second': pl.Series(_PHRASES).gather(rng.integers(0, len(_PHRASES), n)),
      '_comma': rng.random(n) < 0.4,
      'signup_date': start + rng.integers(0, 3650, n).astype('timedelta64[D]'),
  })
  return frame.with_columns(
      rating=pl.when(pl.col('_rating_missing')).then(None).otherwise(pl.col('rating')),
      # About 40% of comments contain a comma, so the CSV writer quotes them.
      comment=pl.when(pl.col('_comma'))
      .then(pl.concat_str([pl.col('_first'), pl.col('_second')], separator=', '))
      .otherwise(pl.col('_first')),
  ).select([name for name, _ in INPUT_COLUMNS])


def failed_mask(shard: int, n: int, rate: float, rng: np.random.Generator) -> np.ndarray:
  failed = rng.random(n) < rate
  if rate > 0 and n >= 8:
    if shard == 0:
      failed[n // 2:n // 2 + 3] = True  # a run of consecutive blank lines
      failed[-1] = True  # a blank last line
    elif shard == 1:
      failed[0] = True  # a blank first data line, right after the header
    if rng.random() < 0.5:
      failed[-1] = True
  return failed


def sample_rows(failed: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """0-based rows check.py verifies: edges, rows after blank lines, blank rows, random rows."""
  n = len(failed)
  picks = [np.arange(min(3, n)), np.arange(max(0, n - 3), n)]
  blank = np.flatnonzero(failed)
  after = blank + 1
  after = after[(after < n)]
  after = after[~failed[after]]
  for group in (after, blank):
    if len(group) > SAMPLES_AFTER_BLANK:
      group = group[np.linspace(0, len(group) - 1, SAMPLES_AFTER_BLANK).astype(np.int64)]
    picks.append(group)
  picks.append(rng.integers(0, n, min(SAMPLES_RANDOM, n)))
  return np.unique(np.concatenate(picks))


def transform_output(model: str, body: bytes) -> bytes:
  """A result body as a SageMaker model's CSV output lines: Amazon ML's lines less the
  ``bestAnswer`` field of a binary model (its output is the probability alone)."""
  if model != 'binary':
    return body
  return b'\n'.join(line.split(b',', 1)[-1] for line in body.split(b'\n'))


def write_shard(out: str, bp_id: str, name: str, shard: int, n: int, model: str, rate: float,
                seed_seq: np.random.SeedSequence, labels: list[str], crlf: bool,
                sagemaker: bool = False) -> dict:
  # Separate streams for inputs, failures and scores, so changing the failure rate or the model
  # does not change the input rows.
  inp_ss, fail_ss, score_ss, sample_ss = seed_seq.spawn(4)
  input_path = os.path.join(out, 'input', f'{name}.csv')
  result_path = os.path.join(out, 'batch-prediction', 'result', f'{bp_id}-{name}.csv.gz')
  frame = input_frame(shard, n, np.random.default_rng(inp_ss))
  frame.write_csv(input_path, line_terminator='\r\n' if crlf else '\n', float_precision=None)
  failed = failed_mask(shard, n, rate, np.random.default_rng(fail_ss))
  matrix = result_lines(model, n, failed, np.random.default_rng(score_ss), labels)
  body = _join([matrix])
  with open(result_path, 'wb') as raw:
    # mtime=0 and no file name in the gzip header: the same seed gives the same bytes.
    with gzip.GzipFile(filename='', mode='wb', fileobj=raw, mtime=0, compresslevel=6) as gz:
      gz.write((result_header(model, labels) + '\n').encode('ascii'))
      gz.write(body)
  info = {}
  if sagemaker:
    transform_input = os.path.join(out, 'transform', 'input', f'{name}.csv')
    with open(input_path, 'rb') as f, open(transform_input, 'wb') as w:
      f.readline()  # SageMaker inputs have no header line
      while chunk := f.read(1 << 22):
        w.write(chunk)
    with open(os.path.join(out, 'transform', 'output', f'{name}.csv.out'), 'wb') as w:
      w.write(transform_output(model, body))
    info['transform_input'] = transform_input
  rows = sample_rows(failed, np.random.default_rng(sample_ss))
  lines = _line_strings(matrix, rows)
  return {
      **info,
      'name': name,
      'index': shard,
      'input': input_path,
      'result': result_path,
      'rows': int(n),
      'failed': int(failed.sum()),
      'last_failed': bool(failed[-1]) if n else False,
      'samples': {str(int(r) + 1): line for r, line in zip(rows, lines, strict=True)},
  }


def generate(out: str, shards: int, rows: int, model: str = 'binary', failed_rate: float = 0.01,
             seed: int = 1, classes: int = 5, bp_id: str | None = None, crlf: bool = False,
             schema: bool = True, sagemaker: bool = False) -> dict:
  """Writes a batch prediction under ``out`` and returns the truth it also writes to truth.json.

  Args:
    out: directory to write; created, existing generated files are overwritten.
    shards: number of input shards.
    rows: observations per shard.
    model: binary, multiclass or regression.
    failed_rate: probability of a blank result line per observation.
    seed: the seed every shard's data derives from.
    classes: number of classes of a multiclass model.
    bp_id: batch prediction id; default ``bp-<model>-s<seed>``.
    crlf: end input lines with CRLF.
    schema: write ``input/.schema``.
    sagemaker: also write the SageMaker transform job's view of the same predictions.

  Returns:
    The truth dictionary.
  """
  if model not in MODELS:
    raise ValueError(f'model must be one of {MODELS}, not {model!r}')
  out = os.path.abspath(out)
  bp_id = bp_id or f'bp-{model}-s{seed}'
  labels = class_labels(classes) if model == 'multiclass' else []
  os.makedirs(os.path.join(out, 'input'), exist_ok=True)
  os.makedirs(os.path.join(out, 'batch-prediction', 'result'), exist_ok=True)
  if sagemaker:
    os.makedirs(os.path.join(out, 'transform', 'input'), exist_ok=True)
    os.makedirs(os.path.join(out, 'transform', 'output'), exist_ok=True)
  children = np.random.SeedSequence(seed).spawn(shards)
  infos = []
  for shard in range(shards):
    infos.append(write_shard(out, bp_id, f'data-{shard:03d}', shard, rows, model, failed_rate,
                             children[shard], labels, crlf, sagemaker))
  manifest = os.path.join(out, 'batch-prediction', f'{bp_id}.manifest')
  with open(manifest, 'w') as f:
    json.dump({i['input']: i['result'] for i in infos}, f, indent=0)
    f.write('\n')
  if schema:
    with open(os.path.join(out, 'input', '.schema'), 'w') as f:
      json.dump({
          'version': '1.0', 'rowId': None, 'rowWeight': None, 'targetAttributeName': None,
          'dataFormat': 'CSV', 'dataFileContainsHeader': True,
          'attributes': [{'attributeName': n, 'attributeType': t} for n, t in INPUT_COLUMNS],
          'excludedAttributeNames': [],
      }, f, indent=2)
  transform_job = None
  if sagemaker:
    transform_job = os.path.join(out, 'transform', 'job.json')
    with open(transform_job, 'w') as f:
      json.dump({
          'TransformJobName': f'bt-{model}-s{seed}', 'TransformJobStatus': 'Completed',
          'TransformInput': {
              'DataSource': {'S3DataSource': {
                  'S3DataType': 'S3Prefix',
                  'S3Uri': os.path.join(out, 'transform', 'input') + '/'}},
              'ContentType': 'text/csv', 'SplitType': 'Line'},
          'TransformOutput': {'S3OutputPath': os.path.join(out, 'transform', 'output'),
                              'Accept': 'text/csv', 'AssembleWith': 'Line'}}, f, indent=1)
  truth = {
      'params': {'shards': shards, 'rows': rows, 'model': model, 'failed_rate': failed_rate,
                 'seed': seed, 'classes': classes if model == 'multiclass' else None,
                 'crlf': crlf, 'schema': schema, 'sagemaker': sagemaker},
      'transform_job': transform_job,
      'bp_id': bp_id,
      'model': model,
      'labels': labels,
      'result_header': result_header(model, labels),
      'input_columns': [n for n, _ in INPUT_COLUMNS],
      'manifest': manifest,
      'total_rows': shards * rows,
      'total_failed': sum(i['failed'] for i in infos),
      'shards': infos,
  }
  with open(os.path.join(out, 'truth.json'), 'w') as f:
    json.dump(truth, f, indent=1)
  return truth


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--out', required=True, help='directory to write')
  parser.add_argument('--shards', type=int, default=1)
  parser.add_argument('--rows', type=int, default=1000, help='observations per shard')
  parser.add_argument('--model', choices=MODELS, default='binary')
  parser.add_argument('--classes', type=int, default=5, help='multiclass: number of classes')
  parser.add_argument('--failed-rate', type=float, default=0.01)
  parser.add_argument('--seed', type=int, default=1)
  parser.add_argument('--bp-id', default=None)
  parser.add_argument('--crlf', action='store_true', help='end input lines with CRLF')
  parser.add_argument('--no-schema', action='store_true', help='do not write input/.schema')
  parser.add_argument('--sagemaker', action='store_true',
                      help='also write the SageMaker transform job view (transform/)')
  args = parser.parse_args(argv)
  start = time.perf_counter()
  truth = generate(args.out, args.shards, args.rows, args.model, args.failed_rate, args.seed,
                   args.classes, args.bp_id, args.crlf, not args.no_schema, args.sagemaker)
  print(f'wrote {truth["total_rows"]} rows ({truth["total_failed"]} failed) in '
        f'{len(truth["shards"])} shards to {os.path.abspath(args.out)} in '
        f'{time.perf_counter() - start:.1f} s; manifest {truth["manifest"]}', file=sys.stderr)
  return 0


if __name__ == '__main__':
  sys.exit(main())
