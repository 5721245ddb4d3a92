"""The tf.data service's servers: the dispatcher and worker commands.

  python -m posternet.data_service dispatcher --port=5050 [--work_dir=DIR]
  python -m posternet.data_service worker --dispatcher=HOST:5050 --port=5051

TensorFlow's own DispatchServer and WorkerServer, started from plain
settings (ServerSettings) and run until SIGTERM or Ctrl-C; LocalService
starts a dispatcher and worker processes on 127.0.0.1 for the benchmark and
the tests. The trainer's side (addresses, the probe, distributing a
pipeline, the watch on its waits) and what the processing modes and
addresses mean are service.py's.
"""

import dataclasses
import signal
import threading
from typing import Optional, Sequence

from absl import app
from absl import flags
from absl import logging
import tensorflow as tf

from posternet import cli
from posternet.data import service



@dataclasses.dataclass(frozen=True)
class ServerSettings:
  """What the dispatcher and worker commands take, as plain values."""
  port: int
  host: str = service.DEFAULT_HOST
  work_dir: Optional[str] = None    # dispatcher: journal for fault tolerance
  dispatcher: Optional[str] = None  # worker: the dispatcher's HOST:PORT
  # Dispatcher: a worker silent this long is dropped (its tasks end).
  worker_timeout_s: Optional[float] = None
  # Worker: how often it reports to the dispatcher.
  heartbeat_interval_s: Optional[float] = None


def _ms(seconds: Optional[float]) -> Optional[int]:
  return None if seconds is None else max(int(seconds * 1000), 1)


def start_dispatcher(settings: ServerSettings):
  """Starts TensorFlow's dispatcher; returns (server, the address to give)."""
  config = tf.data.experimental.service.DispatcherConfig(
      port=settings.port, work_dir=settings.work_dir or None,
      fault_tolerant_mode=bool(settings.work_dir),
      worker_timeout_ms=_ms(settings.worker_timeout_s),
      # The dispatcher looks for silent workers only this often (default 10
      # minutes): a short timeout needs a short check.
      job_gc_check_interval_ms=_ms(settings.worker_timeout_s and
                                   settings.worker_timeout_s / 2))
  server = tf.data.experimental.service.DispatchServer(config)
  port = int(server.target.rsplit(':', 1)[1])
  return server, f'grpc://{settings.host}:{port}'


def start_worker(settings: ServerSettings):
  """Starts TensorFlow's worker, announced as host:port.

  Returns:
    (server, the address it announces).
  """
  service.probe_dispatcher(settings.dispatcher, flag='--dispatcher')
  host, port = service.parse_address(settings.dispatcher, '--dispatcher')
  config = tf.data.experimental.service.WorkerConfig(
      dispatcher_address=f'{host}:{port}', port=settings.port,
      worker_address=f'{settings.host}:%port%',
      data_transfer_address=f'{settings.host}:%dts_port%',
      heartbeat_interval_ms=_ms(settings.heartbeat_interval_s))
  server = tf.data.experimental.service.WorkerServer(config)
  return server, f'{settings.host}:{_bound_port(server, settings.port)}'


def _bound_port(server, requested: int) -> int:
  """The port a WorkerServer listens on (requested, or the one TF chose)."""
  if requested:
    return requested
  # pylint: disable-next=protected-access
  return int(server._address.rsplit(':', 1)[1])


def serve(role: str, settings: ServerSettings) -> None:
  """Runs a dispatcher or worker until SIGTERM or Ctrl-C, then stops it."""
  stop = threading.Event()
  for signum in (signal.SIGTERM, signal.SIGINT):
    signal.signal(signum, lambda *_: stop.set())
  if role == 'dispatcher':
    server, address = start_dispatcher(settings)
    extra = (f', journal in {settings.work_dir} (fault tolerant)'
             if settings.work_dir else ', no --work_dir: state lost on restart')
  else:
    server, address = start_worker(settings)
    extra = f', dispatcher {settings.dispatcher}'
  # One line with the address, for people and for scripts that wait on it.
  print(f'posternet data_service {role} serving at {address} (TensorFlow '
        f'listens on all interfaces){extra}', flush=True)
  stop.wait()
  logging.info('stopping the %s', role)
  server.stop()
  print(f'posternet data_service {role} stopped', flush=True)


