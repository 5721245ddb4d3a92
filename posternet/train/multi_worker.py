"""Multi-worker training: the cluster from TF_CONFIG, and who writes what.

Every host runs the same command with its own TF_CONFIG, e.g. on host 2 of 2:

  TF_CONFIG='{"cluster": {"worker": ["host1:12345", "host2:12345"]},
              "task": {"type": "worker", "index": 1}}' \\
    python -m posternet.train --strategy=multi_worker --flagfile=...

tf.distribute.MultiWorkerMirroredStrategy runs one replica per worker and
all-reduces the gradients; each worker's input pipeline reads its own shard
files (the input context). As the Keras multi-worker guide describes, only
the chief (task "chief", or worker 0 when the cluster has no chief) writes
the run folder (logs, checkpoints, export); every other worker runs the same
callbacks into workertemp_<index>/ inside it, which is deleted when its
training finishes. A restarted worker resumes from the chief's backup when
it can see it (a shared --logdir, e.g. gs://), else from its own.
"""

import dataclasses
import json
import os
from typing import Mapping, Optional

import tensorflow as tf

from posternet import cli

TASK_TYPES = ('chief', 'worker')


@dataclasses.dataclass(frozen=True)
class Task:
  """This process's place in the cluster."""
  task_type: str          # 'chief' or 'worker'
  index: int
  num_workers: int        # the processes that train: chief + workers
  has_chief_job: bool     # without one, worker 0 is the chief

  @property
  def is_chief(self) -> bool:
    """Whether this process writes the run's outputs."""
    if self.has_chief_job:
      return self.task_type == 'chief'
    return self.task_type == 'worker' and self.index == 0


def task_from_tf_config(environ: Optional[Mapping[str, str]] = None) -> Task:
  """This process's task, from the TF_CONFIG environment variable.

  Raises:
    cli.UserError: TF_CONFIG is missing, not JSON, or does not name this
      task inside its cluster, with a line that says what is wrong.
  """
  environ = os.environ if environ is None else environ
  text = environ.get('TF_CONFIG')
  example = ('e.g. TF_CONFIG=\'{"cluster": {"worker": ["host1:12345", '
             '"host2:12345"]}, "task": {"type": "worker", "index": 0}}\'')
  if not text:
    raise cli.UserError('--strategy=multi_worker needs the TF_CONFIG '
                        f'environment variable on every worker; {example}')
  try:
    config = json.loads(text)
  except ValueError as e:
    raise cli.UserError(f'TF_CONFIG is not valid JSON ({e}); {example}') from None
  if not isinstance(config, dict):
    raise cli.UserError(f'TF_CONFIG must be a JSON object; {example}')
  cluster, task = config.get('cluster'), config.get('task')
  if not isinstance(cluster, dict) or not isinstance(task, dict):
    raise cli.UserError(f'TF_CONFIG needs "cluster" and "task"; {example}')
  _check_cluster(cluster, example)
  task_type, index = task.get('type'), task.get('index', 0)
  if task_type not in TASK_TYPES:
    raise cli.UserError(f'TF_CONFIG task type {task_type!r}: posternet '
                        'trains on "chief" and "worker" tasks only')
  if not isinstance(index, int) or not 0 <= index < len(
      cluster.get(task_type, [])):
    raise cli.UserError(
        f'TF_CONFIG task {task_type} {index!r} is not in the cluster, which '
        f'lists {len(cluster.get(task_type, []))} {task_type} address(es)')
  num_workers = sum(len(cluster.get(job, [])) for job in TASK_TYPES)
  return Task(task_type, index, num_workers, bool(cluster.get('chief')))


def _check_cluster(cluster: Mapping, example: str) -> None:
  """Every job is a list of host:port addresses; there is at most one chief."""
  if not any(cluster.get(job) for job in TASK_TYPES):
    raise cli.UserError(f'TF_CONFIG\'s cluster has no "worker" (or "chief") '
                        f'addresses; {example}')
  for job, addresses in cluster.items():
    if not isinstance(addresses, list):
      raise cli.UserError(f'TF_CONFIG cluster job {job!r} must be a list of '
                          'host:port addresses')
    for address in addresses:
      host, _, port = str(address).rpartition(':')
      if not host or not port.isdigit():
        raise cli.UserError(f'TF_CONFIG cluster job {job!r}: {address!r} is '
                            'not a host:port address')
  if len(cluster.get('chief', [])) > 1:
    raise cli.UserError('TF_CONFIG lists more than one chief')


def worker_folder(run_folder: str, task: Optional[Task]) -> str:
  """Where this task writes: the run folder for the chief, else a temp folder.

  The temporary folder is the Keras guide's workertemp_<id> inside the run
  folder: the same callbacks run on every worker (they must all save, and
  save alike), but only the chief's files are kept.
  """
  if task is None or task.is_chief:
    return run_folder
  return os.path.join(run_folder, f'workertemp_{task.task_type}_{task.index}')


def remove_worker_folder(folder: str, task: Optional[Task]) -> None:
  """Deletes a non-chief's temporary folder once its training has finished."""
  if task is not None and not task.is_chief and tf.io.gfile.exists(folder):
    tf.io.gfile.rmtree(folder)


class MultiWorkerMirroredStrategy(tf.distribute.MultiWorkerMirroredStrategy):
  """MultiWorkerMirroredStrategy with the `reduce` Keras 3's fit relies on.

  Keras 3.15's TensorFlow trainer calls strategy.reduce(MEAN, ...) on a
  whole (images, labels) batch to find its shapes, and with axis=0 on scalar
  logs; TensorFlow's collective strategy takes neither a nested structure,
  nor axis=0 on a scalar, nor uint8 (keras-team/keras#20585: Keras 3's fit
  fails under this strategy). Here reduce maps over the structure, takes
  axis=0 of a scalar as the mean over replicas, and reduces integer types
  the collectives lack in float32. Everything else is TensorFlow's.
  """

  _COLLECTIVE_DTYPES = (tf.bfloat16, tf.float16, tf.float32, tf.float64,
                        tf.int32, tf.int64)

  def reduce(self, reduce_op, value, axis):
    return tf.nest.map_structure(
        lambda v: self._reduce_one(reduce_op, v, axis), value)

  def _reduce_one(self, reduce_op, value, axis):
    local = self.experimental_local_results(value)[0]
    if axis is not None and local.shape.rank == 0:
      axis = None
    dtype = local.dtype
    if dtype in self._COLLECTIVE_DTYPES or not (dtype.is_integer
                                                or dtype.is_floating):
      return super().reduce(reduce_op, value, axis)
    as_float = self.run(lambda t: tf.cast(t, tf.float32), args=(value,))
    return tf.cast(super().reduce(reduce_op, as_float, axis), dtype)


def wait_for_all(strategy: tf.distribute.Strategy) -> None:
  """Returns once every worker got here (a one-number all-reduce).

  A worker that exits while the chief still scores and exports makes the
  coordination service report the cluster as crashed; waiting for each
  other lets them all end cleanly.
  """
  if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
    ones = strategy.run(tf.function(lambda: tf.constant(1, tf.int32)))
    strategy.reduce(tf.distribute.ReduceOp.SUM, ones, axis=None)


def make_strategy() -> tf.distribute.Strategy:
  """The strategy for the cluster in TF_CONFIG (checked first: no hang)."""
  task_from_tf_config()
  return MultiWorkerMirroredStrategy()
