"""predjoin's job parameters: one PipelineOptions subclass, validated before construction.

Every name declared here is also declared in ``deploy/metadata.json`` (a test compares them).
Standard Beam options (``--runner``, ``--direct_num_workers``, ``--project``, ...) pass through;
an argument that neither predjoin nor Beam declares is a usage error (``check_arguments``).
The ``predjoin`` command's help (``command_parser``) is built from the same declarations.
"""

from __future__ import annotations

import argparse
import difflib
import importlib.metadata
import importlib.util

from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from pipelines.runners import asks_for_dask, is_dask

FORMATS = ('avro', 'parquet', 'jsonl', 'bigquery')
WRITE_DISPOSITIONS = ('replace', 'append', 'truncate')
MODEL_TYPES = ('auto', 'binary', 'multiclass', 'regression', 'raw')
SPLIT_TYPES = ('Line', 'None', 'RecordIO', 'TFRecord')
INPUT_TYPES = ('S3Prefix', 'ManifestFile')
ACCEPTS = ('text/csv', 'application/jsonlines')
JOIN_SOURCES = ('None', 'Input')
INPUT_HEADER = ('auto', 'true', 'false')
ON_TYPE_ERROR = ('dead_letter', 'null')
BOOLEANS = ('true', 'false')


class OptionsError(ValueError):
  """A combination of options that cannot run; the message says which and why."""


class UsageError(ValueError):
  """An argument the command cannot take (unknown, or a value its option refuses)."""


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


def _positive_seconds(text: str) -> float:
  value = float(text)
  if not 0 < value < 1e9:  # nan and inf too
    raise argparse.ArgumentTypeError(f'{text!r} is not a positive number of seconds')
  return value


def _rebase(text: str) -> str:
  if '=' not in text or text.startswith('='):
    raise argparse.ArgumentTypeError(f'{text!r} is not of the form FROM=TO')
  return text


