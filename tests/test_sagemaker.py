"""SageMaker Batch Transform jobs: the job description, pairing, output lines, the whole job.

The whole-job tests put a transform job's inputs and ``.out`` outputs in moto's S3 server (on
loopback, started by the fixture) and run the job as a user would, through the command; the
records and dead letters are read back and every row's id is checked against the prediction
meant for it, which the test wrote and knows (never predjoin's code).
"""

from __future__ import annotations

import gzip
import json
import os
import uuid

import pytest

from pipelines.job import run
from tests import s3_fixtures as fx
from tests.builders import read_dead_letters, read_records, read_summary
from transforms.io.storage import Storage
from transforms.join.plan import PlanError, PlanSettings
from transforms.sagemaker import job as jobs
from transforms.sagemaker import jsonpath, output, pairing
from transforms.sagemaker.plan import make_transform_plan

# Pure: the job description -------------------------------------------------------------------


def _description(**overrides) -> dict:
  described = {
      'TransformJobName': 'bt-1', 'TransformJobStatus': 'Completed', 'ModelName': 'm',
      'TransformInput': {'DataSource': {'S3DataSource': {'S3DataType': 'S3Prefix',
                                                         'S3Uri': 's3://b/in/'}},
                         'ContentType': 'text/csv', 'SplitType': 'Line'},
      'TransformOutput': {'S3OutputPath': 's3://b/out', 'Accept': 'text/csv',
                          'AssembleWith': 'Line'},
      'TransformResources': {'InstanceType': 'ml.m5.large', 'InstanceCount': 1},
      'CreationTime': '2024-05-02T14:03:11+00:00'}
  for path, value in overrides.items():
    where = described
    *parents, last = path.split('.')
    for key in parents:
      where = where.setdefault(key, {})
    where[last] = value
  return described


def test_a_description_is_read_as_the_cli_prints_it():
  job = jobs.parse_description(json.dumps(_description(**{
      'DataProcessing': {'InputFilter': '$[1:]', 'JoinSource': 'Input',
                         'OutputFilter': '$[0,-1]'}})), 'job.json')
  assert (job.name, job.input_uri, job.output_path, job.joined) == ('bt-1', 's3://b/in/',
                                                                    's3://b/out', True)
  assert (job.split_type, job.accept, job.output_filter) == ('Line', 'text/csv', '$[0,-1]')
  jobs.check(job)
  with pytest.raises(jobs.JobError, match='S3OutputPath'):
    jobs.parse_description(json.dumps({'TransformInput': {}}), 'x.json')


@pytest.mark.parametrize('field, value, message', [
    ('TransformInput.SplitType', 'None', 'no line correspondence'),
    ('TransformInput.SplitType', 'RecordIO', 'no line correspondence'),
    ('TransformInput.SplitType', 'TFRecord', 'no line correspondence'),
    ('TransformInput.ContentType', 'application/json', 'CSV inputs'),
    ('TransformOutput.Accept', 'application/json', 'one line per record'),
    ('TransformInput.DataSource.S3DataSource.S3DataType', 'AugmentedManifestFile',
     'not supported'),
])
def test_settings_without_a_line_for_every_line_are_refused(field, value, message):
  job = jobs.parse_description(json.dumps(_description(**{field: value})), 'job.json')
  with pytest.raises(jobs.JobError, match=message):
    jobs.check(job)


@pytest.mark.parametrize('text, length, selected', [
    ('$', 4, [0, 1, 2, 3]),
    ('$[0,-1]', 5, [0, 4]),
    ('$[1:]', 4, [1, 2, 3]),
    ('$[:2]', 5, [0, 1, 2]),  # the end of a slice is inclusive, as SageMaker documents it
    ('$[1:3]', 5, [1, 2, 3]),
    ('$[0,5:]', 7, [0, 5, 6]),
])
def test_filters_select_columns_as_sagemaker_documents(text, length, selected):
  assert jsonpath.select(jsonpath.parse(text), length) == selected


def test_filters_outside_the_subset_or_the_record_are_refused():
  with pytest.raises(jsonpath.PathError):
    jsonpath.parse('$..id')
  with pytest.raises(jsonpath.PathError, match='outside'):
    jsonpath.select(jsonpath.parse('$[7]'), 3)
  with pytest.raises(jsonpath.PathError, match='keys'):
    jsonpath.select(jsonpath.parse("$['id','SageMakerOutput']"), 3)


