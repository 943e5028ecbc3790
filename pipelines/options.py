"""predjoin's job parameters: one PipelineOptions subclass, validated before construction.

Every name declared here is also declared in ``deploy/metadata.json`` (a test compares them).
Standard Beam options (``--runner``, ``--direct_num_workers``, ``--project``, ...) pass through.
"""

from __future__ import annotations

import argparse

from apache_beam.options.pipeline_options import PipelineOptions

FORMATS = ('avro', 'parquet', 'jsonl', 'bigquery')
WRITE_DISPOSITIONS = ('append', 'truncate')
MODEL_TYPES = ('auto', 'binary', 'multiclass', 'regression')
INPUT_HEADER = ('auto', 'true', 'false')
ON_TYPE_ERROR = ('dead_letter', 'null')


class OptionsError(ValueError):
  """A combination of options that cannot run; the message says which and why."""


def _probability(text: str) -> float:
  value = float(text)
  if not 0.0 <= value <= 1.0:
    raise argparse.ArgumentTypeError(f'{text!r} is not a probability between 0 and 1')
  return value


def _non_negative_int(text: str) -> int:
  value = int(text)
  if value < 0:
    raise argparse.ArgumentTypeError(f'{text!r} is negative')
  return value


def _positive_int(text: str) -> int:
  value = int(text)
  if value < 1:
    raise argparse.ArgumentTypeError(f'{text!r} is not a positive whole number')
  return value


def _rebase(text: str) -> str:
  if '=' not in text or text.startswith('='):
    raise argparse.ArgumentTypeError(f'{text!r} is not of the form FROM=TO')
  return text


class PredjoinOptions(PipelineOptions):
  """Options of the predjoin enrichment job."""

  @classmethod
  def _add_argparse_args(cls, parser):
    parser.add_argument(
        '--manifest', action='append', default=None,
        help='URI of a batch-prediction manifest, or a glob of them. Repeatable.')
    parser.add_argument(
        '--output_location', default=None,
        help='The batch prediction\'s OutputUri (e.g. s3://bucket/output/); with '
        '--batch_prediction_id locates <output_location>batch-prediction/<id>.manifest.')
    parser.add_argument(
        '--batch_prediction_id', default=None,
        help='The batch prediction\'s ID, used with --output_location.')
    parser.add_argument(
        '--output', default=None,
        help='Output prefix: records/, dead_letter/ and summary.json are written under it.')
    parser.add_argument(
        '--format', default='avro', choices=FORMATS,
        help='Format of the enriched records (default avro); bigquery loads them into '
        '--bigquery_table instead of writing files under records/.')
    parser.add_argument(
        '--bigquery_table', default=None,
        help='With --format bigquery: the table to load, PROJECT:DATASET.TABLE (or '
        'PROJECT.DATASET.TABLE). Created when missing, partitioned by load date (daily). Dead '
        'letters and the summary still go to --output.')
    parser.add_argument(
        '--write_disposition', default='append', choices=WRITE_DISPOSITIONS,
        help='With --format bigquery: append to the table (its schema must take the records; '
        'checked at launch) or truncate it (replace its rows and schema). Default append.')
    parser.add_argument(
        '--model_type', default='auto', choices=MODEL_TYPES,
        help='Model type; auto reads it from the result header.')
    parser.add_argument(
        '--cutoff', type=_probability, default=0.5,
        help='Binary models: best_answer is 1 when score >= cutoff (default 0.5).')
    parser.add_argument(
        '--min_score', type=_probability, default=None,
        help='Multiclass models: a best score below this gives best_answer null (unknown).')
    parser.add_argument(
        '--input_header', default='auto', choices=INPUT_HEADER,
        help='Whether input shards start with a header line; auto reads the .schema file '
        'beside the input, else compares the input and result line counts, else sniffs.')
    parser.add_argument(
        '--max_bad_shards', type=_non_negative_int, default=0,
        help='How many shards (or manifests) may fail before the command exits non-zero.')
    parser.add_argument(
        '--rebase_uri', action='append', default=None, type=_rebase,
        help='FROM=TO: read a URI the manifest names as FROM... from TO... instead, e.g. '
        'after copying a batch prediction from S3 to GCS. Repeatable. A TO prefix is trusted '
        'like an --allowed_prefix.')
    parser.add_argument(
        '--allowed_prefix', action='append', default=None,
        help='A prefix (s3://bucket/path/, gs://bucket/path/ or a local directory) the '
        'manifests may name inputs and results under, besides the manifest\'s own bucket (or, '
        'for a local manifest, its own directory). A manifest naming anything else is refused '
        'before it is read. Repeatable.')
    parser.add_argument(
        '--schema', default=None,
        help='URI of the input\'s Amazon ML .schema file, for every shard; default: the '
        '<input>.schema or <prefix>/.schema beside each input. It names the columns of an '
        'input without a header, types them (NUMERIC -> double, BINARY -> boolean, others '
        'string) and names the rowId and target attributes the alignment checks use.')
    parser.add_argument(
        '--on_type_error', default='dead_letter', choices=ON_TYPE_ERROR,
        help='What to do with a value that does not fit its column\'s type: dead_letter '
        'sends its row to the dead letter (reason type_error); null makes it null and counts '
        'it (default dead_letter).')
    parser.add_argument(
        '--data_rearrangement', default=None,
        help='The datasource\'s DataRearrangement, e.g. {"splitting":{"percentBegin":70,'
        '"percentEnd":100}}: the result answers only that sequential slice of the inputs; the '
        'other rows become records with status not_predicted. Random splitting is refused.')
    parser.add_argument(
        '--top_k', type=_positive_int, default=None,
        help='Multiclass models: also write top_labels, the N best labels, best first.')
    parser.add_argument(
        '--service_record', action='append', default=None,
        help='The GetBatchPrediction (and optionally GetMLModel) response saved as JSON, '
        'inline or as a URI; the summary compares TotalRecordCount, InvalidRecordCount, the '
        'model type and ScoreThreshold with what was read. Repeatable.')
    parser.add_argument(
        '--block_rows', type=int, default=65536,
        help='Rows per block passed between transforms (memory per shard scales with it).')