class PredjoinOptions(PipelineOptions):
  """Options of the predjoin enrichment job, in the groups ``predjoin --help`` shows them in."""

  @classmethod
  def _add_argparse_args(cls, parser):
    inputs = parser.add_argument_group(
        'input', 'Which batch prediction to read: an Amazon ML batch prediction (--manifest, '
        'or --output_location with --batch_prediction_id), or a SageMaker Batch Transform job '
        '(--transform_job, or --transform_input with --transform_output).')
    inputs.add_argument(
        '--manifest', action='append', default=None, metavar='URI',
        help='URI of a batch-prediction manifest, or a glob of them. Repeatable.')
    inputs.add_argument(
        '--output_location', default=None, metavar='URI',
        help='The batch prediction\'s OutputUri (e.g. s3://bucket/output/); with '
        '--batch_prediction_id locates <output_location>batch-prediction/<id>.manifest.')
    inputs.add_argument(
        '--batch_prediction_id', default=None, metavar='ID',
        help='The batch prediction\'s ID, used with --output_location.')
    inputs.add_argument(
        '--transform_job', default=None, metavar='JSON_OR_URI',
        help='A SageMaker Batch Transform job: the response of aws sagemaker '
        'describe-transform-job, inline or the URI of a file holding it. Its inputs are '
        'paired with their .out outputs by listing both. The --transform_* options below '
        'override its fields.')
    inputs.add_argument(
        '--transform_input', default=None, metavar='URI',
        help='SageMaker: the job\'s input, TransformInput S3Uri (a prefix, or a manifest file '
        'with --transform_input_type ManifestFile).')
    inputs.add_argument(
        '--transform_input_type', default=None, choices=INPUT_TYPES,
        help='SageMaker: the input\'s S3DataType (S3Prefix unless the job says otherwise).')
    inputs.add_argument(
        '--transform_output', default=None, metavar='URI',
        help='SageMaker: the job\'s TransformOutput S3OutputPath, where the .out objects are.')
    inputs.add_argument(
        '--transform_split_type', default=None, choices=SPLIT_TYPES,
        help='SageMaker: the job\'s SplitType; only Line gives one output line per input line '
        '(Line unless the job says otherwise; the others are refused).')
    inputs.add_argument(
        '--transform_accept', default=None, choices=ACCEPTS,
        help='SageMaker: the job\'s TransformOutput Accept, the output lines\' format '
        '(text/csv unless the job says otherwise).')
    inputs.add_argument(
        '--transform_join_source', default=None, choices=JOIN_SOURCES,
        help='SageMaker: the job\'s DataProcessing JoinSource; with Input each output line holds '
        'its input record too, which is checked against the input on every row.')
    inputs.add_argument(
        '--transform_output_filter', default=None, metavar='JSONPATH',
        help='SageMaker: the job\'s DataProcessing OutputFilter, e.g. $[0,-1]: which fields of '
        'the joined record each output line keeps.')
    inputs.add_argument(
        '--transform_job_name', default=None, metavar='NAME',
        help='SageMaker: the job\'s name, the records\' batch_prediction_id (the description\'s '
        'TransformJobName; else transform-job).')
    inputs.add_argument(
        '--input_header', default='auto', choices=INPUT_HEADER,
        help='Whether input files start with a header line, decided once for the whole run: '
        'auto takes the dataFileContainsHeader of the schema (--schema, else the .schema '
        'beside the inputs), else infers it from the inputs\' first lines, else stops and asks '
        'for true or false. Line counts never decide it.')
    inputs.add_argument(
        '--schema', default=None, metavar='URI',
        help='URI of the input\'s Amazon ML .schema file, for every shard; default: the '
        '<input>.schema or <prefix>/.schema beside each input. It names the columns of an '
        'input without a header, types them (NUMERIC -> double, BINARY -> boolean, others '
        'string; the rowId attribute stays a string) and names the rowId and target '
        'attributes the alignment checks use. SageMaker inputs may use one too, to name and '
        'type their columns.')
    inputs.add_argument(
        '--data_rearrangement', default=None, metavar='JSON',
        help='The datasource\'s DataRearrangement, e.g. {"splitting":{"percentBegin":70,'
        '"percentEnd":100}}: the result answers only that sequential slice of the inputs; the '
        'other rows become records with status not_predicted. Random splitting is refused.')

    output = parser.add_argument_group('output', 'Where and how the records are written.')
    output.add_argument(
        '--output', default=None, metavar='PREFIX',
        help='Output prefix (required): records/, dead_letter/, resubmit/ and summary.json '
        'are written under it.')
    output.add_argument(
        '--format', default='avro', choices=FORMATS,
        help='Format of the enriched records; bigquery loads them into --bigquery_table '
        'instead of writing files under records/.')
    output.add_argument(
        '--bigquery_table', default=None, metavar='PROJECT:DATASET.TABLE',
        help='With --format bigquery: the table to load (or PROJECT.DATASET.TABLE). Created '
        'when missing, partitioned by load date (daily) and clustered by '
        'batch_prediction_id. Dead letters and the summary still go to --output.')
    output.add_argument(
        '--write_disposition', default='replace', choices=WRITE_DISPOSITIONS,
        help='With --format bigquery: replace the rows of this run\'s batch predictions and '
        'keep every other row (a re-run replaces its own rows); append the records to the '
        'table; or truncate the table (replace all its rows and its schema). The table '
        'changes only when the run succeeds.')
    output.add_argument(
        '--block_rows', type=int, default=65536, metavar='N',
        help='Rows per block passed between transforms (memory per shard scales with it).')
    output.add_argument(
        '--range_rows', type=_non_negative_int, default=1_000_000, metavar='N',
        help='A shard of at least twice N rows is cut into ranges of N rows that several '
        'workers join at once, its files then one per range (part-<name>-<hash>-r<k>); 0 '
        'joins every shard whole, as the DaskRunner always does.')

    model = parser.add_argument_group('model', 'How the predictions are read.')
    model.add_argument(
        '--model_type', default='auto', choices=MODEL_TYPES,
        help='Model type; auto reads it from an Amazon ML result header. SageMaker outputs '
        'need it: binary (a probability of class 1 per line), multiclass (one probability per '
        'class), regression (a value), or raw (the output\'s fields as typed columns).')
    model.add_argument(
        '--cutoff', type=_probability, default=0.5, metavar='FLOAT',
        help='Binary models: best_answer is 1 when score >= cutoff.')
    model.add_argument(
        '--min_score', type=_probability, default=None, metavar='FLOAT',
        help='Multiclass models: a best score below this gives best_answer null (unknown).')
    model.add_argument(
        '--top_k', type=_positive_int, default=None, metavar='N',
        help='Multiclass models: also write top_labels, the N best labels, best first.')
    model.add_argument(
        '--class_labels', default=None, metavar='LABELS',
        help='SageMaker multiclass: the class labels, comma-separated, in the order of the '
        'output\'s probabilities (default 0, 1, 2, ...).')
    model.add_argument(
        '--output_fields', default=None, metavar='NAMES',
        help='SageMaker CSV outputs: the names of the model\'s fields on each line, '
        'comma-separated, e.g. predicted_label,probability. Without it a line holds one '
        'probability, a value, or the per-class probabilities (raw: output_1, output_2, ...).')
    model.add_argument(
        '--failed_marker', default=None, metavar='TEXT',
        help='SageMaker: an output line of exactly this text (e.g. ERROR) is a failed record, '
        'as an empty line is.')

    verification = parser.add_argument_group(
        'verification', 'What counts as a failed run, and what the run is checked against.')
    verification.add_argument(
        '--max_bad_shards', type=_non_negative_int, default=0, metavar='N',
        help='How many shards (or manifests) may fail before the run fails: the command '
        'exits 1, and a job on Dataflow (or any runner but the local one and Dask) ends '
        'failed.')
    verification.add_argument(
        '--on_type_error', default='dead_letter', choices=ON_TYPE_ERROR,
        help='What to do with a value that does not fit its column\'s type: dead_letter '
        'sends its row to the dead letter (reason type_error); null makes it null and counts '
        'it.')
    verification.add_argument(
        '--service_record', action='append', default=None, metavar='JSON_OR_URI',
        help='The GetBatchPrediction (and optionally GetMLModel) response saved as JSON, '
        'inline or as a URI; the summary compares TotalRecordCount, InvalidRecordCount, the '
        'model type and ScoreThreshold with what was read. Repeatable.')

    incremental = parser.add_argument_group(
        'incremental', 'Scheduled runs that find their own work: every batch prediction a '
        '--manifest glob (or --output_location without --batch_prediction_id) finds, or every '
        'saved SageMaker job description a --transform_job glob finds, is joined to its own '
        'prefix, <output>/<batch prediction id or job name>/, exactly once.')
    incremental.add_argument(
        '--incremental', nargs='?', const='true', default='false', choices=BOOLEANS,
        help='Join only what is new: a batch prediction whose prefix holds a complete, '
        'successful summary.json of the same manifest (or job description) content (its '
        'manifest_sha256) is skipped; a failed or unfinished one is joined again, and so is one whose manifest '
        'changed. A claim object beside its outputs keeps two runs from joining it at once. '
        'The run\'s own summary goes to <output>/runs/<run id>.json. --incremental alone '
        'means true.')
    incremental.add_argument(
        '--claim_timeout', type=_positive_int, default=6 * 3600, metavar='SECONDS',
        help='With --incremental or --watch: a claim older than this is taken to be a crashed '
        'run\'s and is taken over. Longer than a batch prediction\'s longest join.')

    access = parser.add_argument_group(
        'access', 'Which URIs a manifest may name, and where they are read from.')
    access.add_argument(
        '--allowed_prefix', action='append', default=None, metavar='PREFIX',
        help='A prefix (s3://bucket/path/, gs://bucket/path/ or a local directory) the '
        'manifests may name inputs and results under, besides the manifest\'s own bucket (or, '
        'for a local manifest, its own directory). A manifest naming anything else is refused '
        'before it is read. Repeatable.')
    access.add_argument(
        '--rebase_uri', action='append', default=None, type=_rebase, metavar='FROM=TO',
        help='Read a URI the manifest names as FROM... from TO... instead, e.g. after '
        'copying a batch prediction from S3 to GCS. Repeatable. A TO prefix is trusted like '
        'an --allowed_prefix.')

    watch = parser.add_argument_group(
        'watch', 'A streaming job that keeps running and joins each new batch prediction as '
        'its manifest lands.')
    watch.add_argument(
        '--watch', nargs='?', const='true', default='false', choices=BOOLEANS,
        help='Keep running as a streaming job (Beam\'s --streaming means the same): join each '
        'manifest matching the --manifest globs (or <output_location>batch-prediction/'
        '*.manifest) once, as it lands, into <output>/<id>/ with its own summary.json (<id>: '
        'the manifest\'s name without .manifest). One whose summary there is complete for the '
        'same manifest content is not joined again. Files only (avro, parquet, jsonl); Amazon '
        'ML manifests only. --watch alone means true.')
    watch.add_argument(
        '--watch_interval', type=_positive_seconds, default=60, metavar='SECONDS',
        help='With --watch: how often the globs are matched again.')
    watch.add_argument(
        '--watch_for', type=_positive_seconds, default=None, metavar='SECONDS',
        help='With --watch: stop matching after this many seconds (as many matches as fit, '
        'one every --watch_interval), then finish the manifests found and end the job. '
        'Without it the job runs until it is cancelled or drained.')


