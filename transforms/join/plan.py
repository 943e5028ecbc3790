"""The run's plan, made at launch: model type, result header, header decision and input columns.

Sinks need their schema before the pipeline runs, so the launcher reads the manifests, the
first readable shard's result header and input, and the first bytes of a few more inputs (a
few KB each) to decide whether inputs start with a header line (``transforms/join/header.py``).
Every shard is checked against the plan when it is joined; one that differs is reported, not
guessed at.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools

import pyarrow as pa

from transforms.aml import result_header, schema_file, slices
from transforms.aml.manifest import ManifestError, shards_of
from transforms.io.access import AccessPolicy
from transforms.io.storage import Storage, StorageError, redact
from transforms.join import align, coltypes, record_schema
from transforms.join.blocks import BlockRules
from transforms.join.header import HeaderDecision, HeaderUndecided, Sample, decide, split_header
from transforms.join.lines import LineReader
from transforms.join.results import HeaderedCsv, ResultFormat
from transforms.join.shards import Shard

SAMPLE_BYTES = 64 << 10
SAMPLE_SHARDS = 16  # inputs whose first bytes the header inference looks at
_SAMPLE_THREADS = 8


@dataclasses.dataclass(frozen=True)
class JoinPlan:
  """What every shard of the run must look like, and how to interpret it; fixed at launch."""

  layout: record_schema.ResultLayout
  schema: record_schema.OutputSchema
  header: HeaderDecision             # whether every input starts with a header line
  cutoff: float = 0.5
  min_score: float | None = None
  block_rows: int = 65536
  block_bytes: int = 4 << 20  # input bytes per block: ~48k rows of a 12-column input
  # Whether pyarrow's CSV reader may parse an input block on its thread pool: it shortens a
  # block's wall time when this process has the cores to itself, but where one SDK process runs
  # per core (local multi-processing, Dataflow) the threads only compete with the other
  # workers: they cost 10% more CPU for the input's CSV parsing.
  parse_threads: bool = True
  # A result whose lines come to at most this many bytes once inflated is kept in memory from
  # pass 1 to pass 2 instead of being read and inflated again (1M binary rows: about 11 MB;
  # 250k rows of 5 classes: 12 MB). Larger results are read twice, so a worker's memory stays
  # bounded whatever the shard's size.
  result_keep_bytes: int = 32 << 20
  aml_schema: schema_file.AmlSchema | None = None  # --schema, or the first shard's
  schema_given: bool = False         # --schema: it applies to every shard
  on_type_error: str = coltypes.DEAD_LETTER
  top_k: int | None = None
  split: slices.Split | None = None
  checks: tuple[align.Check, ...] = ()
  header_line: str | None = None     # the first shard's header line, for resubmit/
  result_format: ResultFormat = dataclasses.field(default_factory=HeaderedCsv)
  # A shard of at least twice this many rows is cut into ranges of this many rows, joined by
  # several workers at once (transforms/join/ranges.py); 0: every shard is joined whole.
  range_rows: int = 0

  @functools.cached_property
  def result_leading_lines(self) -> int:
    """The result lines before the answer to a shard's first row."""
    return self.result_format.leading_lines(self.header.has_header)

  @functools.cached_property
  def arrow_schema(self) -> pa.Schema:
    return record_schema.arrow_schema(self.schema)

  @functools.cached_property
  def block_rules(self) -> BlockRules:
    """What joining a block needs to know of the plan (``transforms/join/blocks.py``)."""
    return BlockRules(self.schema, self.arrow_schema, self.layout, self.cutoff, self.min_score,
                      self.on_type_error, self.top_k, self.parse_threads, self.result_format)



class PlanError(ValueError):
  """The run cannot be planned (no readable shard, a schema that cannot be used, or no safe
  header decision); says why."""


@dataclasses.dataclass(frozen=True)
class Columns:
  names: list[str]
  schema: schema_file.AmlSchema | None
  header_line: str | None  # the header line as written, when there is one


