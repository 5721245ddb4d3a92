"""Train scalars every N steps, and the input clock behind their input wait.

What they write in the run's train/ folder, every --log_every_steps steps:
batch_loss and batch_<metric> (Keras' running means over the epoch so far),
batch_learning_rate, batch_images_per_sec and batch_input_wait_share; and per
epoch input_wait_share in Keras' epoch logs (epoch_input_wait_share).

Input wait is measured where it happens: InputClock.wrap puts a zip in front
of the training dataset's last element that stamps the time the training
step asked for a batch and adds (time the batch arrived - time asked) to a
variable. That is the time the step was blocked in get_next, and nothing
else: its share of the wall time between log points is the input-wait share
(0: the input is always ready; near 1: the model waits for posters).
"""

import time
from typing import Tuple

from absl import logging
import keras
from keras import ops
import tensorflow as tf


class InputClock:
  """Seconds the training loop spent blocked waiting for input batches."""

  def __init__(self):
    # init_scope and CPU: an eager host variable, whatever strategy scope or
    # device the caller is in; the tf.data function captures it.
    with tf.init_scope(), tf.device('/CPU:0'):
      self.waited = tf.Variable(0.0, dtype=tf.float64, trainable=False,
                                name='input_wait_seconds')
      # When the batch being awaited was asked for (epoch seconds); 0: none.
      self.asked_at = tf.Variable(0.0, dtype=tf.float64, trainable=False,
                                  name='input_asked_at')

  def wrap(self, dataset: tf.data.Dataset) -> tf.data.Dataset:
    """The dataset, its get_next timed into self.waited (and asked_at).

    zip asks its inputs in order: the stamp is taken when the consumer asks
    for a batch, then the batch is awaited; the map after them runs on the
    consumer's call, once the batch is there. inject_prefetch is off so that
    tf.data does not move this map to a background thread.
    """
    def ask(_):
      now = tf.timestamp()
      with tf.control_dependencies([self.asked_at.assign(now)]):
        return tf.identity(now)

    stamps = tf.data.Dataset.from_tensors(0).repeat().map(ask)

    def record(asked, element):
      wait = self.waited.assign_add(tf.timestamp() - asked)
      arrived = self.asked_at.assign(0.0)
      with tf.control_dependencies([wait, arrived]):
        return tf.nest.map_structure(tf.identity, element)

    options = tf.data.Options()
    options.experimental_optimization.inject_prefetch = False
    timed = tf.data.Dataset.zip((stamps, dataset)).map(record)
    return timed.with_options(options)

  def seconds(self) -> float:
    """Total seconds waited so far (read on the host, cheap)."""
    return float(self.waited.numpy())

  def waiting_s(self) -> float:
    """How long the batch asked for last has been awaited; 0 once it came.

    Readable from another thread while the loop waits (data_service.Watch).
    """
    asked = float(self.asked_at.numpy())
    return max(time.time() - asked, 0.0) if asked else 0.0


