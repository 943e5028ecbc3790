"""What earlier runs did for a batch prediction: join it, skip it, or do it again.

An incremental run writes each batch prediction (a unit: an Amazon ML manifest, or a SageMaker
transform job) to its own prefix, ``<output>/<id>/``, whose ``summary.json`` records the digest
of the manifest (or job description) it joined under :data:`SUMMARY_KEY`. Before joining a
unit, a run reads that summary and decides (:func:`decide`):

- ``join``: nothing is there yet;
- ``skip``: a complete, successful summary (``ok``, the identity holds, and any BigQuery load
  published) for the same manifest content: the unit is done;
- ``redo``: the earlier run failed, left a summary that says it is incomplete, or left files and
  no summary (it crashed, or is still running: the claim, ``transforms/io/claims.py``, tells
  which), or its summary records no digest;
- ``changed``: a successful earlier run of a manifest whose content has changed since: joined
  again, and reported.

The summary is written last by a run (after every file it lists), so a summary that says ``ok``
is the mark of a complete run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json

from transforms.io.claims import CLAIM
from transforms.io.storage import SUMMARY, Storage, StorageError

SUMMARY_KEY = 'manifest_sha256'
ACTIONS = ('join', 'skip', 'redo', 'changed')


def manifest_digest(data: bytes) -> str:
  """The digest of a manifest's (or a transform job description's) bytes: ``sha256:<hex>``."""
  return 'sha256:' + hashlib.sha256(data).hexdigest()


@dataclasses.dataclass(frozen=True)
class Decision:
  """What to do with a unit (``action``, one of :data:`ACTIONS`), and why, for people."""

  action: str
  reason: str
  previous_digest: str | None = None

  @property
  def joins(self) -> bool:
    return self.action != 'skip'

  def as_dict(self) -> dict:
    return {'action': self.action, 'reason': self.reason,
            'previous_manifest_sha256': self.previous_digest}


def judge(summary: dict | None, digest: str, has_files: bool = False) -> Decision:
  """The decision from an earlier summary (None: there is none) and the manifest's digest now;
  ``has_files``: the unit's prefix holds outputs (ignored when there is a summary)."""
  if summary is None:
    if has_files:
      return Decision('redo', 'outputs but no summary.json: an earlier run did not finish')
    return Decision('join', 'not joined before')
  if not isinstance(summary, dict):
    return Decision('redo', 'the earlier summary.json is not a summary')
  previous = summary.get(SUMMARY_KEY)
  if not summary.get('ok'):
    return Decision('redo', 'the earlier run failed (its summary says "ok": false)', previous)
  if not (summary.get('identity') or {}).get('holds', False):
    return Decision('redo', 'the earlier run did not account for every row', previous)
  loaded = summary.get('bigquery')
  if loaded is not None and not loaded.get('published'):
    return Decision('redo', 'the earlier run did not publish its rows to BigQuery', previous)
  if not previous:
    return Decision('redo', f'the earlier summary records no {SUMMARY_KEY}')
  if previous != digest:
    return Decision('changed', f'the manifest changed since it was joined ({previous} -> '
                    f'{digest})', previous)
  return Decision('skip', 'joined before, complete, same manifest', previous)


def decide(unit_output_prefix: str, digest: str, storage: Storage | None = None,
           ignore: tuple[str, ...] = (CLAIM,)) -> Decision:
  """Reads ``<unit_output_prefix>/summary.json`` and :func:`judge` s it. Names in ``ignore``
  (the unit's claim) do not count as an earlier run's outputs."""
  storage = storage or Storage()
  prefix = unit_output_prefix.rstrip('/') + '/'
  uri = prefix + SUMMARY
  if storage.exists(uri):
    try:
      summary = json.loads(storage.read_bytes(uri).decode('utf-8'))
    except (ValueError, UnicodeDecodeError, StorageError) as e:
      return Decision('redo', f'the earlier summary.json cannot be read: {e}')
    return judge(summary, digest)
  try:
    listed = storage.list(prefix)
  except StorageError:
    listed = []
  has_files = any(not uri.rsplit('/', 1)[-1].startswith(ignore) for uri in listed)
  return judge(None, digest, has_files)
