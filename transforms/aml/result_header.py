"""Amazon ML result headers: the model type and columns a result file's first line says.

The rules are those of ``docs/amazon-ml-format.md`` section 4: binary ``bestAnswer,score``,
multiclass one column per class, regression ``score``, each possibly after ``tag`` and
``trueLabel``. Pure functions, no Beam.
"""

from __future__ import annotations

from transforms.join.record_schema import (
  BEST_ANSWER,
  BINARY,
  MULTICLASS,
  REGRESSION,
  SCORE,
  TAG,
  TRUE_LABEL,
  ResultLayout,
)


class LayoutError(ValueError):
  """A result header that fits no model type, or not the expected one."""


def detect_layout(header: tuple[str, ...], model_type: str = 'auto',
                  where: str = 'result file') -> ResultLayout:
  """Reads the model type and columns from a result header.

  Args:
    header: the stripped header names.
    model_type: ``auto`` or the type the user expects; a different header is an error.
    where: the file, for error messages.

  Raises:
    LayoutError: duplicate or empty names, no prediction column, or a type other than expected.
  """
  if not header or any(not name for name in header):
    raise LayoutError(f'{where}: the header line {",".join(header)!r} has an empty column name')
  if len(set(header)) != len(header):
    raise LayoutError(f'{where}: the header {",".join(header)!r} repeats a column name')
  rest = [name for name in header if name not in (TAG, TRUE_LABEL)]
  if sorted(rest) == sorted([BEST_ANSWER, SCORE]):
    layout = ResultLayout(BINARY, header)
  elif rest == [SCORE]:
    layout = ResultLayout(REGRESSION, header)
  else:
    classes = tuple(name for name in rest if name != BEST_ANSWER)
    if len(classes) < 2 or SCORE in classes:
      raise LayoutError(
          f'{where}: the header {",".join(header)!r} is not a binary (bestAnswer,score), '
          'multiclass (one column per class) or regression (score) result header')
    layout = ResultLayout(MULTICLASS, header, classes)
  if model_type not in ('auto', layout.model_type):
    raise LayoutError(f'{where}: --model_type {model_type} was given, but the header '
                      f'{",".join(header)!r} is that of a {layout.model_type} model')
  return layout
