"""The tf.data service: real dispatcher and worker processes on 127.0.0.1.

A module fixture starts `python -m posternet.data_service dispatcher` and two
`... worker` processes (free ports, short heartbeats so a dead worker is
noticed in seconds), and stops them with SIGTERM at the end, checking they
exit cleanly. Tests then pull training batches through the service.
"""

import collections
import json
import signal
import subprocess
import threading
import time

import pytest
import tensorflow as tf

from posternet import cli
from posternet.data import pipeline
from posternet.data import service as data_service
from posternet.data import records
from posternet.train import config as train_config
from posternet.train import trainer
import record_fixtures

START_TIMEOUT_S = 90
STOP_TIMEOUT_S = 30
SIZE = (16, 16)
NUM_TRAIN = 48


class Server:
  """One data_service command as a subprocess, with its announced address."""

  def __init__(self, run_module, role: str, *flags: str):
    self.role = role
    self.process = run_module(
        'posternet.data_service', role, *flags, start=True,
        env={'TF_CPP_MIN_LOG_LEVEL': '2', 'CUDA_VISIBLE_DEVICES': ''},
        stderr=subprocess.STDOUT)
    self.output = []
    self.address = None
    self._serving = threading.Event()
    # A thread reads the output: select() on a buffered pipe misses lines.
    self._reader = threading.Thread(target=self._read, daemon=True)
    self._reader.start()

  def _read(self) -> None:
    for line in self.process.stdout:
      self.output.append(line)
      if 'serving at ' in line and self.address is None:
        self.address = line.split('serving at ')[1].split()[0]
        self._serving.set()
    self._serving.set()  # exited: stop waiting

  def wait_serving(self) -> str:
    """The address from the 'serving at' line (bounded wait)."""
    self._serving.wait(START_TIMEOUT_S)
    if self.address is None:
      raise AssertionError(f'{self.role} did not start '
                           f'(exit code {self.process.poll()}):\n' +
                           ''.join(self.output[-30:]))
    return self.address

  def stop(self) -> int:
    """SIGTERM, then the exit code (killed if it does not stop in time)."""
    if self.process.poll() is None:
      self.process.send_signal(signal.SIGTERM)
    try:
      code = self.process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
      self.process.kill()
      code = self.process.wait()
    self._reader.join(STOP_TIMEOUT_S)
    return code

  def kill(self) -> None:
    self.process.kill()
    self.process.wait()


@pytest.fixture(scope='module')
def records_dir(make_records):
  # 6 shards of 8: enough files for dynamic sharding to spread over 2 workers.
  return make_records(num_train=NUM_TRAIN, num_val=8, image_hw=SIZE,
                      num_shards=6).records_dir


@pytest.fixture(scope='module')
def manifest(records_dir):
  """records_dir, opened: the handle the pipeline takes."""
  return records.Manifest.read(records_dir)


@pytest.fixture(scope='module')
def service(run_module, free_port):
  """A dispatcher and two workers; yields (dispatcher address, workers)."""
  servers = []
  try:
    dispatcher = Server(run_module, 'dispatcher', f'--port={free_port()}',
                        '--worker_timeout=3')
    servers.append(dispatcher)
    address = dispatcher.wait_serving()
    workers = [Server(run_module, 'worker', f'--dispatcher={address}',
                      '--port=0', '--heartbeat_interval=0.5')
               for _ in range(2)]
    servers.extend(workers)
    for worker in workers:
      worker.wait_serving()
    yield address, workers
  finally:
    # Tests may add workers to the list: stop those as well.
    servers.extend(w for w in locals().get('workers', []) if w not in servers)
    codes = {s.role + str(i): s.stop() for i, s in enumerate(servers)}
  # Stopped by SIGTERM: a clean exit (the killed worker aside).
  for name, code in codes.items():
    if code != -signal.SIGKILL:
      assert code == 0, (name, code)


def _ids(dataset) -> list:
  return [poster_id for batch in dataset.as_numpy_iterator()
          for poster_id in batch[pipeline.ID]]


def _train_ids(manifest) -> list:
  return [r['poster/id'] for r in record_fixtures.read_split(manifest,
                                                             'train')]


def test_distributed_epoch_delivers_each_training_poster_once(manifest,
                                                              service):
  address, _ = service
  dataset = data_service.make_dataset(
      manifest, 'train', 8, SIZE, address, 'distributed_epoch',
      repeat=False, seed=1)
  ids = _ids(dataset)
  assert collections.Counter(ids) == collections.Counter(_train_ids(manifest))