# Pure: pairing --------------------------------------------------------------------------------


def _job(**fields) -> jobs.TransformJob:
  return jobs.TransformJob(**{'name': 'bt', 'input_uri': 's3://b/in/',
                              'output_path': 's3://b/out', 'source': 'job.json', **fields})


def test_inputs_pair_with_the_output_named_after_the_longest_end_of_their_key():
  inputs = ['s3://b/in/a/data.csv', 's3://b/in/data.csv', 's3://b/in/x/y.csv.gz',
            's3://b/in/lost.csv']
  outputs = ['s3://b/out/a/data.csv.out', 's3://b/out/data.csv.out',
             's3://b/out/in/x/y.csv.gz.out', 's3://b/out/stray.csv.out', 's3://b/out/notes.txt']
  paired = pairing.pair(_job(), inputs, outputs, 's3://b/out')
  got = {s.input_uri: (s.result_uri, s.result_problem and s.result_problem[0])
         for s in paired.shards}
  assert got == {'s3://b/in/a/data.csv': ('s3://b/out/a/data.csv.out', None),
                 's3://b/in/data.csv': ('s3://b/out/data.csv.out', None),
                 's3://b/in/x/y.csv.gz': ('s3://b/out/in/x/y.csv.gz.out', None),
                 's3://b/in/lost.csv': ('s3://b/out/lost.csv.out', 'output_missing')}
  assert paired.unmatched_outputs == ('s3://b/out/stray.csv.out',)


def test_an_output_two_inputs_could_own_is_ambiguous_for_both():
  inputs = ['s3://b/in/one/data.csv', 's3://b/in/two/data.csv']  # basename naming: a clash
  paired = pairing.pair(_job(), inputs, ['s3://b/out/data.csv.out'], 's3://b/out')
  assert [s.result_problem[0] for s in paired.shards] == ['output_ambiguous'] * 2


def test_a_manifest_file_names_its_inputs_below_its_prefix():
  text = json.dumps([{'prefix': 's3://b/data/'}, 'a.csv', 'sub/b.csv'])
  assert pairing.parse_manifest_file(text, 'm.json') == ['s3://b/data/a.csv',
                                                         's3://b/data/sub/b.csv']
  with pytest.raises(pairing.PairingError, match='JSON list'):
    pairing.parse_manifest_file(json.dumps({'prefix': 's3://b/'}), 'm.json')


# Pure: output lines ---------------------------------------------------------------------------


def _parsed(job, lines, model_type, columns=3, **options):
  fmt, layout = output.learn(job, [line for line in lines if line and line != 'ERROR'], columns,
                             model_type, **options)
  block = ''.join(line + '\n' for line in lines).encode()
  parsed = fmt.parse(block, len(lines), layout)
  return layout, parsed, dict(zip(layout.header, [c.to_pylist() for c in parsed.columns],
                                  strict=True))


def test_csv_outputs_of_each_model_type():
  layout, parsed, cols = _parsed(_job(), ['0.25', '', '9.5E-1', 'x'], 'binary')
  assert layout.header == ('bestAnswer', 'score')
  assert parsed.kind.tolist() == [0, 1, 0, 2] and cols['score'][:3] == [0.25, None, 0.95]
  layout, parsed, cols = _parsed(_job(), ['[0.1, 0.2, 0.7]', '[0.5, 0.25, 0.25]'], 'multiclass',
                                 class_labels=('a', 'b', 'c'))
  assert layout.classes == ('a', 'b', 'c') and cols['a'] == [0.1, 0.5]
  layout, parsed, cols = _parsed(_job(), ['1,0.75', '0,0.25'], 'binary',
                                 output_fields=('predicted_label', 'probability'))
  assert cols == {'bestAnswer': [1, 0], 'score': [0.75, 0.25]}
  layout, parsed, cols = _parsed(_job(), ['12.5,x', '3,y'], 'raw')
  assert layout.kinds == ('double', 'string') and cols['output_2'] == ['x', 'y']


