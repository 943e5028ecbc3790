"""A SageMaker Batch Transform job, as ``aws sagemaker describe-transform-job`` describes it.

Only what the join needs is read: where the inputs are (``TransformInput``), where the outputs
went (``TransformOutput``), how records were split and joined (``SplitType``, ``AssembleWith``,
``DataProcessing``), and the job's name and status. Settings that give no line-for-line
correspondence between an input object and its ``.out`` are refused when the job is read, before
anything else is (``docs/sagemaker-format.md`` has the rules). Pure functions, no I/O.
"""

from __future__ import annotations

import dataclasses
import json

from transforms.sagemaker import jsonpath

S3_PREFIX, MANIFEST_FILE = 'S3Prefix', 'ManifestFile'
CSV, JSON_LINES = 'text/csv', 'application/jsonlines'


class JobError(ValueError):
  """A transform job description that cannot be joined; the message says which field and why."""


@dataclasses.dataclass(frozen=True)
class TransformJob:
  """What predjoin reads of a transform job (the names are those of DescribeTransformJob)."""

  name: str
  input_uri: str                  # TransformInput.DataSource.S3DataSource.S3Uri
  output_path: str                # TransformOutput.S3OutputPath
  input_type: str = S3_PREFIX     # S3DataType: S3Prefix or ManifestFile
  split_type: str = 'Line'
  content_type: str = CSV
  accept: str = CSV
  assemble_with: str = 'None'
  input_filter: str = '$'
  output_filter: str = '$'
  join_source: str = 'None'
  compression: str = 'None'
  status: str | None = None       # TransformJobStatus
  failure_reason: str | None = None
  source: str = ''                # where the description came from, for messages

  @property
  def joined(self) -> bool:
    """Whether each output line holds its input record too (``JoinSource`` ``Input``)."""
    return self.join_source == 'Input'

  def as_dict(self) -> dict:
    return {'name': self.name, 'status': self.status, 'failure_reason': self.failure_reason,
            'input': self.input_uri, 'input_type': self.input_type, 'output': self.output_path,
            'split_type': self.split_type, 'content_type': self.content_type,
            'accept': self.accept, 'assemble_with': self.assemble_with,
            'input_filter': self.input_filter, 'output_filter': self.output_filter,
            'join_source': self.join_source, 'compression': self.compression}


def _get(obj: dict, *path: str, default=None):
  for key in path:
    if not isinstance(obj, dict) or key not in obj:
      return default
    obj = obj[key]
  return obj


def parse_description(text: str, source: str) -> TransformJob:
  """A ``describe-transform-job`` response (JSON text) as a :class:`TransformJob`.

  Raises:
    JobError: not JSON, or a required field (the input's S3Uri, the S3OutputPath) missing.
  """
  try:
    obj = json.loads(text)
  except json.JSONDecodeError as e:
    raise JobError(f'{source}: not valid JSON ({e})') from None
  if not isinstance(obj, dict):
    raise JobError(f'{source}: expected a DescribeTransformJob response (a JSON object)')
  transform_input = _get(obj, 'TransformInput') or {}
  s3 = _get(transform_input, 'DataSource', 'S3DataSource') or {}
  output = _get(obj, 'TransformOutput') or {}
  processing = _get(obj, 'DataProcessing') or {}
  missing = [name for name, value in (('TransformInput.DataSource.S3DataSource.S3Uri',
                                       s3.get('S3Uri')),
                                      ('TransformOutput.S3OutputPath',
                                       output.get('S3OutputPath')))
             if not isinstance(value, str) or not value]
  if missing:
    raise JobError(f'{source}: no {" and no ".join(missing)}: not a transform job description')
  return TransformJob(
      name=obj.get('TransformJobName') or 'transform-job', input_uri=s3['S3Uri'],
      output_path=output['S3OutputPath'], input_type=s3.get('S3DataType') or S3_PREFIX,
      split_type=transform_input.get('SplitType') or 'None',
      content_type=transform_input.get('ContentType') or CSV,
      accept=output.get('Accept') or CSV, assemble_with=output.get('AssembleWith') or 'None',
      input_filter=processing.get('InputFilter') or '$',
      output_filter=processing.get('OutputFilter') or '$',
      join_source=processing.get('JoinSource') or 'None',
      compression=transform_input.get('CompressionType') or 'None',
      status=obj.get('TransformJobStatus'), failure_reason=obj.get('FailureReason'),
      source=source)


def with_settings(job: TransformJob, **settings) -> TransformJob:
  """The job with the given fields replaced (the ``--transform_*`` options); None keeps one."""
  return dataclasses.replace(job, **{k: v for k, v in settings.items() if v is not None})


def check(job: TransformJob) -> None:
  """Refuses settings under which output line k does not answer input line k.

  Raises:
    JobError: naming the field, its value and why.
  """
  where = job.source or 'the transform job'
  if job.split_type != 'Line':
    raise JobError(
        f'{where}: SplitType is {job.split_type}: only SplitType Line makes each input line a '
        'record with an output line of its own; None, RecordIO and TFRecord give no line '
        'correspondence to join by')
  if job.input_type not in (S3_PREFIX, MANIFEST_FILE):
    raise JobError(f'{where}: S3DataType {job.input_type} is not supported (only S3Prefix '
                   'and ManifestFile)')
  if job.content_type != CSV:
    raise JobError(f'{where}: ContentType {job.content_type}: predjoin joins CSV inputs '
                   '(text/csv) only')
  if job.accept not in (CSV, JSON_LINES):
    raise JobError(f'{where}: Accept {job.accept}: the outputs must be CSV (text/csv) or JSON '
                   'Lines (application/jsonlines), one line per record')
  if job.compression not in ('None', 'Gzip'):
    raise JobError(f'{where}: CompressionType {job.compression} is neither None nor Gzip')
  if job.join_source not in ('None', 'Input'):
    raise JobError(f'{where}: JoinSource {job.join_source} is neither None nor Input')
  for name, text in (('InputFilter', job.input_filter), ('OutputFilter', job.output_filter)):
    try:
      jsonpath.parse(text)
    except jsonpath.PathError as e:
      raise JobError(f'{where}: {name} {text!r}: {e}') from None
