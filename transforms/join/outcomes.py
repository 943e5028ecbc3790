"""What joining one shard yields: record batches, dead letters, resubmit lines, then its report.

Values here are as read: URIs and messages are shown (redacted) only where they leave the job:
a dead letter when it is written (:meth:`DeadLetter.as_dict`), a report in the summary, a
record's ``input_uri`` in its block (``transforms/join/blocks.py``).
"""

from __future__ import annotations

import dataclasses

from transforms.io.storage import redact

# Statuses of a shard in the summary.
OK, WITH_DEAD_LETTERS, ROW_COUNT_MISMATCH, MISALIGNED, ERROR = 'ok', 'ok_with_dead_letters', \
    'row_count_mismatch', 'misaligned', 'error'
BAD_STATUSES = (ROW_COUNT_MISMATCH, MISALIGNED, ERROR)

# How a shard's pairing of rows and result lines was established (the summary's ``alignment``).
VERIFIED = 'verified'      # the result's tag/trueLabel equal the input's values on every row
POSITIONAL = 'positional'  # exact counts and line numbers: the result repeats no input value
REFUSED = 'refused'        # not joined: ``status`` and ``error`` say why


@dataclasses.dataclass
class ShardReport:
  """One shard's line in the summary. ``input_rows`` is None when the input could not be read.

  A manifest that cannot be used has a report too, with ``input_uri`` None.
  """

  batch_prediction_id: str
  manifest_uri: str
  input_uri: str | None
  result_uri: str | None
  input_rows: int | None = None
  result_rows: int | None = None
  joined_rows: int = 0
  failed_rows: int = 0
  dead_letter_rows: int = 0
  status: str = OK
  error: str | None = None
  input_header: bool | None = None  # the run's header decision, as applied to this shard
  trailing_empty_lines: int = 0  # empty lines at the end of the input: not observations
  alignment: str | None = None  # VERIFIED, POSITIONAL or REFUSED
  not_predicted_rows: int = 0
  type_error_rows: int = 0  # dead-lettered as type_error
  type_errors: dict = dataclasses.field(default_factory=dict)  # output column -> values
  checks: list = dataclasses.field(default_factory=list)  # alignment checks that ran
  misaligned: dict | None = None  # the first misaligned row
  data_slice: dict | None = None  # with --data_rearrangement
  audit: dict | None = None  # transforms/join/audit.py figures

  @property
  def bad(self) -> bool:
    return self.input_uri is None or self.status in BAD_STATUSES

  def as_dict(self) -> dict:
    return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class DeadLetter:
  """A rejected row, or a whole shard whose input cannot be read (``row_number`` None).

  ``extra`` holds the keys some reasons add (``input_rows`` and ``result_rows`` of a
  ``row_count_mismatch``, ``columns`` of a ``type_error``, the first misaligned row of a
  ``misaligned`` shard).
  """

  batch_prediction_id: str
  reason: str
  error: str
  input_uri: str
  result_uri: str
  row_number: int | None = None
  input_line_number: int | None = None
  result_line_number: int | None = None
  input_line: str | None = None
  result_line: str | None = None
  extra: dict = dataclasses.field(default_factory=dict)

  @property
  def is_row(self) -> bool:
    """Whether it stands for one input row (not for a whole unreadable shard)."""
    return self.row_number is not None

  def as_dict(self) -> dict:
    """The dead-letter record as written: URIs and the message redacted, the lines as read."""
    record = dataclasses.asdict(self)
    extra = record.pop('extra')
    for key in ('error', 'input_uri', 'result_uri'):
      record[key] = redact(record[key])
    return {**record, **extra}


@dataclasses.dataclass(frozen=True)
class ResubmitLines:
  """The original input lines of failed observations, joined by newlines, in input order."""

  text: str


class ShardProblem(Exception):
  """A shard that cannot be joined; ``reason`` is the dead-letter reason."""

  def __init__(self, reason: str, message: str):
    super().__init__(message)
    self.reason = reason