def test_json_lines_outputs_and_a_failed_marker():
  job = _job(accept=jobs.JSON_LINES)
  lines = ['{"predicted_label": 2, "score": [0.1, 0.2, 0.7]}', 'ERROR',
           '{"predicted_label": 0, "score": [0.6, 0.3, 0.1]}']
  layout, parsed, cols = _parsed(job, lines, 'multiclass', class_labels=('x', 'y', 'z'),
                                 failed_marker='ERROR')
  assert layout.header == ('x', 'y', 'z', 'bestAnswer')
  assert parsed.kind.tolist() == [0, 1, 0]
  assert cols['bestAnswer'] == ['z', None, 'x']  # the class's position, as its label
  layout, parsed, cols = _parsed(job, ['{"score": 0.4, "predicted_label": 0}'], 'binary')
  assert cols == {'bestAnswer': [0], 'score': [0.4]}
  layout, parsed, cols = _parsed(job, ['{"a": {"b": 1, "c": "q"}, "d": true}'], 'raw')
  assert layout.header == ('a_b', 'a_c', 'd') and layout.kinds == ('double', 'string',
                                                                   'boolean')


@pytest.mark.parametrize('job, lines, model_type, options, fast', [
    (_job(), ['0.25', '', '9.5E-1', '1e400', '0.5,0.5', 'nan'], 'binary', {}, True),
    (_job(), ['0.25', '', 'x'], 'binary', {}, False),  # a value the reader cannot convert
    (_job(), ['1,0.75', '0,0.25', '', '2,0.5', '1.0,0.5', ',0.5'], 'binary',
     {'output_fields': ('predicted_label', 'probability')}, True),
    (_job(), ['0.1,0.2,0.7', '0.5,0.25,0.25', '', '0.5,,0.5', '0.5,0.5'], 'multiclass', {},
     True),
    (_job(), ['12.5', '-3', '', 'NaN'], 'regression', {}, True),
    (_job(), ['12.5,x', '3, y ', '', '4,"q, r"', ','], 'raw', {}, True),
    (_job(join_source='Input', output_filter='$[0,-1]'),
     ['id1,0.5', ' id2 ,0.25', '', 'id4', '"id,5",0.75', 'id6,'], 'binary', {}, True),
    (_job(), ['0.25', 'ERROR', '', '0.5'], 'binary', {'failed_marker': 'ERROR'}, False),
    (_job(), ['[0.1, 0.9]', '', '[0.5, 0.5]'], 'multiclass', {}, False),  # a list per line
    # JSON Lines: the usual objects go through pyarrow's JSON reader
    (_job(accept=jobs.JSON_LINES), ['{"score": 0.25, "predicted_label": 0}', '', '{"score": 1}',
                                    '{"predicted_label": 1, "score": 0.75}'], 'binary', {}, True),
    (_job(accept=jobs.JSON_LINES), ['{"score": 0.25}', '{"score": "0.5"}'], 'binary', {}, False),
    (_job(accept=jobs.JSON_LINES), ['{"score": 0.5, "predicted_label": 1}',
                                    '{"score": 0.25, "predicted_label": 2}'], 'binary', {}, False),
    (_job(accept=jobs.JSON_LINES), ['{"score": 0.25}', '{"probability": 0.5}'], 'binary', {},
     False),
    (_job(accept=jobs.JSON_LINES), ['{"score": [0.1, 0.9], "predicted_label": 1}', '',
                                    '{"score": [0.6, 0.4]}', '{"predicted_label": 0, '
                                    '"score": [0.5, 0.5], "x": "y"}'], 'multiclass', {}, True),
    (_job(accept=jobs.JSON_LINES), ['{"score": [0.1, 0.9]}', '{"score": [0.1, 0.8, 0.1]}'],
     'multiclass', {}, False),
    (_job(accept=jobs.JSON_LINES), ['{"score": [0.1, 0.9], "predicted_label": 7}'],
     'multiclass', {}, False),
    (_job(accept=jobs.JSON_LINES), ['{"score": 3.5}', '', '{"score": -1e3}'], 'regression', {},
     True),
    (_job(accept=jobs.JSON_LINES), ['{"score": 0.5}', 'ERROR'], 'binary',
     {'failed_marker': 'ERROR'}, False),
])
def test_the_fast_parsers_agree_with_the_line_parser(job, lines, model_type, options, fast):
  fmt, layout = output.learn(job, [lines[0]], 3, model_type, **options)
  block = ''.join(line + '\n' for line in lines).encode()
  assert (fmt.parse_fast(block, len(lines), layout) is not None) == fast
  for only in (None, [name for name in layout.header if name.startswith('echo_')] or None):
    slow = fmt.parse_lines(block, len(lines), layout, only)
    got = fmt.parse(block, len(lines), layout, only)
    assert got.kind.tolist() == slow.kind.tolist(), lines
    ok = slow.kind == 0
    for mine, theirs in zip(got.columns, slow.columns, strict=True):
      assert mine.type == theirs.type
      assert [v for v, k in zip(mine.to_pylist(), ok, strict=True) if k] == \
          [v for v, k in zip(theirs.to_pylist(), ok, strict=True) if k]


