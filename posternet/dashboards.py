"""TensorBoard dashboards for a training run (the trainer's callbacks).

What a run writes under --logdir/<run>/, besides Keras' own epoch scalars
(epoch_loss, epoch_<metric> in train/ and validation/, epoch_learning_rate,
epoch_images_per_sec):

  train/       every --log_every_steps steps: batch_loss and batch_<metric>
               (Keras' running means over the epoch so far),
               batch_learning_rate, batch_images_per_sec and
               batch_input_wait_share; per epoch epoch_input_wait_share;
               the profiler's trace with --profile_steps; the model's op
               graph (Graphs tab), traced once at the start.
  validation/  per epoch (every --dashboard_every_epochs): genre_roc_auc/<g>
               and genre_support/<g> scalars, the genre_table text, a PR curve
               per genre (pr_curves/<g>), the val_posters image grid (true
               genres and top-3 predictions) and its val_posters_table text;
               after training final_<metric> for the whole val split.
  (the run)    HParams: the experiment (hparams and metric columns) and the
               run's session with its settings; KEY_HPARAMS listed first.

Input wait is measured where it happens: InputClock.wrap puts a zip in front
of the training dataset's last element that stamps the time the training
step asked for a batch and adds (time the batch arrived - time asked) to a
variable. That is the time the step was blocked in get_next, and nothing
else: its share of the wall time between log points is the input-wait share
(0: the input is always ready; near 1: the model waits for posters).

The per-genre numbers cost no extra pass: at the end of an epoch the
compiled multi-label ROC-AUC metric still holds the validation pass's
confusion counts (200 thresholds x 25 genres), from which per-genre ROC-AUC,
support and PR curves follow. Only the poster grid runs the model, on 8
posters.
"""

import math
import os
import time
from typing import Mapping, Optional, Sequence, Tuple

from absl import logging
import keras
from keras import ops
import numpy as np
import tensorflow as tf
from tensorboard.plugins.hparams import api as hp
from tensorboard.plugins.hparams import plugin_data_pb2
from tensorboard.plugins.pr_curve import summary as pr_summary

from posternet import cli
from posternet import genres
from posternet import input_pipeline
from posternet import records
from posternet import render

GRID_POSTERS = 8      # validation posters in the val_posters grid

# Config fields left out of HParams: where files go and how loud it is; they
# do not change what is learned.
_NOT_HPARAMS = ('logdir', 'run_name', 'export_dir', 'verbose', 'resume',
                'keep_checkpoints', 'log_every_steps', 'dashboard_every_epochs',
                'profile_steps')

# The settings that tell runs apart, listed first in the HParams dashboard.
# It checks only its first five hparams by default (batch_size, epochs,
# image_size, learning_rate, model: the order is by name); model_size and
# precision are the next two rows.
KEY_HPARAMS = ('model', 'image_size', 'model_size', 'learning_rate',
               'batch_size', 'precision', 'epochs')


# --- Input wait. ---


class InputClock:
  """Seconds the training loop spent blocked waiting for input batches."""

  def __init__(self):
    # init_scope and CPU: an eager host variable, whatever strategy scope or
    # device the caller is in; the tf.data function captures it.
    with tf.init_scope(), tf.device('/CPU:0'):
      self.waited = tf.Variable(0.0, dtype=tf.float64, trainable=False,
                                name='input_wait_seconds')

  def wrap(self, dataset: tf.data.Dataset) -> tf.data.Dataset:
    """The dataset, its get_next timed into self.waited.

    zip asks its inputs in order: the stamp is taken when the consumer asks
    for a batch, then the batch is awaited; the map after them runs on the
    consumer's call, once the batch is there. inject_prefetch is off so that
    tf.data does not move this map to a background thread.
    """
    stamps = tf.data.Dataset.from_tensors(0).repeat().map(
        lambda _: tf.timestamp())

    def record(asked, element):
      wait = self.waited.assign_add(tf.timestamp() - asked)
      with tf.control_dependencies([wait]):
        return tf.nest.map_structure(tf.identity, element)

    options = tf.data.Options()
    options.experimental_optimization.inject_prefetch = False
    timed = tf.data.Dataset.zip((stamps, dataset)).map(record)
    return timed.with_options(options)

  def seconds(self) -> float:
    """Total seconds waited so far (read on the host, cheap)."""
    return float(self.waited.numpy())


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


