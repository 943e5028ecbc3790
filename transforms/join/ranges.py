"""Row ranges: one large shard joined by several workers at once.

Pass 1 reads both files of a shard end to end anyway (``transforms/join/pass1.py``). While it
does, each file's stream passes through a :class:`Marks`, which notes where every
``range_rows``-th row starts (a byte offset in the file's stream, decompressed for a gzip result)
and a CRC32 of the bytes of each range. For a gzip result, pass 1 reads with rapidgzip instead of
ISA-L, which builds an index of access points into the compressed stream as it inflates; its
exported index lets another reader start inflating at any offset (``open_result``).

Only when pass 1 has accepted the whole shard (counts, header, alignment) is it cut into
:class:`RowRange` s: range k holds rows ``[k * range_rows, (k + 1) * range_rows)``, with the
spans of both files that hold them. Each range becomes a :class:`RangeWork` that any worker
joins (``ShardJoiner.join_range``): it opens both files at the range's offsets, joins exactly
the range's rows with the same block join as a whole shard, and checks that it read exactly the
bytes pass 1 saw there (size and CRC32), so a file rewritten in between, or a decompressor that
returned other bytes, fails the range instead of making records from it. No reader checks a gzip
CRC on part of a stream; the range's own CRC takes its place.

A gzip result is indexed only when it is large enough to be worth splitting: rapidgzip costs
about twice ISA-L's CPU to inflate. rapidgzip cannot tell every truncated stream (it may end
early without an error), so pass 1 compares its CRC32 and length with the gzip trailer, and reads
the file again with ISA-L, which does check, when they disagree (a truncated or multi-member
file): that shard is then joined whole.
"""

from __future__ import annotations

import dataclasses
import io
import struct

import numpy as np
from isal import isal_zlib

from transforms.join.lines import count_newlines, nth_newline
from transforms.join.outcomes import ShardReport
from transforms.join.shards import Shard

# rapidgzip's chunk: its cache (and a pass-1 worker's memory) grows with it; 2 MiB keeps the
# cache near 110 MB at the same CPU as larger chunks.
RAPIDGZIP_CHUNK_BYTES = 2 << 20
# A gzip result is indexed when it may hold two ranges: a result line compresses to about 3
# bytes or more, so smaller files cannot.
GZIP_BYTES_PER_ROW = 3


@dataclasses.dataclass(frozen=True)
class Span:
  """Bytes of a file's stream from ``start``, as pass 1 read them: ``parts`` are consecutive
  pieces ``(length, CRC32)`` (one for a range's span; the last range's span also holds the
  pieces after its last mark, to the end of the file)."""

  start: int
  parts: tuple[tuple[int, int], ...]

  @property
  def size(self) -> int:
    return sum(length for length, _ in self.parts)


@dataclasses.dataclass(frozen=True)
class RowRange:
  """Rows ``[first_row, first_row + rows)`` of a shard, and the spans of its input and result
  that hold them and nothing else (the last range's spans run to the files' ends)."""

  index: int
  first_row: int
  rows: int
  input: Span
  result: Span


@dataclasses.dataclass(frozen=True)
class RangeWork:
  """One range of a split shard, for any worker: the shard, its report as pass 1 made it (the
  counts and alignment of the whole shard), the range, how many ranges the shard has, and the
  gzip result's index (None: the result is not gzip)."""

  shard: Shard
  report: ShardReport
  range: RowRange
  ranges: int
  result_index: bytes | None


@dataclasses.dataclass(frozen=True)
class SplitShard:
  """What joining a shard yields, instead of its records, when it is split into ranges."""

  report: ShardReport
  work: tuple[RangeWork, ...]


class Marks:
  """A binary file object that notes, as its bytes are read in order, where lines
  ``first_line + k * every`` start (``starts``) and the CRC32 and length of the bytes from each
  such start to the next (``spans``, the last one to the end of the file). ``first_line``
  counts the lines before the first mark (a header line); the bytes before it are in no span.
  It also keeps the CRC32 and length of the whole stream (``crc``, ``size``).

  Noting costs one NumPy newline count and one CRC32 per read.
  """

  def __init__(self, f, first_line: int, every: int):
    self._f = f
    self._every = every
    self._next = first_line  # the line whose start is the next mark
    self._lines = 0  # newlines seen
    self.size = 0
    self.crc = 0
    self.starts: list[int] = []
    self._span_crcs: list[int] = []
    self._span_crc = 0
    if first_line == 0:
      self._mark(0)

  def _mark(self, offset: int) -> None:
    if self.starts:
      self._span_crcs.append(self._span_crc)
    self.starts.append(offset)
    self._span_crc = 0
    self._next += self._every

  def _see(self, data) -> None:
    n = len(data)
    if not n:
      return
    before = self._lines  # newlines before this data
    newlines = count_newlines(data)
    at = 0  # data[:at] is in the spans' CRCs already (or before the first mark)
    while before + newlines >= self._next:  # the next mark's line starts after this data's
      end = nth_newline(data, self._next - before, n) + 1  # (self._next - before)-th newline
      if self.starts:
        self._span_crc = isal_zlib.crc32(data[at:end], self._span_crc)
      at = end
      self._mark(self.size + end)
    if self.starts:
      self._span_crc = isal_zlib.crc32(data[at:], self._span_crc)
    self._lines = before + newlines
    self.crc = isal_zlib.crc32(data, self.crc)
    self.size += n

  def read(self, size: int = -1) -> bytes:
    data = self._f.read(size)
    self._see(data)
    return data

  def readinto(self, buffer) -> int:
    got = self._f.readinto(buffer) or 0
    with memoryview(buffer) as view:
      self._see(view[:got])
    return got

  def spans(self) -> list[Span]:
    """The spans noted, one per mark, once the whole file has been read."""
    if not self.starts:
      return []
    crcs = [*self._span_crcs, self._span_crc]
    sizes = [*np.diff(self.starts).tolist(), self.size - self.starts[-1]]
    return [Span(start, ((size, crc),)) for start, crc, size
            in zip(self.starts, crcs, sizes, strict=True)]

  def close(self) -> None:
    self._f.close()