class StepScalars(keras.callbacks.Callback):
  """Train scalars every N steps; the epoch's input-wait share in its logs.

  Listed before Keras' TensorBoard and CSV callbacks, so they record
  input_wait_share per epoch. Steps are counted from the epoch and batch
  index, so they continue across a resumed run; not the optimizer's
  iterations, which skip steps that mixed_float16's loss scaling drops.
  """

  def __init__(self, train_dir: str, clock: InputClock, batch_size: int,
               every_steps: int):
    super().__init__()
    self.train_dir, self.clock = train_dir, clock
    self.batch_size, self.every_steps = batch_size, every_steps
    self._writer = None
    self._epoch_mark = self._log_mark = self._train_end = None
    self._epoch_start_step = self._step = 0

  def on_train_begin(self, logs=None):
    if self.every_steps:
      self._writer = tf.summary.create_file_writer(self.train_dir)

  def on_train_end(self, logs=None):
    if self._writer is not None:
      self._writer.close()
      self._writer = None

  def on_epoch_begin(self, epoch, logs=None):
    self._epoch_start_step = self._step = epoch * (self.params.get('steps')
                                                   or 0)
    self._epoch_mark = self._log_mark = self._mark()
    self._train_end = None

  def on_test_begin(self, logs=None):
    self._train_end = self._train_end or self._mark()

  def on_train_batch_end(self, batch, logs=None):
    # batch: the index in the epoch of the last step this call ran.
    self._step = self._epoch_start_step + batch + 1
    now = self._mark()
    if not self.every_steps or now[0] // self.every_steps == (
        self._log_mark[0] // self.every_steps):
      return
    values = {name: float(value) for name, value in (logs or {}).items()}
    values['learning_rate'] = learning_rate(self.model)
    values.update(self._rates(self._log_mark, now))
    with self._writer.as_default():
      for name, value in values.items():
        tf.summary.scalar(f'batch_{name}', value, step=now[0])
    self._log_mark = now

  def on_epoch_end(self, epoch, logs=None):
    rates = self._rates(self._epoch_mark,
                        self._train_end or self._mark())
    if logs is not None:
      logs['input_wait_share'] = rates['input_wait_share']
    if self._writer is not None:
      self._writer.flush()

  def _mark(self) -> Tuple[int, float, float]:
    """(step, wall time, seconds waited for input so far)."""
    return self._step, time.perf_counter(), self.clock.seconds()

  def _rates(self, start, end) -> dict:
    """images_per_sec and input_wait_share between two marks."""
    seconds = max(end[1] - start[1], 1e-9)
    share = (end[2] - start[2]) / seconds
    return {'images_per_sec': (end[0] - start[0]) * self.batch_size / seconds,
            # A step's wait starts just before the mark: clip the overlap.
            'input_wait_share': min(max(share, 0.0), 1.0)}


def learning_rate(model: keras.Model) -> float:
  """The optimizer's current learning rate (through a loss-scale wrapper)."""
  optimizer = getattr(model.optimizer, 'inner_optimizer', model.optimizer)
  return float(ops.convert_to_numpy(optimizer.learning_rate))


class Throughput(keras.callbacks.Callback):
  """Adds images_per_sec (training part of the epoch) to the epoch's logs.

  Listed before the TensorBoard and CSV callbacks, so they record it. Early
  in the first epoch it also warns when an epoch will take an hour or more
  on this machine: a user who picked too big a model or size for the
  hardware learns it in seconds, not after the first epoch.
  """

  # Steps timed for the estimate, after the first (which traces the model).
  ESTIMATE_STEPS = 5
  WARN_EPOCH_SECONDS = 3600

  def __init__(self, images_per_epoch: int, steps_per_epoch: int):
    super().__init__()
    self.images_per_epoch = images_per_epoch
    self.steps_per_epoch = steps_per_epoch
    self._start = self._train_end = None
    self._estimate_from = None
    self._estimated = False

  def on_epoch_begin(self, epoch, logs=None):
    self._start, self._train_end = time.perf_counter(), None

  def on_train_batch_end(self, batch, logs=None):
    if self._estimated:
      return
    if self._estimate_from is None:
      self._estimate_from = (batch, time.perf_counter())
      return
    first, start = self._estimate_from
    if batch - first >= self.ESTIMATE_STEPS:
      self._estimated = True
      step_seconds = (time.perf_counter() - start) / (batch - first)
      self._warn_if_slow(step_seconds)

  def _warn_if_slow(self, step_seconds: float) -> None:
    epoch_seconds = step_seconds * self.steps_per_epoch
    if epoch_seconds >= self.WARN_EPOCH_SECONDS:
      logging.warning(
          'at %.1f s a step, one epoch of %d steps will take about %.1f hours '
          'on this machine; a smaller --model_size or model trains faster',
          step_seconds, self.steps_per_epoch, epoch_seconds / 3600)

  def on_test_begin(self, logs=None):
    self._train_end = self._train_end or time.perf_counter()

  def on_epoch_end(self, epoch, logs=None):
    seconds = (self._train_end or time.perf_counter()) - self._start
    rate = self.images_per_epoch / max(seconds, 1e-9)
    if logs is not None:
      logs['images_per_sec'] = rate  # the console's epoch line prints it
