"""Batch-prediction manifests: locate them, parse them, name their shards.

Pure functions, no Beam. The rules are those of ``docs/amazon-ml-format.md`` section 2.
"""

from __future__ import annotations

import json
import posixpath
import re

from transforms.join.shards import Shard

MANIFEST_SUFFIX = '.manifest'

# A URI with a scheme (s3://, gs://, file://, ...) or an absolute local path.
_SCHEME = re.compile(r'^[A-Za-z][A-Za-z0-9+.-]*://')


class ManifestError(ValueError):
  """A manifest that cannot be used; the message names the manifest (and line when known)."""


def manifest_uri(output_location: str, batch_prediction_id: str) -> str:
  """``<OutputUri>batch-prediction/<bp-id>.manifest`` with exactly one slash between parts."""
  if not output_location or not batch_prediction_id:
    raise ValueError('output location and batch prediction id are both required')
  if '/' in batch_prediction_id:
    raise ValueError(f'batch prediction id {batch_prediction_id!r} contains a slash')
  base = output_location.rstrip('/')
  return f'{base}/batch-prediction/{batch_prediction_id}{MANIFEST_SUFFIX}'


def batch_prediction_id(uri: str) -> str:
  """The batch prediction ID a manifest's file name carries (``bp-x.manifest`` -> ``bp-x``)."""
  name = posixpath.basename(uri.rstrip('/'))
  if name.endswith(MANIFEST_SUFFIX):
    name = name[:-len(MANIFEST_SUFFIX)]
  return name


def is_absolute_uri(uri: str) -> bool:
  return bool(_SCHEME.match(uri)) or uri.startswith('/')


def _pairs_one_object(text: str, where: str) -> list[tuple[str, str]]:
  # object_pairs_hook sees duplicate keys, which a plain dict would silently merge. The
  # outermost object is the last one the hook is called for.
  objects: list[list[tuple[str, object]]] = []

  def hook(items):
    objects.append(items)
    return dict(items)

  obj = json.loads(text, strict=False, object_pairs_hook=hook)
  if not isinstance(obj, dict):
    raise ManifestError(f'{where}: expected a JSON object, got {type(obj).__name__}')
  return objects[-1]


def _pairs_per_line(text: str, uri: str) -> list[tuple[str, str]]:
  pairs: list[tuple[str, str]] = []
  for number, line in enumerate(text.splitlines(), start=1):
    stripped = line.strip().rstrip(',')
    if not stripped:
      continue
    if not stripped.startswith('{'):
      stripped = '{' + stripped
    if not stripped.endswith('}'):
      stripped += '}'
    try:
      pairs.extend(_pairs_one_object(stripped, f'{uri} line {number}'))
    except json.JSONDecodeError as e:
      raise ManifestError(f'{uri} line {number}: not valid JSON ({e.msg})') from None
  return pairs


def parse_manifest(text: str | bytes, uri: str) -> list[tuple[str, str]]:
  """Parses a manifest's text into ``(input_uri, result_uri)`` pairs, in file order.

  Args:
    text: the manifest's content.
    uri: where it was read from; every error message names it.

  Returns:
    The pairs with keys and values stripped of surrounding whitespace.

  Raises:
    ManifestError: invalid JSON (with the line), a non-string value, a duplicate input,
      an empty manifest, or a relative URI.
  """
  if isinstance(text, bytes):
    try:
      text = text.decode('utf-8-sig')
    except UnicodeDecodeError as e:
      raise ManifestError(f'{uri}: not UTF-8 text ({e.reason} at byte {e.start})') from None
  if not text.strip():
    raise ManifestError(f'{uri}: the manifest is empty')
  try:
    pairs = _pairs_one_object(text, uri)
  except json.JSONDecodeError as whole_error:
    try:
      pairs = _pairs_per_line(text, uri)
    except ManifestError:
      raise ManifestError(
          f'{uri} line {whole_error.lineno} column {whole_error.colno}: '
          f'not valid JSON ({whole_error.msg})') from None
  if not pairs:
    raise ManifestError(f'{uri}: the manifest names no shards')
  seen: dict[str, str] = {}
  result: list[tuple[str, str]] = []
  for key, value in pairs:
    if not isinstance(value, str):
      raise ManifestError(
          f'{uri}: the result for {key.strip()!r} is a {type(value).__name__}, not a URI string')
    key, value = key.strip(), value.strip()
    if not key or not value:
      raise ManifestError(f'{uri}: an empty URI in the pair {key!r}: {value!r}')
    for each in (key, value):
      if not is_absolute_uri(each):
        raise ManifestError(f'{uri}: {each!r} is a relative URI; a manifest names absolute URIs')
    if key in seen:
      raise ManifestError(f'{uri}: input {key!r} appears more than once')
    seen[key] = value
    result.append((key, value))
  return result


def rebase(uri: str, rules: list[tuple[str, str]]) -> str:
  """Applies the first ``FROM=TO`` prefix rule that matches ``uri``."""
  for old, new in rules:
    if uri.startswith(old):
      return new + uri[len(old):]
  return uri


def parse_rebase_rules(values: list[str] | None) -> list[tuple[str, str]]:
  rules = []
  for value in values or []:
    old, _, new = value.partition('=')
    rules.append((old, new))
  return rules


def shards_of(text: str | bytes, uri: str, rules: list[tuple[str, str]] = ()) -> list[Shard]:
  """The manifest's shards, with ``--rebase_uri`` rules applied to the URIs it names."""
  bp_id = batch_prediction_id(uri)
  return [
      Shard(bp_id, uri, rebase(i, list(rules)), rebase(r, list(rules)))
      for i, r in parse_manifest(text, uri)
  ]