# --- Per-genre results from the validation pass. ---


def find_genre_auc(model: keras.Model) -> Optional[keras.metrics.AUC]:
  """The compiled multi-label ROC AUC metric over the 25 genres, if any."""
  pending = list(model.metrics)
  while pending:
    metric = pending.pop(0)
    if (isinstance(metric, keras.metrics.AUC) and metric.multi_label and
        metric.curve.name == 'ROC' and
        metric.num_labels == genres.NUM_GENRES):
      return metric
    pending.extend(getattr(metric, 'metrics', []))
  return None


def confusion(metric: keras.metrics.AUC) -> dict:
  """The metric's counts, each float64 [thresholds, genres]."""
  names = ('true_positives', 'false_positives', 'true_negatives',
           'false_negatives')
  return {name: np.asarray(ops.convert_to_numpy(getattr(metric, name)),
                           np.float64) for name in names}


def genre_results(counts: Mapping[str, np.ndarray]) -> Tuple[np.ndarray,
                                                            np.ndarray]:
  """(ROC-AUC, support) per genre from confusion counts at thresholds.

  The trapezoid rule over the thresholds, as keras.metrics.AUC computes it,
  so the mean over the genres with positives and negatives is the logged
  roc_auc. A genre without positives or negatives gets NaN.
  """
  tp, fp = counts['true_positives'], counts['false_positives']
  tn, fn = counts['true_negatives'], counts['false_negatives']
  positives, negatives = tp[0] + fn[0], fp[0] + tn[0]
  with np.errstate(divide='ignore', invalid='ignore'):
    tpr, fpr = tp / positives, fp / negatives
    auc = np.sum((fpr[:-1] - fpr[1:]) * (tpr[:-1] + tpr[1:]) / 2, axis=0)
  auc[(positives == 0) | (negatives == 0)] = np.nan
  return auc, positives


def pr_curve_summary(tag: str, counts: Mapping[str, np.ndarray],
                     genre: int):
  """The PR-curve plugin's Summary proto for one genre's counts."""
  tp, fp = counts['true_positives'][:, genre], counts['false_positives'][:,
                                                                       genre]
  tn, fn = counts['true_negatives'][:, genre], counts['false_negatives'][:,
                                                                       genre]
  summary = pr_summary.raw_data_pb(
      tag, true_positive_counts=tp, false_positive_counts=fp,
      true_negative_counts=tn, false_negative_counts=fn,
      precision=tp / np.maximum(tp + fp, 1e-7),
      recall=tp / np.maximum(tp + fn, 1e-7), num_thresholds=len(tp))
  summary.value[0].tag = tag  # raw_data_pb appends '/pr_curves'
  return summary


def genre_table(auc: np.ndarray, support: np.ndarray) -> str:
  """A Markdown table: genre, val posters with it, ROC-AUC."""
  rows = ['| genre | support | ROC-AUC |', '|---|---:|---:|']
  for name, value, count in zip(genres.GENRES, auc, support):
    shown = 'n/a' if math.isnan(value) else f'{value:.3f}'
    rows.append(f'| {name} | {int(count)} | {shown} |')
  return '\n'.join(rows)


# --- The validation poster grid. ---


