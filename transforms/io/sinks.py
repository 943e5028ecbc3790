"""Block-wise record writers: whole Arrow RecordBatches encoded at once.

Writing one Python dict per record costs tens of microseconds a row through Beam and fastavro;
these writers take a whole ``RecordBatch`` at a time and encode it with an Arrow-native encoder:

- Avro: polars encodes the block's datums (uncompressed); fastavro writes the container file's
  header under predjoin's own schema; each block is compressed with deflate by ISA-L (level 1).
  The encoder's schema is checked, once per worker, to encode exactly like predjoin's; if it ever
  does not, records are written one by one with fastavro instead (correct, slower) and a warning
  says so.
- JSON Lines: polars' NDJSON writer.
- Parquet: pyarrow's writer, blocks gathered into row groups of at least 64k rows (blocks are
  smaller, to keep workers' memory down), min/max statistics on every column but the input's
  text columns, with dictionary pages capped at 64 KB so high-cardinality columns fall back to
  plain encoding early (1.4x faster, files no larger), and no dictionary at all for predjoin's
  own columns of distinct values (row numbers, scores).

The writers take a binary file handle; ``transforms/io/shard_files.py`` opens one per shard under a
temporary name and renames it into place when the shard is done, so a failed or re-run job
never leaves partial files under ``records/``.
"""

from __future__ import annotations

import io
import logging
import os

import apache_beam as beam
import fastavro
import fastavro.write
import pyarrow as pa
from fastavro.io.binary_decoder import BinaryDecoder
from fastavro.io.binary_encoder import BinaryEncoder
from isal import isal_zlib

from transforms.join import record_schema

_LOG = logging.getLogger(__name__)

AVRO_DEFLATE_LEVEL = 1  # ISA-L's levels are 0-3
PARQUET_DICTIONARY_PAGE_LIMIT = 64 << 10
PARQUET_ROW_GROUP_ROWS = 65536
# polars encodes a block in slices of this many rows: its buffers for a whole block would add
# tens of MB to a worker's peak. Avro encodes and deflates fastest in 4k-row slices, whose
# output stays in a core's L2 cache; JSON Lines gets faster with longer ones. Each Avro slice
# becomes one Avro block. (benchmarks/README.md has the measurements.)
ENCODE_ROWS = {'avro': 4096, 'jsonl': 8192}


def _frames(batch: pa.RecordBatch, rows: int):
  """The batch as polars frames of ``rows`` rows (``ENCODE_ROWS``), for polars' encoders.

  The batch is converted once and sliced (zero-copy), which saves the conversion's per-call
  cost on every slice; the encoders' buffers stay a slice's.
  """
  import polars as pl  # imported on workers only when Avro or JSON Lines is written
  frame = pl.from_arrow(batch)
  for offset in range(0, batch.num_rows, rows):
    yield frame.slice(offset, rows)


class RecordBatchCoder(beam.coders.Coder):
  """Arrow IPC for RecordBatches between stages; ``estimate_size`` without encoding.

  Beam samples element sizes with the PCollection's coder. With the default PickleCoder that
  pickled whole blocks (0.3 us a row); this coder reports the batch's buffer size instead.
  """

  def encode(self, value: pa.RecordBatch) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, value.schema) as writer:
      writer.write_batch(value)
    return sink.getvalue().to_pybytes()

  def decode(self, encoded: bytes) -> pa.RecordBatch:
    return pa.ipc.open_stream(encoded).read_next_batch()

  def estimate_size(self, value) -> int:
    return value.nbytes

  def is_deterministic(self) -> bool:
    return False

  def to_type_hint(self):
    return pa.RecordBatch


beam.coders.registry.register_coder(pa.RecordBatch, RecordBatchCoder)


def _shape(avro_type):
  """An Avro type with names and defaults removed: what determines its binary encoding."""
  if isinstance(avro_type, list):
    return [_shape(t) for t in avro_type]
  if isinstance(avro_type, dict):
    kind = avro_type['type']
    if kind == 'record':
      return ('record', tuple((f['name'], _shape(f['type'])) for f in avro_type['fields']))
    if kind == 'array':
      return ('array', _shape(avro_type['items']))
    return _shape(kind)
  return avro_type


POLARS_FORMATS = ('avro', 'jsonl')  # the formats whose blocks polars encodes


def _polars_avro(frame) -> bytes:
  """An uncompressed Avro container file of a polars frame's records."""
  buf = io.BytesIO()
  frame.write_avro(buf, compression='uncompressed')
  return buf.getvalue()


AVRO_MAGIC = b'Obj\x01'
SYNC_BYTES = 16


