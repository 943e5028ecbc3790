"""A shard's records, dead letters and ``resubmit/`` lines, written by the worker that joins it.

Each shard that has any writes its own files, named after the shard, so a rerun of the same
shard (a retried bundle) writes the same names with the same content:

- ``<output>/records/part-<input name>-<hash>.<avro|parquet|jsonl>``: the shard's records, in
  input order, written block by block (``transforms/io/sinks.py``) when the records go to files;
- ``<output>/dead_letter/part-<input name>-<hash>.jsonl``: one JSON object per dead letter;
- ``<output>/resubmit/part-<input name>-<hash>.csv``: the input's header line when it had one,
  then the original input line of each failed observation.

A shard split into row ranges writes one file of each kind per range, ``part-<input name>-
<hash>-r<range>.<ext>``, the ranges' numbers in input order.

``<hash>`` tells apart shards whose inputs share a name (it covers the batch prediction, the
manifest, the input and the result). A local file is written under
``<output>/beam-temp-<dir>-<uuid>/`` and renamed into place when the shard is done, so a
half-written file never sits among the outputs, and a failed run's temporary files are removed
with the other leftovers (``transforms/io/storage.py``). An object-store file appears only when
the shard is done too (``storage.ObjectWriter``: one request for a small file, an upload under
the temporary name moved into place for a large one). A shard with nothing to write writes no file.

Local files go through Beam's ``FileSystems``; ``s3://`` and ``gs://`` files through
``transforms/io/storage.Storage``, whose clients are made once per worker process (Beam's S3
and GCS filesystems make a new client for every call, several per shard).

Written here rather than through Beam file sinks: each of those costs four pipeline stages and
about ten DoFns (temporary directory, write, pre-finalize, finalize). Beam's sink writes one file per bundle and renames them all at the end; here one file per
shard is renamed as soon as the shard is done, with the same guarantee that no partial file is
ever visible under the output directories.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import uuid

import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from transforms.io.storage import OUTPUT_DIRS, Storage, local_path
from transforms.join.shards import Shard

RECORDS_DIR, DEAD_LETTER_DIR, RESUBMIT_DIR = OUTPUT_DIRS


def status_counts(batch: pa.RecordBatch) -> tuple[int, int, int]:
  """A batch's records by status: ``(ok, failed, not predicted)``."""
  status = batch.column('status')
  ok = pc.sum(pc.equal(status, 'ok')).as_py() or 0
  failed = pc.sum(pc.equal(status, 'failed')).as_py() or 0
  return ok, failed, batch.num_rows - ok - failed


def file_name(shard: Shard, suffix: str, part: int | None = None) -> str:
  """``part-<input name>-<hash><suffix>`` (``-r<part>`` before the suffix for a range of a
  split shard): the same for the same shard, in any run."""
  name = posixpath.basename((shard.input_uri or '').rstrip('/')) or 'input'
  stem = name.rsplit('.', 1)[0] if '.' in name[1:] else name
  stem = ''.join(c if c.isalnum() or c in '-_' else '_' for c in stem)[:80] or 'input'
  digest = hashlib.sha256('\n'.join(
      str(part) for part in (shard.batch_prediction_id, shard.manifest_uri, shard.input_uri,
                             shard.result_uri)).encode()).hexdigest()[:12]
  return f'part-{stem}-{digest}{"" if part is None else f"-r{part:05d}"}{suffix}'


