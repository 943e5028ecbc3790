"""smart_open's transports (S3, GCS, HTTP, ...), each imported when a URI first needs it.

smart_open imports every transport module it has when it is itself imported: S3's pulls in
boto3 and botocore, GCS's google-cloud-storage and google-auth's requests transport, and HTTP,
Azure, HDFS, FTP and SSH follow; 0.12-0.15 s of a 0.75 s import, on one core, before a local
run's workers can start (``pipelines/localrun/workers.py``). The ``predjoin`` command's launcher
imports smart_open without them; ``ensure(uri)`` registers the transport a URI needs before
it is opened (``transforms/io/storage.py``), once per process, as smart_open's own import would
have. A process that imported smart_open normally has them all and ``ensure`` does nothing.

Standard library only: the launcher reads ``MODULES`` before it imports anything else.
"""

from __future__ import annotations

import threading

# Each scheme smart_open handles, and the module of its transport (that module's SCHEME(S)).
BY_SCHEME = {
    **dict.fromkeys(('s3', 's3n', 's3a'), 'smart_open.s3'),
    **dict.fromkeys(('gs', 'gcs'), 'smart_open.gcs'),
    'azure': 'smart_open.azure',
    **dict.fromkeys(('http', 'https'), 'smart_open.http'),
    'webhdfs': 'smart_open.webhdfs',
    **dict.fromkeys(('hdfs', 'viewfs'), 'smart_open.hdfs'),
    **dict.fromkeys(('ftp', 'ftps'), 'smart_open.ftp'),
    **dict.fromkeys(('ssh', 'scp', 'sftp'), 'smart_open.ssh'),
}
MODULES = tuple(sorted(set(BY_SCHEME.values())))

_lock = threading.Lock()  # two readers' threads must not register one module twice


def scheme_of(uri: str) -> str:
  return uri.partition('://')[0].lower() if '://' in uri else ''


def ensure(uri: str) -> None:
  """Registers with smart_open the transport ``uri`` needs, if it is not registered yet.

  A transport whose libraries are not installed is left for smart_open to report when the
  URI is opened, as it always does.
  """
  scheme = scheme_of(uri)
  module = BY_SCHEME.get(scheme)
  if module is None:  # a local path
    return
  from smart_open import transport
  with _lock:
    try:
      transport.get_transport(scheme)
      return
    except NotImplementedError:  # not registered: its module was not imported
      transport.register_transport(module)
    except ImportError:  # registered, with its libraries missing: smart_open says so
      return
