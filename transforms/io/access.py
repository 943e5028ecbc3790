"""Access limits: a manifest is data, not trust. Pure functions, no Beam, no network.

Every URI a manifest names (after ``--rebase_uri``) must lie under an allowed prefix before
anything it names is read:

- by default, the manifest's own bucket (``s3://``, ``gs://``), or, for a local manifest, the
  manifest's own directory and everything below it;
- each ``--allowed_prefix`` (repeatable);
- each ``--rebase_uri`` target: the user typed it, so it is trusted like an allowed prefix.

Refused, with an :class:`AccessError` that names the manifest and the URI (redacted):

- any scheme but ``s3://``, ``gs://``, ``file://`` and plain local paths (``http://``,
  ``https://``, ``ftp://``, ``s3a://``, ...);
- a bucket that is not a plain bucket name: smart_open reads credentials and even another
  endpoint from ``s3://id:secret@host:port@bucket/key``, so user-info, ports and the like are
  refused outright;
- ``.`` and ``..`` segments in an object key: S3 and GCS keep them literally, but an HTTP layer
  (proxy, path-style endpoint) may resolve them and land in another prefix or bucket;
- a local path outside the allowed directories once resolved the way the file will be opened
  (``~`` expanded, ``..`` and symbolic links resolved by ``os.path.realpath``);
- control characters anywhere.

Prefixes match on segment boundaries: ``s3://b/out`` allows ``s3://b/out/x`` but not
``s3://b/out-evil/x``; a trailing slash makes no difference.
"""

from __future__ import annotations

import dataclasses
import os
import re
import urllib.parse
from collections.abc import Iterable

from transforms.io.storage import redact

OBJECT_SCHEMES = ('s3', 'gs')
LOCAL = 'local'

# S3 and GCS bucket names: lowercase letters, digits, '.', '-' (GCS also '_'), 3 to 222 chars.
_BUCKET = re.compile(r'^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$')
_CONTROL = re.compile(r'[\x00-\x1f\x7f]')
_SHOWN = 3  # refused URIs listed in one error message


class AccessError(ValueError):
  """A URI outside the allowed prefixes, or one that cannot be checked; says which and why."""


@dataclasses.dataclass(frozen=True)
class Location:
  """Where a URI points: ``kind`` is ``s3``, ``gs`` or ``local``; ``parts`` are path segments."""

  kind: str
  bucket: str
  parts: tuple[str, ...]

  def is_under(self, prefix: Location) -> bool:
    n = len(prefix.parts)
    return (self.kind, self.bucket) == (prefix.kind, prefix.bucket) and \
        self.parts[:n] == prefix.parts

  def __str__(self) -> str:
    path = '/'.join(self.parts)
    if self.kind == LOCAL:
      return '/' + path + ('/' if path else '')
    return f'{self.kind}://{self.bucket}/' + (path + '/' if path else '')


def _scheme(uri: str) -> str:
  # The same test smart_open uses to pick a transport, so the check sees what will be opened.
  return urllib.parse.urlsplit(uri).scheme


def local_path(uri: str) -> str:
  """The file a local URI opens, as smart_open opens it, with ``..`` and symlinks resolved."""
  path = uri[len('file://'):] if uri.startswith('file://') else uri
  return os.path.realpath(os.path.expanduser(path))


def locate(uri: str) -> Location:
  """Parses ``uri`` into a :class:`Location`.

  Raises:
    AccessError: an unsupported scheme, a malformed bucket, a ``.``/``..`` key segment or a
      control character; the message says which (with the URI redacted).
  """
  if _CONTROL.search(uri):
    raise AccessError(f'{redact(uri)!r} contains a control character')
  scheme = _scheme(uri)
  if scheme in ('', 'file'):
    path = local_path(uri)
    return Location(LOCAL, '', tuple(p for p in path.split('/') if p))
  if scheme not in OBJECT_SCHEMES:
    raise AccessError(f'{redact(uri)}: the scheme {scheme}:// is not allowed '
                      '(only s3://, gs:// and local paths)')
  marker = scheme + '://'
  if not uri.lower().startswith(marker):
    raise AccessError(f'{redact(uri)}: expected {marker}BUCKET/KEY')
  bucket, _, key = uri[len(marker):].partition('/')
  if not _BUCKET.match(bucket):
    # The bucket text itself is not echoed: it may hold user-info.
    raise AccessError(f'{redact(uri)}: the bucket part is not a plain bucket name '
                      '(no user-info, port or upper case)')
  parts = tuple(key.rstrip('/').split('/')) if key.rstrip('/') else ()
  if any(p in ('.', '..') for p in parts):
    raise AccessError(f'{redact(uri)}: an object key with a "." or ".." segment')
  return Location(scheme, bucket, parts)


