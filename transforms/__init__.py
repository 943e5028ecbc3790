"""predjoin's data path, by role; each package's own docstring says what it holds.

    manifest -> shard pairs -> pass 1 (header, counts, alignment) -> blocks -> interpretation
             -> record files, dead letters, resubmit lines -> summary

- ``aml``: Amazon ML's formats: manifests (shard pairs), ``.schema`` files, result headers,
  datasource slices and the service's own figures.
- ``join``: the join core, pure Python over a storage object: the run's plan and header
  decision, line blocks, each shard's two passes, interpretation of a block, the record schema.
- ``io``: where data comes from and where it goes: storage (local, S3, GCS), access limits, the
  block-wise record writers, each shard's output files, BigQuery.
- ``report``: the run summary: the identity check, the verification sections, audit figures.
- ``steps``: the Beam transforms and DoFns, thin around the packages above.
"""
