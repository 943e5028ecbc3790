"""What the join takes: a shard, one input file and the result file that answers it."""

from __future__ import annotations

import dataclasses

from transforms.io.storage import BY_NAME, GZIP


@dataclasses.dataclass(frozen=True)
class Shard:
  """One input shard and its result shard, as the service's listing pairs them (an Amazon ML
  manifest, a SageMaker transform job's outputs).

  ``result_problem``: ``(reason, message)`` when the input has no usable result (a SageMaker
  input whose ``.out`` is missing: the job failed on it); the shard is then refused, every one
  of its rows dead-lettered with the reason. ``input_gzip``: the input is gzip whatever its
  name (a SageMaker job's ``CompressionType`` ``Gzip``); else a name ending ``.gz`` says so.
  """

  batch_prediction_id: str
  manifest_uri: str
  input_uri: str
  result_uri: str
  result_problem: tuple[str, str] | None = None
  input_gzip: bool = False

  @property
  def input_compression(self) -> str:
    """How :meth:`Storage.open` reads the input (``transforms/io/storage.py``)."""
    return GZIP if self.input_gzip else BY_NAME
