"""Streaming line blocks: count lines, and take exactly N lines at a time from a file.

The line rule (``FORMAT.md`` section 4, documented in the README): a line ends at ``\\n``
(``\\r\\n`` included); bytes after the last ``\\n`` form one more line when there are any. So
``"a\\n\\n"`` holds two lines, the second blank, and a blank last observation is kept. Memory is
bounded by the block size, never by the file size.
"""

from __future__ import annotations

import numpy as np

CHUNK_BYTES = 4 << 20
NEWLINE = 10
CR = 13


def count_lines(f, chunk_bytes: int = CHUNK_BYTES) -> int:
  """Counts the lines left in a binary file object by the line rule."""
  count = 0
  unterminated = False
  while True:
    chunk = f.read(chunk_bytes)
    if not chunk:
      break
    count += chunk.count(b'\n')
    unterminated = chunk[-1] != NEWLINE
  return count + unterminated


class LineReader:
  """Takes whole lines from a binary file object, a block at a time."""

  def __init__(self, f, chunk_bytes: int = CHUNK_BYTES):
    self._f = f
    self._chunk_bytes = chunk_bytes
    self._buf = b''
    self._eof = False

  def _fill(self) -> bool:
    if self._eof:
      return False
    data = self._f.read(self._chunk_bytes)
    if not data:
      self._eof = True
      return False
    self._buf = self._buf + data if self._buf else data
    return True

  def readline(self) -> bytes | None:
    """The next line without its terminator, or None at the end of the file."""
    block, n = self.take(1)
    if n == 0:
      return None
    return block[:-2] if block.endswith(b'\r\n') else block[:-1]

  def take(self, max_lines: int, max_bytes: int | None = None) -> tuple[bytes, int]:
    """Up to ``max_lines`` whole lines (fewer only at the end of the file, or past max_bytes).

    Returns:
      ``(block, n)``: the lines' bytes, each line ending in ``\\n`` (one is added to an
      unterminated last line), and how many lines that is.
    """
    while True:
      have = self._buf.count(b'\n')
      if have >= max_lines or (max_bytes is not None and have and len(self._buf) >= max_bytes):
        break
      if not self._fill():
        break
    if not self._buf:
      return b'', 0
    if have == 0:  # end of file: the unterminated tail is the last line
      block, self._buf = self._buf + b'\n', b''
      return block, 1
    want = min(have, max_lines)
    if max_bytes is not None and want > 1 and len(self._buf) > max_bytes:
      ends = newline_positions(self._buf[:max_bytes])
      want = max(1, min(want, len(ends)))
    if want == have:
      end = self._buf.rindex(b'\n') + 1
    else:
      end = int(newline_positions(self._buf)[want - 1]) + 1
    block, self._buf = self._buf[:end], self._buf[end:]
    return block, want


  def take_exactly(self, n: int) -> tuple[bytes, int]:
    """Exactly ``n`` lines, or fewer only when the file ends first."""
    parts, got = [], 0
    while got < n:
      block, m = self.take(n - got)
      if m == 0:
        break
      parts.append(block)
      got += m
    return (parts[0] if len(parts) == 1 else b''.join(parts)), got


def newline_positions(block: bytes) -> np.ndarray:
  return np.flatnonzero(np.frombuffer(block, dtype=np.uint8) == NEWLINE)


def line_lengths(block: bytes) -> np.ndarray:
  """Length of each line in a block (terminators ``\\n`` and ``\\r\\n`` excluded)."""
  ends = newline_positions(block)
  starts = np.empty_like(ends)
  starts[0:1] = 0
  starts[1:] = ends[:-1] + 1
  lengths = ends - starts
  if len(ends):
    data = np.frombuffer(block, dtype=np.uint8)
    has_cr = (lengths > 0) & (data[np.maximum(ends - 1, 0)] == CR)
    lengths = lengths - has_cr
  return lengths


def split_lines(block: bytes) -> list[bytes]:
  """The lines of a block without terminators (for the slow path and dead letters only)."""
  lines = block.split(b'\n')
  lines.pop()  # a block always ends in \n
  return [line[:-1] if line.endswith(b'\r') else line for line in lines]
