"""The run's plan, made at launch: model type, result header and input columns, from one shard.

Sinks need their schema before the pipeline runs, so the launcher reads the manifests and the
first readable shard's headers (a few KB). Every shard is checked against the plan when it is
joined; one that differs is reported, not guessed at.
"""

from __future__ import annotations

import csv
import dataclasses

from transforms import align, amlschema, coltypes
from transforms import layout as lay
from transforms import split as splitting
from transforms.access import AccessPolicy
from transforms.join import JoinPlan
from transforms.lines import LineReader
from transforms.manifest import ManifestError, Shard, shards_of
from transforms.storage import Storage, StorageError, redact

_SNIFF_BYTES = 64 << 10


class PlanError(ValueError):
  """No shard of any manifest could be read to learn the run's columns; says why for each."""


@dataclasses.dataclass(frozen=True)
class _Columns:
  names: list[str]
  from_header: bool        # the names came from a header line or a schema
  default_header: bool     # whether the sampled input has a header line
  schema: amlschema.AmlSchema | None
  header_line: str | None  # the header line as written, when there is one


def _input_columns(shard: Shard, input_header: str, storage: Storage,
                   given: amlschema.AmlSchema | None) -> _Columns:
  """The input columns of one shard, from its header line and its schema.

  Raises:
    amlschema.SchemaError: the schema beside the shard cannot be read, or the shard's header
      line differs from the schema's attributes.
  """
  schema = given if given is not None else amlschema.find_schema(shard.input_uri, storage)
  with storage.open(shard.input_uri) as f:
    sample = f.read(_SNIFF_BYTES)
  first = LineReader(_Bytes(sample)).readline() or b''
  cells = lay.split_header(first)
  if input_header == 'true':
    has_header = True
  elif input_header == 'false':
    has_header = False
  elif schema is not None:
    has_header = schema.contains_header
  else:
    try:
      has_header = csv.Sniffer().has_header(sample.decode('utf-8', 'replace'))
    except csv.Error:
      has_header = False
  line = first.decode('utf-8', 'replace').lstrip('\ufeff').rstrip('\r') if has_header else None
  if schema is not None and not has_header:
    return _Columns(list(schema.names), True, has_header, schema, None)
  if has_header:
    if schema is not None and tuple(cells) != schema.names:
      raise amlschema.SchemaError(
          f'{redact(shard.input_uri)} line 1: header {",".join(cells)!r} differs from the '
          f'attributes of {redact(schema.uri)}, {",".join(schema.names)!r}; the header and the '
          'schema must name the same columns in the same order')
    return _Columns(list(cells), True, has_header, schema, line)
  return _Columns([f'col_{i}' for i in range(1, len(cells) + 1)], False, has_header, None, None)


class _Bytes:
  def __init__(self, data: bytes):
    self._data = data

  def read(self, _size: int = -1) -> bytes:
    data, self._data = self._data, b''
    return data


def make_plan(manifest_uris: list[str], storage: Storage, *, model_type: str = 'auto',
              input_header: str = 'auto', cutoff: float = 0.5, min_score: float | None = None,
              block_rows: int = 65536, rebase_rules=(),
              access_policy: AccessPolicy | None = None, schema_uri: str | None = None,
              on_type_error: str = coltypes.DEAD_LETTER, top_k: int | None = None,
              data_rearrangement: splitting.Split | None = None,
              parse_threads: bool = True) -> JoinPlan:
  """Builds the plan from the first shard whose result and input can be read.

  The input's schema (``schema_uri``, else the ``.schema`` beside the shard) gives the column
  names when the input has no header, the output type of each column, and the alignment checks.

  Every manifest is read and checked against ``access_policy`` (default: the manifest's own
  bucket or directory, and the rebase targets) before any shard is read.

  Raises:
    PlanError: nothing could be sampled (the message lists each manifest's or shard's
      problem), or the schema cannot be read or differs from the header.
    AccessError: a manifest names a URI outside the allowed prefixes; nothing else was read.
  """
  if access_policy is None:
    access_policy = AccessPolicy.create((), rebase_rules)
  try:
    given = amlschema.load_schema(schema_uri, storage) if schema_uri else None
  except amlschema.SchemaError as e:
    raise PlanError(str(e)) from None
  problems = []
  manifests = []
  for uri in manifest_uris:
    try:
      shards = shards_of(storage.read_bytes(uri), uri, rebase_rules)
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
        layout = lay.detect_layout(lay.split_header(header), model_type,
                                   where=redact(shard.result_uri))
        columns = _input_columns(shard, input_header, storage, given)
      except amlschema.SchemaError as e:
        raise PlanError(str(e)) from None
      except (StorageError, OSError, EOFError) as e:
        problems.append(str(e))
        continue
      return _plan(layout, columns, given is not None, input_header=input_header,
                   cutoff=cutoff, min_score=min_score, block_rows=block_rows,
                   on_type_error=on_type_error, top_k=top_k, split=data_rearrangement,
                   parse_threads=parse_threads)
  raise PlanError('no shard could be read to learn the columns of this run:\n  - ' +
                  '\n  - '.join(problems or ['the manifests name no shards']))


def _plan(layout: lay.ResultLayout, columns: _Columns, schema_given: bool, **options) -> JoinPlan:
  schema = columns.schema
  types = [schema.output_type(name) if schema else '' for name in columns.names]
  kinds = [coltypes.kind_of(t or None) for t in types]
  output = lay.output_schema(layout, columns.names, kinds, types, top_k=options['top_k'])
  return JoinPlan(layout=layout, schema=output, header_names=columns.from_header,
                  default_header=columns.default_header, aml_schema=schema,
                  schema_given=schema_given,
                  checks=align.plan_checks(layout, schema, columns.names),
                  header_line=columns.header_line, **options)
