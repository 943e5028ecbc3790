"""A shard's dead letters and ``resubmit/`` lines, written by the worker that joins the shard.

Each shard that has any writes its own files, named after the shard, so a rerun of the same
shard (a retried bundle) writes the same names with the same content:

- ``<output>/dead_letter/part-<input name>-<hash>.jsonl``: one JSON object per dead letter;
- ``<output>/resubmit/part-<input name>-<hash>.csv``: the input's header line when it had one,
  then the original input line of each failed observation.

``<hash>`` tells apart shards whose inputs share a name (it covers the batch prediction, the
manifest, the input and the result). A file is written under ``<output>/beam-temp-<dir>-<uuid>/``
and renamed into place when the shard is done, so a half-written file never sits among the
outputs, and a failed run's temporary files are removed with the other leftovers
(``transforms/storage.py``). A shard with nothing to write writes no file.

Written here rather than through Beam file sinks: those cost eight pipeline stages and about
twenty DoFns for outputs that are usually empty or small, about 0.2 s of every local run.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import uuid

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from transforms.manifest import Shard
from transforms.storage import local_path, redact

DEAD_LETTER_DIR, RESUBMIT_DIR = 'dead_letter', 'resubmit'
DEAD_LETTER_FILES, RESUBMIT_FILES = 'dead_letter_files', 'resubmit_files'


def file_name(shard: Shard, suffix: str) -> str:
  """``part-<input name>-<hash><suffix>``: the same for the same shard, in any run."""
  name = posixpath.basename((shard.input_uri or '').rstrip('/')) or 'input'
  stem = name.rsplit('.', 1)[0] if '.' in name[1:] else name
  stem = ''.join(c if c.isalnum() or c in '-_' else '_' for c in stem)[:80] or 'input'
  digest = hashlib.sha256('\n'.join(
      str(part) for part in (shard.batch_prediction_id, shard.manifest_uri, shard.input_uri,
                             shard.result_uri)).encode()).hexdigest()[:12]
  return f'part-{stem}-{digest}{suffix}'


class _File:
  """One output file, written under a temporary name on first use."""

  def __init__(self, output: str, directory: str, name: str, first_line: str | None = None):
    self.uri = FileSystems.join(output, directory, name)
    self._temp = FileSystems.join(output, f'beam-temp-{directory}-{uuid.uuid4().hex}', name)
    self._first_line = first_line
    self._f = None
    self.rows = 0

  def write(self, text: str, rows: int = 0) -> None:
    if self._f is None:
      self._f = FileSystems.create(self._temp, 'text/plain', CompressionTypes.UNCOMPRESSED)
      if self._first_line is not None:
        self._f.write(self._first_line.encode() + b'\n')
    self._f.write(text.encode() + b'\n')
    self.rows += rows

  def commit(self) -> str | None:
    """Moves the file into place; returns its name (None: nothing was written)."""
    if self._f is None:
      return None
    self._f.close()
    self._f = None
    local = local_path(self.uri)
    if local is not None:  # object stores have no directories to make
      os.makedirs(os.path.dirname(local), exist_ok=True)
    FileSystems.rename([self._temp], [self.uri])
    _remove_local_directory(self._temp)
    return self.uri

  def discard(self) -> None:
    if self._f is not None:
      try:
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
  """The dead letters and ``resubmit/`` lines of one shard (see the module docstring)."""

  def __init__(self, output: str, shard: Shard, resubmit_header: str | None):
    self._dead = _File(output, DEAD_LETTER_DIR, file_name(shard, '.jsonl'))
    self._resubmit = _File(output, RESUBMIT_DIR, file_name(shard, '.csv'), resubmit_header)
    self.key = (shard.batch_prediction_id, redact(shard.input_uri))

  def dead_letter(self, record: dict) -> None:
    """Writes one dead letter; it counts as a row unless it stands for a whole unreadable
    shard (no ``row_number``)."""
    self._dead.write(json.dumps(record, ensure_ascii=False, sort_keys=True),
                     1 if record.get('row_number') is not None else 0)

  def resubmit(self, lines: str) -> None:
    """Writes failed observations' input lines (``lines``, joined by newlines)."""
    self._resubmit.write(lines)

  @property
  def dead_letter_rows(self) -> int:
    return self._dead.rows

  def commit(self) -> dict[str, str]:
    """Moves the written files into place: ``{DEAD_LETTER_FILES or RESUBMIT_FILES: name}``."""
    done = {}
    for kind, f in ((DEAD_LETTER_FILES, self._dead), (RESUBMIT_FILES, self._resubmit)):
      uri = f.commit()
      if uri is not None:
        done[kind] = uri
    return done

  def discard(self) -> None:
    """Drops what was written (the shard failed; its retry writes the files again)."""
    self._dead.discard()
    self._resubmit.discard()