def avro_blocks(data: bytes):
  """The data blocks of an uncompressed Avro container file: ``(record count, bytes)`` each.

  Only the framing is read (magic, metadata map, sync marker, then per block its count, size
  and the sync marker after it), with fastavro's decoder for its longs and bytes; no schema is
  parsed: ``fastavro.block_reader`` would parse the writer's schema again for every slice, each a
  file of its own.

  Raises:
    ValueError: ``data`` is not an Avro container file, or a block is cut short or not
      followed by the file's sync marker.
  """
  fo = io.BytesIO(data)
  decoder = BinaryDecoder(fo)
  try:
    if decoder.read_fixed(len(AVRO_MAGIC)) != AVRO_MAGIC:
      raise ValueError('not an Avro container file: no magic bytes')
    decoder.read_map_start()
    for _ in decoder.iter_map():
      decoder.read_utf8()
      decoder.read_bytes()
    sync = decoder.read_fixed(SYNC_BYTES)
    view = memoryview(data)
    while fo.tell() < len(data):
      count, size = decoder.read_long(), decoder.read_long()
      start = fo.tell()
      if count < 0 or size < 0 or start + size + SYNC_BYTES > len(data):
        raise ValueError(f'an Avro block at byte {start} is cut short')
      fo.seek(start + size)
      if decoder.read_fixed(SYNC_BYTES) != sync:
        raise ValueError(f'the Avro block at byte {start} is not followed by the sync marker')
      yield count, view[start:start + size]
  except EOFError:
    raise ValueError('an Avro container file cut short') from None


def block_encoding_matches(arrow_schema: pa.Schema, avro_schema: dict) -> bool:
  """Whether polars encodes blocks of ``arrow_schema`` exactly as ``avro_schema`` declares."""
  import polars as pl
  empty = pl.from_arrow(pa.RecordBatch.from_pylist([], schema=arrow_schema))
  written = fastavro.reader(io.BytesIO(_polars_avro(empty))).writer_schema
  return _shape(written) == _shape(avro_schema)


def deflate(data: bytes) -> bytes:
  """Raw deflate (RFC 1951), the data of an Avro ``deflate`` block, compressed by ISA-L.

  zlib's level 1 takes about as long as everything else a worker does to the records; ISA-L's
  level 1 a fifth of that, for files no larger. Any inflater reads it: the tests read the files
  back with fastavro, which uses zlib.
  """
  compressor = isal_zlib.compressobj(AVRO_DEFLATE_LEVEL, isal_zlib.DEFLATED, -15)
  return compressor.compress(data) + compressor.flush()


class _AvroBlockWriter:
  """An Avro container file (deflate): fastavro writes the header and checks the schema.

  Block-wise, polars encodes each slice's records and this writes them as one block, framed
  the way fastavro's ``Writer.write_block`` frames a block (record count, byte count, data,
  the file's sync marker) with fastavro's encoder, but compressed by ``deflate`` above.
  """

  def __init__(self, f, avro_schema: dict, blockwise: bool):
    self._f = f
    self._blockwise = blockwise
    self._sync = os.urandom(16)
    self._writer = fastavro.write.Writer(f, fastavro.parse_schema(avro_schema), codec='deflate',
                                         compression_level=AVRO_DEFLATE_LEVEL,
                                         sync_marker=self._sync)
    self._encoder = BinaryEncoder(f)

  def write(self, batch: pa.RecordBatch) -> None:
    if not self._blockwise:
      for record in batch.to_pylist():
        self._writer.write(record)
      return
    for part in _frames(batch, ENCODE_ROWS['avro']):
      for count, block in avro_blocks(_polars_avro(part)):
        data = deflate(block)
        self._encoder.write_long(count)
        self._encoder.write_long(len(data))
        self._f.write(data)
        self._f.write(self._sync)

  def close(self) -> None:
    self._writer.flush()
    self._f.close()


class _JsonLinesWriter:
  def __init__(self, f):
    self._f = f

  def write(self, batch: pa.RecordBatch) -> None:
    for part in _frames(batch, ENCODE_ROWS['jsonl']):
      buf = io.BytesIO()
      part.write_ndjson(buf)
      self._f.write(buf.getbuffer())

  def close(self) -> None:
    self._f.close()


def _leaf_paths(field: pa.Field) -> list[str]:
  """The Parquet column paths of an Arrow field (a list's items are ``name.list.element``)."""
  if pa.types.is_list(field.type):
    items = field.type.value_field.with_name('element')  # Parquet's name for list items
    return [f'{field.name}.list.{path}' for path in _leaf_paths(items)]
  if pa.types.is_struct(field.type):
    return [f'{field.name}.{path}' for child in field.type for path in _leaf_paths(child)]
  return [field.name]