def first_posters(manifest: records.Manifest, image_size: Sequence[int],
                  count: int = GRID_POSTERS) -> tuple:
  """(images uint8 [N,H,W,3], labels [N,25], ids [N]): the first val posters.

  The val pass is ordered, so every epoch shows the same posters.
  """
  dataset = input_pipeline.make_dataset(manifest, 'val', count, image_size,
                                        with_ids=True)
  for images_, labels, ids in dataset.take(1):
    return (images_.numpy(), labels.numpy(),
            [i.decode('utf-8', 'replace') for i in ids.numpy()])
  return np.zeros((0, *image_size, 3), np.uint8), np.zeros((0, 25)), []


def grid_table(labels: np.ndarray, probabilities: np.ndarray,
               ids: Sequence[str]) -> str:
  """The grid as a Markdown table (✓ marks a predicted genre that is true)."""
  rows = ['| poster | true genres | top 3 |', '|---|---|---|']
  for label, prob, poster_id in zip(labels, probabilities, ids):
    top = ', '.join(f'{genres.GENRES[i]} {p:.2f}' +
                    (' ✓' if label[i] > 0.5 else '')
                    for i, p in genres.top_k(prob))
    rows.append(f'| {poster_id} | {", ".join(genres.names_of(label))} | '
                f'{top} |')
  return '\n'.join(rows)


class ValidationDashboards(keras.callbacks.Callback):
  """Per-genre ROC-AUC and support, PR curves and the poster grid, per epoch.

  Reads the compiled ROC-AUC metric at the end of the epoch, when it holds
  the validation pass (Keras resets metrics when an epoch or a pass begins),
  and runs the model on GRID_POSTERS val posters for the grid.
  """

  def __init__(self, validation_dir: str, manifest: records.Manifest,
               image_size: Sequence[int], every_epochs: int = 1):
    super().__init__()
    self.validation_dir, self.manifest = validation_dir, manifest
    self.image_size, self.every_epochs = tuple(image_size), every_epochs
    self._writer = self._posters = None

  def on_train_begin(self, logs=None):
    self._writer = tf.summary.create_file_writer(self.validation_dir)
    self._posters = first_posters(self.manifest, self.image_size)

  def on_train_end(self, logs=None):
    if self._writer is not None:
      self._writer.close()
      self._writer = None

  def on_epoch_end(self, epoch, logs=None):
    if (epoch + 1) % self.every_epochs:
      return
    with self._writer.as_default():
      self._write_genres(epoch)
      self._write_grid(epoch)
    self._writer.flush()

  def _write_genres(self, step: int) -> None:
    metric = find_genre_auc(self.model)
    if metric is None:
      logging.warning('no multi-label ROC AUC metric compiled: no per-genre '
                      'dashboards')
      return
    counts = confusion(metric)
    auc, support = genre_results(counts)
    for index, name in enumerate(genres.GENRES):
      tf.summary.scalar(f'genre_support/{name}', support[index], step=step)
      if not math.isnan(auc[index]):
        tf.summary.scalar(f'genre_roc_auc/{name}', auc[index], step=step)
      tf.summary.experimental.write_raw_pb(
          pr_curve_summary(f'pr_curves/{name}', counts,
                           index).SerializeToString(), step=step)
    tf.summary.text('genre_table', genre_table(auc, support), step=step)

  def _write_grid(self, step: int) -> None:
    images_, labels, ids = self._posters
    if not len(images_):
      return
    probabilities = ops.convert_to_numpy(ops.cast(
        self.model(images_, training=False), 'float32'))
    grid = render.poster_grid(images_, labels, probabilities, ids)
    tf.summary.image('val_posters', grid[None], step=step)
    tf.summary.text('val_posters_table',
                    grid_table(labels, probabilities, ids), step=step)


# --- The Graphs tab. ---


def model_graph(model: keras.Model, image_size: Sequence[int]) -> tf.Graph:
  """The ops of the model's forward pass on a uint8 batch (inference mode).

  Traced, never run (~1 s and 0.6 MB for efficientnetv2b0). Inference mode
  assigns no variable (Dropout seeds, BatchNorm statistics), so it traces
  the same under any strategy; Dropout is left out of it.
  """
  spec = tf.TensorSpec([None, *image_size, 3], tf.uint8, name='images')
  forward = tf.function(lambda images: model(images, training=False))
  return forward.get_concrete_function(spec).graph


