"""Claims: which of several runs joins a batch prediction, decided by the object store itself.

Two scheduled runs that start together both find the same new batch predictions. Before a run
joins one, it creates a small claim object beside that batch prediction's outputs
(``<output>/<id>/_predjoin_claim.json``, :func:`claim_uri`), and only with the store's own
create-if-absent precondition, so exactly one creator succeeds whatever the timing:

- S3: ``PutObject`` with ``If-None-Match: *`` (HTTP 412 when the key exists);
- GCS: an upload with ``ifGenerationMatch=0`` (412 when the object exists);
- local paths: ``open(O_CREAT | O_EXCL)``.

A run that crashed never releases its claim. A claim older than ``stale_after_s`` (by the
store's own modification time) is taken over, again conditionally: the new claim replaces the
old one only if the old one is still the object that was judged stale (S3 ``If-Match`` on its
ETag, GCS ``ifGenerationMatch`` on its generation, local: under an ``flock`` of its directory,
the same inode and modification time), so two runs that both find it stale cannot both
take it. :func:`release` deletes a claim only if it is still the owner's, the same way, so a run
that was judged dead and comes back never deletes the claim of the run that took over.

``stale_after_s`` must be longer than a batch prediction's longest join (and than any clock
skew between the machine and the store): a claim that is only slow, not dead, would be taken
over and the batch prediction joined twice at once.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import os
import socket
import time

from transforms.io.storage import Storage, StorageError, local_path, redact

_LOG = logging.getLogger('predjoin')

CLAIM = '_predjoin_claim.json'  # beside a batch prediction's outputs: <output>/<id>/CLAIM
_ATTEMPTS = 4  # create, or take over, after a claim vanished or changed under us


def claim_uri(unit_output_prefix: str) -> str:
  """Where the claim of the batch prediction whose outputs go to ``unit_output_prefix`` is."""
  return unit_output_prefix.rstrip('/') + '/' + CLAIM


@dataclasses.dataclass(frozen=True)
class Claim:
  """A claim as read from the store: who holds it, since when (the store's modification time,
  epoch seconds), and ``token``, what a conditional overwrite or delete must match (an S3 ETag,
  a GCS generation, a local inode and modification time)."""

  owner: str | None
  modified: float
  token: str
  body: dict

  def age(self, now: float) -> float:
    return now - self.modified


def claim_body(owner: str, now: float | None = None) -> bytes:
  """The claim's content: who holds it and since when, for the people reading the store."""
  stamp = datetime.datetime.fromtimestamp(time.time() if now is None else now, datetime.UTC)
  return (json.dumps({'owner': owner, 'claimed_at': stamp.isoformat(timespec='seconds'),
                      'host': socket.gethostname(), 'pid': os.getpid()}, indent=2) + '\n').encode()


def _scheme(uri: str) -> str:
  return uri.partition('://')[0].lower() if '://' in uri else ''


def _bucket_key(uri: str) -> tuple[str, str]:
  bucket, _, key = uri.partition('://')[2].partition('/')
  return bucket, key


def _owner_of(data: bytes) -> tuple[str | None, dict]:
  try:
    body = json.loads(data.decode('utf-8'))
  except (UnicodeDecodeError, ValueError):  # being written (local), or not ours: nobody's
    return None, {}
  return (body.get('owner') if isinstance(body, dict) else None), \
      (body if isinstance(body, dict) else {})


# Backends: create (if absent), read, replace (if unchanged), delete (if unchanged). -----------


