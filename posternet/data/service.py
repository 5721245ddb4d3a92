r"""The tf.data service: decode posters on spare CPU hosts, train elsewhere.

  python -m posternet.data_service dispatcher --port=5050 [--work_dir=DIR]
  python -m posternet.data_service worker --dispatcher=HOST:5050 --port=5051
  python -m posternet.train ... --data_service=grpc://HOST:5050

TensorFlow's own dispatcher and workers (tf.data.experimental.service): the
trainer registers its training pipeline (read, shuffle, parse, decode, batch)
with the dispatcher, the workers run it, and the trainer receives finished
uint8 batches. Nothing here is a home-made server.

This module is the client's side, what a trainer needs: addresses and the
probe of a dispatcher, the pipeline sent through the service
(make_dataset), and the watch on its waits (Watch). The servers and their
command are service_servers.py.

Addresses. TensorFlow's gRPC servers listen on every interface (0.0.0.0 and
[::]) whatever is asked: neither DispatcherConfig nor WorkerConfig has a bind
address in TensorFlow 2.21. --host sets the address a worker announces to the
dispatcher (WorkerConfig.worker_address), which is where trainers fetch its
batches, and the address the commands print; default 127.0.0.1, so a
one-machine setup never announces a public address. Keep the ports behind a
firewall on shared networks: the service has no authentication.

Processing modes (--data_service_mode of the trainer):
  parallel_epochs (default): every worker runs the whole pipeline with its
    own nondeterministic order (seed left out); the trainer takes batches
    from all of them. An "epoch" is the trainer's steps_per_epoch, as in local
    training; a poster may arrive twice before another arrives once. A worker
    that dies is dropped after the dispatcher's --worker_timeout and the
    stream goes on from the others: its batches in flight are lost, nothing
    else.
  distributed_epoch: the dispatcher hands out shard files, each to one worker,
    so one pass delivers every training poster exactly once (partial batches
    are merged on the trainer); each pass is a new job. TensorFlow promises
    at most once here: if a worker dies, the files it had not finished are
    missing from that pass, none repeated. Measured with TF 2.21: a pass
    whose worker died did not end until a worker joined again, and not
    always then; use it where workers are restarted, parallel_epochs
    otherwise.
"""

import os
import re
import select
import signal
import socket
import sys
import threading
from typing import Optional, Sequence, Tuple

from absl import logging
import tensorflow as tf

from posternet import cli
from posternet.data import pipeline
from posternet.data import records

MODES = ('parallel_epochs', 'distributed_epoch')
DEFAULT_HOST = '127.0.0.1'
PROBE_TIMEOUT_S = 10.0
# How long a trainer waits for a batch from the service before it gives up
# (--data_service_timeout), and before it says what it waits for.
DEFAULT_TIMEOUT_S = 300.0
NOTICE_S = 5.0
# The dispatcher's RPCs (dispatcher.proto) that answer with its version and
# with the workers registered; an empty request is a valid one for both.
_GET_VERSION = '/tensorflow.data.DispatcherService/GetVersion'
_GET_WORKERS = '/tensorflow.data.DispatcherService/GetWorkers'


# --- Addresses and the probe. ---


def parse_address(address: str, flag: str = '--data_service') -> Tuple[str, int]:
  """('host', port) of grpc://HOST:PORT or HOST:PORT; a UserError otherwise."""
  text = re.sub(r'^grpc://', '', str(address).strip())
  host, _, port = text.rpartition(':')
  host = host.strip('[]')
  if not host or not port.isdigit() or not 0 < int(port) < 65536 or '/' in text:
    raise cli.UserError(f'{flag}={address}: expected grpc://HOST:PORT (or '
                        'HOST:PORT), e.g. grpc://127.0.0.1:5050')
  return host, int(port)


def probe_dispatcher(address: str, timeout_s: float = PROBE_TIMEOUT_S,
                     flag: str = '--data_service') -> int:
  """Checks that a tf.data service dispatcher answers at address, quickly.

  TensorFlow's own client retries an unreachable dispatcher for up to an hour
  before failing; this asks the dispatcher for its version with a deadline,
  so a wrong address is one clear line within timeout_s.

  Returns:
    The dispatcher's data service version.

  Raises:
    cli.UserError: nothing answers, or what answers is not a dispatcher.
  """
  import grpc  # pylint: disable=g-import-not-at-top  (TensorFlow's dependency)
  host, port = parse_address(address, flag)
  target = f'[{host}]:{port}' if ':' in host else f'{host}:{port}'
  with grpc.insecure_channel(target) as channel:
    get_version = channel.unary_unary(_GET_VERSION)
    try:
      reply = get_version(b'', timeout=timeout_s)
    except grpc.RpcError as e:
      raise cli.UserError(_probe_message(flag, address, e, timeout_s)) from None
  return _version_of(reply)