def _first_line(sample: bytes) -> bytes:
  return LineReader(_Bytes(sample)).readline() or b''


def input_columns(shard: Shard, decision: HeaderDecision, sample: bytes,
                   schema: schema_file.AmlSchema | None) -> Columns:
  """The run's input columns, from the first shard's header line or its schema.

  Raises:
    schema_file.SchemaError: the shard's header line differs from the schema's attributes.
  """
  first = _first_line(sample)
  cells = split_header(first)
  if not decision.has_header:
    if schema is not None:
      return Columns(list(schema.names), schema, None)
    # Without a header or a schema, the first line with anything on it says how many columns.
    row = next((line for line in sample.split(b'\n') if line.strip(b'\r')), b'')
    return Columns([f'col_{i}' for i in range(1, len(split_header(row)) + 1)], None, None)
  if not any(cells):
    raise schema_file.SchemaError(
        f'{redact(shard.input_uri)} line 1 is empty, but this run reads a header line there '
        f'({decision.reason}): the columns cannot be learned from it')
  if schema is not None and tuple(cells) != schema.names:
    raise schema_file.SchemaError(
        f'{redact(shard.input_uri)} line 1: header {",".join(cells)!r} differs from the '
        f'attributes of {redact(schema.uri)}, {",".join(schema.names)!r}; the header and the '
        'schema must name the same columns in the same order')
  line = first.decode('utf-8', 'replace').rstrip('\r')
  return Columns(list(cells), schema, line)


class _Bytes:
  def __init__(self, data: bytes):
    self._data = data

  def read(self, _size: int = -1) -> bytes:
    data, self._data = self._data, b''
    return data


def sample_input(storage: Storage, shard: Shard) -> Sample | None:
  """The first bytes of a shard's input, or None when it cannot be read (the join reports it)."""
  try:
    with storage.open(shard.input_uri, shard.input_compression) as f:
      data = f.read(SAMPLE_BYTES + 1)
  except (StorageError, OSError, EOFError):
    return None
  return Sample(redact(shard.input_uri), data[:SAMPLE_BYTES], len(data) <= SAMPLE_BYTES)


def _spread(manifests: list[list[Shard]], first: Shard, count: int) -> list[Shard]:
  """Up to ``count`` shards, ``first`` first, then taking each manifest's shards in turn."""
  picked = [first]
  for i in range(max((len(m) for m in manifests), default=0)):
    for shards in manifests:
      if len(picked) >= count:
        return picked
      if i < len(shards) and shards[i] != first:
        picked.append(shards[i])
  return picked


def decide_header(option: str, schema: schema_file.AmlSchema | None, first: Sample,
                  manifests: list[list[Shard]], first_shard: Shard,
                  storage: Storage) -> HeaderDecision:
  """The run's header decision (``transforms/join/header.py``); samples more inputs only when the
  option and the schema leave it to the inference.

  Raises:
    HeaderUndecided: the inference cannot decide.
  """
  if option != 'auto' or schema is not None:
    return decide(option, schema.contains_header if schema else None,
                          redact(schema.uri) if schema else None, [first])
  others = _spread(manifests, first_shard, SAMPLE_SHARDS)[1:]
  with concurrent.futures.ThreadPoolExecutor(_SAMPLE_THREADS) as pool:
    samples = [first] + [s for s in pool.map(lambda shard: sample_input(storage, shard), others) if s]
  return decide(option, None, None, samples)


@dataclasses.dataclass(frozen=True)
class PlanSettings:
  """What the run's options say about its plan (each field is the option of the same name;
  ``rebase_rules`` are ``--rebase_uri``'s, ``schema_uri`` is ``--schema``, ``parse_threads``
  whether a worker process has the cores to itself: see ``JoinPlan.parse_threads``)."""

  model_type: str = 'auto'
  input_header: str = 'auto'
  cutoff: float = 0.5
  min_score: float | None = None
  top_k: int | None = None
  block_rows: int = 65536
  rebase_rules: tuple[tuple[str, str], ...] = ()
  schema_uri: str | None = None
  on_type_error: str = coltypes.DEAD_LETTER
  data_rearrangement: slices.Split | None = None
  parse_threads: bool = True
  range_rows: int = 0


