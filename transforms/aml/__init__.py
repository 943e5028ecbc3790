"""Amazon ML's formats (``docs/amazon-ml-format.md``): what the service writes and reports.

- ``manifest``: batch-prediction manifests: where they are, and the input/result shard pairs
  they name.
- ``schema_file``: ``.schema`` files: column names, order, types, header flag, rowId, target.
- ``result_header``: result headers: the model type and columns of a result file.
- ``slices``: datasource slices (``DataRearrangement``): which rows a result answers.
- ``service``: ``GetBatchPrediction``/``GetMLModel`` responses compared with what was read.
"""