class Options(PipelineOptions):
  """Pipeline options that make each view (``view_as``) once and hand out the same one after.

  Beam builds a view for every transform it applies (type-check settings, standard options,
  ...), and each view builds an argument parser for its options class and parses the command
  line again: hundreds of views, half of the launcher's pipeline construction. A view holds no
  values of its own (it reads and writes this object's ``_all_options``), so one view per
  options class behaves the same.
  """

  def view_as(self, cls):
    views = self.__dict__.setdefault('_views', {})
    if cls not in views:
      views[cls] = super().view_as(cls)
    return views[cls]


TRANSFORM_OPTIONS = ('transform_job', 'transform_input', 'transform_input_type', 'transform_output',
                     'transform_split_type', 'transform_accept', 'transform_join_source',
                     'transform_output_filter', 'transform_job_name')


def _validate_transform(opts, located: bool) -> None:
  if opts.manifest or located:
    raise OptionsError('give either an Amazon ML batch prediction (--manifest, or '
                       '--output_location with --batch_prediction_id) or a SageMaker transform '
                       'job (--transform_job), not both')
  if not opts.transform_job and not (opts.transform_input and opts.transform_output):
    raise OptionsError('give --transform_job JSON_OR_URI, or both --transform_input and '
                       '--transform_output')
  if opts.model_type == 'auto':
    raise OptionsError('--model_type binary, multiclass, regression or raw is needed for a '
                       'SageMaker transform job: its outputs carry no header that says it')
  for name in ('data_rearrangement', 'service_record'):
    if getattr(opts, name) is not None:
      raise OptionsError(f'--{name} applies to Amazon ML batch predictions, not to SageMaker '
                         'transform jobs')


