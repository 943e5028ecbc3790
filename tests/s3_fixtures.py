"""Object-storage test helpers: moto's S3 server, a fault-injecting proxy, a GCS emulator.

Everything listens on 127.0.0.1 on a random port; nothing here reaches the network. Credentials
are fixed fake values: the environment handed to the code under test is built from scratch
(``aws_env``) so a developer's real AWS/Google credentials are never read.

The proxy (:class:`FaultProxy`) sits between predjoin and moto and, for a deterministic share
of requests, answers the *first* attempt with a fault instead of forwarding it: HTTP 500
``InternalError``, HTTP 503 ``SlowDown`` (throttling), a connection reset, or (GET of an object)
the response headers with only half of the body before the connection is closed. Retries are new
attempts and go through, so a client that retries gets the same bytes in the end. ``always``
rules fail every attempt (a permanently broken object). Every request is logged.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import socket
import struct
import subprocess
import sys
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLES = os.path.join(ROOT, 'samples')
SAMPLE_BUCKET = 'predjoin-samples'  # the bucket the bundled manifests name
REGION = 'us-east-1'
# Fake values with the shape of real ones, so redaction of the access key ID is exercised.
ACCESS_KEY_ID = 'AKIAIOSFODNN7FAKE000'
SECRET_ACCESS_KEY = 'fake-secret-Do-Not-Print-0123456789abcdef'


def aws_env(extra: dict | None = None) -> dict:
  """An environment for a predjoin subprocess: fake AWS credentials, no profile, no IMDS."""
  keep = ('PATH', 'HOME', 'LANG', 'LC_ALL', 'TMPDIR', 'PYTHONPATH', 'SYSTEMROOT', 'VIRTUAL_ENV')
  env = {k: v for k, v in os.environ.items() if k in keep}
  env.update({
      'AWS_ACCESS_KEY_ID': ACCESS_KEY_ID,
      'AWS_SECRET_ACCESS_KEY': SECRET_ACCESS_KEY,
      'AWS_DEFAULT_REGION': REGION,
      'AWS_EC2_METADATA_DISABLED': 'true',
      'AWS_CONFIG_FILE': os.devnull,
      'AWS_SHARED_CREDENTIALS_FILE': os.devnull,
      'NO_GCE_CHECK': 'True',
      'PYTHONUNBUFFERED': '1',
  })
  env.update(extra or {})
  return env


def s3_args(endpoint: str) -> list[str]:
  """Beam's S3 options for the endpoint; the same options configure predjoin's reads."""
  return ['--s3_endpoint_url', endpoint, '--s3_region_name', REGION]


def run_cli(args: list[str], env: dict, timeout: float = 150) -> subprocess.CompletedProcess:
  """Runs ``predjoin ARGS`` as a subprocess, as a user would (``pipelines.cli``, the command's
  entry point); fails the test on a hang."""
  return subprocess.run([sys.executable, '-m', 'pipelines.cli', *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=timeout)


# ---------------------------------------------------------------------------------------------
# moto


class MotoS3:
  """moto's S3 server on 127.0.0.1 (``ThreadedMotoServer``), with a boto3 client for set-up."""

  def __init__(self):
    from moto.server import ThreadedMotoServer
    self._server = ThreadedMotoServer(ip_address='127.0.0.1', port=0, verbose=False)
    self._server.start()
    host, port = self._server.get_host_and_port()
    self.endpoint = f'http://{host}:{port}'
    import boto3
    self.client = boto3.session.Session(
        aws_access_key_id=ACCESS_KEY_ID, aws_secret_access_key=SECRET_ACCESS_KEY,
        region_name=REGION).client('s3', endpoint_url=self.endpoint)

  def stop(self):
    self._server.stop()

  def make_bucket(self, name: str) -> str:
    self.client.create_bucket(Bucket=name)
    return name

  def upload_tree(self, local_root: str, bucket: str, prefix: str = '', skip=('.py',)) -> None:
    for dirpath, _, files in os.walk(local_root):
      for name in files:
        if name.endswith(skip):
          continue
        path = os.path.join(dirpath, name)
        key = prefix + os.path.relpath(path, local_root).replace(os.sep, '/')
        self.client.upload_file(path, bucket, key)

  def keys(self, bucket: str, prefix: str = '') -> list[str]:
    keys = []
    for page in self.client.get_paginator('list_objects_v2').paginate(Bucket=bucket,
                                                                       Prefix=prefix):
      keys.extend(item['Key'] for item in page.get('Contents', []))
    return sorted(keys)

  def download_prefix(self, bucket: str, prefix: str, local_dir: str) -> None:
    """Copies every object under ``prefix`` to ``local_dir`` (same relative names)."""
    for key in self.keys(bucket, prefix):
      path = os.path.join(local_dir, key[len(prefix):])
      os.makedirs(os.path.dirname(path), exist_ok=True)
      self.client.download_file(bucket, key, path)


