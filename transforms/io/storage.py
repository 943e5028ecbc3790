"""The one storage layer: streaming reads of local, ``s3://`` and ``gs://`` objects.

Reads go through smart_open (streaming; ``.gz`` objects inflated by ISA-L's igzip). Writes,
globs and the record sinks use Beam's ``FileSystems``, which reads the same pipeline options,
so reads and writes, launcher and workers, all talk to the same endpoints with the same
credentials:

- S3: Beam's own ``S3Options`` (``--s3_endpoint_url``, ``--s3_region_name``,
  ``--s3_access_key_id``/``--s3_secret_access_key``/``--s3_session_token``, ``--s3_verify``,
  ``--s3_disable_ssl``) when given, else boto3's standard chain (``AWS_*`` environment,
  ``~/.aws`` profile, instance role).
- GCS: Google Application Default Credentials; ``STORAGE_EMULATOR_HOST`` is honoured by the
  google-cloud-storage client for an emulator.

Transient errors are retried by the client libraries: botocore in ``standard`` retry mode
(``AWS_RETRY_MODE``/``AWS_MAX_ATTEMPTS`` override it) retries HTTP 500/503, throttling and
connection errors with backoff; smart_open re-opens an S3 body cut short at the byte it reached;
google-cloud-storage retries 429/5xx and connection errors. A missing object is not retried: it
fails at once with a :class:`StorageError` that names it.

Nothing here prints a credential: :func:`redact` takes user-info, secret query parameters
(signed URLs) and AWS access key IDs out of any text before it reaches a log, a dead letter or
the summary.
"""

from __future__ import annotations

import dataclasses
import io
import os
import re
import uuid
import zlib

import smart_open
from isal import igzip, isal_zlib

_SECRET_QUERY = re.compile(
    r'(?i)([?&;](?:x-amz-[a-z0-9-]*|x-goog-[a-z0-9-]*|signature|sig|[a-z_]*token|'
    r'[a-z_]*access_?key[a-z_]*|awsaccesskeyid|googleaccessid|[a-z_]*secret[a-z_]*|'
    r'credentials?|key|api_?key|password|passwd|pwd|auth|authorization)=)[^&;\s"\'<>]*')
# scheme://user:secret@host/... anywhere in a text; greedy up to the last '@' before the path,
# so smart_open's s3://id:secret@host:port@bucket/key form loses all of its user-info.
_USERINFO = re.compile(r'(\b[A-Za-z][A-Za-z0-9+.-]*://)[^/\s"\'<>]*@')
_AWS_KEY_ID = re.compile(r'\b(?:AKIA|ASIA|AIDA|AROA)[A-Z0-9]{16}\b')

DEFAULT_MAX_ATTEMPTS = 8
# How open() decompresses: gzip when the name ends in .gz (smart_open's own default), or gzip.
BY_NAME, GZIP = smart_open.compression.INFER_FROM_EXTENSION, '.gz'


def redact(text: str) -> str:
  """``text`` (a URI, or a message naming URIs) fit for logs and outputs.

  User-info, secret query parameters (signatures, tokens, keys) and AWS access key IDs are
  replaced by ``***``.
  """
  text = _USERINFO.sub(r'\1***@', text)
  text = _SECRET_QUERY.sub(r'\1***', text)
  return _AWS_KEY_ID.sub('***', text)


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
  s3_disable_ssl: bool = False
  s3_api_version: str | None = None
  # Whether workers hand these settings to Beam's FileSystems themselves
  # (``configure_filesystems``): where the runner gives its workers no pipeline options.
  set_worker_filesystems: bool = False

  @classmethod
  def from_options(cls, options, set_worker_filesystems: bool = False) -> StorageConfig:
    from apache_beam.options.pipeline_options import S3Options
    s3 = options.view_as(S3Options)
    return cls(s3.s3_endpoint_url, s3.s3_region_name, s3.s3_access_key_id,
               s3.s3_secret_access_key, s3.s3_session_token, s3.s3_verify,
               bool(s3.s3_disable_ssl), s3.s3_api_version, set_worker_filesystems)

  def configure_filesystems(self) -> None:
    """On a worker of a runner that gives its workers no pipeline options (Beam's DaskRunner;
    ``set_worker_filesystems``), hands Beam's FileSystems this job's S3 settings, so the files
    written there reach the endpoint the reads use. Elsewhere Beam's SDK harness has handed it
    the job's own options, and this does nothing."""
    if not self.set_worker_filesystems:
      return
    from apache_beam.io.filesystems import FileSystems
    from apache_beam.options.pipeline_options import PipelineOptions
    settings = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.name.startswith('s3_')}
    FileSystems.set_options(PipelineOptions.from_dictionary(
        {name: value for name, value in settings.items() if value not in (None, False)}))

  def __repr__(self):  # never print credentials
    return f'StorageConfig(s3_endpoint_url={redact(self.s3_endpoint_url or "")!r}, ' \
           f's3_region_name={self.s3_region_name!r})'