def validate(options: PipelineOptions) -> PredjoinOptions:
  """Checks option combinations before the pipeline is built; raises OptionsError."""
  opts = options.view_as(PredjoinOptions)
  located = opts.output_location is not None or opts.batch_prediction_id is not None
  transform = any(getattr(opts, name) is not None for name in TRANSFORM_OPTIONS)
  if watching(options):
    _validate_watch(options, opts, transform)
  elif opts.watch_for is not None:
    raise OptionsError('--watch_for applies to --watch')
  if transform:
    _validate_transform(opts, located)
  elif opts.manifest and located:
    raise OptionsError('give either --manifest or --output_location with --batch_prediction_id, '
                       'not both')
  elif not opts.manifest and is_incremental(opts):
    if not opts.output_location or opts.batch_prediction_id:
      raise OptionsError('--incremental finds its batch predictions: give a --manifest glob, or '
                         '--output_location without --batch_prediction_id')
  elif not opts.manifest:
    if not (opts.output_location and (opts.batch_prediction_id or watching(options))):
      raise OptionsError('give --manifest URI, or both --output_location and '
                         '--batch_prediction_id (Amazon ML), or --transform_job (SageMaker)')
  for name in ('class_labels', 'output_fields', 'failed_marker'):
    if getattr(opts, name) is not None and not transform:
      raise OptionsError(f'--{name} applies to SageMaker transform jobs (--transform_job)')
  if opts.model_type == 'raw' and not transform:
    raise OptionsError('--model_type raw applies to SageMaker transform jobs (--transform_job)')
  if not opts.output:
    raise OptionsError('--output PREFIX is required')
  if opts.format == 'bigquery':
    from transforms.io.bigquery import TableError, parse_table
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
  if is_incremental(opts):
    given = [name for name in TRANSFORM_OPTIONS if getattr(opts, name) is not None]
    if transform and given != ['transform_job']:
      raise OptionsError('--incremental finds SageMaker transform jobs by --transform_job (a '
                         'glob of saved describe-transform-job responses) alone: each job\'s '
                         'description says the rest, not --' + ', --'.join(
                             n for n in given if n != 'transform_job'))
    if transform and opts.transform_job.lstrip().startswith('{'):
      raise OptionsError('--incremental needs --transform_job as the URI (or a glob) of saved '
                         'describe-transform-job responses, not inline JSON')
    if opts.format == 'bigquery' and opts.write_disposition != 'replace':
      raise OptionsError('--incremental loads each batch prediction so that a run again '
                         'replaces its rows: it needs --write_disposition replace')
  if opts.data_rearrangement is not None:
    from transforms.aml.slices import SplitError, parse
    try:
      parse(opts.data_rearrangement)
    except SplitError as e:
      raise OptionsError(str(e)) from None
  _check_dask(options, opts)
  return opts