def make_plan(manifest_uris: list[str], storage: Storage, settings: PlanSettings = PlanSettings(),
              access_policy: AccessPolicy | None = None) -> JoinPlan:
  """Builds the plan from the first shard whose result and input can be read.

  The input's schema (``--schema``, else the ``.schema`` beside the shard) gives the column
  names when the input has no header, the output type of each column, the alignment checks,
  and, unless ``--input_header`` says it, whether inputs start with a header line.

  Every manifest is read and checked against ``access_policy`` (default: the manifest's own
  bucket or directory, and the rebase targets) before any shard is read.

  Raises:
    PlanError: nothing could be sampled (the message lists each manifest's or shard's
      problem), the schema cannot be read or differs from the header, or whether inputs start
      with a header line cannot be decided safely.
    AccessError: a manifest names a URI outside the allowed prefixes; nothing else was read.
  """
  rules = list(settings.rebase_rules)
  if access_policy is None:
    access_policy = AccessPolicy.create((), rules)
  try:
    given = schema_file.load_schema(settings.schema_uri, storage) if settings.schema_uri \
        else None
  except schema_file.SchemaError as e:
    raise PlanError(str(e)) from None
  problems = []
  manifests = []
  for uri in manifest_uris:
    try:
      shards = shards_of(storage.read_bytes(uri), uri, rules)
    except (ManifestError, StorageError) as e:
      problems.append(str(e))
      continue
    access_policy.check_shards(uri, shards)
    manifests.append(shards)
  for shards in manifests:
    for shard in shards:
      try:
        with storage.open(shard.result_uri) as f:
          header = LineReader(f).readline()
        if header is None:
          raise StorageError(f'{redact(shard.result_uri)} is empty: no header line')
        layout = result_header.detect_layout(split_header(header), settings.model_type,
                                             where=redact(shard.result_uri))
        schema = given if given is not None else \
            schema_file.find_schema(shard.input_uri, storage)
        first = sample_input(storage, shard)
        if first is None:
          raise StorageError(f'cannot read {redact(shard.input_uri)}')
        decision = decide_header(settings.input_header, schema, first, manifests, shard,
                                 storage)
        columns = input_columns(shard, decision, first.data, schema)
      except (schema_file.SchemaError, HeaderUndecided) as e:
        raise PlanError(str(e)) from None
      except (StorageError, OSError, EOFError) as e:
        problems.append(str(e))
        continue
      return _plan(layout, columns, decision, given is not None, settings)
  raise PlanError('no shard could be read to learn the columns of this run:\n  - ' +
                  '\n  - '.join(problems or ['the manifests name no shards']))


def _plan(layout: record_schema.ResultLayout, columns: Columns, decision: HeaderDecision,
          schema_given: bool, settings: PlanSettings) -> JoinPlan:
  schema = columns.schema
  types = [schema.output_type(name) if schema else '' for name in columns.names]
  kinds = [coltypes.kind_of(t or None) for t in types]
  output = record_schema.output_schema(layout, columns.names, kinds, types,
                                       top_k=settings.top_k)
  return JoinPlan(layout=layout, schema=output, header=decision, aml_schema=schema,
                  schema_given=schema_given,
                  checks=align.plan_checks(layout, schema, columns.names),
                  header_line=columns.header_line, cutoff=settings.cutoff,
                  min_score=settings.min_score, block_rows=settings.block_rows,
                  on_type_error=settings.on_type_error, top_k=settings.top_k,
                  split=settings.data_rearrangement, parse_threads=settings.parse_threads,
                  range_rows=settings.range_rows)
