"""Per-shard dead-letter and resubmit files (transforms/shard_files.py), on the local disk."""

import json
import os

import pytest

from tests.builders import multiclass_batch, read_records_file
from transforms.aml.manifest import Shard
from transforms.io import shard_files, sinks
from transforms.join.outcomes import DeadLetter


def _shard(input_uri='s3://b/in/data-001.csv', bp='bp-1', manifest='s3://b/out/bp-1.manifest'):
  return Shard(bp, manifest, input_uri, 's3://b/out/result/bp-1-data-001.csv.gz')


def _tree(root):
  return sorted(os.path.relpath(os.path.join(d, f), root)
                for d, _, files in os.walk(root) for f in files)


def _letter(reason, row_number, **fields):
  return DeadLetter('bp-1', reason, f'{reason} here', 's3://b/in/data-001.csv',
                    's3://b/out/r.gz', row_number, **fields)


def test_a_dead_letter_is_written_with_its_uris_and_message_redacted(tmp_path):
  files = shard_files.ShardFiles(str(tmp_path), _shard(), resubmit_header=None)
  secret = 's3://AKIAIOSFODNN7EXAMPLE:s3cr3t@host@b/in.csv'
  files.dead_letter(DeadLetter('bp-1', 'result_unreadable', f'cannot open {secret}', secret,
                               secret, 1, 2, None, 'AKIA-like text stays as read', None,
                               {'input_rows': 3}))
  [line] = open(files.commit()['dead_letter'], encoding='utf-8').read().splitlines()
  letter = json.loads(line)
  assert 's3cr3t' not in line and 'AKIAIOSFODNN7EXAMPLE' not in line
  assert letter['error'] == 'cannot open s3://***@b/in.csv' and letter['input_rows'] == 3
  assert letter['input_line'] == 'AKIA-like text stays as read'


def test_file_names_are_stable_and_tell_apart_shards_whose_inputs_share_a_name():
  a = shard_files.file_name(_shard(), '.jsonl')
  assert a == shard_files.file_name(_shard(), '.jsonl')  # a rerun writes the same name
  assert a.startswith('part-data-001-') and a.endswith('.jsonl')
  others = {shard_files.file_name(_shard('s3://b/other/data-001.csv'), '.jsonl'),
            shard_files.file_name(_shard(bp='bp-2'), '.jsonl'),
            shard_files.file_name(_shard(manifest='s3://b/out/bp-3.manifest'), '.jsonl')}
  assert a not in others and len(others) == 3
  odd = shard_files.file_name(_shard('gs://b/in/we ird/na:me?.tar.csv'), '.csv')
  assert odd.startswith('part-na_me__tar-') and '/' not in odd


def test_a_shard_writes_its_files_into_place_and_nothing_when_it_has_nothing(tmp_path):
  out = str(tmp_path)
  files = shard_files.ShardFiles(out, _shard(), resubmit_header='id,name')
  files.dead_letter(_letter('bad_input_row', 3, input_line='x,ü'))
  files.dead_letter(_letter('input_unreadable', None))  # a shard, not a row
  files.resubmit('1,a\n2,b')
  files.resubmit('9,z')
  done = files.commit()
  name = shard_files.file_name(_shard(), '')
  assert done == {'dead_letter': os.path.join(out, 'dead_letter', name + '.jsonl'),
                  'resubmit': os.path.join(out, 'resubmit', name + '.csv')}
  assert files.dead_letter_rows == 1
  lines = open(done['dead_letter'], encoding='utf-8').read().splitlines()
  assert [json.loads(line)['reason'] for line in lines] == ['bad_input_row', 'input_unreadable']
  assert json.loads(lines[0])['input_line'] == 'x,ü'
  assert open(done['resubmit']).read() == 'id,name\n1,a\n2,b\n9,z\n'
  assert _tree(out) == [f'dead_letter/{name}.jsonl', f'resubmit/{name}.csv']  # no temp left
  assert sorted(os.listdir(out)) == ['dead_letter', 'resubmit']  # no temporary directory
  empty = shard_files.ShardFiles(str(tmp_path / 'empty'), _shard(), resubmit_header=None)
  assert empty.commit() == {} and not os.path.exists(tmp_path / 'empty')


def test_a_retried_shard_rewrites_the_same_files_and_a_failed_one_leaves_none(tmp_path):
  out = str(tmp_path)
  for _ in range(2):  # the first attempt, then a retry of the same shard
    files = shard_files.ShardFiles(out, _shard(), resubmit_header=None)
    files.dead_letter(_letter('bad_result_line', 7))
    files.commit()
  name = shard_files.file_name(_shard(), '.jsonl')
  assert _tree(out) == [f'dead_letter/{name}']
  assert len(open(tmp_path / 'dead_letter' / name).read().splitlines()) == 1
  failed = shard_files.ShardFiles(str(tmp_path / 'failed'), _shard(), resubmit_header=None)
  failed.dead_letter(_letter('bad_result_line', 1))
  failed.resubmit('1,a')
  failed.discard()
  assert _tree(tmp_path / 'failed') == []


@pytest.mark.parametrize('fmt', ['avro', 'parquet', 'jsonl'])
def test_a_shard_writes_its_records_into_one_file_and_counts_them_by_status(tmp_path, fmt):
  batch, schema = multiclass_batch(max(sinks.ENCODE_ROWS.values()) + 50)
  out = str(tmp_path)
  files = shard_files.ShardFiles(out, _shard(), resubmit_header=None,
                                writers=sinks.RecordWriters(fmt, schema))
  files.records(batch.slice(0, 40))
  files.records(batch.slice(40))
  done = files.commit()
  name = shard_files.file_name(_shard(), f'.{fmt}')
  assert done == {'records': os.path.join(out, 'records', name)}
  assert _tree(out) == [f'records/{name}']  # no temporary file or directory left
  rows = read_records_file(done['records'])
  assert [r['row_number'] for r in rows] == list(range(1, batch.num_rows + 1))
  assert rows[5]['comment'] == batch.column('comment')[5].as_py()
  failed = sum(r['status'] == 'failed' for r in rows)
  assert failed == sum(i % 7 == 3 for i in range(batch.num_rows)) > 0
  assert files.record_counts == (batch.num_rows - failed, failed, 0)


def test_a_failed_shard_leaves_no_records_file_and_a_shard_without_records_writes_none(tmp_path):
  batch, schema = multiclass_batch(10)
  writers = sinks.RecordWriters('parquet', schema)
  failed = shard_files.ShardFiles(str(tmp_path / 'failed'), _shard(), None, writers)
  failed.records(batch)
  failed.discard()
  assert _tree(tmp_path / 'failed') == []
  empty = shard_files.ShardFiles(str(tmp_path / 'empty'), _shard(), None, writers)
  empty.dead_letter(_letter('misaligned', 1))
  assert list(empty.commit()) == ['dead_letter']
  assert empty.record_counts == (0, 0, 0)
  assert not os.path.exists(tmp_path / 'empty' / 'records')