def is_incremental(opts: PredjoinOptions) -> bool:
  """Whether ``--incremental`` is on (``--incremental``, ``--incremental=true``)."""
  return str(opts.incremental).lower() == 'true'


def watching(options: PipelineOptions) -> bool:
  """Whether the job is the streaming watch: ``--watch``, or Beam's ``--streaming``."""
  return str(options.view_as(PredjoinOptions).watch).lower() == 'true' or \
      bool(options.view_as(StandardOptions).streaming)


def _validate_watch(options: PipelineOptions, opts: PredjoinOptions, transform: bool) -> None:
  """What the streaming watch cannot do, refused before the pipeline is built."""
  if is_incremental(opts):
    raise OptionsError('--watch joins each batch prediction once already (as --incremental '
                       'does, for a run that ends): give one of them')
  if transform:
    raise OptionsError('--watch watches Amazon ML manifests (--manifest globs, or '
                       '--output_location): a SageMaker transform job is joined by a batch run')
  if opts.batch_prediction_id is not None:
    raise OptionsError('--watch joins every manifest that lands: give --manifest globs, or '
                       '--output_location alone (its batch-prediction/*.manifest), not '
                       '--batch_prediction_id')
  if opts.format == 'bigquery':
    raise OptionsError('--watch writes files (--format avro, parquet or jsonl), one prefix per '
                       'batch prediction: --format bigquery is for batch runs')
  if opts.service_record is not None:
    raise OptionsError('--service_record describes one batch prediction known at launch; '
                       '--watch joins batch predictions as they land')
  if is_dask(options.view_as(StandardOptions).runner):
    raise OptionsError('--watch is a streaming job, which Beam\'s DaskRunner does not run: run '
                       'it on Dataflow (or locally, see the README)')


def _check_dask(options: PipelineOptions, opts: PredjoinOptions) -> None:
  """Refuses on the DaskRunner what it cannot run: Beam's DaskRunner hands a step every output
  of the step before it, tagged or not, and these options add steps that read one output of a
  step that has several."""
  if not is_dask(options.view_as(StandardOptions).runner):
    return
  why = ("Beam's DaskRunner hands each step every output of the step before it, and this needs "
         'them apart')
  if opts.format == 'bigquery':
    raise OptionsError(f'--format bigquery does not run on the DaskRunner ({why}): write files '
                       '(--format avro, parquet or jsonl) and load those, or run on Dataflow')
  if opts.data_rearrangement is not None:
    raise OptionsError(f'--data_rearrangement does not run on the DaskRunner ({why}): run on '
                       'the DirectRunner or Dataflow')