def _verify(value: str | None):
  """Beam's ``--s3_verify`` text as boto3 wants it: None, a bool, or a CA bundle path."""
  if value is None:
    return None
  if value.strip().lower() in ('false', '0', 'no', 'off'):
    return False
  if value.strip().lower() in ('true', '1', 'yes', 'on'):
    return True
  return value


def s3_retry_config() -> dict:
  """botocore retries: standard mode, 8 attempts, unless AWS_RETRY_MODE/AWS_MAX_ATTEMPTS say."""
  return {'mode': os.environ.get('AWS_RETRY_MODE') or 'standard',
          'max_attempts': int(os.environ.get('AWS_MAX_ATTEMPTS') or DEFAULT_MAX_ATTEMPTS)}


class Storage:
  """Opens objects for streaming reads. Create once per DoFn (in ``setup``), not per element."""

  def __init__(self, config: StorageConfig = StorageConfig()):
    self._config = config
    self._s3_client = None
    self._gcs_client = None

  def s3_client(self):
    """The boto3 S3 client of this storage (made on first use)."""
    if self._s3_client is None:
      import boto3
      from botocore.config import Config
      c = self._config
      self._s3_client = boto3.session.Session().client(
          's3', endpoint_url=c.s3_endpoint_url, region_name=c.s3_region_name,
          api_version=c.s3_api_version, use_ssl=not c.s3_disable_ssl, verify=_verify(c.s3_verify),
          aws_access_key_id=c.s3_access_key_id, aws_secret_access_key=c.s3_secret_access_key,
          aws_session_token=c.s3_session_token,
          config=Config(retries=s3_retry_config(), connect_timeout=20, read_timeout=60))
    return self._s3_client

  def gcs_client(self):
    """The google-cloud-storage client of this storage (made on first use): Application
    Default Credentials, or ``STORAGE_EMULATOR_HOST``."""
    if self._gcs_client is None:
      from google.cloud import storage as gcs
      self._gcs_client = gcs.Client()
    return self._gcs_client

  def _transport_params(self, uri: str) -> dict:
    scheme = uri.partition('://')[0].lower() if '://' in uri else ''
    if scheme == 's3':
      return {'client': self.s3_client()}
    if scheme in ('gs', 'gcs'):
      return {'client': self.gcs_client()}
    return {}

  def open(self, uri: str, compression: str = BY_NAME):
    """A binary file object streaming ``uri``, gunzipped when its name ends in ``.gz`` (or,
    with ``compression`` GZIP, whatever its name).

    Raises:
      StorageError: the object does not exist or cannot be opened; the message names it.
        Errors while reading are OSError too: client-library errors become StorageError.
    """
    gunzip = compression == GZIP or (compression == BY_NAME and uri.lower().endswith('.gz'))
    try:
      f = smart_open.open(uri, 'rb', compression='disable' if gunzip else compression,
                          transport_params=self._transport_params(uri))
    except Exception as e:  # smart_open raises per-backend types; normalise them here
      raise StorageError(f'cannot open {redact(uri)}: {_describe(e)}') from e
    if gunzip:  # ISA-L inflates 2.3x faster than zlib; the same stream checks (CRC, length)
      return _Reader(igzip.IGzipFile(fileobj=f, mode='rb'), uri, underlying=f)
    return _Reader(f, uri)

  def read_bytes(self, uri: str, limit: int | None = None) -> bytes:
    with self.open(uri) as f:
      return f.read() if limit is None else f.read(limit)

  def list(self, prefix: str) -> list[str]:
    """The URIs of the objects whose URI starts with ``prefix``, sorted: a plain string prefix,
    as S3 and GCS list (``s3://b/in/data`` also finds ``s3://b/in/data-2/x``); local paths the
    same way, files only.

    Raises:
      StorageError: the listing failed; the message names the prefix.
    """
    scheme = prefix.partition('://')[0].lower() if '://' in prefix else ''
    try:
      if scheme == 's3':
        bucket, _, key = prefix[len('s3://'):].partition('/')
        pages = self.s3_client().get_paginator('list_objects_v2').paginate(Bucket=bucket,
                                                                            Prefix=key)
        return sorted(f's3://{bucket}/{item["Key"]}' for page in pages
                      for item in page.get('Contents', []))
      if scheme in ('gs', 'gcs'):
        bucket, _, key = prefix[len(scheme) + 3:].partition('/')
        return sorted(f'{scheme}://{bucket}/{blob.name}'
                      for blob in self.gcs_client().list_blobs(bucket, prefix=key))
      root = local_path(prefix)
      directory = root if root.endswith('/') else os.path.dirname(root) or '.'
      found = []
      for where, _, names in os.walk(directory):
        found.extend(path for path in (os.path.join(where, name) for name in names)
                     if path.startswith(root))
      return sorted(('file://' + path) if prefix.startswith('file://') else path
                    for path in found)
    except Exception as e:  # noqa: BLE001  # each backend raises its own: name the prefix
      raise StorageError(f'cannot list {redact(prefix)}: {_describe(e)}') from e

  def exists(self, uri: str) -> bool:
    try:
      with self.open(uri, compression='disable') as f:
        f.read(1)
      return True
    except StorageError as e:
      if _is_not_found(e.__cause__):
        return False
      raise