def test_joined_outputs_keep_the_input_fields_aside():
  job = _job(join_source='Input', output_filter='$[0,-1]')
  layout, parsed, cols = _parsed(job, ['id1,0.5', 'id2,0.25'], 'binary', columns=3)
  assert layout.header == ('bestAnswer', 'score', 'echo_0')
  assert cols['echo_0'] == ['id1', 'id2'] and cols['score'] == [0.5, 0.25]
  job = _job(join_source='Input', accept=jobs.JSON_LINES)
  layout, parsed, cols = _parsed(
      job, ['{"SageMakerInput": ["id1", 2.5], "SageMakerOutput": {"score": 0.5}}'], 'binary',
      columns=2)
  assert cols['echo_0'] == ['id1'] and cols['echo_1'] == ['2.5']


def test_the_layout_needs_a_model_type_and_matching_options():
  with pytest.raises(output.OutputError, match='--model_type'):
    output.learn(_job(), ['0.5'], 2, 'auto')
  with pytest.raises(output.OutputError, match='class_labels'):
    output.learn(_job(), ['0.5,0.5'], 2, 'multiclass', class_labels=('a', 'b', 'c'))
  with pytest.raises(output.OutputError, match='output_fields'):
    output.learn(_job(), ['1,0.5'], 2, 'binary')
  # Options that read none of the first lines stop the launch, not every row
  with pytest.raises(output.OutputError, match='none of the first 2 .* predicted_label is .yes., not a number'):
    output.learn(_job(accept=jobs.JSON_LINES), ['{"predicted_label": "yes", "probability": 0.9}',
                                                '{"predicted_label": "no", "probability": 0.2}'],
                 2, 'binary')


def test_multiclass_labels_from_the_outputs():
  job = _job(accept=jobs.JSON_LINES)
  # Autopilot-style: the winning class's probability, every class's, and the labels
  lines = ['{"predicted_label": "dog", "probability": 0.7, "probabilities": [0.1, 0.7, 0.2], '
           '"labels": ["cat", "dog", "fox"]}',
           '{"predicted_label": "cat", "probability": 0.5, "probabilities": [0.5, 0.3, 0.2], '
           '"labels": ["cat", "fox", "dog"]}']  # another order of labels: this line is bad
  layout, parsed, cols = _parsed(job, lines, 'multiclass')
  assert layout.classes == ('cat', 'dog', 'fox')
  assert parsed.kind.tolist() == [0, 2] and cols['dog'][0] == 0.7
  assert cols['bestAnswer'][0] == 'dog'
  # Keyed by class: the keys are the labels, --class_labels may order them
  lines = ['{"cat": 0.25, "dog": 0.75}', '{"dog": 0.5, "cat": 0.5}', '{"cat": 1.0}']
  layout, parsed, cols = _parsed(job, lines, 'multiclass', class_labels=('dog', 'cat'))
  assert layout.classes == ('dog', 'cat') and parsed.kind.tolist() == [0, 0, 2]
  assert (cols['dog'][:2], cols['cat'][:2]) == ([0.75, 0.5], [0.25, 0.5])


# The plan, over local files -------------------------------------------------------------------


def _local_job(tmp_path, outs: dict[str, str]) -> jobs.TransformJob:
  for name, out in outs.items():
    (tmp_path / 'in').mkdir(parents=True, exist_ok=True)
    (tmp_path / 'out').mkdir(exist_ok=True)
    (tmp_path / 'in' / name).write_text('a1,1\na2,2\n')
    (tmp_path / 'out' / f'{name}.out').write_text(out)
  return _job(input_uri=f'{tmp_path}/in/', output_path=f'{tmp_path}/out')