def _probe_message(flag, address, error, timeout_s) -> str:
  """The one line that says why the dispatcher did not answer."""
  import grpc  # pylint: disable=g-import-not-at-top
  code = error.code()
  if code == grpc.StatusCode.UNIMPLEMENTED:
    why = ('a gRPC server answers there, but it is not a tf.data service '
           'dispatcher (a worker\'s port?)')
  elif code == grpc.StatusCode.DEADLINE_EXCEEDED:
    why = f'no answer within {timeout_s:g} s'
  else:
    why = f'cannot connect ({code.name.lower()}: {error.details()})'
  return (f'{flag}={address}: no tf.data service dispatcher there: {why}; '
          'start one with `python -m posternet.data_service dispatcher '
          '--port=PORT` and give its host and port')


def _version_of(reply: bytes) -> int:
  """The int64 field 1 of a GetVersionResponse (protobuf varint), or 0."""
  if len(reply) < 2 or reply[0] != 0x08:
    return 0
  return _varint(reply, 1)[0]


def _varint(data: bytes, start: int) -> Tuple[int, int]:
  """(value, index after it) of the protobuf varint at data[start:]."""
  value, shift, index = 0, 0, start
  for index in range(start, len(data)):
    value |= (data[index] & 0x7F) << shift
    shift += 7
    if data[index] < 0x80:
      break
  return value, index + 1


def count_workers(address: str, timeout_s: float = 5.0) -> Optional[int]:
  """Workers registered with the dispatcher; None when it does not answer."""
  import grpc  # pylint: disable=g-import-not-at-top
  host, port = parse_address(address)
  target = f'[{host}]:{port}' if ':' in host else f'{host}:{port}'
  with grpc.insecure_channel(target) as channel:
    try:
      reply = channel.unary_unary(_GET_WORKERS)(b'', timeout=timeout_s)
    except grpc.RpcError:
      return None
  # GetWorkersResponse: `repeated WorkerInfo workers = 1`, each tag 0x0A
  # and a length.
  count, index = 0, 0
  while index < len(reply) and reply[index] == 0x0A:
    length, index = _varint(reply, index + 1)
    count, index = count + 1, index + length
  return count


def waiting_for(address: str, workers: Optional[int]) -> str:
  """What a trainer fed by the service waits for, in words."""
  if workers is None:
    return f'the dispatcher at {address} does not answer'
  if workers == 0:
    host, port = parse_address(address)
    return (f'no worker has registered with the dispatcher at {address} yet '
            '(start one: python -m posternet.data_service worker '
            f'--dispatcher={host}:{port})')
  return (f'{workers} worker(s) registered with the dispatcher at {address}, '
          'but no batch came from them')


# --- The trainer's side: a pipeline sent through the service. ---


def processing_mode(mode: str):
  """The `processing_mode` argument of tf.data.experimental.service.distribute."""
  if mode == 'parallel_epochs':
    return 'parallel_epochs'
  if mode == 'distributed_epoch':
    # Dynamic sharding: shard files are handed to workers as they ask.
    return tf.data.experimental.service.ShardingPolicy.DYNAMIC
  raise cli.UserError(f'--data_service_mode={mode}: choose one of '
                      f'{", ".join(MODES)}')


def distribute(dataset: tf.data.Dataset, address: str, mode: str,
               job_name: Optional[str] = None) -> tf.data.Dataset:
  """dataset, produced by the service's workers instead of this process."""
  host, port = parse_address(address)
  return dataset.apply(tf.data.experimental.service.distribute(
      processing_mode=processing_mode(mode), service=f'grpc://{host}:{port}',
      job_name=job_name or None,
      # Decoded uint8 pixels: TF's default snappy compression cost the
      # trainer 3x the CPU per poster for nothing (BUILD_NOTES.md).
      compression=None))


