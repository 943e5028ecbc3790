"""NumPy views of Arrow columns, without the copies ``to_numpy`` makes of a column with nulls.

``Array.to_numpy(zero_copy_only=False)`` copies a numeric column that has nulls (to put NaN in
their slots) and unpacks a boolean one; per block and per column that was a few percent of a
worker's CPU. These read the buffers in place.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

_DTYPES = {pa.float64(): np.float64, pa.int64(): np.int64}


def values(array: pa.Array) -> np.ndarray:
  """A float64 or int64 column's values, zero-copy. The slots of nulls hold anything: index the
  result with a mask that excludes them."""
  dtype = np.dtype(_DTYPES[array.type])
  data = array.buffers()[1]
  if data is None:  # no values at all (every slot null)
    return np.zeros(len(array), dtype=dtype)
  return np.frombuffer(data, dtype=dtype, count=len(array), offset=array.offset * dtype.itemsize)


def valid(array: pa.Array) -> np.ndarray:
  """Which values of a column are not null, as booleans."""
  if not array.null_count:
    return np.ones(len(array), dtype=bool)
  bits = np.unpackbits(np.frombuffer(array.buffers()[0], dtype=np.uint8), bitorder='little')
  return bits[array.offset:array.offset + len(array)].astype(bool)