def test_the_layout_is_learned_from_an_output_with_an_answer(tmp_path):
  job = _local_job(tmp_path, {'a.csv': '\n\n', 'b.csv': '0.25\n\n'})  # a: every record failed
  planned = make_transform_plan(job, Storage(), PlanSettings(model_type='binary',
                                                             input_header='false'))
  assert planned.plan.layout.header == ('bestAnswer', 'score')
  assert [s.input_uri.rsplit('/', 1)[1] for s in planned.shards] == ['a.csv', 'b.csv']
  job = _local_job(tmp_path / 'none', {'a.csv': '\n\n'})
  with pytest.raises(PlanError, match='a.csv.out has no answer'):
    make_transform_plan(job, Storage(), PlanSettings(model_type='binary', input_header='false'))


def test_a_schema_names_and_types_the_input_columns(tmp_path):
  job = _local_job(tmp_path, {'a.csv': '0.25\n0.5\n'})
  schema = {'version': '1.0', 'dataFileContainsHeader': False, 'attributes': [
      {'attributeName': 'account', 'attributeType': 'CATEGORICAL'},
      {'attributeName': 'tenure', 'attributeType': 'NUMERIC'}]}
  (tmp_path / 'in.schema').write_text(json.dumps(schema))
  planned = make_transform_plan(job, Storage(), PlanSettings(
      model_type='binary', schema_uri=str(tmp_path / 'in.schema')))
  assert planned.plan.header.has_header is False  # the schema says so: nothing inferred
  fields = {name: kind for name, kind, _ in planned.plan.schema.fields}
  assert (fields['account'], fields['tenure']) == ('string', 'double')


def test_a_json_copy_of_the_input_is_compared_by_value(tmp_path):
  (tmp_path / 'in').mkdir()
  (tmp_path / 'out').mkdir()
  (tmp_path / 'in' / 'a.csv').write_text('r1,10.50\nr2,3\nr3,7\n')
  answers = [('r1', 10.5, 0.25), ('r2', 3, 0.5), ('r3', 7.0, 0.75)]
  (tmp_path / 'out' / 'a.csv.out').write_text(''.join(
      json.dumps({'SageMakerInput': [i, v], 'SageMakerOutput': {'score': p}}) + '\n'
      for i, v, p in answers))
  args = ['--transform_input', f'{tmp_path}/in/', '--transform_output', f'{tmp_path}/out',
          '--transform_accept', 'application/jsonlines', '--transform_join_source', 'Input',
          '--model_type', 'binary', '--input_header', 'false', '--format', 'jsonl']
  assert run([*args, '--output', str(tmp_path / 'ok')]) == 0
  records = read_records(str(tmp_path / 'ok'))
  assert [(r['col_1'], r['score']) for r in records] == [(i, p) for i, _, p in answers]
  assert read_summary(str(tmp_path / 'ok'))['shards'][0]['alignment'] == 'verified'
  answers[1], answers[2] = answers[2], answers[1]  # two lines out of order: refused, not joined
  (tmp_path / 'out' / 'a.csv.out').write_text(''.join(
      json.dumps({'SageMakerInput': [i, v], 'SageMakerOutput': {'score': p}}) + '\n'
      for i, v, p in answers))
  assert run([*args, '--output', str(tmp_path / 'bad')]) == 1
  assert {d['reason'] for d in read_dead_letters(str(tmp_path / 'bad'))} == {'misaligned'}


# The whole job, over moto's S3 server ---------------------------------------------------------


@pytest.fixture(scope='module')
def s3():
  server = fx.MotoS3()
  yield server
  server.stop()


def _score(shard: int, k: int) -> float:
  """The probability meant for row k of shard ``shard``: distinct across the test."""
  return round((shard * 100 + k) / 1000, 6)


def _put(s3, bucket, key, text, compress=False):
  body = text.encode()
  s3.client.put_object(Bucket=bucket, Key=key,
                       Body=gzip.compress(body, mtime=0) if compress else body)