def cut(report: ShardReport, range_rows: int, input_spans: list[Span],
        result_spans: list[Span]) -> list[RowRange]:
  """The shard's rows as ranges of ``range_rows`` (the last one shorter), from the spans pass 1
  noted in both files; [] when the shard is too small to split (fewer than two ranges' rows)
  or a file has fewer marks than its rows need (then it is joined whole)."""
  rows = report.input_rows or 0
  count = -(-rows // range_rows)
  if rows < 2 * range_rows or len(input_spans) < count or len(result_spans) < count:
    return []
  ranges = []
  for k in range(count):
    last = k == count - 1
    first = k * range_rows
    ranges.append(RowRange(k, first, rows - first if last else range_rows,
                           _to_end(input_spans, k) if last else input_spans[k],
                           _to_end(result_spans, k) if last else result_spans[k]))
  return ranges


def _to_end(spans: list[Span], k: int) -> Span:
  """The span from mark k to the end of the file: the last range also holds what follows its
  last row (empty lines at the end of an input)."""
  return Span(spans[k].start, tuple(part for span in spans[k:] for part in span.parts))


class SpanReader:
  """Reads exactly one :class:`Span` of a stream opened at its start, and checks, piece by
  piece, that these are the bytes pass 1 read there (``finish`` reads what the join left)."""

  def __init__(self, f, span: Span, what: str):
    self._f = f
    self._span = span
    self._what = what
    self._parts = list(span.parts)
    self._part = -1  # the piece being read
    self._crc = 0
    self._read = 0
    self._next_part()

  def read(self, size: int = -1) -> bytes:
    left = self._span.size - self._read
    want = left if size is None or size < 0 else min(size, left)
    data = self._f.read(want) if want else b''
    self._read += len(data)
    at = 0
    while at < len(data):
      take = min(self._part_left, len(data) - at)
      self._crc = isal_zlib.crc32(data[at:at + take], self._crc)
      at += take
      self._part_left -= take
      if not self._part_left:
        self._check_part()
    return data

  def _check_part(self) -> None:
    _, crc = self._parts[self._part]
    if self._crc != crc:
      self._fail(f'CRC32 {self._crc:08x}, not {crc:08x}')
    self._next_part()

  def _next_part(self) -> None:
    self._part, self._crc = self._part + 1, 0
    while self._part < len(self._parts) and not self._parts[self._part][0]:
      self._part += 1  # an empty piece (a mark at the very end of the file)
    self._part_left = self._parts[self._part][0] if self._part < len(self._parts) else 0

  def readinto(self, buffer) -> int:
    with memoryview(buffer) as view:
      data = self.read(len(view))
      view[:len(data)] = data
    return len(data)

  def finish(self) -> None:
    """Reads what the join left of the span and checks it all arrived.

    Raises:
      RuntimeError: the file changed since pass 1 read it (or returned other bytes).
    """
    while self.read(1 << 20):
      pass
    if self._read != self._span.size or self._part < len(self._parts):
      self._fail(f'{self._read} bytes, not {self._span.size}')

  def _fail(self, detail: str) -> None:
    raise RuntimeError(f'{self._what}: the {self._span.size} bytes from byte '
                       f'{self._span.start} are not those pass 1 read ({detail}): the file '
                       'changed while it was joined; no record is made from this range')

  def close(self) -> None:
    self._f.close()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()
    return False


# gzip results ---------------------------------------------------------------------------------


def rapidgzip_reader(raw):
  """A rapidgzip reader over a raw (compressed) file object, one thread: rapidgzip's parallel
  inflate would double the CPU a shard costs."""
  import rapidgzip  # only workers that index or split a large gzip result load it
  return rapidgzip.RapidgzipFile(raw, parallelization=1, chunk_size=RAPIDGZIP_CHUNK_BYTES)


def export_index(reader) -> bytes:
  """The access points a rapidgzip reader found, in rapidgzip's compact index format (windows
  compressed: about 40 KB per million result lines)."""
  import rapidgzip
  buffer = io.BytesIO()
  reader.export_index(buffer, index_format=rapidgzip.IndexFormat.GZTOOL)
  return buffer.getvalue()


def trailer_agrees(raw, crc: int, size: int) -> bool:
  """Whether a single-member gzip file's trailer (CRC32 and length mod 2**32) is that of the
  bytes inflated from it: a truncated stream rapidgzip did not notice, or a multi-member file
  (whose trailer covers its last member only), disagrees."""
  raw.seek(-8, io.SEEK_END)
  stored_crc, stored_size = struct.unpack('<II', raw.read(8))
  return (stored_crc, stored_size) == (crc, size & 0xFFFFFFFF)


def open_result_at(raw, index: bytes, offset: int):
  """A rapidgzip reader of a gzip result positioned at ``offset`` of its inflated stream,
  starting from the access point at or before it (the exported ``index``)."""
  reader = rapidgzip_reader(raw)
  try:
    reader.import_index(io.BytesIO(index))
    reader.seek(offset)
  except BaseException:
    reader.close()
    raise
  return reader
