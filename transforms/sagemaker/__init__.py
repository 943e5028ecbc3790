"""SageMaker Batch Transform (``docs/sagemaker-format.md``): what a transform job reads and writes.

- ``job``: a transform job's settings, from ``DescribeTransformJob`` or from options, and the
  settings predjoin can join by position (line split, CSV input).
- ``pairing``: the job's input objects paired with the ``.out`` objects it wrote.
- ``jsonpath``: the subset of JSONPath that ``InputFilter``/``OutputFilter`` use.
- ``output``: a ``.out`` line parsed (CSV or JSON Lines) into the join's result columns.
- ``plan``: the run's plan for a transform job: shards, output layout, echo checks.
"""
