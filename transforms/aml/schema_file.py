"""Amazon ML ``.schema`` files (``docs/amazon-ml-format.md`` section 6): column names, order, types, header flag.

A schema is found beside an input shard (``<file>.schema``, or ``<prefix>/.schema``) or given
with ``--schema URI``. The legacy key names (``fieldName``, ``fieldType``, ``targetFieldName``,
``recordAnnotationFieldName``, ``excludedVariableNames``) are read like the current ones.
"""

from __future__ import annotations

import dataclasses
import json
import posixpath

BINARY, CATEGORICAL, NUMERIC, TEXT = 'BINARY', 'CATEGORICAL', 'NUMERIC', 'TEXT'
SEQUENCES = ('WEIGHTED_INT_SEQUENCE', 'WEIGHTED_STRING_SEQUENCE')
TYPES = (BINARY, CATEGORICAL, NUMERIC, TEXT, *SEQUENCES)


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
  text: str = ''  # the file as read, for the copy under resubmit/

  @property
  def names(self) -> tuple[str, ...]:
    return tuple(name for name, _ in self.attributes)

  def type_of(self, name: str) -> str | None:
    return dict(self.attributes).get(name)

  def output_type(self, name: str) -> str:
    """The attribute type that decides the output type of a column.

    Excluded attributes keep their text: the service ignored them, so their declared type was
    never enforced and a value that does not fit it is not an error. The rowId attribute keeps
    its text too: it identifies a row, and a NUMERIC ID typed as a double would lose digits
    above 2**53 (9007199254740993 would become 9007199254740992).
    """
    if name in self.excluded or name == self.row_id:
      return TEXT
    return self.type_of(name) or TEXT

  def same_columns(self, other: AmlSchema) -> bool:
    return (self.attributes, self.excluded) == (other.attributes, other.excluded)


def _first(obj: dict, *keys):
  for key in keys:
    if key in obj:
      return obj[key]
  return None


def _optional_name(obj: dict, uri: str, names: list[str], *keys) -> str | None:
  value = _first(obj, *keys)
  if value is None or value == '':
    return None
  if not isinstance(value, str) or value not in names:
    raise SchemaError(f'{uri}: "{keys[0]}" {value!r} is not one of the attributes')
  return value


def parse_schema(text: str | bytes, uri: str) -> AmlSchema:
  """Parses a schema, accepting the legacy key names (``fieldName``, ``targetFieldName``, ...).

  Raises:
    SchemaError: not JSON, no attributes, an unknown attribute type, a repeated name, or a
      rowId, target or excluded name that is not an attribute; the message names the file.
  """
  if isinstance(text, bytes):
    try:
      text = text.decode('utf-8-sig')
    except UnicodeDecodeError as e:
      raise SchemaError(f'{uri}: not UTF-8 ({e})') from None
  try:
    obj = json.loads(text)
  except json.JSONDecodeError as e:
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
    if kind.upper() not in TYPES:
      raise SchemaError(f'{uri}: attribute {i} ({name}) has the unknown type {kind!r}; '
                        f'expected one of {", ".join(TYPES)}')
    attributes.append((name, kind.upper()))
  names = [name for name, _ in attributes]
  if len(set(names)) != len(names):
    raise SchemaError(f'{uri}: an attribute name appears twice')
  header = obj.get('dataFileContainsHeader', False)
  if not isinstance(header, bool):
    raise SchemaError(f'{uri}: "dataFileContainsHeader" must be true or false')
  excluded = _first(obj, 'excludedAttributeNames', 'excludedVariableNames') or []
  if not isinstance(excluded, list) or any(name not in names for name in excluded):
    raise SchemaError(f'{uri}: "excludedAttributeNames" must list attribute names, '
                      f'got {excluded!r}')
  return AmlSchema(
      uri=uri, attributes=tuple(attributes), contains_header=header,
      row_id=_optional_name(obj, uri, names, 'rowId', 'recordAnnotationFieldName'),
      target=_optional_name(obj, uri, names, 'targetAttributeName', 'targetFieldName'),
      excluded=tuple(excluded), text=text)


def candidate_uris(input_uri: str) -> list[str]:
  """Where a schema for an input shard may sit: ``<file>.schema``, then ``<prefix>/.schema``."""
  return [input_uri + '.schema', posixpath.join(posixpath.dirname(input_uri), '.schema')]


def find_schema(input_uri: str, storage, read=None) -> AmlSchema | None:
  """The schema beside an input shard, or None when there is none.

  ``read(uri)``: the object's bytes, or None when there is no such object (by default one
  request per candidate through ``storage``; a caller may cache the shared ``.schema``).
  """
  for uri in candidate_uris(input_uri):
    data = (read or (lambda u: read_if_exists(u, storage)))(uri)
    if data is not None:
      return parse_schema(data, uri)
  return None


def read_if_exists(uri: str, storage) -> bytes | None:
  """The object's bytes, or None when it does not exist (other read errors raise)."""
  from transforms.io.storage import StorageError, is_not_found
  try:
    return storage.read_bytes(uri)
  except StorageError as e:
    if is_not_found(e.__cause__):
      return None
    raise


def load_schema(uri: str, storage) -> AmlSchema:
  """The schema at ``uri`` (``--schema``); a missing or unreadable file is a SchemaError."""
  try:
    data = storage.read_bytes(uri)
  except OSError as e:
    raise SchemaError(f'--schema: {e}') from None
  return parse_schema(data, uri)


def with_header_flag(schema: AmlSchema, contains_header: bool) -> str:
  """The schema's text, with ``dataFileContainsHeader`` set as given (unchanged if it already is)."""
  if schema.contains_header == contains_header:
    return schema.text
  obj = json.loads(schema.text)
  obj['dataFileContainsHeader'] = contains_header
  return json.dumps(obj, indent=2) + '\n'
