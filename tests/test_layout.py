"""Result headers, input column naming and the derived schemas: pure functions."""

import fastavro
import pytest

from transforms.aml import result_header
from transforms.join import record_schema
from transforms.join.header import split_header


@pytest.mark.parametrize('line, model, classes, tag, true_label', [
    ('bestAnswer,score', 'binary', (), False, False),
    ('score,bestAnswer', 'binary', (), False, False),
    ('tag,bestAnswer,score', 'binary', (), True, False),
    ('trueLabel,bestAnswer,score', 'binary', (), False, True),
    ('tag,trueLabel,bestAnswer,score', 'binary', (), True, True),
    ('score', 'regression', (), False, False),
    ('tag,trueLabel,score', 'regression', (), True, True),
    ('1_star, 2_stars, 3_stars', 'multiclass', ('1_star', '2_stars', '3_stars'), False, False),
    ('tag,trueLabel,bestAnswer,a,b', 'multiclass', ('a', 'b'), True, True),
    ('\ufefftrueLabel , cat , dog , "bird, small"', 'multiclass', ('cat', 'dog', 'bird, small'),
     False, True),
])
def test_detect_layout(line, model, classes, tag, true_label):
  layout = result_header.detect_layout(split_header(line.encode()))
  assert (layout.model_type, layout.classes, layout.has_tag, layout.has_true_label) == (
      model, classes, tag, true_label)


@pytest.mark.parametrize('line, message', [
    ('tag,trueLabel', 'is not a binary'),
    ('onlyone', 'is not a binary'),
    ('bestAnswer,a', 'is not a binary'),
    ('a,score', 'is not a binary'),
    ('a,,b', 'empty column name'),
    ('a,b,a', 'repeats'),
])
def test_detect_layout_errors_name_the_file(line, message):
  with pytest.raises(result_header.LayoutError, match=message) as e:
    result_header.detect_layout(split_header(line), where='s3://b/r.gz')
  assert 's3://b/r.gz' in str(e.value)


def test_expected_model_type_must_match():
  assert result_header.detect_layout(('score',), 'regression').model_type == 'regression'
  with pytest.raises(result_header.LayoutError, match='regression model'):
    result_header.detect_layout(('score',), 'binary', where='r.gz')


def test_output_names_rule():
  reserved = {'status', 'score', 'row_number'}
  names = ['customer id', '1st', '', '_hidden', 'Status', 'score', 'a-b', 'a_b', 'A_B', 'ok']
  assert record_schema.output_names(names, reserved) == [
      'customer_id', 'col_1st', 'col_3', 'col__hidden', 'input_Status', 'input_score', 'a_b',
      'a_b_8', 'A_B_9', 'ok']


def test_output_names_are_unique_ignoring_case_and_deterministic():
  names = ['x'] * 5 + ['X_2']
  out = record_schema.output_names(names, set())
  assert len({n.lower() for n in out}) == len(out)
  assert out == record_schema.output_names(names, set())


@pytest.mark.parametrize('header, expected', [
    ('tag,trueLabel,bestAnswer,score', ['best_answer', 'score', 'service_best_answer', 'tag',
                                        'true_label']),
    ('a,b,c', ['best_answer', 'best_score', 'unknown', 'scores']),
    ('bestAnswer,a,b', ['best_answer', 'best_score', 'unknown', 'scores', 'service_best_answer']),
    ('score', ['score']),
])
def test_prediction_fields(header, expected):
  fields = record_schema.prediction_fields(result_header.detect_layout(tuple(header.split(','))))
  assert [name for name, _, _ in fields] == expected


def test_avro_and_arrow_schemas_derive_from_one_schema():
  layout = result_header.detect_layout(('tag', '1_star', '2_stars'))
  schema = record_schema.output_schema(layout, ['tag', 'review text', 'stars'])
  arrow = record_schema.arrow_schema(schema)
  avro = fastavro.parse_schema(record_schema.avro_schema(schema))
  assert arrow.names == schema.names == [f['name'] for f in avro['fields']]
  assert schema.input_fields == ('input_tag', 'review_text', 'stars')
  scores = next(f for f in avro['fields'] if f['name'] == 'scores')
  assert scores['type'][1]['items'][1]['fields'][0]['name'] == 'label'
  # Every field is declared nullable, as the Avro encoder writes it (test_typing.py).
  assert arrow.field('row_number').nullable and arrow.field('best_answer').nullable
