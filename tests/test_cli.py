"""The ``predjoin`` command as a user meets it: --help, --help-beam, --version, mistyped options.

The command runs as a subprocess (the installed console script) wherever its output or exit code
is what is checked.
"""

import importlib.metadata
import json
import os
import re
import subprocess
import sys

import pytest

from pipelines.enrich import run
from pipelines.options import UsageError, check_arguments

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
METADATA = os.path.join(ROOT, 'deploy', 'metadata.json')


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
  assert groups == ['options', 'input', 'output', 'model', 'verification', 'access']
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
  check_arguments(['--runner=DataflowRunner', '--project=p', '--region=europe-west1',
                   '--template_location=gs://b/staging/template_launches/1/job_object',
                   '--staging_location=gs://b/staging', '--temp_location=gs://b/tmp',
                   '--sdk_container_image=r/predjoin:1', '--service_account_email=w@p.iam',
                   '--labels={"goog-dataflow-provided-template-type":"flex"}',
                   '--job_name=predjoin-1', '--max_num_workers=10', '--no_use_public_ips',
                   '--output_location=gs://b/o/', '--batch_prediction_id=bp-1',
                   '--output=gs://b/enriched/', '--cutoff=0.7'])
  # Local runs' options too, in both spellings.
  check_arguments(['--manifest', 'm', '--output', 'o', '--direct_num_workers=2',
                   '--direct_running_mode', 'multi_processing', '--s3_endpoint_url',
                   'http://127.0.0.1:9000', '--runner', 'DirectRunner'])


def test_run_refuses_a_mistyped_option_with_exit_code_2(tmp_path, capsys):
  assert run(['--manifest', 'm.manifest', '--output', str(tmp_path), '--max_bad_shard', '3']) == 2
  assert 'did you mean --max_bad_shards?' in capsys.readouterr().err