class ModelGraph(keras.callbacks.Callback):
  """Writes the model's op graph to train/ for the Graphs tab.

  In place of Keras' write_graph: in Keras 3 that writes the model's config
  (a "conceptual graph", whose mixed-precision dtype policies the plugin
  drops with "Unsupported dtype value") and no op graph. The tab opens a run
  on "Op graph", so it showed "Malformed GraphDef", under any precision.
  """

  def __init__(self, train_dir: str, image_size: Sequence[int]):
    super().__init__()
    self.train_dir, self.image_size = train_dir, tuple(image_size)

  def on_train_begin(self, logs=None):
    try:
      graph = model_graph(self.model, self.image_size)
    except Exception as e:  # pylint: disable=broad-except
      # A picture of the model: never a reason to stop training.
      logging.warning('no op graph for the Graphs tab: %s', e)
      return
    writer = tf.summary.create_file_writer(self.train_dir)
    with writer.as_default():
      tf.summary.graph(graph)
    writer.close()


# --- HParams. ---


def hparams_values(config: Mapping, resolved: Mapping) -> dict:
  """The run's settings as HParams values (bool, int, float or str).

  model_size is the size the network is built at (image_size when unset), so
  every run has the column, whichever run's experiment TensorBoard reads.

  Args:
    config: the trainer's Config fields, by name; those in _NOT_HPARAMS and
      those left unset (None) are left out.
    resolved: the resolved settings to show, by name (the trainer's
      Resolved.hparams()); a resolved value replaces the config's.
  """
  settings = {**config, **resolved}
  if settings.get('model_size') is None:
    settings['model_size'] = settings.get('image_size')
  values = {}
  for name, value in settings.items():
    if name in _NOT_HPARAMS or value is None:
      continue
    if isinstance(value, (tuple, list)):
      value = 'x'.join(str(v) for v in value)
    if not isinstance(value, (bool, int, float, str)):
      value = str(value)
    values[name] = value
  return values


def experiment_metrics(metric_names: Sequence[str]) -> list:
  """The HParams metric columns: final whole-val metrics, then progress."""
  names = ['loss', *metric_names]
  metrics = [hp.Metric(f'final_{name}', group='validation',
                       display_name=f'final {name}')
             for name in [*names, 'f1_macro_tuned']]
  metrics += [hp.Metric(f'epoch_{name}', group='validation',
                        display_name=f'val {name} (last epoch)')
              for name in ('loss', 'roc_auc')]
  metrics += [hp.Metric(f'epoch_{name}', group='train',
                        display_name=f'train {name}')
              for name in ('loss', 'images_per_sec', 'input_wait_share')]
  return metrics


def experiment_summary(names: Sequence[str], metric_names: Sequence[str]):
  """The HParams experiment as a Summary proto, KEY_HPARAMS marked `differs`.

  The dashboard lists hparams that differ first (the rest by name) and
  checks the first five; hp.HParam cannot set `differs`, the proto can.
  """
  summary = hp.hparams_config_pb(hparams=[hp.HParam(name) for name in names],
                                 metrics=experiment_metrics(metric_names))
  plugin_data = summary.value[0].metadata.plugin_data
  content = plugin_data_pb2.HParamsPluginData.FromString(plugin_data.content)
  for info in content.experiment.hparam_infos:
    info.differs = info.name in KEY_HPARAMS
  plugin_data.content = content.SerializeToString()
  return summary


