"""The join core: one shard's input joined with its result, by position, a block at a time.

Pure Python over a storage object; no Beam.

- ``plan``: the run's plan, made at launch: model type, columns, header decision, checks.
- ``header``: the run's one header decision (option, schema, or a safe inference).
- ``lines``: streaming line blocks, line counts and the empty lines at a file's end.
- ``joiner``: one shard: pass 1 (header, counts, alignment), refusal, pass 2 (the join).
- ``blocks``: a block of input and result lines parsed, interpreted and made into records.
- ``coltypes``: input columns typed by their attribute type; ``arrays``: NumPy views of Arrow.
- ``align``: the alignment checks (``tag``, ``trueLabel``) against the input row.
- ``results``: the result format seam (Amazon ML headed CSV, SageMaker output lines).
- ``shards``: one input file paired with its result file.
- ``record_schema``: the enriched record's fields and its Avro, Arrow and BigQuery schemas.
"""
