"""Peer: polars writing the careful pandas join (pandas_careful.join).

python benchmarks/peers/polars_careful.py --format F MANIFEST OUTDIR  ->  OUTDIR/<input name>.F

``--format``: ``jsonl`` (``write_ndjson``), ``avro`` (``write_avro``) or ``parquet``
(``write_parquet``). The frame crosses from pandas with ``polars.from_pandas``.
"""

import os

import polars as pl
from pandas_careful import arguments, join, shards

WRITERS = {'jsonl': 'write_ndjson', 'avro': 'write_avro', 'parquet': 'write_parquet'}


def main(manifest, outdir, fmt):
  os.makedirs(outdir, exist_ok=True)
  for input_uri, result_uri in shards(manifest):
    frame = pl.from_pandas(join(input_uri, result_uri))
    name = os.path.splitext(os.path.basename(input_uri))[0]
    getattr(frame, WRITERS[fmt])(os.path.join(outdir, f'{name}.{fmt}'))


if __name__ == '__main__':
  args = arguments(tuple(WRITERS))
  main(args.manifest, args.outdir, args.format)
