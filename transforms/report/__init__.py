"""The run summary and what it verifies.

- ``verification``: the summary's verification sections: header decision, typing, alignment,
  audit, slices, reconciliation with the service, resubmit, warnings.
- ``audit``: re-thresholding and multiclass figures, gathered per block and merged.
- ``readback``: the record and dead-letter files the summary lists, read back and counted per
  shard: the launcher's check where a runner reports no Beam counters (Dask).
- ``prior_runs``: an incremental run's decision on a batch prediction from its earlier summary
  (join, skip, redo, changed), by the digest of its manifest.
"""