# What a reader may raise as it is: the join handles these (a corrupt gzip stream, a local error).
_PASS_THROUGH = (OSError, EOFError, zlib.error)


class _Reader:
  """A smart_open file whose read errors are OSError: client-library errors become StorageError.

  botocore and google-api-core errors are not OSError; without this a body that still fails
  after the client's retries would escape the join's error handling and fail the whole bundle.
  """

  def __init__(self, f, uri: str, underlying=None):
    self._f = f
    self._uri = uri
    self._underlying = underlying  # the compressed stream under a decompressing ``f``

  def _guard(self, method, *args):
    try:
      return method(*args)
    except _PASS_THROUGH:
      raise
    except isal_zlib.error as e:  # a corrupt deflate stream: what zlib would raise
      raise zlib.error(str(e)) from e
    except Exception as e:
      raise StorageError(f'cannot read {redact(self._uri)}: {_describe(e)}') from e

  def read(self, size: int = -1) -> bytes:
    return self._guard(self._f.read, size)

  def readline(self, size: int = -1) -> bytes:
    return self._guard(self._f.readline, size)

  def readinto(self, buffer) -> int:
    return self._guard(self._f.readinto, buffer)

  def close(self) -> None:
    for f in (self._f, self._underlying):
      try:
        if f is not None:
          f.close()
      except Exception:  # noqa: S110  # closing a reader must not mask the error that ended it
        pass

  @property
  def closed(self) -> bool:
    return self._f.closed

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()
    return False

  def __getattr__(self, name):
    return getattr(self._f, name)


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


# Output layout ---------------------------------------------------------------------------------
#
# Records, dead letters and resubmit lines are written per shard (``transforms/io/shard_files.py``):
# each file first under ``<output>/beam-temp-<dir>-<uuid>/``, then renamed to
# ``<output>/<dir>/part-<name>``, so temporary files are never under the output directories,
# even after a failed run.

OUTPUT_DIRS = ('records', 'dead_letter', 'resubmit')


def local_path(uri: str) -> str | None:
  """The local path a local URI (a plain path or ``file://``) names; None for object stores."""
  if '://' in uri and not uri.startswith('file://'):
    return None
  return uri[len('file://'):] if uri.startswith('file://') else uri


def prepare_output(output: str, names=OUTPUT_DIRS) -> None:
  """Makes the output directories of a local output (object stores have none to make)."""
  root = local_path(output)
  if root is None:
    return
  for name in names:
    os.makedirs(os.path.join(root, name), exist_ok=True)


