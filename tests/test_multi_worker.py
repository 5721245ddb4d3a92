"""Multi-worker training: TF_CONFIG checks, and two real trainer processes.

The end-to-end test launches `python -m posternet.train --strategy=multi_worker`
twice on 127.0.0.1 (free ports), on tiny records, and checks that both finish,
that the chief wrote the run folder, and that the other worker left nothing.
"""

import json
import os
import subprocess
import time

import pytest

from posternet import cli
from posternet.train import multi_worker
from posternet.train import config as train_config
from posternet.train import trainer
def tf_config(addresses, index, task_type='worker', chief=None) -> str:
  cluster = {'worker': list(addresses)}
  if chief:
    cluster['chief'] = [chief]
  return json.dumps({'cluster': cluster,
                     'task': {'type': task_type, 'index': index}})


# --- TF_CONFIG: a clear error for each mistake, before TensorFlow is asked. ---


def test_task_worker_zero_is_chief_without_a_chief_job():
  addresses = ['127.0.0.1:1', '127.0.0.1:2']
  first = multi_worker.task_from_tf_config(
      {'TF_CONFIG': tf_config(addresses, 0)})
  second = multi_worker.task_from_tf_config(
      {'TF_CONFIG': tf_config(addresses, 1)})
  assert (first.is_chief, second.is_chief) == (True, False)
  assert first.num_workers == 2


def test_task_with_a_chief_job():
  config = tf_config(['127.0.0.1:2'], 0, chief='127.0.0.1:1')
  worker = multi_worker.task_from_tf_config({'TF_CONFIG': config})
  assert not worker.is_chief and worker.num_workers == 2
  chief = multi_worker.task_from_tf_config({'TF_CONFIG': json.dumps(
      {**json.loads(config), 'task': {'type': 'chief', 'index': 0}})})
  assert chief.is_chief


@pytest.mark.parametrize('value, expected', [
    (None, 'needs the TF_CONFIG environment variable'),
    ('{not json', 'not valid JSON'),
    ('{"task": {"type": "worker", "index": 0}}', 'needs "cluster" and "task"'),
    (tf_config(['127.0.0.1:1'], 3), 'worker 3 is not in the cluster'),
    (tf_config(['127.0.0.1:1'], 0, task_type='ps'), "task type 'ps'"),
    (tf_config(['localhost'], 0), "'localhost' is not a host:port"),
    (json.dumps({'cluster': {'worker': []},
                 'task': {'type': 'worker', 'index': 0}}), 'no "worker"'),
])
def test_bad_tf_config_is_one_clear_line(value, expected):
  environ = {} if value is None else {'TF_CONFIG': value}
  with pytest.raises(cli.UserError, match=expected) as error:
    multi_worker.task_from_tf_config(environ)
  assert '\n' not in str(error.value)


def test_worker_folders():
  addresses = ['127.0.0.1:1', '127.0.0.1:2']
  chief = multi_worker.task_from_tf_config({'TF_CONFIG': tf_config(addresses, 0)})
  other = multi_worker.task_from_tf_config({'TF_CONFIG': tf_config(addresses, 1)})
  assert multi_worker.worker_folder('runs/a', chief) == 'runs/a'
  assert multi_worker.worker_folder('runs/a', None) == 'runs/a'
  assert multi_worker.worker_folder('runs/a', other) == os.path.join(
      'runs/a', 'workertemp_worker_1')


def test_trainer_without_tf_config_fails_clearly(tmp_path, monkeypatch,
                                                  make_records):
  monkeypatch.delenv('TF_CONFIG', raising=False)
  records_dir = make_records(num_train=8, num_val=4).records_dir
  config = train_config.build(records=records_dir, logdir=str(tmp_path / 'runs'),
                        model='small_cnn', image_size=(32, 32), batch_size=4,
                        epochs=1, strategy='multi_worker')
  start = time.monotonic()
  with pytest.raises(cli.UserError, match='TF_CONFIG'):
    trainer.run(config)
  assert time.monotonic() - start < 30
  assert not (tmp_path / 'runs').exists()  # nothing written


# --- Two real workers. ---


def _launch(run_module, index, addresses, records_dir, logdir, log_path):
  env = {'TF_CONFIG': tf_config(addresses, index),
         'TF_CPP_MIN_LOG_LEVEL': '2', 'CUDA_VISIBLE_DEVICES': ''}
  with open(log_path, 'w') as log:
    return run_module(
        'posternet.train', f'--records={records_dir}', f'--logdir={logdir}',
        '--run_name=mw', '--model=small_cnn', '--image_size=32',
        '--batch_size=8', '--epochs=2', '--strategy=multi_worker',
        '--verbose=2', '--precision=float32', env=env, start=True,
        stdout=log, stderr=subprocess.STDOUT)


def test_two_workers_train_and_only_the_chief_writes(tmp_path, make_records,
                                                     run_module, free_ports):
  # 2 train shards: one per worker (each reads its own file).
  records_dir = make_records(num_train=32, num_val=8,
                             num_shards=2).records_dir
  logdir = tmp_path / 'runs'
  addresses = [f'127.0.0.1:{port}' for port in free_ports(2)]
  logs = [tmp_path / f'worker{i}.log' for i in range(2)]
  workers = [_launch(run_module, i, addresses, records_dir, logdir, logs[i])
             for i in range(2)]
  try:
    deadline = time.monotonic() + 240
    codes = [w.wait(timeout=max(deadline - time.monotonic(), 1))
             for w in workers]
  finally:
    for w in workers:
      if w.poll() is None:
        w.kill()
        w.wait()
  tails = '\n'.join(f'--- worker {i}:\n' + log.read_text()[-3000:]
                    for i, log in enumerate(logs))
  assert codes == [0, 0], tails

  run_folder = logdir / 'mw'
  summary = json.loads((run_folder / 'summary.json').read_text())
  # 32 posters / global batch 8 = 4 steps per epoch, 2 epochs; each replica
  # took 4 posters per step from its own shard.
  assert summary['steps'] == 8 and summary['steps_per_epoch'] == 4
  assert sorted(os.listdir(run_folder / 'checkpoints')) == [
      'epoch-0001.keras', 'epoch-0002.keras']
  assert (run_folder / 'export' / 'saved_model' / 'saved_model.pb').exists()
  assert list((run_folder / 'train').glob('events.out.tfevents.*'))
  assert len((run_folder / 'history.csv').read_text().splitlines()) == 3
  assert not (run_folder / 'backup').exists()  # finished: backup removed
  # The non-chief's temporary folder is gone; it wrote nothing else here.
  assert not list(run_folder.glob('workertemp_*'))
  assert sorted(p.name for p in logdir.iterdir()) == ['mw']
  assert 'multi_worker' in (run_folder / 'config.json').read_text()
  done_lines = []
  for log in logs:
    text = log.read_text()
    assert '2 replica(s)' in text
    done_lines.append(text.split('] done: ')[1].splitlines()[0])
  # In sync: both workers end with the same weights, so the same val metrics.
  assert done_lines[0] == done_lines[1]