def test_training_stream_has_full_batches_and_repeats_passes(manifest,
                                                             service):
  address, _ = service
  dataset = data_service.make_dataset(
      manifest, 'train', 8, SIZE, address, 'distributed_epoch',
      seed=1)
  # Static batch shape: what the compiled train step needs.
  assert dataset.element_spec[pipeline.IMAGE].shape.as_list() == [8, *SIZE,
                                                                  3]
  # 3 passes' worth (each pass is a new job: every poster once per pass).
  counts = collections.Counter(_ids(dataset.take(3 * NUM_TRAIN // 8)))
  assert set(counts) == set(_train_ids(manifest))
  assert sum(counts.values()) == 3 * NUM_TRAIN


def test_parallel_epochs_streams_from_the_workers(manifest, service):
  address, _ = service
  dataset = data_service.make_dataset(manifest, 'train', 8, SIZE, address,
                                      'parallel_epochs')
  batches = list(dataset.take(10).as_numpy_iterator())
  assert all(b[pipeline.IMAGE].shape == (8, *SIZE, 3) and
             b[pipeline.IMAGE].dtype == 'uint8' for b in batches)
  assert {i for b in batches for i in b[pipeline.ID]} <= set(
      _train_ids(manifest))


def test_bad_address_is_a_clear_error_within_seconds(records_dir, service,
                                                     free_port):
  _, workers = service
  nobody = f'grpc://127.0.0.1:{free_port()}'
  start = time.monotonic()
  with pytest.raises(cli.UserError, match='no tf.data service dispatcher'):
    data_service.probe_dispatcher(nobody, timeout_s=5)
  assert time.monotonic() - start < 15
  # A worker's port answers gRPC, but is not a dispatcher.
  with pytest.raises(cli.UserError, match='not a tf.data service dispatcher'):
    data_service.probe_dispatcher(workers[0].address, timeout_s=5)
  with pytest.raises(cli.UserError, match='expected grpc://HOST:PORT'):
    data_service.parse_address('grpc://127.0.0.1')


def test_worker_command_with_bad_dispatcher_exits_2(run_module, free_port):
  start = time.monotonic()
  worker = Server(run_module, 'worker',
                  f'--dispatcher=127.0.0.1:{free_port()}', '--port=0')
  code = worker.process.wait(timeout=START_TIMEOUT_S)
  worker.stop()
  output = ''.join(worker.output)
  assert code == 2, output
  assert 'error: --dispatcher=' in output and 'Traceback' not in output
  assert time.monotonic() - start < START_TIMEOUT_S


def test_killing_a_worker_mid_epoch_does_not_stop_the_job(manifest,
                                                          service):
  """parallel_epochs: the stream goes on from the workers left.

  Runs after the tests that need both workers: it kills worker 1.
  """
  address, workers = service
  dataset = data_service.make_dataset(manifest, 'train', 4, SIZE, address,
                                      'parallel_epochs')
  iterator = dataset.as_numpy_iterator()
  next(iterator)
  workers[1].kill()
  start = time.monotonic()
  ids = [i for _ in range(2 * NUM_TRAIN // 4) for i in next(iterator)[pipeline.ID]]
  assert time.monotonic() - start < 60
  assert set(ids) <= set(_train_ids(manifest)) and len(ids) == 2 * NUM_TRAIN


# --- The trainer through the service (after the kill: one worker left). ---


def test_trainer_trains_through_the_service(records_dir, service, tmp_path):
  address, _ = service
  config = train_config.build(
      records=records_dir, logdir=str(tmp_path), run_name='svc',
      model='small_cnn', image_size=SIZE, batch_size=8, epochs=2,
      precision='float32', verbose=0, data_service=address,
      data_service_mode='parallel_epochs', log_every_steps=0,
      dashboard_every_epochs=0)
  summary = trainer.run(config)
  assert summary['steps'] == 2 * (NUM_TRAIN // 8)
  assert (tmp_path / 'svc' / 'export' / 'saved_model').is_dir()
  resolved = json.loads((tmp_path / 'svc' / 'config.json').read_text())
  assert resolved['config']['data_service'] == address


def test_trainer_with_bad_address_exits_2_within_seconds(records_dir,
                                                         run_module,
                                                         free_port):
  address = f'grpc://127.0.0.1:{free_port()}'
  start = time.monotonic()
  result = run_module(
      'posternet.train', f'--records={records_dir}', '--model=small_cnn',
      '--image_size=16', '--logdir=/nonexistent/never',
      f'--data_service={address}', env={'TF_CPP_MIN_LOG_LEVEL': '2'})
  assert result.returncode == 2, result.stderr[-2000:]
  assert f'error: --data_service={address}: no tf.data service dispatcher' in (
      result.stderr)
  assert 'Traceback' not in result.stderr
  # Probe timeout (10 s) plus start-up, not TensorFlow's hour of retries.
  assert time.monotonic() - start < 90


class _Output:
  """A process's output (stderr merged), read by a thread, line by line."""

  def __init__(self, process, marker: str):
    self.process, self.lines = process, []
    self.seen = threading.Event()  # a line with marker came
    self._reader = threading.Thread(target=self._read, args=(marker,),
                                    daemon=True)
    self._reader.start()

  def _read(self, marker: str) -> None:
    for line in self.process.stdout:
      self.lines.append(line)
      if marker in line:
        self.seen.set()

  def text(self) -> str:
    self._reader.join(STOP_TIMEOUT_S)
    return ''.join(self.lines)


def test_trainer_without_workers_says_so_and_gives_up(records_dir, run_module,
                                                      free_port, tmp_path):
  """Issue 12, case 5: a live dispatcher, no worker. The trainer says what
  it waits for within seconds and stops at --data_service_timeout; another,
  sent Ctrl-C while it waits, stops at once (TensorFlow's client alone
  ignores Ctrl-C while it waits).
  """
  port = free_port()
  dispatcher = Server(run_module, 'dispatcher', f'--port={port}')
  trainers = []
  try:
    address = dispatcher.wait_serving()
    for name, flags in (('timed', ['--data_service_timeout=6']),
                        ('interrupted', [])):
      trainers.append(_Output(run_module(
          'posternet.train', f'--records={records_dir}', '--model=small_cnn',
          f'--image_size={SIZE[0]}', '--batch_size=8', '--epochs=1',
          '--precision=float32', f'--logdir={tmp_path / name}',
          f'--data_service={address}', *flags, start=True,
          stderr=subprocess.STDOUT, env={'TF_CPP_MIN_LOG_LEVEL': '2'}),
          'waiting for a batch from the tf.data service'))
    timed, interrupted = trainers
    assert interrupted.seen.wait(START_TIMEOUT_S), interrupted.lines[-20:]
    interrupted.process.send_signal(signal.SIGINT)
    assert interrupted.process.wait(timeout=15) == 130
    assert interrupted.text().strip().splitlines()[-1] == 'interrupted'
    assert timed.process.wait(timeout=START_TIMEOUT_S) == 2
    output = timed.text()
    why = (f'no worker has registered with the dispatcher at {address} yet '
           '(start one: python -m posternet.data_service worker '
           f'--dispatcher=127.0.0.1:{port})')
    assert f'waiting for a batch from the tf.data service: {why}' in output
    assert 'Traceback' not in output
    assert output.strip().splitlines()[-1] == (
        f'error: --data_service={address}: no batch from the tf.data service '
        f'in 6 s (--data_service_timeout): {why}')
  finally:
    for trainer in trainers:
      if trainer.process.poll() is None:
        trainer.process.kill()
        trainer.process.wait()
    assert dispatcher.stop() == 0


def test_benchmark_service_rows(records_dir, manifest):
  # pylint: disable=g-import-not-at-top
  from posternet.bench import measures
  from posternet.bench import runner
  plan = measures.decode_plan(manifest, SIZE)
  names = [v['name'] for v in runner.variants(plan, service=True)]
  assert measures.service_row(1) in names
  assert measures.service_row(2) in names
  assert not any('tf.data service' in v['name']
                 for v in runner.variants(plan))
  setup = measures.Setup(
      records=records_dir, records_scaled=records_dir, images='',
      image_size=SIZE, batch_size=8, seconds=0.3, warmup_seconds=0.2,
      precision='float32')
  [row] = measures.measure_service(setup, workers=1)
  assert row['service_workers'] == 1 and row['images_per_sec'] > 0
  assert row['images'] % 8 == 0  # whole batches, counted