def make_dataset(manifest: records.Manifest, split: str, batch_size: int,
                 image_size: Sequence[int], address: str, mode: str,
                 job_name: Optional[str] = None, repeat: bool = True,
                 **options) -> tf.data.Dataset:
  """The training pipeline of pipeline.make_dataset, run by the service.

  Args:
    manifest, split, batch_size, image_size: as pipeline.make_dataset
      (batch_size is this trainer's batch: per replica under a strategy).
    address: the dispatcher, grpc://HOST:PORT.
    mode: 'parallel_epochs' or 'distributed_epoch' (see the module doc).
    job_name: trainers that give the same name share one job (each batch
      goes to one of them); None: a job of this trainer's own.
    repeat: endless (training). False: one pass; with distributed_epoch
      that pass holds every poster of the split exactly once.
    **options: pipeline.Options fields (shuffle_buffer, cache, ...).

  Returns:
    The pipeline's batches (dicts of image, labels, id); full batches of
    batch_size when repeating.
  """
  options = dict(options)
  if mode == 'parallel_epochs':
    # Each worker shuffles on its own: a fixed seed would make every worker
    # send the same batches in the same order.
    options['seed'] = None
  else:
    processing_mode(mode)  # a clear error for an unknown mode
  # distributed_epoch: one pass per job, split by file among the workers.
  one_pass = mode == 'distributed_epoch' or not repeat
  dataset = pipeline.make_dataset(
      manifest, split, batch_size, image_size, distributed_pass=one_pass,
      **options)
  dataset = distribute(dataset, address, mode, job_name)
  if mode == 'distributed_epoch':
    if repeat:
      # Each repetition is a new job: a new pass, every poster once again.
      dataset = dataset.repeat()
    # Each worker's last batch of a pass is partial: merged here into full
    # batches, so no poster is dropped and training shapes stay static.
    dataset = dataset.rebatch(batch_size, drop_remainder=repeat)
  return dataset.prefetch(tf.data.AUTOTUNE)


class Watch:
  """Bounds a trainer's waits for batches from the service, and says why.

  TensorFlow's client waits for workers for ever, and while it waits it
  cannot be interrupted, not even by Ctrl-C: the main thread is inside a
  C++ op. A thread watches the input clock (step_scalars.InputClock) of the
  training dataset: after notice_s of waiting it logs what the trainer
  waits for (waiting_for); after timeout_s it prints one error line and
  ends the process with exit code 2. Ctrl-C during such a wait ends it with
  130. Either is a kill between epochs' backups: the run resumes when
  started again.

    with data_service.Watch(clock, address, timeout_s):
      model.fit(...)
  """

  def __init__(self, clock, address: str, timeout_s: float,
               notice_s: float = NOTICE_S, poll_s: float = 0.5):
    self.clock, self.address = clock, address
    self.timeout_s, self.notice_s, self.poll_s = timeout_s, notice_s, poll_s
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._watch, daemon=True,
                                    name='data_service.Watch')
    self._signals, self._previous_fd = None, None

  def __enter__(self) -> 'Watch':
    if threading.current_thread() is threading.main_thread():
      # Signals reach this socket even while the main thread is in C++.
      self._signals = socket.socketpair()
      for end in self._signals:
        end.setblocking(False)
      self._previous_fd = signal.set_wakeup_fd(
          self._signals[1].fileno(), warn_on_full_buffer=False)
    self._thread.start()
    return self

  def __exit__(self, *exc) -> None:
    self._stop.set()
    self._thread.join()
    if self._signals is not None:
      signal.set_wakeup_fd(self._previous_fd)
      for end in self._signals:
        end.close()

  def _watch(self) -> None:
    announced = False
    while not self._stop.is_set():
      self._sleep_or_interrupt()
      waited = self.clock.waiting_s()
      if waited < self.notice_s:
        announced = False
      elif waited >= self.timeout_s:
        self._exit(f'error: --data_service={self.address}: no batch from the '
                   f'tf.data service in {self.timeout_s:g} s '
                   f'(--data_service_timeout): {self._why()}',
                   cli.EXIT_USER_ERROR)
      elif not announced:
        logging.warning('waiting for a batch from the tf.data service: %s; '
                        'giving up after %g s (--data_service_timeout)',
                        self._why(), self.timeout_s)
        announced = True

  def _why(self) -> str:
    return waiting_for(self.address, count_workers(self.address))

  def _sleep_or_interrupt(self) -> None:
    """Waits poll_s; Ctrl-C while the loop waits for input ends the process.

    At other times the main thread turns Ctrl-C into KeyboardInterrupt.
    """
    if self._signals is None:
      self._stop.wait(self.poll_s)
      return
    readable, _, _ = select.select([self._signals[0]], [], [], self.poll_s)
    received = self._signals[0].recv(64) if readable else b''
    if signal.SIGINT in received and self.clock.waiting_s() > 0:
      self._exit('interrupted', 130)

  @staticmethod
  def _exit(line: str, code: int) -> None:
    print(line, file=sys.stderr, flush=True)
    os._exit(code)  # pylint: disable=protected-access

