"""The run's plan, made at launch: model type, result header and input columns, from one shard.

Sinks need their schema before the pipeline runs, so the launcher reads the manifests and the
first readable shard's headers (a few KB). Every shard is checked against the plan when it is
joined; one that differs is reported, not guessed at.
"""

from __future__ import annotations

import csv

from transforms import amlschema
from transforms import layout as lay
from transforms.access import AccessPolicy
from transforms.join import JoinPlan
from transforms.lines import LineReader
from transforms.manifest import ManifestError, Shard, shards_of
from transforms.storage import Storage, StorageError, redact

_SNIFF_BYTES = 64 << 10


class PlanError(ValueError):
  """No shard of any manifest could be read to learn the run's columns; says why for each."""


def _input_columns(shard: Shard, input_header: str, storage: Storage):
  """``(names, names_from_header, default_header)`` for the input of one shard."""
  schema = amlschema.find_schema(shard.input_uri, storage) if input_header == 'auto' else None
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
  if schema is not None and not has_header:
    return list(schema.names), True, has_header
  if has_header:
    if schema is not None and tuple(cells) != schema.names:
      raise amlschema.SchemaError(
          f'{redact(shard.input_uri)} line 1: header {",".join(cells)!r} differs from the '
          f'attributes of {redact(schema.uri)}, {",".join(schema.names)!r}')
    return list(cells), True, has_header
  return [f'col_{i}' for i in range(1, len(cells) + 1)], False, has_header


class _Bytes:
  def __init__(self, data: bytes):
    self._data = data

  def read(self, _size: int = -1) -> bytes:
    data, self._data = self._data, b''
    return data


def make_plan(manifest_uris: list[str], storage: Storage, *, model_type: str = 'auto',
              input_header: str = 'auto', cutoff: float = 0.5, min_score: float | None = None,
              block_rows: int = 65536, rebase_rules=(),
              access_policy: AccessPolicy | None = None) -> JoinPlan:
  """Builds the plan from the first shard whose result and input can be read.

  Every manifest is read and checked against ``access_policy`` (default: the manifest's own
  bucket or directory, and the rebase targets) before any shard is read.

  Raises:
    PlanError: nothing could be sampled; the message lists each manifest's or shard's problem.
    AccessError: a manifest names a URI outside the allowed prefixes; nothing else was read.
  """
  if access_policy is None:
    access_policy = AccessPolicy.create((), rebase_rules)
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
        names, from_header, default_header = _input_columns(shard, input_header, storage)
      except (StorageError, OSError, EOFError, amlschema.SchemaError) as e:
        problems.append(str(e))
        continue
      return JoinPlan(layout=layout, schema=lay.output_schema(layout, names),
                      input_header=input_header, header_names=from_header,
                      default_header=default_header, cutoff=cutoff, min_score=min_score,
                      block_rows=block_rows)
  raise PlanError('no shard could be read to learn the columns of this run:\n  - ' +
                  '\n  - '.join(problems or ['the manifests name no shards']))
