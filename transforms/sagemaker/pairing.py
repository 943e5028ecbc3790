"""A transform job's inputs paired with their ``.out`` outputs, by listing both.

SageMaker writes no manifest: for each input object it writes an object named after it with the
suffix ``.out`` under ``S3OutputPath``, "in a corresponding subfolder", but which part of the
input's key the output keeps is not reliably documented (the API reference's own example keeps
one folder and drops another). So predjoin lists the inputs (the ``S3Uri`` prefix, or the
objects a ``ManifestFile`` names) and the ``.out`` objects under the output path, and pairs an
input with the output whose name, less ``.out`` and the output path, is the longest ending of
the input's key at a ``/``. An output that is the best match of more than one input is
ambiguous: those inputs are refused (``output_ambiguous``), never guessed. An input with no
``.out`` is refused too (``output_missing``: SageMaker writes an output only when the whole
object succeeded). An output no input claims is reported.
"""

from __future__ import annotations

import dataclasses
import json

from transforms.aml.manifest import rebase
from transforms.join.shards import Shard
from transforms.sagemaker.job import MANIFEST_FILE, TransformJob

OUT = '.out'


class PairingError(ValueError):
  """The job's inputs cannot be listed (a manifest file that is not SageMaker's format)."""


@dataclasses.dataclass(frozen=True)
class Pairing:
  """The job's shards (inputs without a usable output carry their ``result_problem``) and the
  outputs no input claims."""

  shards: tuple[Shard, ...]
  unmatched_outputs: tuple[str, ...]

  def as_dict(self) -> dict:
    return {'inputs': len(self.shards),
            'paired': sum(s.result_problem is None for s in self.shards),
            'output_missing': sorted(s.input_uri for s in self.shards
                                     if s.result_problem and s.result_problem[0] ==
                                     'output_missing'),
            'output_ambiguous': sorted(s.input_uri for s in self.shards
                                       if s.result_problem and s.result_problem[0] ==
                                       'output_ambiguous'),
            'unmatched_outputs': list(self.unmatched_outputs)}


def parse_manifest_file(text: str | bytes, uri: str) -> list[str]:
  """The input URIs a ``ManifestFile`` names: ``[{"prefix": P}, "k1", "k2", ...]`` -> P + k.

  Raises:
    PairingError: not that format.
  """
  try:
    items = json.loads(text)
  except json.JSONDecodeError as e:
    raise PairingError(f'{uri}: not valid JSON ({e})') from None
  if not (isinstance(items, list) and items and isinstance(items[0], dict)
          and isinstance(items[0].get('prefix'), str)
          and all(isinstance(k, str) for k in items[1:])):
    raise PairingError(f'{uri}: a ManifestFile is a JSON list: {{"prefix": "s3://..."}}, then '
                       'the keys relative to it')
  prefix = items[0]['prefix']
  return [prefix + key for key in items[1:]]


def _key(uri: str) -> str:
  """A URI's path below its bucket (or a local path), without a leading slash."""
  rest = uri.split('://', 1)[1] if '://' in uri else uri
  return rest.split('/', 1)[1] if '://' in uri and '/' in rest else rest.lstrip('/')


def _ends_with(key: str, name: str) -> bool:
  return key == name or key.endswith('/' + name)


def pair(job: TransformJob, inputs: list[str], outputs: list[str], output_root: str,
         rules=()) -> Pairing:
  """Pairs listed inputs (as the job names them) with listed ``.out`` URIs under
  ``output_root`` (the output path, rebased); ``rules`` rebase the inputs for reading."""
  root = output_root.rstrip('/') + '/'
  names = {out: out[len(root):][:-len(OUT)] for out in outputs
           if out.startswith(root) and out.endswith(OUT)}
  best: dict[str, list[str]] = {}  # input -> its longest-matching outputs
  for uri in inputs:
    key = _key(uri)
    matches = [out for out, name in names.items() if name and _ends_with(key, name)]
    longest = max((len(names[out]) for out in matches), default=0)
    best[uri] = [out for out in matches if len(names[out]) == longest]
  claimed: dict[str, list[str]] = {}
  for uri, outs in best.items():
    for out in outs:
      claimed.setdefault(out, []).append(uri)
  shards = []
  gzip = job.compression == 'Gzip'  # SageMaker gunzips such inputs whatever their names
  for uri in inputs:
    outs = best[uri]
    expected = root + _key(uri).rsplit('/', 1)[-1] + OUT
    read_from = rebase(uri, list(rules))
    if not outs:
      shards.append(Shard(job.name, job.source, read_from, expected, (
          'output_missing', f'no {OUT} object for {uri} under {output_root}: SageMaker writes '
          f'one only when the whole input succeeded, so the transform job failed on it'
          + (f' (the job\'s FailureReason: {job.failure_reason})' if job.failure_reason
             else '')), gzip))
    elif len(outs) > 1 or len(claimed[outs[0]]) > 1:
      shards.append(Shard(job.name, job.source, read_from, outs[0], (
          'output_ambiguous', f'{uri}: the outputs {", ".join(sorted(outs))} could each answer '
          f'it, or answer another input too ({", ".join(sorted(claimed[outs[0]]))}): not '
          'paired, never guessed'), gzip))
    else:
      shards.append(Shard(job.name, job.source, read_from, outs[0], input_gzip=gzip))
  used = {out for outs in best.values() for out in outs}
  return Pairing(tuple(shards), tuple(sorted(set(names) - used)))


def list_job(job: TransformJob, storage, rules=()) -> Pairing:
  """Lists the job's inputs and outputs (rebased by ``rules`` for reading) and pairs them.

  Raises:
    PairingError, StorageError: the inputs or outputs cannot be listed.
  """
  rules = list(rules)
  if job.input_type == MANIFEST_FILE:
    inputs = parse_manifest_file(storage.read_bytes(rebase(job.input_uri, rules)),
                                 job.input_uri)
  else:
    output = job.output_path.rstrip('/') + '/'
    inputs = [uri for uri in _unrebase(storage.list(rebase(job.input_uri, rules)), rules)
              if not uri.endswith('/') and not uri.startswith(output)]
  output_root = rebase(job.output_path, rules)
  outputs = storage.list(output_root.rstrip('/') + '/')
  return pair(job, inputs, outputs, output_root, rules)


def _unrebase(uris: list[str], rules: list[tuple[str, str]]) -> list[str]:
  """Listed URIs as the job names them (a rebased listing, read back to the job's prefixes)."""
  out = []
  for uri in uris:
    for old, new in rules:
      if uri.startswith(new):
        uri = old + uri[len(new):]
        break
    out.append(uri)
  return out
