"""Where data comes from and where it goes.

- ``storage``: streaming reads of local, ``s3://`` and ``gs://`` objects; small writes; the
  output layout and its clean-up; redaction of credentials from anything shown.
- ``access``: access limits: a manifest may name only URIs under the allowed prefixes.
- ``sinks``: block-wise Avro, Parquet and JSON Lines writers.
- ``shard_files``: each shard's records, dead-letter and resubmit files, written by its joiner.
- ``bigquery``: loading the records into BigQuery, staged and published with the summary.
- ``resubmit``: where the resubmit files and their schema copy go.
- ``claims``: an incremental run's claim on a batch prediction, created with the store's own
  create-if-absent precondition, so two runs never join one at once.
"""