# The predjoin command's help ------------------------------------------------------------------

USAGE = ('predjoin (--manifest URI | --output_location URI --batch_prediction_id ID | '
         '--transform_job JSON_OR_URI) --output PREFIX [option ...] [Beam option ...]')
DESCRIPTION = """\
Joins Amazon ML batch-prediction results, or SageMaker Batch Transform outputs, to their input
rows and writes enriched, typed records (Avro, Parquet, JSON Lines under --output), or loads
them into BigQuery."""
EPILOG = """\
Beam's standard options pass through to Beam: --runner (default DirectRunner), --project,
--region, --temp_location, --direct_num_workers, --direct_running_mode, --s3_endpoint_url, ...
`predjoin --help-beam` lists every one. An argument that is neither a predjoin option nor a
Beam option is a usage error.

On a Dask cluster: --runner DaskRunner --dask_client_address HOST:8786 (its scheduler), with
Dask installed (pip install "predjoin[dask]"); --help-beam then lists Dask's options too.

Exit codes (local and Dask runs): 0 ok; 1 more bad shards than --max_bad_shards, or the
outputs do not account for every input row; 2 usage error."""


DASK_INSTALL = 'pip install "predjoin[dask]"'


def load_dask_options() -> bool:
  """Registers Beam's ``DaskOptions`` (``--dask_client_address``, ...) with Beam's parser,
  which knows only the PipelineOptions classes imported so far. They are declared in the module
  of Beam's DaskRunner, which imports Dask; False when Dask (an optional extra) is missing."""
  # The runner module needs dask.distributed for its types, not only dask.
  if importlib.util.find_spec('dask') is None or importlib.util.find_spec('distributed') is None:
    return False
  import apache_beam.runners.dask.dask_runner  # noqa: F401
  return True


def version() -> str:
  """The installed predjoin distribution's version."""
  try:
    return importlib.metadata.version('predjoin')
  except importlib.metadata.PackageNotFoundError:  # run from a source tree that is not installed
    return 'unknown (not installed)'


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
  """Each option's help ends with its default, unless it has none (None, or a flag's False)."""

  def _get_help_string(self, action):
    text = action.help or ''
    default = action.default
    if (action.option_strings and '%(default)' not in text
        and not any(default is none for none in (None, argparse.SUPPRESS, False))):
      text += ' (default: %(default)s)'
    return text


class _BeamHelp(argparse.Action):
  """``--help-beam``: the options of Beam's own PipelineOptions classes, one group per class."""

  def __init__(self, option_strings, dest, **kwargs):
    super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

  def __call__(self, parser, namespace, values, option_string=None):
    dask = '' if load_dask_options() else (
        f'\n\nThe DaskRunner\'s options (--dask_client_address, ...) are listed once Dask is '
        f'installed: {DASK_INSTALL}')
    beam_help = argparse.ArgumentParser(
        prog='predjoin', usage='predjoin [predjoin option ...] [Beam option ...]',
        description="Beam's standard options, which predjoin passes to Beam (predjoin --help "
        "lists predjoin's own)." + dask, formatter_class=_HelpFormatter, add_help=False,
        allow_abbrev=False)
    for cls in _option_classes():
      if cls is not PredjoinOptions:
        group = beam_help.add_argument_group(cls.__name__)
        group.add_value_provider_argument = group.add_argument  # see _EveryOption
        cls._add_argparse_args(group)
    beam_help.print_help()
    parser.exit()


def command_parser() -> argparse.ArgumentParser:
  """The ``predjoin`` command's parser: predjoin's options in their groups, with their defaults
  and choices, ``--version`` and ``--help-beam``. It serves ``--help``; the job itself reads its
  options through ``PredjoinOptions``, from the same declarations."""
  parser = argparse.ArgumentParser(
      prog='predjoin', usage=USAGE, description=DESCRIPTION, epilog=EPILOG,
      formatter_class=_HelpFormatter, allow_abbrev=False)
  parser.add_argument('--version', action='version', version=f'%(prog)s {version()}')
  parser.add_argument('--help-beam', action=_BeamHelp,
                      help="show Beam's standard options (runner, Dataflow, workers, ...) and exit")
  PredjoinOptions._add_argparse_args(parser)
  return parser


