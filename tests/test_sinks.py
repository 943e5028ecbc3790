"""The block-wise writers over real files: blocks larger than one encoding slice read back whole."""

import io
import json
import zlib

import fastavro
import fastavro.write
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.builders import multiclass_batch
from transforms.io import sinks
from transforms.join import record_schema


class _File(io.BytesIO):
  def close(self):  # the writers close their file; keep the bytes readable
    self.value = self.getvalue()
    super().close()


ENCODE_OFFSET = sinks.ENCODE_ROWS['avro'] + 11  # a batch that is a slice, starting inside a frame


@pytest.mark.parametrize('blockwise', [True, False])
def test_avro_blocks_larger_than_a_slice_read_back_whole(blockwise):
  rows = sinks.ENCODE_ROWS['avro']
  batch, schema = multiclass_batch(rows * 2 + 123)
  f = _File()
  writer = sinks._AvroBlockWriter(f, record_schema.avro_schema(schema), blockwise)
  writer.write(batch)
  writer.write(batch.slice(ENCODE_OFFSET, 5))
  writer.close()
  reader = fastavro.block_reader(io.BytesIO(f.value))
  blocks = list(reader)
  assert reader.metadata['avro.codec'] == 'deflate'
  assert [r for block in blocks for r in block] == (batch.to_pylist()
                                                    + batch.slice(ENCODE_OFFSET, 5).to_pylist())
  if blockwise:  # one Avro block per encoding slice
    assert [b.num_records for b in blocks] == [rows, rows, 123, 5]


def test_avro_deflate_is_raw_deflate_any_inflater_reads():
  data = b''.join(f'{i},"text, {i % 97}"\n'.encode() for i in range(50000))
  packed = sinks.deflate(data)
  assert zlib.decompress(packed, -15) == data  # raw deflate, no zlib header, as Avro specifies
  assert len(packed) < len(data) / 3


def test_avro_files_carry_one_sync_marker_each():
  batch, schema = multiclass_batch(100)
  files = []
  for _ in range(2):
    f = _File()
    writer = sinks._AvroBlockWriter(f, record_schema.avro_schema(schema), True)
    writer.write(batch)
    writer.close()
    files.append(f.value)
  # Each file's header ends with its sync marker; every block of the file ends with it too.
  syncs = [fastavro.block_reader(io.BytesIO(v))._header['sync'] for v in files]
  assert syncs[0] != syncs[1] and all(v.endswith(s) for v, s in zip(files, syncs, strict=True))
  assert [r for r in fastavro.reader(io.BytesIO(files[1]))] == batch.to_pylist()


def _avro_file(batch: pa.RecordBatch, schema: record_schema.OutputSchema, block_rows: int) -> bytes:
  """An uncompressed Avro file of ``batch`` written by fastavro, ``block_rows`` per block."""
  f = io.BytesIO()
  writer = fastavro.write.Writer(f, fastavro.parse_schema(record_schema.avro_schema(schema)))
  for offset in range(0, batch.num_rows, block_rows):
    for record in batch.slice(offset, block_rows).to_pylist():
      writer.write(record)
    writer.flush()  # ends the block
  return f.getvalue()


