"""SageMaker Batch Transform output lines: what each holds, and how a block of them parses.

An output line is what the model returned for one record (``TransformOutput.Accept``): CSV
fields (one probability, one per class, a value) or a JSON object (``{"predicted_label": 1,
"probability": 0.6}``). With ``JoinSource`` ``Input`` it also holds the input record: for CSV,
the input's fields then the model's, cut by the ``OutputFilter``; for JSON Lines,
``{"SageMakerInput": [...], "SageMakerOutput": ...}``. The fields that echo input columns are
kept aside (``echo_<column>``) for the alignment check; the prediction fields are read into the
run's canonical columns (``transforms/join/record_schema.ResultLayout``): ``bestAnswer`` and
``score`` (binary), one column per class (multiclass), ``score`` (regression), or the output's own
fields (``raw``). An empty line, or a line equal to the failed-record marker
(``--failed_marker``, e.g. ``ERROR``), is a failed record; a line that does not parse is bad.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json

from transforms.join import arrays, blocks, record_schema
from transforms.join.lines import line_lengths, split_lines
from transforms.join.record_schema import BEST_ANSWER, BINARY, MULTICLASS, RAW, REGRESSION, SCORE
from transforms.join.results import ResultFormat
from transforms.sagemaker.job import CSV, TransformJob
from transforms.sagemaker.jsonpath import PathError, parse, select

ECHO = 'echo_'  # the canonical name of a field that echoes input column i: echo_<i>
# JSON keys read as the probability of class 1 (binary), the class probabilities (multiclass)
# or the value (regression), first found first; and the model's own answer.
SCORE_KEYS = ('probability', 'probabilities', 'score', 'scores', 'predicted_value',
              'prediction', 'predictions')
LABEL_KEY = 'predicted_label'
LABELS_KEY = 'labels'  # multiclass: the class labels, in the order of the probabilities


def score_key(obj, model_type: str) -> str | None:
  """The key of an output object that holds the prediction: the first of ``SCORE_KEYS`` it
  has, or for a multiclass model the first that holds a list (``probability`` is then the
  winning class's alone, ``probabilities`` every class's)."""
  if not isinstance(obj, dict):
    return None
  found = [k for k in SCORE_KEYS if k in obj]
  if model_type == MULTICLASS:
    found = [k for k in found if isinstance(obj[k], list)] or found
  return found[0] if found else None


def _keyed_classes(obj) -> list[str] | None:
  """The class labels of a multiclass object keyed by class (``{"cat": 0.1, "dog": 0.9}``):
  every key but ``predicted_label`` holds a number; else None."""
  if not isinstance(obj, dict) or any(k in obj for k in SCORE_KEYS):
    return None
  keys = [k for k in obj if k != LABEL_KEY]
  if len(keys) >= 2 and all(isinstance(obj[k], (int, float)) and not isinstance(obj[k], bool)
                            for k in keys):
    return keys
  return None


class OutputError(ValueError):
  """Output lines that do not fit the job or the options; the message says why."""


def echo_name(column: int) -> str:
  return f'{ECHO}{column}'


def _csv_fields(line: str) -> list[str]:
  return [cell.strip() for cell in next(csv.reader([line]), [])]


def _number(value, what: str) -> float:
  if isinstance(value, bool) or value is None:
    raise ValueError(f'{what} is {value!r}, not a number')
  try:
    number = float(value)
  except (TypeError, ValueError):
    raise ValueError(f'{what} is {value!r}, not a number') from None
  if not math.isfinite(number):
    raise ValueError(f'{what} is {value!r}, not a finite number')
  return number


def _list_field(text: str) -> list[str] | None:
  """``[0.1, 0.9]`` (how XGBoost writes one record's class probabilities) as its items."""
  text = text.strip()
  if len(text) >= 2 and text[0] == '[' and text[-1] == ']':
    return [item.strip() for item in text[1:-1].split(',') if item.strip()]
  return None


@dataclasses.dataclass(frozen=True)
class SageMakerOutputs(ResultFormat):
  """The layout of a transform job's output lines, learned at launch from the first output.

  ``fields``: for CSV, the number of fields per line; ``echo``: ``(field position, input
  column)`` of the fields that echo the input (CSV), or the input columns ``SageMakerInput``
  holds (JSON Lines: every one); ``predictions``: the positions of the model's fields (CSV);
  ``names``: what those fields are (``score``, ``predicted_label``, a class label, or a raw
  field's name); ``list_field``: the model's fields are one bracketed list per line (CSV).
  """

  accept: str
  model_type: str
  fields: int = 0
  echo: tuple[tuple[int, int], ...] = ()
  predictions: tuple[int, ...] = ()
  names: tuple[str, ...] = ()
  classes: tuple[str, ...] = ()
  list_field: bool = False
  joined: bool = False
  failed_marker: str | None = None
  raw_kinds: tuple[str, ...] = ()
  score_key: str | None = None  # JSON Lines: the key of the probabilities or value

  def leading_lines(self, input_has_header: bool) -> int:
    # SageMaker sends an input's header line to the model like any record: its answer is the
    # first output line, which goes with the header.
    return int(input_has_header)

  # Reading one line -----------------------------------------------------------------------

  def _failed(self, raw: bytes) -> bool:
    text = raw.strip()
    return not text or (self.failed_marker is not None and
                        text == self.failed_marker.encode('utf-8'))

  def _prediction(self, raw: str) -> tuple[dict, list]:
    """One output line -> ``({canonical name: value}, [echoed values by input column])``."""
    if self.accept == CSV:
      cells = _csv_fields(raw)
      if self.list_field and not self.joined:
        items = _list_field(raw)
        if items is None:
          raise ValueError(f'expected a bracketed list of {len(self.names)} values')
        cells = items
      if len(cells) != self.fields:
        raise ValueError(blocks._fields_error(self.fields, len(cells)))
      echoed = {column: cells[position] for position, column in self.echo}
      values = [cells[p] for p in self.predictions]
      if self.list_field and self.joined:
        items = _list_field(values[0]) if len(values) == 1 else None
        if items is None:
          raise ValueError('expected the class probabilities as a bracketed list')
        values = items
      if len(values) != len(self.names):
        raise ValueError(f'expected {len(self.names)} prediction fields, got {len(values)}')
      return dict(zip(self.names, values, strict=True)), echoed
    obj = json.loads(raw)
    echoed = {}
    if self.joined:
      if not isinstance(obj, dict) or 'SageMakerOutput' not in obj:
        raise ValueError('no SageMakerOutput in a joined output line')
      source = obj.get('SageMakerInput')
      if isinstance(source, list):
        echoed = {column: '' if value is None else str(value)
                  for column, value in enumerate(source)}
      obj = obj['SageMakerOutput']
    return _json_prediction(obj, self.model_type, self.names), echoed

  # Parsing a block ------------------------------------------------------------------------

  def parse(self, block: bytes, n: int, layout: record_schema.ResultLayout,
            only: list[str] | None = None, ends=None) -> blocks.Parsed:
    fast = self.parse_fast(block, n, layout, only, ends)
    return fast if fast is not None else self.parse_lines(block, n, layout, only)

  def parse_fast(self, block: bytes, n: int, layout: record_schema.ResultLayout,
                 only: list[str] | None = None, ends=None) -> blocks.Parsed | None:
    """The block parsed by pyarrow's readers, with no Python per line, exactly as
    :meth:`parse_lines` parses it; None when the line parser must decide."""
    if self.accept == CSV:
      return self._parse_csv_fast(block, n, layout, only, ends)
    return self._parse_json_fast(block, n, layout, only, ends)

  def _parse_json_fast(self, block: bytes, n: int, layout: record_schema.ResultLayout,
                       only: list[str] | None, ends) -> blocks.Parsed | None:
    """JSON Lines parsed by pyarrow's JSON reader, as :meth:`parse_lines` would parse them,
    for the usual objects (``{"score": ..., "predicted_label": ...}``); None for anything
    else: joined or raw outputs, another key or shape on any line, a failed marker, a line
    that is not an object, a class index that names no class."""
    if self.joined or self.model_type == RAW or only is not None:
      return None
    key = self.score_key
    if key is None or any(other != key and f'"{other}"'.encode() in block
                          for other in (*SCORE_KEYS, LABELS_KEY)) or (
        self.failed_marker is not None and self.failed_marker.encode('utf-8') in block):
      return None
    multiclass = self.model_type == MULTICLASS
    fields = [(key, pa.list_(pa.float64()) if multiclass else pa.float64())]
    if LABEL_KEY in self.names:
      fields.append((LABEL_KEY, pa.float64()))
    try:
      table = pa_json.read_json(io.BytesIO(block), read_options=_JSON_READ,
                                parse_options=pa_json.ParseOptions(
                                    explicit_schema=pa.schema(fields),
                                    unexpected_field_behavior='ignore'))
    except (pa.ArrowInvalid, UnicodeDecodeError):
      return None
    present = np.flatnonzero(line_lengths(block, ends) > 0)
    if table.num_rows != len(present):  # a line of spaces only: the line parser decides
      return None
    kind = np.full(n, blocks.FAILED, dtype=np.int8)
    kind[present] = blocks.OK
    index = np.full(n, -1, dtype=np.int64)
    index[present] = np.arange(len(present))
    take = pa.array(index, mask=index < 0)
    scores = table.column(key).combine_chunks()
    if scores.null_count:
      return None
    columns: dict[str, pa.Array] = {}
    if multiclass:
      width = len(self.classes)
      items = scores.flatten()
      if items.null_count or \
          not pc.all(pc.equal(pc.list_value_length(scores), width)).as_py():
        return None
      values = arrays.values(items).reshape(-1, width)
      for c, label in enumerate(self.classes):
        columns[label] = pa.array(values[:, c]).take(take)
    else:
      columns[SCORE] = scores.take(take)
    errors: dict[int, str] = {}
    if LABEL_KEY in self.names:
      labels = table.column(LABEL_KEY).combine_chunks()
      given = arrays.valid(labels)
      with np.errstate(invalid='ignore'):
        number = arrays.values(labels)
      if multiclass:  # a class's position: the label it stands for
        if not np.all(~given | ((number == np.floor(number)) & (number >= 0) &
                                (number < len(self.classes)))):
          return None
        positions = np.where(given, number, 0).astype(np.int64)
        named = pa.array(np.asarray(self.classes, dtype=object)[positions], pa.string(),
                         mask=~given)
        columns[BEST_ANSWER] = named.take(take)
      else:
        if not np.all(~given | (number == 0) | (number == 1)):
          return None
        columns[BEST_ANSWER] = pc.cast(labels, pa.int64(), safe=False).take(take)
    if not multiclass:
      with np.errstate(invalid='ignore'):
        finite = np.isfinite(arrays.values(scores))
      for row in present[~finite]:
        kind[row], errors[int(row)] = blocks.BAD, f'{SCORE} is not a finite number'
    else:
      finite = np.isfinite(values).all(axis=1)
      for row in present[~finite]:
        kind[row], errors[int(row)] = blocks.BAD, 'a class probability is not a finite number'
    out = []
    for name in layout.header:
      out.append(columns[name] if name in columns else pa.nulls(n, pa.int64()))
    return blocks.Parsed(n, kind, errors, out)

  def _fast_types(self) -> list[pa.DataType] | None:
    """Arrow types of a CSV output's fields when pyarrow's reader can parse them (plain
    numbers, echoed input fields, raw strings), else None."""
    if self.accept != CSV or self.list_field or (
        self.model_type == MULTICLASS and LABEL_KEY in self.names):
      return None
    echoed = {position for position, _ in self.echo}
    types = []
    for position in range(self.fields):
      if position in echoed:
        types.append(pa.string())
        continue
      name = self.names[self.predictions.index(position)]
      kind = self.raw_kinds[self.names.index(name)] if self.model_type == RAW else 'double'
      if kind not in ('double', 'string'):
        return None
      types.append(_ARROW[kind])
    return types

  def _parse_csv_fast(self, block: bytes, n: int, layout: record_schema.ResultLayout,
                      only: list[str] | None, ends) -> blocks.Parsed | None:
    """The block parsed by pyarrow's CSV reader, as :meth:`parse_lines` would parse it; None
    when this output or this block needs the line-by-line parser (anything unusual: a failed
    marker, a value the reader does not convert, a line count that does not add up)."""
    types = self._fast_types()
    if types is None or (self.failed_marker is not None and
                         self.failed_marker.encode('utf-8') in block):
      return None
    names = list(layout.header) if only is None else list(only)
    position = {echo_name(column): p for p, column in self.echo}
    for p in self.predictions:
      position[self.names[self.predictions.index(p)]] = p
    label = position.get(LABEL_KEY)
    if BEST_ANSWER in names and layout.model_type == BINARY:
      position[BEST_ANSWER] = label
    try:
      table, invalid = blocks._read_csv(block, self.fields, types)
    except (pa.ArrowInvalid, UnicodeDecodeError):
      return None
    if table.num_rows + len(invalid) != n:
      return None
    kind = np.where(line_lengths(block, ends) == 0, blocks.FAILED, blocks.OK).astype(np.int8)
    errors: dict[int, str] = {}
    for number, text, got in invalid:
      if text.strip():
        kind[number - 1] = blocks.BAD
        errors[number - 1] = 'not an output line' if only is not None else \
            blocks._fields_error(self.fields, got)
      else:
        kind[number - 1] = blocks.FAILED
    fields = blocks._scatter(table, n, [number - 1 for number, _, _ in invalid])
    columns = []
    for name in names:
      p = position.get(name)
      if p is None:  # the model's own answer, when the output has none
        columns.append(pa.nulls(n, pa.int64()))
        continue
      column = fields[p]
      if types[p] == pa.string():  # as the line parser reads a field: spaces around it dropped
        column = pc.utf8_trim_whitespace(column)
      elif only is None:
        with np.errstate(invalid='ignore'):  # null slots may hold anything
          values = arrays.values(column)
          finite = np.isfinite(values) & arrays.valid(column)
        if name == BEST_ANSWER:
          finite &= (values == 0) | (values == 1)
          column = pc.cast(column, pa.int64(), safe=False)
        for i in np.flatnonzero((kind == blocks.OK) & ~finite):
          kind[i], errors[int(i)] = blocks.BAD, (
              'predicted_label is not 0 or 1' if name == BEST_ANSWER else
              f'{name} is empty or not a finite number')
      columns.append(column)
    return blocks.Parsed(n, kind, errors, columns)

  def parse_lines(self, block: bytes, n: int, layout: record_schema.ResultLayout,
                  only: list[str] | None = None) -> blocks.Parsed:
    """The block parsed one line at a time in Python: every output this format reads (and the
    meaning the fast path must agree with)."""
    names = list(layout.header) if only is None else list(only)
    kinds = [self._kind(name, layout) for name in names]
    values = [[None] * n for _ in names]
    kind = np.zeros(n, dtype=np.int8)
    errors: dict[int, str] = {}
    for i, raw in enumerate(split_lines(block)):
      if self._failed(raw):
        kind[i] = blocks.FAILED
        continue
      try:
        predicted, echoed = self._prediction(raw.decode('utf-8'))
        row = [self._value(name, k, predicted, echoed) for name, k in zip(names, kinds,
                                                                           strict=True)]
      except (UnicodeDecodeError, ValueError, KeyError, TypeError, csv.Error) as e:
        kind[i], errors[i] = blocks.BAD, str(e) if only is None else 'not an output line'
        if only is not None:  # the alignment check compares what it can read
          kind[i] = blocks.BAD
        continue
      for column, value in zip(values, row, strict=True):
        column[i] = value
    columns = [pa.array(v, _ARROW[k]) for v, k in zip(values, kinds, strict=True)]
    return blocks.Parsed(n, kind, errors, columns)

  def _kind(self, name: str, layout: record_schema.ResultLayout) -> str:
    if name.startswith(ECHO):
      return 'string'
    if name == BEST_ANSWER:
      return 'long' if layout.model_type == BINARY else 'string'
    if layout.model_type == RAW:
      return self.raw_kinds[self.names.index(name)]
    return 'double'

  def _value(self, name: str, kind: str, predicted: dict, echoed: dict):
    if name.startswith(ECHO):
      column = int(name[len(ECHO):])
      if column not in echoed:
        raise ValueError(f'the line holds no field of input column {column + 1}')
      return echoed[column]
    if name == BEST_ANSWER:
      label = predicted.get(LABEL_KEY)
      if label is None:
        return None
      if kind == 'long':
        number = _number(label, 'predicted_label')
        if number not in (0.0, 1.0):
          raise ValueError(f'predicted_label is {label!r}, not 0 or 1')
        return int(number)
      # Multiclass models answer with the class's position: the label it stands for.
      if isinstance(label, (int, float)) and not isinstance(label, bool) and \
          float(label).is_integer() and 0 <= int(label) < len(self.classes):
        return self.classes[int(label)]
      return str(label)
    value = predicted.get(name)
    if kind == 'double':
      return _number(value, name)
    if kind == 'boolean':
      return None if value is None else bool(value)
    return None if value is None else (value if isinstance(value, str) else json.dumps(value))


_JSON_READ = pa_json.ReadOptions(use_threads=False, block_size=8 << 20)
_ARROW = {'string': pa.string(), 'double': pa.float64(), 'long': pa.int64(),
          'boolean': pa.bool_()}


def _json_prediction(obj, model_type: str, names: tuple[str, ...]) -> dict:
  """A JSON prediction (a number, a list, or an object) -> {canonical name: value}."""
  if model_type == RAW:
    flat = flatten(obj)
    return {name: flat.get(name) for name in names}
  label = obj.get(LABEL_KEY) if isinstance(obj, dict) else None
  classes = [n for n in names if n != LABEL_KEY]
  if model_type == MULTICLASS and _keyed_classes(obj) is not None:
    if sorted(k for k in obj if k != LABEL_KEY) != sorted(classes):
      raise ValueError(f'the classes {", ".join(k for k in obj if k != LABEL_KEY)} are not '
                       f'the run\'s, {", ".join(classes)}')
    return {LABEL_KEY: label, **{c: obj[c] for c in classes}}
  if model_type == MULTICLASS and isinstance(obj, dict) and LABELS_KEY in obj and \
      obj[LABELS_KEY] != classes:
    raise ValueError(f'labels {obj[LABELS_KEY]!r} are not the run\'s classes, in order '
                     f'({", ".join(classes)})')
  found = obj
  if isinstance(obj, dict):
    key = score_key(obj, model_type)
    if key is None:
      raise ValueError(f'no {" or ".join(SCORE_KEYS)} in the output object')
    found = obj[key]
  out = {LABEL_KEY: label}
  if model_type == MULTICLASS:
    if not isinstance(found, list):
      raise ValueError('expected a list of class probabilities')
    if len(found) != len(classes):
      raise ValueError(f'expected {len(classes)} class probabilities, got {len(found)}')
    out.update(zip(classes, found, strict=True))
    return out
  if model_type == BINARY and isinstance(found, list):
    if len(found) != 2:
      raise ValueError(f'expected one probability or two, got {len(found)}')
    found = found[1]  # [P(0), P(1)]
  out[SCORE] = found
  return out


def flatten(obj, prefix: str = '') -> dict:
  """A JSON object's fields, nested objects flattened with ``_`` (``{"a": {"b": 1}}`` ->
  ``{"a_b": 1}``); a value that is not an object stands as ``value``."""
  if not isinstance(obj, dict):
    return {prefix or 'value': obj}
  out = {}
  for key, value in obj.items():
    name = f'{prefix}_{key}' if prefix else str(key)
    if isinstance(value, dict):
      out.update(flatten(value, name))
    else:
      out[name] = value
  return out


def _raw_kind(values: list) -> str:
  present = [v for v in values if v is not None]
  if present and all(isinstance(v, bool) for v in present):
    return 'boolean'
  if present and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
    return 'double'
  if present and all(isinstance(v, str) for v in present):
    try:
      [float(v) for v in present]
      return 'double'
    except ValueError:
      return 'string'
  return 'string'


def learn(job: TransformJob, lines: list[str], input_columns: int, model_type: str,
          class_labels: tuple[str, ...] = (), output_fields: tuple[str, ...] = (),
          failed_marker: str | None = None) -> tuple[SageMakerOutputs, record_schema.ResultLayout]:
  """The output layout and the run's result layout, from the first output lines of a shard.

  Args:
    lines: output lines that are not failed records (the first few of a ``.out``).
    input_columns: the input's number of columns (for a CSV output joined with its input).
    model_type: ``binary``, ``multiclass``, ``regression`` or ``raw`` (``auto`` is refused:
      SageMaker outputs carry no header that says it).
    class_labels, output_fields: ``--class_labels``, ``--output_fields``.

  Raises:
    OutputError: the lines cannot be read as the options say.
  """
  if model_type == 'auto':
    raise OutputError('--model_type is needed for SageMaker outputs (binary, multiclass, '
                      'regression or raw): their lines carry no header that says it')
  if not lines:
    raise OutputError('the first output has no line that is not a failed record: its layout '
                      'cannot be learned')
  first = lines[0]
  echo: tuple[tuple[int, int], ...] = ()
  if job.accept == CSV:
    cells = _csv_fields(first)
    fields = len(cells)
    predictions = tuple(range(fields))
    list_field = False
    if job.joined:
      joined = input_columns + (fields - input_columns if job.output_filter == '$' else 0)
      try:
        path = parse(job.output_filter)
        if job.output_filter.strip() == '$':
          kept = list(range(fields))
        else:  # which joined columns the filter kept: the input's, then the model's
          kept = select(path, _joined_length(path, input_columns, fields))
      except PathError as e:
        raise OutputError(f'OutputFilter {job.output_filter!r}: {e}') from None
      joined = max(kept, default=-1) + 1 if job.output_filter.strip() != '$' else joined
      if len(kept) != fields:
        raise OutputError(f'the output lines have {fields} fields, but OutputFilter '
                          f'{job.output_filter!r} keeps {len(kept)} of the input\'s '
                          f'{input_columns} fields and the model\'s')
      echo = tuple((p, c) for p, c in enumerate(kept) if c < input_columns)
      predictions = tuple(p for p, c in enumerate(kept) if c >= input_columns)
    model_values = [cells[p] for p in predictions]
    if len(model_values) == 1 and _list_field(model_values[0]) is not None:
      list_field, model_values = True, _list_field(model_values[0])
    elif not job.joined and _list_field(first) is not None:
      list_field, model_values = True, _list_field(first)
    names = _csv_names(model_type, len(model_values), class_labels, output_fields)
    raw_kinds = ()
    if model_type == RAW:
      samples = [[_csv_value(line, predictions, i, list_field, job.joined) for line in lines]
                 for i in range(len(names))]
      raw_kinds = tuple(_raw_kind(s) for s in samples)
    fmt = SageMakerOutputs(job.accept, model_type, fields, echo, predictions, names,
                           _classes(model_type, names), list_field, job.joined, failed_marker,
                           raw_kinds)
  else:
    try:
      obj = json.loads(first)
    except json.JSONDecodeError as e:
      raise OutputError(f'the first output line is not JSON ({e})') from None
    if job.joined:
      if not isinstance(obj, dict) or 'SageMakerOutput' not in obj:
        raise OutputError('JoinSource is Input, but the output lines have no SageMakerOutput')
      echo = tuple((c, c) for c in range(input_columns)) \
          if isinstance(obj.get('SageMakerInput'), list) else ()
      obj = obj['SageMakerOutput']
    names, raw_kinds = _json_names(obj, model_type, class_labels, lines, job.joined)
    key = score_key(obj, model_type)
    fmt = SageMakerOutputs(job.accept, model_type, 0, echo, (), names,
                           _classes(model_type, names), False, job.joined, failed_marker,
                           raw_kinds, key)
  if model_type == BINARY:
    header = (BEST_ANSWER, SCORE)
  elif model_type == REGRESSION:
    header = (SCORE,)
  elif model_type == MULTICLASS:
    header = (*fmt.classes, *((BEST_ANSWER,) if LABEL_KEY in fmt.names else ()))
  else:
    header = fmt.names
  header = (*header, *(echo_name(c) for _, c in fmt.echo))
  layout = record_schema.ResultLayout(model_type, header, fmt.classes,
                                      fmt.raw_kinds if model_type == RAW else ())
  # A line that does not read goes to the dead letter alone; but when none of the first lines
  # reads, the options do not fit the outputs: stop at launch instead of refusing every row.
  sample = ''.join(line + '\n' for line in lines).encode('utf-8')
  parsed = fmt.parse_lines(sample, len(lines), layout)
  if (parsed.kind == blocks.BAD).all():
    raise OutputError(f'none of the first {len(lines)} output lines reads as a {model_type} '
                      f'output: {parsed.errors[0]} (line {lines[0]!r})')
  return fmt, layout


def _joined_length(path, input_columns: int, fields: int) -> int:
  """How long the joined record (input fields, then the model's) must be for ``path`` to keep
  ``fields`` of them: the model gave between 1 and ``fields`` fields."""
  for model in range(1, fields + 1):
    try:
      if len(select(path, input_columns + model)) == fields:
        return input_columns + model
    except PathError:
      continue
  raise PathError(f'keeps no {fields} fields of a record of {input_columns} input fields and '
                  'the model\'s')


def _classes(model_type: str, names: tuple[str, ...]) -> tuple[str, ...]:
  return tuple(n for n in names if n != LABEL_KEY) if model_type == MULTICLASS else ()


def _csv_value(line: str, predictions, i: int, list_field: bool, joined: bool):
  cells = _csv_fields(line)
  values = [cells[p] for p in predictions] if len(cells) > max(predictions, default=-1) else []
  if list_field:
    values = _list_field(values[0] if joined else line) or []
  return values[i] if i < len(values) else None


def _csv_names(model_type: str, count: int, class_labels: tuple[str, ...],
               output_fields: tuple[str, ...]) -> tuple[str, ...]:
  """The canonical names of a CSV output's prediction fields."""
  if output_fields:
    if len(output_fields) != count:
      raise OutputError(f'--output_fields names {len(output_fields)} fields, but the output '
                        f'lines have {count} prediction fields')
    if model_type == RAW:
      return tuple(output_fields)
    mapped = tuple(SCORE if name in SCORE_KEYS else name for name in output_fields)
    if model_type != MULTICLASS and SCORE not in mapped:
      raise OutputError(f'--output_fields names no probability or score among '
                        f'{",".join(output_fields)}')
    return mapped
  if model_type == RAW:
    return tuple(f'output_{i}' for i in range(1, count + 1))
  if model_type == MULTICLASS:
    labels = class_labels or tuple(str(i) for i in range(count))
    if len(labels) != count:
      raise OutputError(f'--class_labels names {len(labels)} classes, but the output lines '
                        f'have {count} probabilities')
    if count < 2:
      raise OutputError('a multiclass output needs one probability per class (two or more)')
    return tuple(labels)
  if count != 1:
    raise OutputError(f'a {model_type} output has one value per line, these have {count} '
                      '(name them with --output_fields, e.g. predicted_label,probability)')
  return (SCORE,)


def _json_names(obj, model_type: str, class_labels: tuple[str, ...], lines: list[str],
                joined: bool) -> tuple[tuple[str, ...], tuple[str, ...]]:
  if model_type == RAW:
    objects = []
    for line in lines:
      try:
        value = json.loads(line)
      except json.JSONDecodeError:
        continue
      objects.append(flatten(value.get('SageMakerOutput') if joined and isinstance(value, dict)
                             else value))
    names = tuple(dict.fromkeys(name for o in objects for name in o))
    return names, tuple(_raw_kind([o.get(n) for o in objects]) for n in names)
  label = (LABEL_KEY,) if isinstance(obj, dict) and LABEL_KEY in obj else ()
  keyed = _keyed_classes(obj) if model_type == MULTICLASS else None
  if keyed is not None:  # the keys are the classes: --class_labels may order them
    if class_labels and sorted(class_labels) != sorted(keyed):
      raise OutputError(f'--class_labels names {", ".join(class_labels)}, but the outputs\' '
                        f'classes are {", ".join(keyed)}')
    return (*label, *(class_labels or keyed)), ()
  found = obj
  if isinstance(obj, dict):
    key = score_key(obj, model_type)
    if key is None:
      raise OutputError(f'the output objects have none of {", ".join(SCORE_KEYS)}: name the '
                        'model type raw to keep their fields as they are')
    found = obj[key]
  if model_type == MULTICLASS:
    if not isinstance(found, list) or len(found) < 2:
      raise OutputError('a multiclass output holds a list of class probabilities')
    given = obj.get(LABELS_KEY) if isinstance(obj, dict) else None
    if isinstance(given, list) and all(isinstance(g, str) for g in given):
      if class_labels and tuple(class_labels) != tuple(given):
        raise OutputError(f'--class_labels names {", ".join(class_labels)}, but the outputs\' '
                          f'labels are {", ".join(given)}')
      class_labels = tuple(given)  # the outputs name their classes
    labels = class_labels or tuple(str(i) for i in range(len(found)))
    if len(labels) != len(found):
      raise OutputError(f'{len(labels)} class labels, but the outputs have {len(found)} '
                        'probabilities')
    return (*label, *labels), ()
  return (*label, SCORE), ()
