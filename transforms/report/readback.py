"""The outputs read back: each shard's rows in the files the summary lists, against the summary.

Where a runner reports no Beam counters (Beam's DaskRunner), the launcher checks the run this
way instead (``pipelines/job.py``): it reads every record and dead-letter file that
``summary.json`` lists, counts their rows by shard and status from the rows' own columns, and
compares the counts with each shard's line in the summary. That is independent of the counts
the sinks kept while writing (the summary's identity), and reads the files as a user would.
It also checks each shard's alignment evidence: a shard with records was paired ``verified``
or ``positional``, and a refused shard has none.

Only the columns that place and classify a row are read, streaming where the format allows:
Parquet and JSON Lines by pyarrow, Avro by polars (fastavro decodes every field in Python, about
17 s per million records here, against 1.3 s).
"""

from __future__ import annotations

import collections
import concurrent.futures
import os

import polars as pl
import pyarrow as pa
import pyarrow.json as pa_json
import pyarrow.parquet as pq
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from transforms.join.outcomes import BAD_STATUSES, POSITIONAL, VERIFIED
from transforms.report.run_summary import shard_key

# A record's status -> the summary's count of it; the dead letters are the fourth count.
STATUS_COUNTS = {'ok': 'joined_rows', 'failed': 'failed_rows',
                 'not_predicted': 'not_predicted_rows'}
DEAD_LETTER_ROWS = 'dead_letter_rows'
_KEY = ('batch_prediction_id', 'input_uri')
_RECORD_COLUMNS = (*_KEY, 'status')
_READERS = min(4, os.cpu_count() or 1)  # files read at once (the readers release the GIL)


def _open(uri: str):
  return FileSystems.open(uri, compression_type=CompressionTypes.UNCOMPRESSED)


def _tables(uri: str, columns: tuple[str, ...], types: dict[str, pa.DataType]):
  """The file's rows, only ``columns``, as Arrow tables (one or several)."""
  with _open(uri) as f:
    if uri.endswith('.parquet'):
      for batch in pq.ParquetFile(f).iter_batches(columns=list(columns), batch_size=65536):
        yield pa.Table.from_batches([batch])
    elif uri.endswith('.avro'):
      yield pl.read_avro(f, columns=list(columns)).to_arrow()
    elif uri.endswith('.jsonl'):
      schema = pa.schema([(name, types.get(name, pa.string())) for name in columns])
      reader = pa_json.open_json(f, parse_options=pa_json.ParseOptions(
          explicit_schema=schema, unexpected_field_behavior='ignore'))
      for batch in reader:
        yield pa.Table.from_batches([batch])
    else:
      raise ValueError(f'{uri}: not a record file predjoin writes')


def _count(uri: str, columns: tuple[str, ...], types=None) -> collections.Counter:
  """Rows of one file by ``columns`` (their values as a tuple)."""
  counts = collections.Counter()
  for table in _tables(uri, columns, types or {}):
    grouped = table.group_by(list(columns), use_threads=False).aggregate([([], 'count_all')])
    for row in grouped.to_pylist():
      counts[tuple(row[name] for name in columns)] += row['count_all']
  return counts


def _count_dead_letters(uri: str) -> collections.Counter:
  """Dead-letter rows of one file by shard; the letter of a whole unreadable shard (no
  ``row_number``) stands for no row."""
  counts = collections.Counter()
  rows = _count(uri, (*_KEY, 'row_number'), {'row_number': pa.int64()})
  for (bp_id, input_uri, row_number), n in rows.items():
    counts[bp_id, input_uri] += n if row_number is not None else 0
  return counts


def count_rows(summary: dict, records_in_files: bool = True) -> dict[tuple, dict[str, int]]:
  """Rows in the files ``summary['outputs']`` lists, by ``shard_key`` and count name
  (``joined_rows``, ``failed_rows``, ``not_predicted_rows``, ``dead_letter_rows``; a status
  predjoin does not write counts under its own name). Without ``records_in_files`` (records
  loaded into BigQuery) only the dead letters are counted."""
  records = summary['outputs']['records'] if records_in_files else []
  dead_letters = summary['outputs']['dead_letter']
  with concurrent.futures.ThreadPoolExecutor(_READERS) as pool:
    record_counts = list(pool.map(lambda uri: _count(uri, _RECORD_COLUMNS), records))
    letter_counts = list(pool.map(_count_dead_letters, dead_letters))
  rows: dict[tuple, dict[str, int]] = collections.defaultdict(collections.Counter)
  for counts in record_counts:
    for (bp_id, input_uri, status), n in counts.items():
      rows[shard_key(bp_id, input_uri)][STATUS_COUNTS.get(status, f'status {status!r}')] += n
  for counts in letter_counts:
    for (bp_id, input_uri), n in counts.items():
      rows[shard_key(bp_id, input_uri)][DEAD_LETTER_ROWS] += n
  return rows


def check(summary: dict, records_in_files: bool = True) -> list[str]:
  """Differences between the files the summary lists and what it says of each shard (none on
  a correct run): the rows by status, and the alignment evidence."""
  names = [*(STATUS_COUNTS.values() if records_in_files else ()), DEAD_LETTER_ROWS]
  found = count_rows(summary, records_in_files)
  problems = []
  for shard in summary['shards']:
    if shard['input_uri'] is None:  # a manifest that could not be used
      continue
    key = shard_key(shard['batch_prediction_id'], shard['input_uri'])
    counts = found.pop(key, collections.Counter())
    read = {name: counts.get(name, 0) for name in names}
    said = {name: shard.get(name) or 0 for name in names}
    if read != said or set(counts) - set(names):
      problems.append(f'{shard["input_uri"]}: its files hold {_rows(counts)}; the summary says '
                      f'{_rows(said)}')
    records = sum(counts.get(name, 0) for name in STATUS_COUNTS.values())
    if records and shard['alignment'] not in (VERIFIED, POSITIONAL):
      problems.append(f'{shard["input_uri"]}: records were written, but its alignment is '
                      f'{shard["alignment"]!r}')
    if records and shard['status'] in BAD_STATUSES:
      problems.append(f'{shard["input_uri"]}: records were written, but it was refused '
                      f'({shard["status"]})')
  problems.extend(f'{key[1]}: rows in the output files of no shard in the summary ({_rows(c)})'
                  for key, c in sorted(found.items()))
  return problems


def _rows(counts) -> str:
  return ', '.join(f'{name} {n}' for name, n in sorted(counts.items())) or 'no rows'