class _S3:
  def __init__(self, storage: Storage):
    self.client = storage.s3_client()

  @staticmethod
  def _lost(error) -> bool:
    """A precondition that did not hold (412), a concurrent conditional write (409), or the
    object gone (404): another run got there first."""
    from botocore.exceptions import ClientError
    if not isinstance(error, ClientError):
      return False
    code = error.response.get('Error', {}).get('Code', '')
    status = error.response.get('ResponseMetadata', {}).get('HTTPStatusCode')
    return code in ('PreconditionFailed', 'ConditionalRequestConflict', 'NoSuchKey') or \
        status in (404, 409, 412)

  def create(self, uri: str, body: bytes) -> bool:
    bucket, key = _bucket_key(uri)
    try:
      self.client.put_object(Bucket=bucket, Key=key, Body=body, IfNoneMatch='*',
                             ContentType='application/json')
      return True
    except Exception as e:
      if self._lost(e):
        return False
      raise

  def read(self, uri: str) -> Claim | None:
    bucket, key = _bucket_key(uri)
    try:
      response = self.client.get_object(Bucket=bucket, Key=key)
    except Exception as e:
      if self._lost(e):
        return None
      raise
    owner, body = _owner_of(response['Body'].read())
    return Claim(owner, response['LastModified'].timestamp(), response['ETag'], body)

  def replace(self, uri: str, token: str, body: bytes) -> bool:
    bucket, key = _bucket_key(uri)
    try:
      self.client.put_object(Bucket=bucket, Key=key, Body=body, IfMatch=token,
                             ContentType='application/json')
      return True
    except Exception as e:
      if self._lost(e):
        return False
      raise

  def delete(self, uri: str, token: str) -> bool:
    bucket, key = _bucket_key(uri)
    try:
      self.client.delete_object(Bucket=bucket, Key=key, IfMatch=token)
      return True
    except Exception as e:
      if self._lost(e):
        return False
      if not self._no_conditional_delete(e):
        raise
    # A store without conditional deletes (S3-compatible ones): the owner was checked just
    # before; only a take-over in between, of a claim its owner is releasing, is lost.
    self.client.delete_object(Bucket=bucket, Key=key)
    return True

  @staticmethod
  def _no_conditional_delete(error) -> bool:
    from botocore.exceptions import ClientError
    return isinstance(error, ClientError) and error.response.get('Error', {}).get('Code') in (
        'NotImplemented', 'InvalidArgument', 'InvalidRequest')


class _GCS:
  def __init__(self, storage: Storage):
    self.client = storage.gcs_client()

  def _blob(self, uri: str):
    bucket, key = _bucket_key(uri)
    return self.client.bucket(bucket).blob(key)

  @staticmethod
  def _lost(error) -> bool:
    from google.api_core import exceptions
    return isinstance(error, (exceptions.PreconditionFailed, exceptions.NotFound,
                              exceptions.Conflict))

  def create(self, uri: str, body: bytes) -> bool:
    try:
      self._blob(uri).upload_from_string(body, content_type='application/json',
                                         if_generation_match=0)
      return True
    except Exception as e:
      if self._lost(e):
        return False
      raise

  def read(self, uri: str) -> Claim | None:
    bucket, key = _bucket_key(uri)
    blob = self.client.bucket(bucket).get_blob(key)
    if blob is None:
      return None
    # Taken before the download, which sets them again from its response's headers.
    generation, updated = blob.generation, blob.updated
    try:  # this generation's bytes, or none: the claim changed since it was listed
      data = blob.download_as_bytes(if_generation_match=generation)
    except Exception as e:
      if self._lost(e):
        return None
      raise
    owner, body = _owner_of(data)
    return Claim(owner, updated.timestamp(), str(generation), body)

  def replace(self, uri: str, token: str, body: bytes) -> bool:
    try:
      self._blob(uri).upload_from_string(body, content_type='application/json',
                                         if_generation_match=int(token))
      return True
    except Exception as e:
      if self._lost(e):
        return False
      raise

  def delete(self, uri: str, token: str) -> bool:
    try:
      self._blob(uri).delete(if_generation_match=int(token))
      return True
    except Exception as e:
      if self._lost(e):
        return False
      raise