def default_prefix(manifest_uri: str) -> Location:
  """The manifest's bucket (object stores) or its own directory (local paths)."""
  where = locate(manifest_uri)
  if where.kind == LOCAL:
    return Location(LOCAL, '', where.parts[:-1])
  return Location(where.kind, where.bucket, ())


@dataclasses.dataclass(frozen=True)
class AccessPolicy:
  """The user's trusted prefixes, resolved at launch; picklable, so workers check the same.

  Build it with :meth:`create`; ``check_shards`` enforces it for one manifest's shards.
  """

  trusted: tuple[Location, ...] = ()

  @classmethod
  def create(cls, allowed_prefixes: Iterable[str] | None = (),
             rebase_rules: Iterable[tuple[str, str]] = ()) -> AccessPolicy:
    """The policy for ``--allowed_prefix`` values and ``--rebase_uri`` rules.

    Raises:
      AccessError: a prefix or rebase target that cannot be trusted as a prefix (say
        ``http://...``); the message names the option.
    """
    trusted = []
    for option, values in (('--allowed_prefix', allowed_prefixes or ()),
                           ('--rebase_uri target', [new for _, new in rebase_rules])):
      for value in values:
        try:
          trusted.append(locate(value))
        except AccessError as e:
          raise AccessError(f'{option} {e}') from None
    return cls(tuple(dict.fromkeys(trusted)))

  def allowed_for(self, manifest_uri: str) -> tuple[Location, ...]:
    return (default_prefix(manifest_uri), *self.trusted)

  def refusal(self, uri: str, allowed: tuple[Location, ...]) -> str | None:
    """Why ``uri`` may not be read under ``allowed``, or None when it may."""
    try:
      where = locate(uri)
    except AccessError as e:
      return str(e)
    if any(where.is_under(prefix) for prefix in allowed):
      return None
    return f'{redact(uri)} is outside the allowed prefixes'

  def check_shards(self, manifest_uri: str, shards,
                   extra_allowed: tuple[Location, ...] | None = None) -> None:
    """Checks every input and result URI of one manifest's shards, before any is read.

    ``extra_allowed``: the prefixes the source itself lets a run read, instead of the
    manifest's own bucket or directory (a SageMaker job's input bucket and output path).

    Raises:
      AccessError: naming the manifest, the first refused URIs with the reason, the allowed
        prefixes and how to widen them.
    """
    allowed = self.allowed_for(manifest_uri) if extra_allowed is None else \
        (*extra_allowed, *self.trusted)
    refused = []
    for shard in shards:
      for uri in (shard.input_uri, shard.result_uri):
        reason = self.refusal(uri, allowed)
        if reason is not None:
          refused.append(reason)
    if refused:
      shown = '; '.join(refused[:_SHOWN])
      more = f' (and {len(refused) - _SHOWN} more)' if len(refused) > _SHOWN else ''
      raise AccessError(
          f'{redact(manifest_uri)}: refused to read what the manifest names: {shown}{more}. '
          f'Allowed prefixes: {", ".join(redact(str(p)) for p in allowed)}. A manifest is data, '
          'not trust: if you trust this one, add --allowed_prefix PREFIX (repeatable).')


def check_given(uri: str, option: str) -> None:
  """Refuses a user-given manifest location that no storage here may read (``http://``, ...).

  Raises:
    AccessError: naming the option.
  """
  try:
    locate(uri)
  except AccessError as e:
    raise AccessError(f'{option} {e}') from None
