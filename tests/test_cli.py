"""The ``predjoin`` command as a user meets it: --help, --help-beam, --version, mistyped options,
and a job that fails on its own runner when it has too many bad shards.

The command runs as a subprocess (the installed console script) wherever its output or exit code
is what is checked.
"""

import importlib.metadata
import json
import os
import re
import subprocess
import sys

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from pipelines.job import build_pipeline, run
from pipelines.options import UsageError, check_arguments
from tests.builders import read_summary, write_bp
from tests.test_dataflow import LAUNCHER_ARGS
from transforms.report.run_summary import TooManyBadShards

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
METADATA = os.path.join(ROOT, 'deploy', 'metadata.json')
# Beam's FnApiRunner named as any other runner: it runs the job in this process, but it is not
# the local runner predjoin's launcher waits on and judges (pipelines/runners.LOCAL_RUNNERS).
IN_PROCESS_RUNNER = 'apache_beam.runners.portability.fn_api_runner.FnApiRunner'


def predjoin(*args: str) -> subprocess.CompletedProcess:
  """The installed ``predjoin`` command (beside this Python), as a user runs it."""
  command = os.path.join(os.path.dirname(sys.executable), 'predjoin')
  return subprocess.run([command, *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


def help_entries(text: str) -> dict[str, str]:
  """``--option`` -> its help text (joined lines), from argparse's help output."""
  entries, current = {}, None
  for line in text.splitlines():
    match = re.match(r'^  (--[\w-]+)', line)
    if match:
      current = match.group(1)
      entries[current] = line
    elif current and line.startswith('      '):
      entries[current] += ' ' + line.strip()
    else:
      current = None
  return {name: ' '.join(text.split()) for name, text in entries.items()}


def test_help_lists_every_template_parameter_with_its_default_in_groups():
  result = predjoin('--help')
  assert result.returncode == 0, result.stderr
  out = result.stdout
  assert out.startswith('usage: predjoin ')
  entries = help_entries(out)
  with open(METADATA) as f:
    parameters = json.load(f)['parameters']
  for parameter in parameters:
    name = f'--{parameter["name"]}'
    assert name in entries, f'{name} is not in predjoin --help'
    if 'defaultValue' in parameter:
      assert f'(default: {parameter["defaultValue"]})' in entries[name], entries[name]
    else:
      assert '(default:' not in entries[name], entries[name]
    for option in parameter.get('enumOptions', []):
      assert option['value'] in entries[name].split('}')[0], entries[name]
  groups = re.findall(r'^(\w+):$', out, flags=re.MULTILINE)
  assert groups == ['options', 'input', 'output', 'model', 'verification', 'incremental',
                    'access', 'watch']
  assert 'predjoin --help-beam' in out  # how to see Beam's own options


def test_help_beam_lists_beams_standard_options_by_class():
  result = predjoin('--help-beam')
  assert result.returncode == 0, result.stderr
  entries = help_entries(result.stdout)
  for name in ('--runner', '--project', '--region', '--temp_location', '--sdk_container_image',
               '--direct_num_workers', '--s3_endpoint_url', '--template_location'):
    assert name in entries, name
  assert '--cutoff' not in entries  # predjoin's own are in --help
  assert re.search(r'^GoogleCloudOptions:$', result.stdout, flags=re.MULTILINE)


def test_version_is_the_installed_distributions():
  result = predjoin('--version')
  assert result.returncode == 0, result.stderr
  assert result.stdout.strip() == f'predjoin {importlib.metadata.version("predjoin")}'


def test_a_mistyped_option_is_a_usage_error_that_names_the_closest_option(tmp_path):
  manifest = os.path.join(ROOT, 'samples/output/batch-prediction/bp-sample-binary.manifest')
  result = predjoin('--manifest', manifest, '--output', str(tmp_path / 'out'), '--cuttoff', '0.9')
  assert result.returncode == 2
  assert result.stderr.strip().splitlines() == [
      'predjoin: error: unrecognized argument --cuttoff; did you mean --cutoff? (predjoin '
      "--help lists predjoin's options, predjoin --help-beam Beam's)"]
  assert not (tmp_path / 'out').exists()  # refused before anything was read or written


@pytest.mark.parametrize('args, message', [
    (['--output_locaton=s3://b/o/'], 'unrecognized argument --output_locaton; did you mean '
     '--output_location?'),
    (['--temp_locaton', 'gs://b/t'], 'did you mean --temp_location?'),  # a Beam option
    (['--runnr=DataflowRunner'], 'did you mean --runner?'),
    (['stray'], "unrecognized argument 'stray'"),
    (['--cutoff', '1.5'], "argument --cutoff: '1.5' is not a probability between 0 and 1"),
    (['--num_workers', 'many'], "argument --num_workers: invalid int value: 'many'"),
    (['--format', 'csv'], "argument --format: invalid choice: 'csv'"),
])
def test_arguments_neither_predjoin_nor_beam_declares_are_refused(args, message):
  with pytest.raises(UsageError, match=re.escape(message)):
    check_arguments(['--manifest', 'm.manifest', '--output', 'out/', *args])


def test_the_options_a_flex_template_launch_adds_are_beams_and_pass():
  check_arguments([*LAUNCHER_ARGS, '--output_location=gs://b/o/', '--batch_prediction_id=bp-1',
                   '--output=gs://b/enriched/', '--cutoff=0.7'])
  # Local runs' options too, in both spellings.
  check_arguments(['--manifest', 'm', '--output', 'o', '--direct_num_workers=2',
                   '--direct_running_mode', 'multi_processing', '--s3_endpoint_url',
                   'http://127.0.0.1:9000', '--runner', 'DirectRunner'])


def test_run_refuses_a_mistyped_option_with_exit_code_2(tmp_path, capsys):
  assert run(['--manifest', 'm.manifest', '--output', str(tmp_path), '--max_bad_shard', '3']) == 2
  assert 'did you mean --max_bad_shards?' in capsys.readouterr().err


# A job on a runner other than the local one fails itself when it has too many bad shards -------

INPUTS = [f'{i},name {i},{i}.5' for i in range(12)]
RESULTS = [f'{i % 2},0.{i:02d}' for i in range(12)]


@pytest.fixture
def bad_bp(tmp_path):
  """One good shard and one whose result has a line too few (row_count_mismatch)."""
  return write_bp(tmp_path, 'bp-bad', [(INPUTS, RESULTS), (INPUTS, RESULTS[:-1])])


def test_a_job_on_another_runner_fails_after_writing_its_summary(bad_bp, tmp_path):
  out = str(tmp_path / 'out')
  options = PipelineOptions(['--manifest', bad_bp, '--output', out, '--allowed_prefix',
                             f'{tmp_path}/', '--runner', IN_PROCESS_RUNNER])
  p = beam.Pipeline(options=options)
  build_pipeline(p, options)
  with pytest.raises(TooManyBadShards) as failed:  # Beam re-raises the job's own error
    p.run().wait_until_finish()
  message = str(failed.value)
  assert '1 bad shard(s) or manifest(s), more than --max_bad_shards 0 allows' in message
  assert 'part-2.csv: row_count_mismatch: ' in message and 'has 11 result lines' in message
  assert "[while running 'WriteSummary/WriteSummaryJson']" in message
  summary = read_summary(out)
  assert summary['ok'] is False and summary['totals']['bad_shards'] == 1
  assert summary['identity']['holds']


def test_a_job_that_failed_itself_on_bad_shards_is_judged_by_its_summary(bad_bp, tmp_path):
  """On another runner the job raises TooManyBadShards after writing the summary; a launcher
  that waits for it prints the summary and one line, as when it judges the run itself."""
  out = str(tmp_path / 'out')
  result = predjoin('--manifest', bad_bp, '--output', out, '--allowed_prefix', f'{tmp_path}/',
                    '--runner', IN_PROCESS_RUNNER)
  assert result.returncode == 1
  mine = [line for line in result.stderr.splitlines() if line.startswith('predjoin:')]
  assert mine == ['predjoin: 1 bad shard(s) or manifest(s), --max_bad_shards 0']
  assert 'part-2.csv: row_count_mismatch, in ' in result.stdout  # the summary, printed
  assert read_summary(out)['ok'] is False


def test_within_the_limit_the_job_on_another_runner_succeeds(bad_bp, tmp_path):
  out = str(tmp_path / 'out')
  assert run(['--manifest', bad_bp, '--output', out, '--allowed_prefix', f'{tmp_path}/',
              '--runner', IN_PROCESS_RUNNER, '--max_bad_shards', '1']) == 0
  assert read_summary(out)['ok'] is True


def test_the_local_runner_leaves_the_verdict_to_the_launcher(bad_bp, tmp_path, capsys):
  # The job succeeds; the launcher reads the summary and exits 1 (README, "Exit codes").
  out = str(tmp_path / 'out')
  assert run(['--manifest', bad_bp, '--output', out, '--allowed_prefix', f'{tmp_path}/']) == 1
  assert 'the job failed' not in capsys.readouterr().err
  assert read_summary(out)['ok'] is False


def test_the_error_names_the_count_the_limit_and_at_most_ten_shards():
  from transforms.report.run_summary import bad_shards_message
  shards = [{'input_uri': f's3://b/in/{i}.csv', 'manifest_uri': 's3://b/m', 'status': 'error',
             'error': f'cannot read {i}.csv'} for i in range(12)]
  shards.append({'input_uri': None, 'manifest_uri': 's3://b/bad.manifest', 'status': 'error',
                 'error': 'not JSON'})
  message = bad_shards_message({'shards': shards, 'max_bad_shards': 2}, 's3://o/summary.json')
  assert message.startswith('13 bad shard(s) or manifest(s), more than --max_bad_shards 2 '
                            'allows (see s3://o/summary.json): s3://b/in/0.csv: error: cannot')
  assert message.endswith('s3://b/in/9.csv: error: cannot read 9.csv; and 3 more')


def test_the_readme_lists_the_options_as_they_are_declared():
  # The README's option tables are generated (python -m pipelines.options): they cannot drift.
  from pipelines.options import options_markdown
  begin, end = '<!-- options: generated by python -m pipelines.options -->\n', '<!-- options: end -->'
  readme = open(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                             'README.md'), encoding='utf-8').read()
  assert readme[readme.index(begin) + len(begin):readme.index(end)] == options_markdown()
  assert '| `--input_header auto\\|true\\|false` | `auto` |' in options_markdown()