def samples_s3():
  """A module's ``s3`` fixture (``pytest.fixture(scope='module', name='s3')(samples_s3)``):
  moto's S3 server with the bundled samples in SAMPLE_BUCKET, where their manifests name
  them."""
  server = MotoS3()
  server.make_bucket(SAMPLE_BUCKET)
  server.upload_tree(SAMPLES, SAMPLE_BUCKET)
  yield server
  server.stop()


# ---------------------------------------------------------------------------------------------
# Fault proxy

INTERNAL_ERROR, SLOW_DOWN, RESET, TRUNCATE = 'http500', 'http503', 'reset', 'truncate'
FAULTS = (INTERNAL_ERROR, SLOW_DOWN, RESET, TRUNCATE)
_HOP_BY_HOP = {'connection', 'keep-alive', 'transfer-encoding', 'te', 'trailer', 'upgrade',
               'proxy-connection', 'expect', 'content-length'}
_ERROR_BODY = ('<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
               '<Message>{message}</Message><RequestId>fault-proxy</RequestId></Error>')


class FaultProxy:
  """An HTTP proxy in front of ``upstream`` that injects faults; see the module docstring.

  Args:
    upstream: ``http://host:port`` of the real server.
    share: fraction (0..1) of distinct requests whose first attempt gets a fault.
    faults: the kinds to draw from (TRUNCATE applies to object GETs; others fall back to 503).
    always: ``{path_substring: kind}``: every request whose path contains it gets that fault.
    seed: changes which requests are picked.
  """

  def __init__(self, upstream: str, share: float = 0.0, faults=FAULTS, always=None,
               seed: str = 'predjoin'):
    self.upstream = urllib.parse.urlsplit(upstream).netloc
    self.share = share
    self.faults = tuple(faults)
    self.always = dict(always or {})
    self.seed = seed
    self.log: list[tuple[str, str, str]] = []   # (method, path, fault or status)
    self._attempts: dict[tuple, tuple[int, bool]] = {}
    self._turns: dict[str, int] = {}
    self._lock = threading.Lock()
    proxy = self

    class Handler(_ProxyHandler):
      owner = proxy

    self._server = ThreadingHTTPServer(('127.0.0.1', 0), Handler)
    self._server.daemon_threads = True
    self.endpoint = f'http://127.0.0.1:{self._server.server_address[1]}'
    self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
    self._thread.start()

  def stop(self):
    self._server.shutdown()
    self._server.server_close()

  def decide(self, method: str, path: str, headers) -> str | None:
    """The fault for this request, or None to forward it.

    A request right after a faulted one with the same method, path and range is its retry
    and always goes through; any other request is picked with probability ``share`` (by a
    hash of the request and how often it was seen, so a run is reproducible).
    """
    for needle, kind in self.always.items():
      if needle in path:
        return kind
    key = (method, path, headers.get('Range', ''))
    with self._lock:
      seen, last_faulted = self._attempts.get(key, (0, False))
      if last_faulted or not self.share:
        self._attempts[key] = (seen + 1, False)
        return None
      digest = hashlib.sha256(f'{self.seed}|{key}|{seen}'.encode()).digest()
      picked = struct.unpack('>I', digest[:4])[0] / 2**32 < self.share
      self._attempts[key] = (seen + 1, picked)
      if not picked:
        return None
      # Kinds in turn per category, so every kind shows up even in a short run.
      category = 'object_get' if _is_object_get(method, path) else 'other'
      others = tuple(k for k in self.faults if k != TRUNCATE) or (SLOW_DOWN,)
      kinds = others
      if category == 'object_get' and TRUNCATE in self.faults:
        kinds = tuple(k for other in others for k in (TRUNCATE, other))
      turn = self._turns.get(category, 0)
      self._turns[category] = turn + 1
      return kinds[turn % len(kinds)]

  def record(self, method: str, path: str, outcome: str) -> None:
    with self._lock:
      self.log.append((method, path, outcome))

  def counts(self) -> dict[str, int]:
    with self._lock:
      outcomes = [o for _, _, o in self.log]
    return {kind: outcomes.count(kind) for kind in FAULTS}

  def paths(self, method: str | None = None) -> list[str]:
    with self._lock:
      return [p for m, p, _ in self.log if method is None or m == method]