class Options(PipelineOptions):
  """Pipeline options that make each view (``view_as``) once and hand out the same one after.

  Beam builds a view for every transform it applies (type-check settings, standard options,
  ...), and each view builds an argument parser for its options class and parses the command
  line again: about 400 views, 0.5 s of the launcher's 1 s of pipeline construction. A view
  holds no values of its own (it reads and writes this object's ``_all_options``), so one view
  per options class behaves the same.
  """

  def view_as(self, cls):
    views = self.__dict__.setdefault('_views', {})
    if cls not in views:
      views[cls] = super().view_as(cls)
    return views[cls]


def validate(options: PipelineOptions) -> PredjoinOptions:
  """Checks option combinations before the pipeline is built; raises OptionsError."""
  opts = options.view_as(PredjoinOptions)
  located = opts.output_location is not None or opts.batch_prediction_id is not None
  if opts.manifest and located:
    raise OptionsError('give either --manifest or --output_location with --batch_prediction_id, '
                       'not both')
  if not opts.manifest:
    if not (opts.output_location and opts.batch_prediction_id):
      raise OptionsError('give --manifest URI, or both --output_location and '
                         '--batch_prediction_id')
  if not opts.output:
    raise OptionsError('--output PREFIX is required')
  if opts.format == 'bigquery':
    from transforms.bigquery import TableError, parse_table
    if not opts.bigquery_table:
      raise OptionsError('--format bigquery needs --bigquery_table PROJECT:DATASET.TABLE')
    try:
      parse_table(opts.bigquery_table)
    except TableError as e:
      raise OptionsError(str(e)) from None
  elif opts.bigquery_table:
    raise OptionsError('--bigquery_table applies to --format bigquery')
  if opts.block_rows < 1:
    raise OptionsError('--block_rows must be at least 1')
  if opts.min_score is not None and opts.model_type in ('binary', 'regression'):
    raise OptionsError(f'--min_score applies to multiclass models, not {opts.model_type}')
  if opts.top_k is not None and opts.model_type in ('binary', 'regression'):
    raise OptionsError(f'--top_k applies to multiclass models, not {opts.model_type}')
  if opts.data_rearrangement is not None:
    from transforms.split import SplitError, parse
    try:
      parse(opts.data_rearrangement)
    except SplitError as e:
      raise OptionsError(str(e)) from None
  return opts
