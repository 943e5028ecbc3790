"""Amazon ML ``.schema`` files (``FORMAT.md`` section 6): column names, order and header flag."""

from __future__ import annotations

import dataclasses
import json
import posixpath


class SchemaError(ValueError):
  """A schema file that cannot be used; the message names it."""


@dataclasses.dataclass(frozen=True)
class AmlSchema:
  uri: str
  attributes: tuple[tuple[str, str], ...]  # (name, attributeType), in CSV column order
  contains_header: bool
  row_id: str | None = None
  target: str | None = None
  excluded: tuple[str, ...] = ()

  @property
  def names(self) -> tuple[str, ...]:
    return tuple(name for name, _ in self.attributes)


def _first(obj: dict, *keys):
  for key in keys:
    if key in obj:
      return obj[key]
  return None


def parse_schema(text: str | bytes, uri: str) -> AmlSchema:
  """Parses a schema, accepting the legacy key names (``fieldName``, ``targetFieldName``, ...)."""
  try:
    obj = json.loads(text)
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise SchemaError(f'{uri}: not valid JSON ({e})') from None
  if not isinstance(obj, dict):
    raise SchemaError(f'{uri}: expected a JSON object')
  raw = obj.get('attributes')
  if not isinstance(raw, list) or not raw:
    raise SchemaError(f'{uri}: "attributes" must be a non-empty list')
  attributes = []
  for i, attribute in enumerate(raw, start=1):
    name = _first(attribute, 'attributeName', 'fieldName') if isinstance(attribute, dict) else None
    kind = _first(attribute, 'attributeType', 'fieldType') if isinstance(attribute, dict) else None
    if not isinstance(name, str) or not name or not isinstance(kind, str):
      raise SchemaError(f'{uri}: attribute {i} has no attributeName/attributeType')
    attributes.append((name, kind.upper()))
  names = [name for name, _ in attributes]
  if len(set(names)) != len(names):
    raise SchemaError(f'{uri}: an attribute name appears twice')
  header = obj.get('dataFileContainsHeader', False)
  if not isinstance(header, bool):
    raise SchemaError(f'{uri}: "dataFileContainsHeader" must be true or false')
  excluded = _first(obj, 'excludedAttributeNames', 'excludedVariableNames') or []
  return AmlSchema(
      uri=uri, attributes=tuple(attributes), contains_header=header,
      row_id=_first(obj, 'rowId', 'recordAnnotationFieldName'),
      target=_first(obj, 'targetAttributeName', 'targetFieldName'),
      excluded=tuple(excluded))


def candidate_uris(input_uri: str) -> list[str]:
  """Where a schema for an input shard may sit: ``<file>.schema``, then ``<prefix>/.schema``."""
  return [input_uri + '.schema', posixpath.join(posixpath.dirname(input_uri), '.schema')]


def find_schema(input_uri: str, storage) -> AmlSchema | None:
  """The schema beside an input shard, or None when there is none."""
  for uri in candidate_uris(input_uri):
    if storage.exists(uri):
      return parse_schema(storage.read_bytes(uri), uri)
  return None