def _is_object_get(method: str, path: str) -> bool:
  parts = urllib.parse.urlsplit(path)
  return method == 'GET' and parts.path.strip('/').count('/') >= 1 and \
      'list-type' not in parts.query and 'uploads' not in parts.query


class _ProxyHandler(BaseHTTPRequestHandler):
  protocol_version = 'HTTP/1.1'
  owner: FaultProxy

  def log_message(self, *args):  # keep test output quiet
    pass

  def _body(self) -> bytes:
    if self.headers.get('Transfer-Encoding', '').lower() == 'chunked':
      chunks = []
      while True:
        size = int(self.rfile.readline().split(b';')[0].strip() or b'0', 16)
        if size == 0:
          while self.rfile.readline() not in (b'\r\n', b'\n', b''):
            pass
          return b''.join(chunks)
        chunks.append(self.rfile.read(size))
        self.rfile.readline()
    length = int(self.headers.get('Content-Length') or 0)
    return self.rfile.read(length) if length else b''

  def _send_error(self, status: int, code: str, message: str) -> None:
    """An S3 XML error response (no body for HEAD, as S3 does)."""
    payload = _ERROR_BODY.format(code=code, message=message).encode()
    self.send_response(status)
    self.send_header('Content-Type', 'application/xml')
    self.send_header('Content-Length', str(len(payload)))
    self.end_headers()
    if self.command != 'HEAD':
      self.wfile.write(payload)

  def _handle(self):
    body = self._body()
    owner = self.owner
    fault = owner.decide(self.command, self.path, self.headers)
    if fault == RESET:
      owner.record(self.command, self.path, RESET)
      # SO_LINGER 0: close() sends a TCP RST, the client sees "connection reset by peer".
      self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))
      self.close_connection = True
      self.connection.close()
      return
    if fault in (INTERNAL_ERROR, SLOW_DOWN):
      owner.record(self.command, self.path, fault)
      status, code = (500, 'InternalError') if fault == INTERNAL_ERROR else (503, 'SlowDown')
      self._send_error(status, code, 'injected by the test proxy')
      return
    if fault == 'missing':
      owner.record(self.command, self.path, fault)
      self._send_error(404, 'NoSuchKey', 'no such key')
      return
    headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
    conn = http.client.HTTPConnection(owner.upstream, timeout=30)
    try:
      conn.request(self.command, self.path, body=body if body or self.command in (
          'PUT', 'POST') else None, headers={**headers, 'Content-Length': str(len(body))})
      response = conn.getresponse()
      data = response.read()
    finally:
      conn.close()
    truncate = fault == TRUNCATE and len(data) > 1 and response.status in (200, 206)
    owner.record(self.command, self.path, TRUNCATE if truncate else str(response.status))
    self.send_response(response.status, response.reason)
    for name, value in response.getheaders():
      if name.lower() not in _HOP_BY_HOP:
        self.send_header(name, value)
    # A HEAD answer has no body but the object's length.
    length = response.getheader('Content-Length') if self.command == 'HEAD' else len(data)
    self.send_header('Content-Length', str(length or 0))
    if truncate:
      self.send_header('Connection', 'close')
    self.end_headers()
    if self.command == 'HEAD':
      return
    if truncate:
      self.wfile.write(data[:len(data) // 2])
      self.wfile.flush()
      self.close_connection = True
      self.connection.shutdown(socket.SHUT_RDWR)
      return
    self.wfile.write(data)

  do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle


# ---------------------------------------------------------------------------------------------
# GCS emulator


class GcsEmulator:
  """gcp-storage-emulator on 127.0.0.1, in memory. ``env()`` points clients at it.

  google-cloud-storage honours ``STORAGE_EMULATOR_HOST``; Beam first looks for Application
  Default Credentials, so ``env()`` also names a fake authorized-user file whose token never
  expires (it is never refreshed, so nothing goes to Google) and skips the GCE metadata check.
  """

  def __init__(self, tmp_dir: str):
    from gcp_storage_emulator.server import create_server
    honour_generation_preconditions()
    self._server = create_server('127.0.0.1', 0, in_memory=True)
    self._server._api.daemon = True  # the emulator's thread would otherwise block exit
    self._server.start()
    port = self._server._api._httpd.server_address[1]
    self.endpoint = f'http://127.0.0.1:{port}'
    self.adc = os.path.join(tmp_dir, 'fake-adc.json')
    with open(self.adc, 'w') as f:
      json.dump({'type': 'authorized_user', 'client_id': 'fake', 'client_secret': 'fake',
                 'refresh_token': 'fake', 'token': 'fake-token',
                 'expiry': '2999-01-01T00:00:00Z'}, f)

  def env(self) -> dict:
    return {'STORAGE_EMULATOR_HOST': self.endpoint, 'GOOGLE_APPLICATION_CREDENTIALS': self.adc,
            'GOOGLE_CLOUD_PROJECT': 'predjoin-test', 'NO_GCE_CHECK': 'True'}

  def client(self):
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage
    return storage.Client(project='predjoin-test', credentials=AnonymousCredentials(),
                          client_options={'api_endpoint': self.endpoint})

  def stop(self):
    self._server.stop()


_PRECONDITIONS_LOCK = threading.Lock()


def honour_generation_preconditions() -> None:
  """Makes gcp-storage-emulator answer ``ifGenerationMatch`` as GCS does; idempotent.

  The emulator ignores the parameter (its ``objects.insert`` and ``objects.delete`` handlers
  never read it), so a second create-if-absent upload silently replaces the object. GCS answers
  HTTP 412 when the object's generation is not the one given (0: the object must not exist).
  This wraps both handlers, under one lock, so the check and the write happen together as
  they do in GCS; every other request is handled as before.
  """
  from http import HTTPStatus

  from gcp_storage_emulator import server
  from gcp_storage_emulator.exceptions import NotFound
  from gcp_storage_emulator.handlers import objects
  if getattr(objects.insert, 'honours_preconditions', False):
    return

  def current_generation(storage, bucket: str, name: str) -> int:
    try:
      return int(storage.get_file_obj(bucket, name).get('generation') or 0)
    except NotFound:
      return 0

  def guarded(handler, name_of):
    def handle(request, response, storage, *args, **kwargs):
      wanted = request.query.get('ifGenerationMatch')
      if not wanted:
        return handler(request, response, storage, *args, **kwargs)
      with _PRECONDITIONS_LOCK:
        bucket = request.params['bucket_name']
        if current_generation(storage, bucket, name_of(request)) != int(wanted[0]):
          response.status = HTTPStatus.PRECONDITION_FAILED
          response.json({'error': {'code': 412, 'message': 'At least one of the pre-conditions '
                                   'you specified did not hold.', 'errors': [{
                                       'reason': 'conditionNotMet', 'domain': 'global'}]}})
          return None
        return handler(request, response, storage, *args, **kwargs)
    handle.honours_preconditions = True
    return handle

  def inserted_name(request):
    if 'name' in request.query:
      return request.query['name'][0]
    data = request.data if isinstance(request.data, dict) else {}
    return (data.get('meta') or {}).get('name') or data.get('name')

  insert = guarded(objects.insert, inserted_name)
  delete = guarded(objects.delete, lambda request: request.params['object_id'])
  for _, handlers in server.HANDLERS:
    for method, handler in list(handlers.items()):
      if handler is objects.insert:
        handlers[method] = insert
      elif handler is objects.delete:
        handlers[method] = delete
  objects.insert, objects.delete = insert, delete
