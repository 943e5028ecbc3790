"""NumPy views of Arrow columns: the same values and validity as Arrow's own conversion."""

import numpy as np
import pyarrow as pa
import pytest

from transforms.join import arrays


@pytest.mark.parametrize('pa_type', [pa.float64(), pa.int64()])
@pytest.mark.parametrize('offset, length', [(0, 70), (3, 50), (9, 0), (64, 6)])
def test_values_and_validity_match_arrow_for_slices_with_nulls(pa_type, offset, length):
  rng = np.random.default_rng(7)
  raw = rng.integers(-1000, 1000, size=70)
  nulls = rng.random(70) < 0.3
  dtype = 'float64' if pa_type == pa.float64() else 'int64'
  column = pa.array(raw.astype(dtype), pa_type, mask=nulls)
  part = column.slice(offset, length)
  valid = arrays.valid(part)
  assert valid.tolist() == part.is_valid().to_pylist()
  expected = [v for v in part.to_pylist() if v is not None]
  assert arrays.values(part)[valid].tolist() == expected


def test_columns_without_nulls_or_without_values():
  assert arrays.valid(pa.array([1.5, 2.5])).tolist() == [True, True]
  assert arrays.values(pa.array([1.5, 2.5])).tolist() == [1.5, 2.5]
  empty = pa.nulls(4, pa.float64())
  assert arrays.valid(empty).tolist() == [False] * 4 and len(arrays.values(empty)) == 4
