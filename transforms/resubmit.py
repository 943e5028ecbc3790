"""``<output>/resubmit/``: the failed observations, ready to send back to the service.

A failed observation (a blank result line) is one the service could not answer. Its original
input line is written, as read, to ``resubmit/part-*.csv``, each file starting with the input's
original header line when the input had one; ``resubmit/.schema`` is a copy of the input's
schema (with ``dataFileContainsHeader`` set to match the files). The prefix ``resubmit/`` can
be the location of a new Amazon ML datasource. Lines are not in input order; a ``rowId``
attribute maps the new results back. Nothing is written when no observation failed.
"""

from __future__ import annotations

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from transforms.storage import SHARD_TEMPLATE, sink_prefix


class WriteResubmit(beam.PTransform):
  """Chunks of failed input lines -> ``resubmit/part-*.csv``; returns the files' names.

  ``resubmit/.schema`` (``schema_uri``, ``schema_text``) is written with the summary, which
  knows whether any file was (``transforms/enrich.py: WriteSummary``).
  """

  def __init__(self, output: str, header_line: str | None, schema_text: str | None):
    super().__init__()
    self._prefix = sink_prefix(output, 'resubmit')  # temporary files beside resubmit/
    self.schema_uri = FileSystems.join(output, 'resubmit', '.schema')
    self._header = header_line
    self.schema_text = schema_text

  def expand(self, chunks):
    return chunks | 'WriteLines' >> beam.io.WriteToText(
        self._prefix, file_name_suffix='.csv', header=self._header, skip_if_empty=True,
        shard_name_template=SHARD_TEMPLATE)