@pytest.mark.parametrize('block_rows', [1, 7, 1000])
def test_avro_block_framing_matches_fastavro_block_reader(block_rows):
  batch, schema = multiclass_batch(50)
  data = _avro_file(batch, schema, block_rows)
  mine = [(count, bytes(block)) for count, block in sinks.avro_blocks(data)]
  theirs = [(b.num_records, b.bytes_.getvalue()) for b in fastavro.block_reader(io.BytesIO(data))]
  assert mine == theirs and sum(count for count, _ in mine) == 50
  assert len(mine) == -(-50 // block_rows)
  # polars' output, as the writer gets it: one block per slice, the records of the batch
  polars_blocks = list(sinks.avro_blocks(sinks._polars_avro(pl.from_arrow(batch))))
  assert [count for count, _ in polars_blocks] == [50]


@pytest.mark.parametrize('damage', ['magic', 'sync', 'cut'])
def test_avro_block_framing_refuses_damaged_files(damage):
  batch, schema = multiclass_batch(30)
  data = bytearray(_avro_file(batch, schema, 10))
  if damage == 'magic':
    data[0:4] = b'Obj\x02'
  elif damage == 'sync':
    data[-1] ^= 0xFF  # the sync marker after the last block
  else:
    del data[-30:]
  with pytest.raises(ValueError):
    list(sinks.avro_blocks(bytes(data)))


def test_json_lines_blocks_larger_than_a_slice_read_back_whole():
  batch, _ = multiclass_batch(sinks.ENCODE_ROWS['jsonl'] + 7)
  f = _File()
  writer = sinks._JsonLinesWriter(f)
  writer.write(batch)
  # a slice of a batch, across two frames
  writer.write(batch.slice(3, sinks.ENCODE_ROWS['jsonl'] + 2))
  writer.close()
  lines = f.value.decode('utf-8').split('\n')
  expected = batch.to_pylist() + batch.slice(3, sinks.ENCODE_ROWS['jsonl'] + 2).to_pylist()
  assert lines[-1] == '' and len(lines) == len(expected) + 1
  assert [json.loads(line) for line in lines[:-1]] == expected


def test_parquet_blocks_gather_into_row_groups_of_at_least_64k_rows():
  batch, schema = multiclass_batch(20000)
  f = _File()
  writer = sinks._ParquetWriter(f, record_schema.arrow_schema(schema))
  for _ in range(7):  # 140k rows: 80k in the first group, 60k left for the last one
    writer.write(batch)
  writer.write(batch.slice(10, 20))
  writer.close()
  meta = pq.ParquetFile(io.BytesIO(f.value)).metadata
  assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [80000, 60020]
  table = pq.read_table(io.BytesIO(f.value))
  assert table.to_pylist() == batch.to_pylist() * 7 + batch.slice(10, 20).to_pylist()


def test_parquet_statistics_on_every_column_but_input_text():
  batch, schema = multiclass_batch(100)
  f = _File()
  writer = sinks._ParquetWriter(f, record_schema.arrow_schema(schema),
                                sinks.parquet_statistics_columns(schema))
  writer.write(batch)
  writer.close()
  group = pq.ParquetFile(io.BytesIO(f.value)).metadata.row_group(0)
  stats = {group.column(i).path_in_schema: group.column(i).is_stats_set
           for i in range(group.num_columns)}
  text = {'customer_id', 'comment'}  # the input's string columns
  assert {path for path, on in stats.items() if not on} == text
  assert stats['scores.list.element.score'] and stats['input_uri'] and stats['row_number']
  row_numbers = group.column(list(stats).index('row_number')).statistics
  assert (row_numbers.min, row_numbers.max) == (1, 100)


def test_parquet_dictionaries_on_every_column_but_predjoins_distinct_values():
  batch, schema = multiclass_batch(1000)
  f = _File()
  writer = sinks.RecordWriters('parquet', schema).open(f)
  writer.write(batch)
  writer.close()
  group = pq.ParquetFile(io.BytesIO(f.value)).metadata.row_group(0)
  dictionary = {group.column(i).path_in_schema: group.column(i).has_dictionary_page
                for i in range(group.num_columns)}
  distinct = {'row_number', 'input_line_number', 'result_line_number', 'tag', 'best_score', 'margin',
              'scores.list.element.score'}
  booleans = {'unknown', 'score_sum_off'}  # Parquet has no dictionaries for booleans
  assert {path for path, on in dictionary.items() if not on} == distinct | booleans
  # The input's columns keep theirs, whatever their values: here every comment differs.
  assert dictionary['comment'] and dictionary['customer_id'] and dictionary['status']
  assert pq.read_table(io.BytesIO(f.value)).to_pylist() == batch.to_pylist()
