"""The one storage layer: streaming reads of local, ``s3://`` and ``gs://`` objects.

Reads go through smart_open (streaming, transparent gzip by extension). S3 endpoint, region and
credentials come from Beam's own ``S3Options`` when given, else from boto3's standard chain, so a
Dataflow worker is configured exactly like the launcher. Writes and globs use Beam's
``FileSystems``.
"""

from __future__ import annotations

import dataclasses
import io
import re

import smart_open

_SECRET_QUERY = re.compile(
    r'(?i)([?&](?:x-amz-[a-z-]*|signature|sig|token|access_?key[a-z_]*|secret[a-z_]*|'
    r'credential|key|password)=)[^&\s]*')
_USERINFO = re.compile(r'(^[A-Za-z][A-Za-z0-9+.-]*://)[^/@\s]*@')


def redact(uri: str) -> str:
  """A URI fit for logs: user-info and secret query parameters replaced by ``***``."""
  return _SECRET_QUERY.sub(r'\1***', _USERINFO.sub(r'\1***@', uri))


class StorageError(IOError):
  """An object that could not be read; the message names it (redacted)."""


@dataclasses.dataclass(frozen=True)
class StorageConfig:
  """Picklable client settings, taken from the pipeline options at construction."""

  s3_endpoint_url: str | None = None
  s3_region_name: str | None = None
  s3_access_key_id: str | None = None
  s3_secret_access_key: str | None = None
  s3_session_token: str | None = None
  s3_verify: str | None = None

  @classmethod
  def from_options(cls, options) -> StorageConfig:
    from apache_beam.options.pipeline_options import S3Options
    s3 = options.view_as(S3Options)
    return cls(s3.s3_endpoint_url, s3.s3_region_name, s3.s3_access_key_id,
               s3.s3_secret_access_key, s3.s3_session_token, s3.s3_verify)

  def __repr__(self):  # never print credentials
    return f'StorageConfig(s3_endpoint_url={self.s3_endpoint_url!r}, ' \
           f's3_region_name={self.s3_region_name!r})'


class Storage:
  """Opens objects for streaming reads. Create once per DoFn (in ``setup``), not per element."""

  def __init__(self, config: StorageConfig = StorageConfig()):
    self._config = config
    self._s3_client = None

  def _transport_params(self, uri: str) -> dict:
    if not uri.startswith('s3://'):
      return {}
    if self._s3_client is None:
      import boto3
      from botocore.config import Config
      c = self._config
      verify = None if c.s3_verify is None else c.s3_verify not in ('false', 'False', '0')
      self._s3_client = boto3.session.Session().client(
          's3', endpoint_url=c.s3_endpoint_url, region_name=c.s3_region_name,
          aws_access_key_id=c.s3_access_key_id, aws_secret_access_key=c.s3_secret_access_key,
          aws_session_token=c.s3_session_token, verify=verify,
          config=Config(retries={'mode': 'standard', 'max_attempts': 8}))
    return {'client': self._s3_client}

  def open(self, uri: str, compression: str = smart_open.compression.INFER_FROM_EXTENSION):
    """A binary file object streaming ``uri``, gunzipped when its name ends in ``.gz``.

    Raises:
      StorageError: the object does not exist or cannot be opened; the message names it.
    """
    try:
      return smart_open.open(uri, 'rb', compression=compression,
                             transport_params=self._transport_params(uri))
    except Exception as e:  # smart_open raises per-backend types; normalise them here
      raise StorageError(f'cannot open {redact(uri)}: {_describe(e)}') from e

  def read_bytes(self, uri: str, limit: int | None = None) -> bytes:
    with self.open(uri) as f:
      return f.read() if limit is None else f.read(limit)

  def exists(self, uri: str) -> bool:
    try:
      with self.open(uri, compression='disable') as f:
        f.read(1)
      return True
    except StorageError as e:
      if _is_not_found(e.__cause__):
        return False
      raise


def _is_not_found(error: BaseException | None) -> bool:
  if isinstance(error, FileNotFoundError):
    return True
  text = f'{type(error).__name__} {error}'
  return any(word in text for word in ('NoSuchKey', 'Not Found', 'NotFound', '404', 'NoSuchBucket'))


def _describe(error: BaseException) -> str:
  if isinstance(error, FileNotFoundError):
    return 'no such file'
  if _is_not_found(error):
    return 'no such object'
  return redact(f'{type(error).__name__}: {error}')


def describe(error: BaseException) -> str:
  """A one-line description of a read error fit for the summary and dead letter."""
  if isinstance(error, StorageError):
    return str(error)
  return _describe(error)


def write_text(uri: str, text: str) -> None:
  """Writes a small text object through Beam's FileSystems (local, s3://, gs://)."""
  from apache_beam.io.filesystems import FileSystems
  with FileSystems.create(uri, mime_type='application/json') as f:
    f.write(text.encode('utf-8'))


def read_text(uri: str) -> str:
  from apache_beam.io.filesystems import FileSystems
  with FileSystems.open(uri, compression_type='uncompressed') as f:
    return io.TextIOWrapper(f, encoding='utf-8').read()
