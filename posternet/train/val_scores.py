"""The validation scores of each epoch: one pass, scored by posternet.metrics.

Keras' streaming metrics would score validation a second way (ROC-AUC and
PR-AUC binned at 200 thresholds, their own F1 and precision@k), and the
numbers would differ from the final summary's and from `posternet.evaluate`.
Instead, at the end of each epoch, ValidationScores predicts the whole val
split once and puts posternet.metrics' exact scores into the epoch's logs
(val_loss, val_roc_auc, val_average_precision, val_precision_at_3, ...),
where every later callback finds them: history.csv, the console line,
BestEpoch, TensorBoard's validation/ scalars and the per-genre dashboards
(which read the same predictions, `latest`). It must therefore come first
among the callbacks. The pass replaces model.fit's own validation pass, so
validation costs what it cost before.
"""

from typing import Callable, Optional, Tuple

import keras
import numpy as np
import tensorflow as tf

from posternet import metrics
from posternet.data import pipeline

# The logged names: val_loss (the compiled loss, comparable with the train
# loss), then val_<name> for each of metrics.SUMMARY_SCORES but 'loss'.
SCORE_NAMES = ('loss',) + tuple(
    name for name in metrics.SUMMARY_SCORES if name != 'loss')


def predict(model: keras.Model, dataset: tf.data.Dataset,
            progress: Optional[Callable[[int], None]] = None
            ) -> Tuple[np.ndarray, np.ndarray]:
  """(labels, float32 probabilities) of one pass of the pipeline's batches.

  progress, if given, is called with each batch's number of posters.
  """
  forward = tf.function(lambda inputs: model(inputs, training=False))
  # A model exported before the input stage takes the posters alone.
  inputs_of = (pipeline.model_inputs if isinstance(model.input, dict)
               else lambda batch: batch[pipeline.IMAGE])
  labels, probabilities = [], []
  for batch in dataset:
    probabilities.append(
        tf.cast(forward(inputs_of(batch)), tf.float32).numpy())
    labels.append(batch[pipeline.LABELS].numpy())
    if progress:
      progress(len(labels[-1]))
  return np.concatenate(labels), np.concatenate(probabilities)


class ValidationScores(keras.callbacks.Callback):
  """Scores the val split at the end of every epoch, into the epoch's logs.

  Args:
    make_dataset: () → one ordered pass of the val split (the pipeline's).
    loss: the compiled loss (for val_loss); default binary cross-entropy.
  """

  def __init__(self, make_dataset: Callable[[], tf.data.Dataset],
               loss: Optional[keras.losses.Loss] = None):
    super().__init__()
    self.make_dataset = make_dataset
    self.loss = loss or keras.losses.BinaryCrossentropy()
    # (labels, probabilities) of the last pass: the per-genre dashboards'.
    self.latest: Optional[Tuple[np.ndarray, np.ndarray]] = None

  def on_epoch_end(self, epoch, logs=None):
    labels, probabilities = predict(self.model, self.make_dataset())
    self.latest = labels, probabilities
    if logs is None:
      return
    scores = metrics.summary_scores(labels, probabilities)
    scores['loss'] = float(self.loss(labels, probabilities))
    logs.update({f'val_{name}': scores[name] for name in SCORE_NAMES})
