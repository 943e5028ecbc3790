"""Streaming line blocks: count lines, and take whole lines a block at a time from a file.

The line rule (``docs/amazon-ml-format.md`` section 4, documented in the README): a line ends at ``\\n``
(``\\r\\n`` included); bytes after the last ``\\n`` form one more line when there are any. So
``"a\\n\\n"`` holds two lines, the second blank, and a blank last observation is kept. Memory is
bounded by the block size, never by the file size.

A UTF-8 byte order mark at the very start of a file is not part of its first line. Every
reader counts the lines it has handed out (``lines``), so the join can check, block by block,
which line of each file a row came from, and it tracks the empty lines at the end of what it
has read (``trailing_empty_lines``): the input rule (README, "Rules predjoin follows") does not
count those as observations.

Input blocks are cut by size (``take``: one ``rfind`` and one NumPy count per block); result
blocks by line count (``take_exactly``, to match an input block), which finds the n-th newline
with NumPy over the few bytes that hold it. ``take_lines`` and ``take_exactly_lines`` also
return the position of each line's ``\\n`` in the block (its ``line ends``), from the scan that
cut it, so the join does not scan the block again for line boundaries.
"""

from __future__ import annotations

import numpy as np

CHUNK_BYTES = 4 << 20
FIRST_READ_BYTES = 64 << 10
NEWLINE = 10
CR = 13
BOM = b'\xef\xbb\xbf'


class EndOfLines:
  """Follows the bytes of a file, in order, to tell how many empty lines it ends with.

  An empty line has nothing on it: no byte, or only the ``\r`` of a ``\r\n`` ending (and an
  unterminated last line of one ``\r``). ``trailing`` counts the empty lines after the last line
  that has anything on it (all of them when no line has). Each ``feed`` looks only at the bytes
  after the chunk's last byte that is neither ``\r`` nor ``\n``, so following a file costs a
  few operations per chunk.
  """

  def __init__(self):
    self._run = 0      # complete empty lines since the last complete line with content
    self._partial = 0  # the line not yet ended: its number of \r bytes, or -1 if it has content

  def _line_ends(self, length: int) -> None:
    """The current line ends after ``length`` bytes of only \r (-1: it has content)."""
    self._run = self._run + 1 if 0 <= length <= 1 else 0

  def _parts(self, parts: list[bytes]) -> None:
    """Whole lines (``parts[:-1]``, each only \r bytes) and the start of the next one."""
    for part in parts[:-1]:
      self._line_ends(len(part))
    self._partial = len(parts[-1])

  def feed(self, chunk) -> None:
    data = bytes(chunk) if not isinstance(chunk, bytes) else chunk
    i = len(data) - 1
    while i >= 0 and data[i] in (NEWLINE, CR):
      i -= 1
    if i >= 0:  # a byte with content: the line holding it has content
      parts = data[i + 1:].split(b'\n')
      if len(parts) == 1:
        self._partial = -1
        return
      self._line_ends(-1)
      self._parts(parts[1:])
      return
    if not data:
      return
    parts = data.split(b'\n')
    if len(parts) == 1:
      if self._partial >= 0:
        self._partial += len(parts[0])
      return
    self._line_ends(-1 if self._partial < 0 else self._partial + len(parts[0]))
    self._parts(parts[1:])

  def trailing(self) -> int:
    """The empty lines at the end, once the whole file has been fed."""
    if self._partial == 0:  # the file ends with \n (or is empty)
      return self._run
    return self._run + 1 if self._partial == 1 else 0


def count_newlines(data, start: int = 0, end: int | None = None) -> int:
  """The ``\\n`` bytes in ``data[start:end]`` (NumPy: 3x faster than ``bytes.count``)."""
  end = len(data) if end is None else end
  view = np.frombuffer(data, dtype=np.uint8, count=end - start, offset=start)
  return int(np.count_nonzero(view == NEWLINE))


def count_lines(f, chunk_bytes: int = CHUNK_BYTES) -> int:
  """Counts the lines left in a binary file object by the line rule."""
  return LineReader(f, chunk_bytes).count_rest()