def _write_job(s3, bucket, *, joined=False, misalign=None, missing=(), header=False,
               short=(), accept=jobs.CSV, split='Line', shards=3, rows=7, gzipped=False):
  """A transform job's inputs and outputs in S3 (nested keys); returns the description and
  the oracle: input key -> [(row id, meant score or None for a failed record)]."""
  oracle = {}
  for shard in range(1, shards + 1):
    # Gzip inputs (CompressionType Gzip): named .gz, or not (SageMaker gunzips them all)
    key = f'jobs/in/day-{shard % 2}/part-{shard}.csv' + ('.gz' if gzipped and shard == 1 else '')
    ids = [f's{shard}r{k}' for k in range(1, rows + 1)]
    lines = (['id,amount,note'] if header else []) + \
        [f'{row_id},{k * 10},"n {k}, x"' for k, row_id in enumerate(ids, start=1)]
    _put(s3, bucket, key, ''.join(line + '\n' for line in lines), compress=gzipped)
    meant = [(row_id, None if k % 5 == 0 else _score(shard, k))
             for k, row_id in enumerate(ids, start=1)]
    oracle[key] = meant
    if shard in missing:
      continue
    outs = ['' if score is None else
            (f'{row_id},{score}' if joined else str(score)) if accept == jobs.CSV else
            json.dumps({'score': score, 'predicted_label': int(score >= 0.5)})
            for row_id, score in meant]
    if misalign == shard:
      outs[2], outs[3] = outs[3], outs[2]
    if shard in short:
      outs = outs[:-1]
    if header:  # SageMaker sends the header line to the model too: its answer comes first
      outs = ['0.5' if accept == jobs.CSV else '{"score": 0.5}'] + outs
    _put(s3, bucket, f'jobs/out/{key.split("/", 2)[2]}.out',
         ''.join(line + '\n' for line in outs))
  description = _description(**{
      'TransformJobName': f'bt-{bucket}',
      'TransformInput.DataSource.S3DataSource.S3Uri': f's3://{bucket}/jobs/in/',
      'TransformInput.SplitType': split,
      'TransformInput.CompressionType': 'Gzip' if gzipped else 'None',
      'TransformOutput.S3OutputPath': f's3://{bucket}/jobs/out',
      'TransformOutput.Accept': accept,
      **({'DataProcessing': {'InputFilter': '$[1:]', 'JoinSource': 'Input',
                             'OutputFilter': '$[0,-1]'}} if joined else {})})
  return description, oracle


def _run(s3, tmp_path, description, *extra):
  bucket = description['TransformJobName'][3:]
  _put(s3, bucket, 'jobs/describe.json', json.dumps(description))
  out = str(tmp_path / 'out')
  result = fx.run_cli(['--transform_job', f's3://{bucket}/jobs/describe.json', '--output', out,
                       '--format', 'jsonl', '--model_type', 'binary', *extra,
                       *fx.s3_args(s3.endpoint)], fx.aws_env())
  return result, out


def _check_by_value(out, oracle, bucket, refused=()):
  """Every input row once: a record with its own score, or a dead letter when refused."""
  records = read_records(out)
  seen = {}
  for r in records:
    key = r['input_uri'].split(f's3://{bucket}/', 1)[1]
    row_id, score = oracle[key][r['row_number'] - 1]
    assert r['id' if 'id' in r else 'col_1'] == row_id, r
    assert r['score'] == score and r['status'] == ('failed' if score is None else 'ok'), r
    assert key not in refused
    seen[(key, r['row_number'])] = 'record'
  for d in read_dead_letters(out):
    key = d['input_uri'].split(f's3://{bucket}/', 1)[1]
    assert key in refused, d
    row_id, _ = oracle[key][d['row_number'] - 1]
    assert d['input_line'].split(',')[0] == row_id
    assert (key, d['row_number']) not in seen
    seen[(key, d['row_number'])] = d['reason']
  assert set(seen) == {(key, k) for key, rows in oracle.items() for k in range(1, len(rows) + 1)}
  return seen


def _bucket(s3):
  return s3.make_bucket(f'sm-{uuid.uuid4().hex[:10]}')


def test_a_csv_job_joins_every_row_to_its_own_probability(s3, tmp_path):
  bucket = _bucket(s3)
  description, oracle = _write_job(s3, bucket)
  result, out = _run(s3, tmp_path, description)
  assert result.returncode == 0, result.stderr
  _check_by_value(out, oracle, bucket)
  summary = read_summary(out)
  assert summary['batch_prediction_ids'] == [f'bt-{bucket}']
  assert summary['sagemaker']['pairing']['paired'] == 3
  assert {s['alignment'] for s in summary['shards']} == {'positional'}
  assert summary['identity']['holds'] and summary['totals']['input_rows'] == 21