class LocalService:
  """A dispatcher (in this process) and worker processes on 127.0.0.1.

  For measuring service-fed input on one machine (tools/prefetch_bench.py
  --data_service): the workers are real `python -m posternet.data_service
  worker` processes, so their decode work is not in this process.

    with service_servers.LocalService(num_workers=2) as address:
      dataset = service.make_dataset(..., address, 'parallel_epochs')
  """

  def __init__(self, num_workers: int, start_timeout_s: float = 120.0):
    self.num_workers, self.start_timeout_s = num_workers, start_timeout_s
    self.address, self._dispatcher, self._workers = None, None, []

  def __enter__(self) -> str:
    self._dispatcher, self.address = start_dispatcher(ServerSettings(port=0))
    try:
      self._workers = [self._start_worker() for _ in range(self.num_workers)]
      for worker in self._workers:
        self._wait_serving(worker)
    except BaseException:
      self.__exit__()
      raise
    return self.address

  def _start_worker(self):
    import subprocess  # pylint: disable=g-import-not-at-top
    import sys  # pylint: disable=g-import-not-at-top
    return subprocess.Popen(
        [sys.executable, '-m', 'posternet.data_service', 'worker',
         f'--dispatcher={self.address}', '--port=0'],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)

  def _wait_serving(self, worker) -> None:
    """Reads the worker's output up to its 'serving at' line (bounded)."""
    timer = threading.Timer(self.start_timeout_s, worker.kill)
    timer.start()
    try:
      for line in worker.stdout:
        if 'serving at ' in line:
          return
    finally:
      timer.cancel()
    raise cli.UserError(f'a local tf.data service worker did not start '
                        f'(exit code {worker.wait()})')

  def __exit__(self, *exc) -> None:
    for worker in self._workers:
      if worker.poll() is None:
        worker.send_signal(signal.SIGTERM)
    for worker in self._workers:
      try:
        worker.wait(timeout=30)
      except Exception:  # pylint: disable=broad-except
        worker.kill()
        worker.wait()
      worker.stdout.close()
    if self._dispatcher is not None:
      self._dispatcher.stop()


# --- Flags and main. ---

ROLES = ('dispatcher', 'worker')


def _define_flags() -> None:
  flags.DEFINE_integer('port', 0, 'Port to serve on; 0 picks a free one '
                       '(printed at start).')
  flags.DEFINE_string('host', service.DEFAULT_HOST, 'The address clients use '
                      'to reach this server: a worker announces host:port '
                      'to the dispatcher, and both print it. TensorFlow '
                      'listens on all interfaces regardless (no bind option '
                      'in TF 2.21).')
  flags.DEFINE_string('work_dir', None, 'Dispatcher only: a folder (local '
                      'or gs://) for its journal, so a restarted dispatcher '
                      'resumes its jobs (fault-tolerant mode).')
  flags.DEFINE_string('dispatcher', None, 'Worker only: the dispatcher, '
                      'HOST:PORT or grpc://HOST:PORT.')
  flags.DEFINE_float('worker_timeout', None, 'Dispatcher only: seconds '
                     'without a heartbeat after which a worker counts as '
                     'gone and trainers stop waiting for it; default '
                     'TensorFlow\'s (600).')
  flags.DEFINE_float('heartbeat_interval', None, 'Worker only: seconds '
                     'between reports to the dispatcher; keep it well under '
                     'the dispatcher\'s --worker_timeout; default '
                     'TensorFlow\'s (30).')


def main(argv: Sequence[str]) -> None:
  if len(argv) != 2 or argv[1] not in ROLES:
    raise app.UsageError('usage: python -m posternet.data_service '
                         'dispatcher|worker [flags]')
  role, values = argv[1], flags.FLAGS
  if not 0 <= values.port < 65536:
    raise app.UsageError(f'--port={values.port}: must be 0-65535')
  if role == 'worker' and not values.dispatcher:
    raise app.UsageError('worker needs --dispatcher=HOST:PORT')
  if role == 'dispatcher' and values.dispatcher:
    raise app.UsageError('--dispatcher is for workers')
  if role == 'worker' and (values.work_dir or values.worker_timeout):
    raise app.UsageError('--work_dir and --worker_timeout are for the '
                         'dispatcher')
  if role == 'dispatcher' and values.heartbeat_interval:
    raise app.UsageError('--heartbeat_interval is for workers')
  for name in ('worker_timeout', 'heartbeat_interval'):
    if values[name].value is not None and values[name].value <= 0:
      raise app.UsageError(f'--{name} must be positive')
  serve(role, ServerSettings(
      port=values.port, host=values.host, work_dir=values.work_dir,
      dispatcher=values.dispatcher, worker_timeout_s=values.worker_timeout,
      heartbeat_interval_s=values.heartbeat_interval))


def entry() -> None:
  """`python -m posternet.data_service`."""
  _define_flags()
  cli.run(main)


if __name__ == '__main__':
  entry()