def options_markdown() -> str:
  """predjoin's options as the README's tables show them: one table per group, each option with
  its values, default and help, from the same declarations as ``--help`` (a test keeps the
  README in step: ``python -m pipelines.options`` prints this)."""
  parser = command_parser()
  out = []
  for group in parser._action_groups:
    actions = [a for a in group._group_actions if a.dest not in ('help', 'version', 'help_beam')]
    if not actions:
      continue
    out += [f'**{group.title}**: {group.description}' if group.description
            else f'**{group.title}**', '', '| option | default | meaning |', '| --- | --- | --- |']
    for action in actions:
      name = action.option_strings[0]
      value = '\\|'.join(action.choices) if action.choices else (action.metavar or 'VALUE')
      default = '' if action.default in (None, False) else f'`{action.default}`'
      text = ' '.join((action.help or '').split()).replace('|', '\\|')
      if isinstance(action, argparse._AppendAction) and 'Repeatable' not in text:
        text += ' Repeatable.'
      out.append(f'| `{name} {value}` | {default} | {text} |')
    out.append('')
  return '\n'.join(out).rstrip() + '\n'


class _EveryOption(argparse.ArgumentParser):
  """A parser of the arguments of every registered PipelineOptions class, as Beam builds its own
  (``PipelineOptions.get_all_options``): Beam's standard options and predjoin's."""

  def add_value_provider_argument(self, *args, **kwargs):
    # Beam's parser wraps such a value in a ValueProvider; the check needs its name and type only.
    self.add_argument(*args, **kwargs)

  def error(self, message):
    raise UsageError(message)


def _option_classes() -> list[type[PipelineOptions]]:
  """Every registered PipelineOptions class, as Beam's parser takes them (one per name)."""
  return list({str(cls): cls for cls in PipelineOptions.__subclasses__()}.values())


def _every_option() -> _EveryOption:
  parser = _EveryOption(prog='predjoin', add_help=False, allow_abbrev=False)
  for cls in _option_classes():
    cls._add_argparse_args(parser)
  return parser


def check_arguments(argv: list[str]) -> None:
  """Refuses an argument that neither predjoin nor Beam declares, and a value its option refuses.

  Beam's own parsing drops an argument it does not know with a warning in the log ("Discarding
  unparseable args"), so a mistyped ``--cuttoff 0.9`` would run with the default cut-off. The
  options of every PipelineOptions class count, Beam's included, so the options the Flex
  Template launcher adds (``--template_location``, ``--sdk_container_image``, ``--labels``,
  ...) pass.

  Dask's options count when the command line asks for the DaskRunner or gives one of them
  (``load_dask_options``), so other runs do not import Dask.

  Raises:
    UsageError: naming the argument and, for an unknown one, the closest option name; or the
      DaskRunner asked for without Dask installed.
  """
  if asks_for_dask(argv) and not load_dask_options():
    raise UsageError(f'the DaskRunner and its --dask_* options need Dask: {DASK_INSTALL}')
  parser = _every_option()
  _, unknown = parser.parse_known_args(argv)
  if not unknown:
    return
  arg = unknown[0]
  if not arg.startswith('-'):
    raise UsageError(f'unrecognized argument {arg!r} (every option is --name=value or --name '
                     'value)')
  name = arg.split('=', 1)[0]
  known = [s for action in parser._actions for s in action.option_strings]
  close = difflib.get_close_matches(name, known, n=1)
  hint = f'; did you mean {close[0]}?' if close else ''
  raise UsageError(f'unrecognized argument {name}{hint} (predjoin --help lists predjoin\'s '
                   'options, predjoin --help-beam Beam\'s)')


if __name__ == '__main__':
  print(options_markdown(), end='')