def test_a_json_lines_job_and_gzip_inputs_with_a_header(s3, tmp_path):
  bucket = _bucket(s3)
  description, oracle = _write_job(s3, bucket, accept=jobs.JSON_LINES, header=True,
                                   gzipped=True)
  result, out = _run(s3, tmp_path, description)
  assert result.returncode == 0, result.stderr
  _check_by_value(out, oracle, bucket)
  records = read_records(out)
  assert records[0]['input_line_number'] == 2 and records[0]['result_line_number'] == 2
  assert all(r['service_best_answer'] == int(r['score'] >= 0.5) for r in records
             if r['status'] == 'ok')


def test_a_joined_output_is_verified_and_a_misaligned_one_refused(s3, tmp_path):
  bucket = _bucket(s3)
  description, oracle = _write_job(s3, bucket, joined=True, misalign=2)
  result, out = _run(s3, tmp_path, description, '--max_bad_shards', '1')
  assert result.returncode == 0, result.stderr
  refused = 'jobs/in/day-0/part-2.csv'
  seen = _check_by_value(out, oracle, bucket, refused={refused})
  assert {reason for (key, _), reason in seen.items() if key == refused} == {'misaligned'}
  summary = read_summary(out)
  by_key = {s['input_uri'].split(f'{bucket}/', 1)[1]: s for s in summary['shards']}
  assert by_key[refused]['status'] == 'misaligned'
  assert by_key[refused]['misaligned']['row_number'] == 3
  assert {s['alignment'] for k, s in by_key.items() if k != refused} == {'verified'}
  assert summary['alignment']['checks'] == ["the output's copy of col_1 = col_1"]


def test_an_input_without_its_out_is_dead_lettered_whole(s3, tmp_path):
  bucket = _bucket(s3)
  description, oracle = _write_job(s3, bucket, missing={3}, short={1})
  description['TransformJobStatus'] = 'Failed'
  description['FailureReason'] = 'AlgorithmError: See job logs for more information'
  result, out = _run(s3, tmp_path, description, '--max_bad_shards', '2')
  assert result.returncode == 0, result.stderr
  missing, short = 'jobs/in/day-1/part-3.csv', 'jobs/in/day-1/part-1.csv'
  seen = _check_by_value(out, oracle, bucket, refused={missing, short})
  assert {reason for (key, _), reason in seen.items() if key == missing} == {'output_missing'}
  assert {reason for (key, _), reason in seen.items() if key == short} == {'row_count_mismatch'}
  summary = read_summary(out)
  assert summary['sagemaker']['pairing']['output_missing'] == [f's3://{bucket}/{missing}']
  assert any('is Failed' in w for w in summary['warnings'])
  result, _ = _run(s3, tmp_path / 'again', description)  # over the limit: exit 1
  assert result.returncode == 1


def test_a_job_without_line_correspondence_stops_at_launch(s3, tmp_path):
  bucket = _bucket(s3)
  description, _ = _write_job(s3, bucket, split='None')
  result, out = _run(s3, tmp_path, description)
  assert result.returncode == 2
  assert 'SplitType is None' in result.stderr and result.stderr.count('\n') == 1
  assert not os.path.exists(os.path.join(out, 'summary.json'))


def test_a_manifest_file_job_and_one_that_names_another_bucket(s3, tmp_path):
  bucket, other = _bucket(s3), _bucket(s3)
  description, oracle = _write_job(s3, bucket)
  keys = sorted(oracle)
  _put(s3, bucket, 'jobs/inputs.manifest',
       json.dumps([{'prefix': f's3://{bucket}/jobs/in/'}, *[k[len('jobs/in/'):] for k in keys[:2]]]))
  description['TransformInput']['DataSource']['S3DataSource'] = {
      'S3DataType': 'ManifestFile', 'S3Uri': f's3://{bucket}/jobs/inputs.manifest'}
  result, out = _run(s3, tmp_path, description)
  assert result.returncode == 0, result.stderr
  _check_by_value(out, {k: oracle[k] for k in keys[:2]}, bucket)  # the manifest's two inputs
  # A manifest file is data, not trust: objects outside the job's buckets are not read.
  _put(s3, bucket, 'jobs/inputs.manifest',
       json.dumps([{'prefix': f's3://{other}/jobs/in/'}, keys[0][len('jobs/in/'):]]))
  result, out = _run(s3, tmp_path / 'other', description)
  assert result.returncode == 2
  assert f's3://{other}/' in result.stderr and 'outside the allowed prefixes' in result.stderr