class _File:
  """One output file, written under a temporary name on first use."""

  def __init__(self, output: str, directory: str, name: str, first_line: str | None = None,
               mime: str = 'text/plain', storage: Storage | None = None):
    self.uri = FileSystems.join(output, directory, name)
    self._temp = FileSystems.join(output, f'beam-temp-{directory}-{uuid.uuid4().hex}', name)
    self._first_line = first_line
    self._mime = mime
    # Object stores: written and moved with the process's shared clients.
    self._storage = None if local_path(self.uri) is not None else (storage or Storage())
    self._f = None
    self.rows = 0

  def handle(self):
    """The temporary file's binary handle, created (with the first line) on first use."""
    if self._f is None:
      if self._storage is not None:
        self._f = self._storage.create(self.uri, self._temp, self._mime)
      else:
        self._f = FileSystems.create(self._temp, self._mime, CompressionTypes.UNCOMPRESSED)
      if self._first_line is not None:
        self._f.write(self._first_line.encode() + b'\n')
    return self._f

  def write(self, text: str, rows: int = 0) -> None:
    self.handle().write(text.encode() + b'\n')
    self.rows += rows

  def commit(self) -> str | None:
    """Moves the file into place; returns its name (None: nothing was written)."""
    if self._f is None:
      return None
    if not self._f.closed:  # a record writer closes its file itself
      self._f.close()
    self._f = None
    if self._storage is not None:  # closing made the object
      return self.uri
    os.makedirs(os.path.dirname(local_path(self.uri)), exist_ok=True)
    FileSystems.rename([self._temp], [self.uri])
    _remove_local_directory(self._temp)
    return self.uri

  def discard(self) -> None:
    if self._f is not None:
      try:
        if self._storage is not None:
          self._f.abort()
        else:
          if not self._f.closed:
            self._f.close()
          FileSystems.delete([self._temp])
          _remove_local_directory(self._temp)
      except Exception:  # noqa: S110  # the shard's own error is the one to report
        pass
      self._f = None


def _remove_local_directory(temp: str) -> None:
  """Removes a local temporary file's directory once it is empty (object stores have none)."""
  path = local_path(temp)
  if path is None:
    return
  try:
    os.rmdir(os.path.dirname(path))
  except OSError:  # not empty, or gone: the run's leftover clean-up deals with it
    pass


class ShardFiles:
  """The records, dead letters and ``resubmit/`` lines of one shard (see the module docstring).

  ``writers`` (``sinks.RecordWriters``) writes the records to ``records/``; without it, records
  go elsewhere (BigQuery) and ``records`` must not be called.
  """

  def __init__(self, output: str, shard: Shard, resubmit_header: str | None, writers=None,
               part: int | None = None, storage: Storage | None = None):
    """``part``: the range of a split shard these files hold (``transforms/join/ranges.py``);
    ``storage``: the worker's storage, for an output on an object store."""
    self._dead = _File(output, DEAD_LETTER_DIR, file_name(shard, '.jsonl', part),
                       mime='application/x-ndjson', storage=storage)
    self._resubmit = _File(output, RESUBMIT_DIR, file_name(shard, '.csv', part),
                           resubmit_header, mime='text/csv', storage=storage)
    self._writers = writers
    self._records = None if writers is None else _File(
        output, RECORDS_DIR, file_name(shard, writers.suffix, part),
        mime='application/octet-stream', storage=storage)
    self._writer = None
    self.record_counts = (0, 0, 0)  # (ok, failed, not predicted) records written

  def records(self, batch: pa.RecordBatch) -> None:
    """Writes a block of the shard's records, counting them by status."""
    if self._writer is None:
      self._writer = self._writers.open(self._records.handle())
    self._writer.write(batch)
    self.record_counts = tuple(
        a + b for a, b in zip(self.record_counts, status_counts(batch), strict=True))

  def dead_letter(self, letter) -> None:
    """Writes one dead letter (``transforms/join/outcomes.DeadLetter``, redacted as it is
    written); it counts as a row unless it stands for a whole unreadable shard."""
    self._dead.write(json.dumps(letter.as_dict(), ensure_ascii=False, sort_keys=True),
                     1 if letter.is_row else 0)

  def resubmit(self, lines: str) -> None:
    """Writes failed observations' input lines (``lines``, joined by newlines)."""
    self._resubmit.write(lines)

  @property
  def dead_letter_rows(self) -> int:
    return self._dead.rows

  def commit(self) -> dict[str, str]:
    """Moves the written files into place: ``{output directory: URI}`` (``records``,
    ``dead_letter``, ``resubmit``) for the files that have anything."""
    if self._writer is not None:
      self._writer.close()
      self._writer = None
    done = {}
    for directory, f in ((RECORDS_DIR, self._records), (DEAD_LETTER_DIR, self._dead),
                         (RESUBMIT_DIR, self._resubmit)):
      if f is None:
        continue
      uri = f.commit()
      if uri is not None:
        done[directory] = uri
    return done

  def discard(self) -> None:
    """Drops what was written (the shard failed; its retry writes the files again)."""
    self._writer = None
    for f in (self._records, self._dead, self._resubmit):
      if f is not None:
        f.discard()