class HParams(keras.callbacks.Callback):
  """Writes the experiment and the run's session at the start of training.

  Every run writes the same experiment (the same hparam names and metric
  columns), so the HParams dashboard compares any runs under one --logdir.
  """

  def __init__(self, run_dir: str, values: Mapping, metric_names: Sequence[str],
               trial_id: str):
    super().__init__()
    self.run_dir, self.values = run_dir, dict(values)
    self.metric_names, self.trial_id = list(metric_names), trial_id

  def on_train_begin(self, logs=None):
    writer = tf.summary.create_file_writer(self.run_dir)
    with writer.as_default():
      tf.summary.experimental.write_raw_pb(
          experiment_summary(list(self.values), self.metric_names)
          .SerializeToString(), step=0)
      hp.hparams(self.values, trial_id=self.trial_id)
    writer.close()


def write_final_metrics(run_dir: str, metrics: Mapping[str, float],
                        step: int) -> None:
  """final_<name> scalars in validation/: the whole val split, after training.

  Args:
    run_dir: the run folder.
    metrics: name → value (the trainer's final validation metrics).
    step: the last epoch's index, as Keras numbers epoch scalars.
  """
  writer = tf.summary.create_file_writer(os.path.join(run_dir, 'validation'))
  with writer.as_default():
    for name, value in metrics.items():
      tf.summary.scalar(f'final_{name}', value, step=step)
  writer.close()


# --- The callbacks, together. ---


def parse_profile_steps(text: Optional[str]) -> Optional[Tuple[int, int]]:
  """'a,b' (first and last step profiled, from 1) → (a, b); '' → None."""
  if text is None or not str(text).strip():
    return None
  parts = str(text).replace(' ', '').split(',')
  try:
    steps = tuple(int(p) for p in parts)
  except ValueError:
    steps = ()
  if len(steps) == 1:
    steps = steps * 2
  if len(steps) != 2 or steps[0] < 1 or steps[1] < steps[0]:
    raise cli.UserError(f'--profile_steps={text}: expected a,b with '
                        '1 <= a <= b (the first and last step to profile), '
                        'e.g. 10,20')
  return steps


def make_callbacks(run_dir: str, clock: InputClock, *,
                   manifest: records.Manifest, image_size: Sequence[int],
                   batch_size: int, hparams: Mapping,
                   metric_names: Sequence[str],
                   log_every_steps: int = 20, dashboard_every_epochs: int = 1,
                   profile_steps: Optional[Tuple[int, int]] = None) -> list:
  """The TensorBoard callbacks of a run, in the order they must run.

  Args:
    run_dir: the run folder (TensorBoard run, with train/ and validation/).
    clock: the InputClock whose wrap() timed the training dataset.
    manifest: the records folder, opened (the grid's val posters).
    image_size: the pipeline's (height, width).
    batch_size: the global batch size (images per step).
    hparams: the settings shown in the HParams dashboard (hparams_values).
    metric_names: the compiled metrics' names, besides the loss.
    log_every_steps: train scalars every this many steps; 0: per epoch only.
    dashboard_every_epochs: per-genre results and the grid every this many
      epochs; 0: never.
    profile_steps: (first, last) step traced for the Profile dashboard.

  Returns:
    [StepScalars, keras TensorBoard, ModelGraph, ValidationDashboards
    (unless off), HParams]: StepScalars first, so the others see
    input_wait_share.
  """
  callbacks = [
      StepScalars(os.path.join(run_dir, 'train'), clock, batch_size,
                  log_every_steps),
      # write_graph off: ModelGraph writes a graph the Graphs tab can draw.
      keras.callbacks.TensorBoard(log_dir=run_dir, write_graph=False,
                                  profile_batch=profile_steps or 0),
      ModelGraph(os.path.join(run_dir, 'train'), image_size),
  ]
  if dashboard_every_epochs:
    callbacks.append(ValidationDashboards(os.path.join(run_dir, 'validation'),
                                          manifest, image_size,
                                          dashboard_every_epochs))
  callbacks.append(HParams(run_dir, hparams, metric_names,
                           trial_id=os.path.basename(os.path.normpath(
                               run_dir))))
  return callbacks
