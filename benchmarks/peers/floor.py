"""Floor: read the input and gunzip the result of every shard without parsing; writes nothing.

The time a whole-shard tool cannot beat on one core.

python benchmarks/peers/floor.py MANIFEST OUTDIR
"""

import json
import sys
import zlib

CHUNK = 1 << 20


def main(manifest, outdir):
  del outdir  # the floor writes no output
  with open(manifest) as f:
    pairs = json.loads(f.read(), strict=False)
  total = 0
  for input_uri, result_uri in pairs.items():
    with open(input_uri.strip(), 'rb') as f:
      while chunk := f.read(CHUNK):
        total += len(chunk)
    with open(result_uri.strip(), 'rb') as f:
      gz = zlib.decompressobj(wbits=31)  # gzip container
      while chunk := f.read(CHUNK):
        total += len(gz.decompress(chunk))
      total += len(gz.flush())
  print(f'{total} bytes', file=sys.stderr)


if __name__ == '__main__':
  main(sys.argv[1], sys.argv[2])
