"""``<output>/resubmit/``: the failed observations, ready to send back to the service.

A failed observation (a blank result line) is one the service could not answer. Its original
input line is written, as read, to ``resubmit/part-*.csv`` (one file per shard with failed
observations, written by the join: ``transforms/io/shard_files.py``), each file starting with the
input's original header line when the input had one; ``resubmit/.schema`` is a copy of the
input's schema (with ``dataFileContainsHeader`` set to match the files), written with the
summary when any file was (``transforms/steps.py: WriteSummary``). The prefix ``resubmit/``
can be the location of a new Amazon ML datasource. Lines are in input order within a file; a
``rowId`` attribute maps the new results back. Nothing is written when no observation failed.
"""

from __future__ import annotations

from apache_beam.io.filesystems import FileSystems


def schema_uri(output: str) -> str:
  """Where the copy of the input's schema goes: ``<output>/resubmit/.schema``."""
  return FileSystems.join(output, 'resubmit', '.schema')