def parquet_statistics_columns(schema: record_schema.OutputSchema) -> list[str]:
  """The columns whose min/max statistics are written: all but the input's text columns.

  Min/max over every string of free-text input columns would take a third of the Parquet
  encoding time, and as rows keep the input's order, those bounds almost never let a reader
  skip a row group. Numbers, booleans, provenance and
  prediction columns keep their statistics.
  """
  kinds = {name: kind for name, kind, _ in schema.fields}
  text = {name for name in schema.input_fields if kinds[name] == 'string'}
  return [path for field in record_schema.arrow_schema(schema) if field.name not in text
          for path in _leaf_paths(field)]


# predjoin's own columns whose values are (nearly) all distinct: a dictionary would only fill up
# and fall back to plain encoding, after hashing every value of the first pages.
DISTINCT_COLUMNS = ('row_number', 'input_line_number', 'result_line_number', 'tag', 'score',
                    'best_score', 'margin')
DISTINCT_PATHS = ('scores.list.element.score',)


def parquet_dictionary_columns(schema: record_schema.OutputSchema) -> list[str]:
  """The columns written with dictionary encoding: all but predjoin's own columns whose values
  are nearly all distinct (row numbers, row ids, scores). Without the attempt, Parquet
  encoding took 4-5% less CPU (8k-row blocks of 1M binary and 250k multiclass records), for
  files 1% smaller. The input's columns keep it: the schema does not say how many values
  they take, and a column of few values is several times smaller with it."""
  inputs = set(schema.input_fields)
  return [path for field in record_schema.arrow_schema(schema)
          if field.name in inputs or field.name not in DISTINCT_COLUMNS
          for path in _leaf_paths(field) if path not in DISTINCT_PATHS]


class _ParquetWriter:
  """Blocks are buffered into row groups of at least ``PARQUET_ROW_GROUP_ROWS`` rows."""

  def __init__(self, f, arrow_schema: pa.Schema, statistics: list[str] | bool = True,
               dictionary: list[str] | bool = True):
    import pyarrow.parquet as pq
    self._f = f
    self._writer = pq.ParquetWriter(
        f, arrow_schema, compression='snappy', use_dictionary=dictionary,
        dictionary_pagesize_limit=PARQUET_DICTIONARY_PAGE_LIMIT, write_statistics=statistics)
    self._pending: list[pa.RecordBatch] = []
    self._pending_rows = 0

  def write(self, batch: pa.RecordBatch) -> None:
    self._pending.append(batch)
    self._pending_rows += batch.num_rows
    if self._pending_rows >= PARQUET_ROW_GROUP_ROWS:
      self._flush()

  def _flush(self) -> None:
    if self._pending_rows:
      table = pa.Table.from_batches(self._pending)
      self._writer.write_table(table, row_group_size=table.num_rows)
    self._pending, self._pending_rows = [], 0

  def close(self) -> None:
    self._flush()
    self._writer.close()
    self._f.close()


SUFFIX = {'avro': '.avro', 'parquet': '.parquet', 'jsonl': '.jsonl'}


class RecordWriters:
  """Opens block writers of one format and schema on binary file handles.

  Create one per worker (it decides once whether Avro blocks can be encoded block-wise);
  ``open(f)`` returns a writer with ``write(batch)`` and ``close()``, which closes ``f``.
  """

  def __init__(self, fmt: str, schema: record_schema.OutputSchema):
    if fmt not in SUFFIX:
      raise ValueError(f'no block-wise writer for {fmt!r}')
    self.fmt = fmt
    self.suffix = SUFFIX[fmt]
    self._arrow_schema = record_schema.arrow_schema(schema)
    self._avro_schema = record_schema.avro_schema(schema) if fmt == 'avro' else None
    self._blockwise = None
    if fmt == 'parquet':  # the same for every file: worked out once, not per shard
      self._statistics = parquet_statistics_columns(schema)
      self._dictionary = parquet_dictionary_columns(schema)

  def open(self, f):
    if self.fmt == 'jsonl':
      return _JsonLinesWriter(f)
    if self.fmt == 'parquet':
      return _ParquetWriter(f, self._arrow_schema, self._statistics, self._dictionary)
    if self._blockwise is None:
      self._blockwise = block_encoding_matches(self._arrow_schema, self._avro_schema)
      if not self._blockwise:
        _LOG.warning('the Arrow-to-Avro encoder does not encode like predjoin\'s Avro schema; '
                     'writing records one by one (slower)')
    return _AvroBlockWriter(f, self._avro_schema, self._blockwise)