class _Local:
  """Creation is ``O_EXCL``; a take-over and a release happen under an ``flock`` of the
  claim's directory, so nothing else replaces or deletes the claim between the check of its
  token and the change (a plain create needs no lock: it only succeeds on no claim)."""

  @staticmethod
  def _token(st: os.stat_result) -> str:
    return f'{st.st_ino}:{st.st_mtime_ns}'

  def create(self, uri: str, body: bytes) -> bool:
    path = local_path(uri)
    os.makedirs(os.path.dirname(path) or '.', exist_ok=True)
    try:
      fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
      return False
    with os.fdopen(fd, 'wb') as f:
      f.write(body)
      f.flush()
      os.fsync(f.fileno())
    return True

  def read(self, uri: str) -> Claim | None:
    path = local_path(uri)
    try:
      with open(path, 'rb') as f:
        st = os.fstat(f.fileno())
        data = f.read()
    except FileNotFoundError:
      return None
    owner, body = _owner_of(data)
    return Claim(owner, st.st_mtime, self._token(st), body)

  def _locked(self, uri: str, token: str, change) -> bool:
    import fcntl
    path = local_path(uri)
    # The lock is the claim's directory's own (flock on a directory's descriptor): no lock file
    # is left beside the outputs.
    directory = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    try:
      fcntl.flock(directory, fcntl.LOCK_EX)
      try:
        if self._token(os.stat(path)) != token:
          return False
      except FileNotFoundError:
        return False
      change(path)
      return True
    finally:
      os.close(directory)  # releases the lock

  def replace(self, uri: str, token: str, body: bytes) -> bool:
    def write(path):
      temporary = f'{path}.{os.getpid()}.tmp'
      with open(temporary, 'wb') as f:
        f.write(body)
        f.flush()
        os.fsync(f.fileno())
      os.replace(temporary, path)
    return self._locked(uri, token, write)

  def delete(self, uri: str, token: str) -> bool:
    return self._locked(uri, token, os.remove)


def _backend(uri: str, storage: Storage | None):
  scheme = _scheme(uri)
  if scheme == 's3':
    return _S3(storage or Storage())
  if scheme in ('gs', 'gcs'):
    return _GCS(storage or Storage())
  if local_path(uri) is None:
    raise StorageError(f'cannot claim {redact(uri)}: claims need s3://, gs:// or a local path')
  return _Local()


def read_claim(uri: str, storage: Storage | None = None) -> Claim | None:
  """The claim at ``uri``, or None when there is none."""
  return _backend(uri, storage).read(uri)


def try_claim(uri: str, owner: str, *, stale_after_s: float, storage: Storage | None = None,
              now: float | None = None) -> bool:
  """Claims ``uri`` for ``owner``; True when ``owner`` holds it now.

  Creates the claim only if there is none (the store's precondition, module docstring). An
  existing claim of ``owner``'s own (a retried request whose first attempt did create it) is
  kept; another's is taken over only when it is older than ``stale_after_s`` seconds, and then
  only by one of the runs that find it so. ``now``: epoch seconds (tests); the clock otherwise.
  """
  backend = _backend(uri, storage)
  body = claim_body(owner, now)
  for _ in range(_ATTEMPTS):
    if backend.create(uri, body):
      return True
    current = backend.read(uri)
    if current is None:  # released since: try to create it again
      continue
    if current.owner == owner:
      return True
    age = current.age(time.time() if now is None else now)
    if age < stale_after_s:
      return False
    if backend.replace(uri, current.token, body):
      _LOG.warning('took over the claim %s of %s, %.0f s old (stale after %.0f s)',
                   redact(uri), current.owner, age, stale_after_s)
      return True
    # Replaced or released by another run meanwhile: look again (a fresh claim stops us).
  return False


def release(uri: str, owner: str, storage: Storage | None = None) -> bool:
  """Deletes the claim at ``uri`` if it is still ``owner``'s; True when it did. A claim taken
  over by another run (this one was judged dead) is left alone."""
  backend = _backend(uri, storage)
  for _ in range(_ATTEMPTS):
    current = backend.read(uri)
    if current is None or current.owner != owner:
      return False
    if backend.delete(uri, current.token):
      return True
  return False