def check_writable(output: str, names=OUTPUT_DIRS, probe: bool = True) -> None:
  """Makes a local output's directories and, with ``probe``, proves the prefix can be written:
  a small file is created under it and deleted again (local, ``s3://`` and ``gs://`` alike).

  Raises:
    StorageError: the prefix cannot be written (a read-only directory, a missing permission,
      no such bucket); the message names it and says why.
  """
  import logging

  from apache_beam.io.filesystems import FileSystems
  # Beam's S3 and GCS writers log a failed upload's traceback before they raise; the error
  # below says it in one line.
  logging.disable(logging.ERROR)
  try:
    prepare_output(output, names)
    if probe:
      check = FileSystems.join(output, f'.predjoin-write-check-{uuid.uuid4().hex}')
      with FileSystems.create(check) as f:
        f.write(b'predjoin checks that it can write here\n')
      FileSystems.delete([check])
  except Exception as e:  # noqa: BLE001  # every filesystem raises its own: say it in one line
    cause = e
    inner = getattr(e, 'exception_details', None)  # Beam's BeamIOError wraps the real one
    if isinstance(inner, dict) and inner:
      cause = next(iter(inner.values()))
    raise StorageError(f'cannot write to --output {redact(output)}: '
                       f'{_describe(cause).splitlines()[0]}') from None
  finally:
    logging.disable(logging.NOTSET)


SUMMARY = 'summary.json'


def remove_summary(output: str) -> bool:
  """Deletes ``<output>/summary.json`` when it exists; returns whether it did.

  A run calls this before it starts: its files replace an earlier run's shard by shard, so an
  earlier summary would list files that are no longer all there, or not all of this run's.
  While a run is going, and after one fails, the output has no summary; once it has one, the
  files it lists are complete.
  """
  from apache_beam.io.filesystems import FileSystems
  uri = FileSystems.join(output, SUMMARY)
  if not FileSystems.exists(uri):
    return False
  FileSystems.delete([uri])
  return True


def _match(pattern: str) -> list[str]:
  from apache_beam.io.filesystem import BeamIOError
  from apache_beam.io.filesystems import FileSystems
  try:
    return [m.path for result in FileSystems.match([pattern]) for m in result.metadata_list]
  except BeamIOError:  # S3 answers "nonexistent path" for an empty prefix
    return []


def _same_path(path: str) -> str:
  return path if '://' in path else os.path.abspath(path)


def output_leftovers(output: str, keep, names=OUTPUT_DIRS) -> list[str]:
  """Files of earlier runs under ``<output>/<name>/`` that this run did not write.

  That is every ``part-*`` file not in ``keep`` (an earlier run over other shards, or an older
  predjoin's ``part-00000-of-00002``, leaves files this run does not rewrite) and everything in
  leftover ``beam-temp-*`` directories of failed runs. Other files are never touched.
  """
  from apache_beam.io.filesystems import FileSystems
  keep = {_same_path(k) for k in keep}
  stale = []
  for name in names:
    directory = FileSystems.join(output, name)
    for path in _match(FileSystems.join(directory, '**')):
      relative = _same_path(path)[len(_same_path(directory)) + 1:]
      top = relative.split('/', 1)[0]
      if top.startswith('beam-temp-') or (
          top.startswith('part-') and '/' not in relative and _same_path(path) not in keep):
        stale.append(path)
    stale.extend(_match(FileSystems.join(output, f'beam-temp-{name}-*') + '/**'))
  return sorted(set(stale))


def remove_output_leftovers(output: str, keep, names=OUTPUT_DIRS) -> list[str]:
  """Deletes :func:`output_leftovers`; returns what was deleted. Run after the sinks finish."""
  from apache_beam.io.filesystems import FileSystems
  stale = output_leftovers(output, keep, names)
  if stale:
    FileSystems.delete(stale)
  root = local_path(output)
  if root is not None:  # local: the emptied temp directories
    import glob
    import shutil
    for name in names:
      for directory in glob.glob(os.path.join(glob.escape(root), f'beam-temp-{name}-*')) + \
          glob.glob(os.path.join(glob.escape(root), name, 'beam-temp-*')):
        shutil.rmtree(directory, ignore_errors=True)
  return stale
