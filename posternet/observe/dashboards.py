"""TensorBoard dashboards for a training run: the trainer's callbacks, together.

What a run writes under --logdir/<run>/, besides Keras' own epoch scalars
(epoch_loss, epoch_<metric> in train/ and validation/, epoch_learning_rate,
epoch_images_per_sec):

  train/       every --log_every_steps steps: batch_loss and batch_<metric>,
               batch_learning_rate, batch_images_per_sec and
               batch_input_wait_share; per epoch epoch_input_wait_share
               (step_scalars.py); the profiler's trace with --profile_steps;
               the model's op graph (Graphs tab, here), traced once at the
               start.
  validation/  per epoch (every --dashboard_every_epochs): per-genre ROC-AUC,
               support and PR curves, and the val_posters grid with its
               table (genre_dashboards.py); after training final_<metric>
               for the whole val split (hparams_dashboard.py).
  (the run)    HParams: the experiment and the run's session with its
               settings (hparams_dashboard.py).
"""

import os
from typing import Callable, Mapping, Optional, Sequence, Tuple

from absl import logging
import keras
import tensorflow as tf

from posternet import cli
from posternet.observe import genre_dashboards
from posternet.observe import hparams_dashboard
from posternet.data import pipeline
from posternet.data import records
from posternet.observe import step_scalars
# --- The Graphs tab. ---


def model_graph(model: keras.Model, image_size: Sequence[int]) -> tf.Graph:
  """The ops of the model's forward pass on a batch (inference mode).

  Traced, never run (~1 s and 0.6 MB for efficientnetv2b0). Inference mode
  assigns no variable (Dropout seeds, BatchNorm statistics), so it traces
  the same under any strategy; Dropout is left out of it.
  """
  spec = {pipeline.IMAGE: tf.TensorSpec([None, *image_size, 3], tf.uint8),
          pipeline.BOX: tf.TensorSpec([None, 4], tf.float32),
          pipeline.COLOR: tf.TensorSpec([None, 3], tf.float32)}
  forward = tf.function(lambda inputs: model(inputs, training=False))
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


# --- The callbacks, together. ---


def parse_profile_steps(text: Optional[str],
                        flag: str = 'profile_steps'
                        ) -> Optional[Tuple[int, int]]:
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
    raise cli.UserError(f'--{flag}={text}: expected a,b with '
                        '1 <= a <= b (the first and last step to profile), '
                        'e.g. 10,20')
  return steps


def make_callbacks(run_dir: str, clock: step_scalars.InputClock, *,
                   manifest: records.Manifest, image_size: Sequence[int],
                   batch_size: int, hparams: Mapping,
                   metric_names: Sequence[str],
                   val_predictions: Callable[[], tuple],
                   log_every_steps: int, dashboard_every_epochs: int,
                   profile_steps: Optional[Tuple[int, int]]) -> list:
  """The TensorBoard callbacks of a run, in the order they must run.

  Args:
    run_dir: the run folder (TensorBoard run, with train/ and validation/).
    clock: the InputClock whose wrap() timed the training dataset.
    manifest: the records folder, opened (the grid's val posters).
    image_size: the pipeline's (height, width).
    batch_size: the global batch size (images per step).
    hparams: the settings shown in the HParams dashboard
      (hparams_dashboard.hparams_values).
    metric_names: the final validation scores' names, besides the loss
      (the HParams columns final_<name>).
    val_predictions: () → (labels, probabilities) of the epoch's val pass
      (ValidationScores.latest), for the per-genre dashboards.
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
      step_scalars.StepScalars(os.path.join(run_dir, 'train'), clock,
                               batch_size, log_every_steps),
      # write_graph off: ModelGraph writes a graph the Graphs tab can draw.
      keras.callbacks.TensorBoard(log_dir=run_dir, write_graph=False,
                                  profile_batch=profile_steps or 0),
      ModelGraph(os.path.join(run_dir, 'train'), image_size),
  ]
  if dashboard_every_epochs:
    callbacks.append(genre_dashboards.ValidationDashboards(
        os.path.join(run_dir, 'validation'), manifest, image_size,
        val_predictions, dashboard_every_epochs))
  callbacks.append(hparams_dashboard.HParams(
      run_dir, hparams, metric_names,
      trial_id=os.path.basename(os.path.normpath(run_dir))))
  return callbacks