class LineReader:
  """Takes whole lines from a binary file object, a block at a time.

  The bytes read and not yet taken are ``_buf[_pos:_end]``. The first read is small
  (``FIRST_READ_BYTES``) and is the buffer as it comes, so a header line or a small file costs
  no more; a file that goes on is then read into one buffer (``readinto``) that is reused:
  taking a block copies the block only, and what is left after it moves to the front of the
  buffer when the next read needs the room. Reading into a new ``bytes`` and joining it to what
  was left would copy every byte once more.
  """

  def __init__(self, f, chunk_bytes: int = CHUNK_BYTES, lines_before: int = 0,
               at_start: bool = True):
    """``lines_before``: lines of the file before ``f``'s first byte (``f`` may start mid-file);
    ``at_start``: ``f`` starts at the file's first byte, where a byte order mark is dropped."""
    self._f = f
    self._chunk_bytes = chunk_bytes
    self._buf: bytes | bytearray = b''
    self._pos = self._end = 0
    self._eof = False
    self._started = not at_start  # whether the first read (and its BOM check) happened
    self._bytes_per_line = 64.0  # a running estimate, to scan only what take_exactly needs
    self.lines = lines_before  # lines handed out so far, counting those before f
    self._ends = EndOfLines()

  @property
  def trailing_empty_lines(self) -> int:
    """How many of the lines handed out so far are empty lines at the end of the file (exact
    once the whole file has been read)."""
    return self._ends.trailing()

  def _left(self) -> int:
    return self._end - self._pos

  def _fill(self, at_least: int = 0) -> bool:
    """Reads one more chunk (or up to ``at_least`` bytes); False at the end of the file."""
    if self._eof:
      return False
    left = self._left()
    want = max(self._chunk_bytes, at_least - left)
    if isinstance(self._buf, bytearray) and left + want <= len(self._buf):
      if self._end + want > len(self._buf):  # room only if what is left moves to the front
        view = memoryview(self._buf)
        view[:left] = view[self._pos:self._end]
        view.release()
        self._pos, self._end = 0, left
      got = _read_into(self._f, memoryview(self._buf)[self._end:self._end + want])
    elif not self._buf:  # the first read, small: a header line or a small file needs no more
      data = self._f.read(min(want, FIRST_READ_BYTES))
      got = len(data)
      skip = 0
      if not self._started:
        self._started = True
        while len(data) < len(BOM) and BOM.startswith(data) and data:  # a BOM cut by a read
          more = self._f.read(len(BOM) - len(data))
          if not more:
            break
          data += more
        got = len(data)
        skip = len(BOM) if data.startswith(BOM) else 0
      self._buf, self._pos, self._end = data, skip, skip
      got -= skip
      if not got and data:  # the file holds only a BOM so far: read on
        self._buf, self._pos, self._end = b'', 0, 0
        return self._fill(at_least)
    else:  # a buffer that later reads go into, with room for a read and what a block leaves
      data = self._f.read(want)
      got = len(data)
      if got == want:
        buf = bytearray(max(left + want, 2 * self._chunk_bytes))
        buf[:left] = memoryview(self._buf)[self._pos:self._end]
        buf[left:left + got] = data
        self._buf, self._pos, self._end = buf, 0, left
      elif got:  # a short read: the end of the file (or near it), joined to what is left
        self._buf = b''.join((memoryview(self._buf)[self._pos:self._end], data))
        self._pos, self._end = 0, left
    if not got:
      self._eof = True
      return False
    self._end += got
    return True

  def _window(self, size: int) -> memoryview:
    """The next ``size`` bytes not yet taken (fewer at the end), as a view."""
    return memoryview(self._buf)[self._pos:min(self._pos + size, self._end)]

  def _cut(self, end: int, n: int) -> tuple[bytes, int]:
    """The lines from ``_pos`` to ``end`` (an index into ``_buf``), taken: ``n`` of them."""
    block = bytes(memoryview(self._buf)[self._pos:end])
    self._pos = end
    self.lines += n
    self._ends.feed(block)
    return block, n

  def _rest(self) -> bytes:
    """Everything not yet taken, taken."""
    return self._cut(self._end, 0)[0]

  def _tail(self) -> tuple[bytes, int]:
    """At the end of the file: the unterminated last line, if any."""
    if not self._left():
      return b'', 0
    self.lines += 1
    return self._rest() + b'\n', 1

  def readline(self) -> bytes | None:
    """The next line without its terminator, or None at the end of the file."""
    block, n = self.take_exactly(1)
    if n == 0:
      return None
    return block[:-2] if block.endswith(b'\r\n') else block[:-1]

  def count_rest(self) -> int:
    """Counts the lines not yet taken, to the end of the file (taking them)."""
    return self.count_and_keep_rest(0)[0]

  def count_and_keep_rest(self, limit: int) -> tuple[int, bytes | None]:
    """``count_rest``, and the bytes not yet taken when they are at most ``limit`` bytes (else
    None), so that a small file need not be read (and inflated) again."""
    count, last, size, kept = 0, NEWLINE, 0, []
    for chunk in self._remaining_chunks():
      count, last, size = count + count_newlines(chunk), chunk[-1], size + len(chunk)
      if kept is not None and size <= limit:
        kept.append(chunk)
      else:
        kept = None
    count += last != NEWLINE
    self.lines += count
    return count, None if kept is None else b''.join(kept)

  def _remaining_chunks(self):
    """The bytes not yet taken, then the rest of the file a chunk at a time (taking them)."""
    if not self._started:
      self._fill()  # the first read drops a byte order mark
    if self._left():
      yield self._cut(self._end, 0)[0]
    while not self._eof:
      data = self._f.read(self._chunk_bytes)
      if data:
        self._ends.feed(data)
        yield data
      else:
        self._eof = True

  def take_lines(self, max_lines: int,
                 max_bytes: int = CHUNK_BYTES) -> tuple[bytes, int, np.ndarray]:
    """``take``, with the position of each line's ``\\n`` in the block (``line_ends``).

    One scan finds the block's end and its line ends; ``take`` counts instead, 3x cheaper
    when the positions are not needed.
    """
    while self._left() < max_bytes and self._fill(max_bytes):
      pass
    ends = newline_positions(self._window(max_bytes))
    if not len(ends):  # one long line, or the tail
      block, n = self.take(max_lines, max_bytes)
      return block, n, newline_positions(block)
    ends = ends[:max_lines]
    block, n = self._cut(self._pos + int(ends[-1]) + 1, len(ends))
    return block, n, ends

  def take(self, max_lines: int, max_bytes: int = CHUNK_BYTES) -> tuple[bytes, int]:
    """Whole lines filling up to ``max_bytes`` (at least one line), at most ``max_lines``.

    Returns:
      ``(block, n)``: the lines' bytes, each line ending in ``\\n`` (one is added to an
      unterminated last line), and how many lines that is; ``(b'', 0)`` at the end.
    """
    while self._left() < max_bytes and self._fill(max_bytes):
      pass
    end = self._buf.rfind(b'\n', self._pos, min(self._pos + max_bytes, self._end)) + 1
    while not end:  # no line ends within max_bytes: one long line, or the tail
      end = self._buf.find(b'\n', self._pos, self._end) + 1
      if not end and not self._fill():
        return self._tail()
    n = count_newlines(self._buf, self._pos, end)
    if n > max_lines:
      end = self._pos + nth_newline(self._window(self._left()), max_lines, end - self._pos) + 1
      n = max_lines
    return self._cut(end, n)

  def take_exactly(self, n: int) -> tuple[bytes, int]:
    """Exactly ``n`` lines, or fewer only when the file ends first."""
    block, got, _ = self.take_exactly_lines(n)
    return block, got

  def take_exactly_lines(self, n: int) -> tuple[bytes, int, np.ndarray]:
    """``take_exactly``, with the position of each line's ``\\n`` in the block (``line_ends``),
    found by the same scan."""
    want = int(n * self._bytes_per_line * 1.25) + 256
    while True:
      while self._left() < want and self._fill(want):
        pass
      positions = newline_positions(self._window(want))
      if len(positions) >= n:
        end = int(positions[n - 1]) + 1
        self._bytes_per_line = 0.8 * self._bytes_per_line + 0.2 * (end / n)
        block, n = self._cut(self._pos + end, n)
        return block, n, positions[:n]
      if self._eof and want >= self._left():  # every line left, the unterminated tail too
        block = self._rest()
        if block and not block.endswith(b'\n'):
          self.lines += len(positions) + 1
          return block + b'\n', len(positions) + 1, np.append(positions, len(block))
        self.lines += len(positions)
        return block, len(positions), positions
      want *= 2


def _read_into(f, view: memoryview) -> int:
  """Reads up to ``len(view)`` bytes of a file into ``view``: how many, 0 at its end."""
  with view:
    readinto = getattr(f, 'readinto', None)
    if readinto is not None:
      return readinto(view) or 0
    data = f.read(len(view))
    view[:len(data)] = data
    return len(data)


def nth_newline(buf, n: int, hint: int) -> int:
  """The position of the n-th ``\\n`` (1-based) in ``buf``, scanning ``buf[:hint]`` first."""
  for limit in (hint, len(buf)):
    positions = newline_positions(memoryview(buf)[:limit])
    if len(positions) >= n:
      return int(positions[n - 1])
  raise ValueError(f'fewer than {n} lines in the buffer')


def newline_positions(block) -> np.ndarray:
  return np.flatnonzero(np.frombuffer(block, dtype=np.uint8) == NEWLINE)


def line_lengths(block: bytes, ends: np.ndarray | None = None) -> np.ndarray:
  """Length of each line in a block (terminators ``\\n`` and ``\\r\\n`` excluded).

  ``ends``: the block's ``line_ends``, when the reader already has them.
  """
  ends = newline_positions(block) if ends is None else ends
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
