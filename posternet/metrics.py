"""The metrics a run logs for train and val, besides the loss.

GenreAUC and PrecisionAtK are registered with Keras under the package
'posternet' (registered names 'posternet>GenreAUC', 'posternet>PrecisionAtK'):
a compiled .keras checkpoint names them so, and loads wherever this module
was imported (posternet.models imports it).
"""

import keras
from keras import ops
import numpy as np
import tensorflow as tf

from posternet import genres


@keras.saving.register_keras_serializable(package='posternet')
class GenreAUC(keras.metrics.AUC):
  """Multi-label AUC averaged over the genres it can be defined for.

  keras.metrics.AUC(multi_label=True) counts a genre with no positive (or no
  negative) poster as AUC 0, and genres are rare: a validation split without
  a single News poster would pull the mean down for no fault of the model.
  Such genres are left out of the mean, as in scikit-learn, which refuses to
  score them.
  """

  def __init__(self, curve='ROC', name=None, **kwargs):
    kwargs.setdefault('multi_label', True)
    kwargs.setdefault('num_labels', genres.NUM_GENRES)
    super().__init__(curve=curve, name=name, **kwargs)

  def result(self):
    # Every count at the lowest threshold: all of a genre's posters.
    positives = self.true_positives[0] + self.false_negatives[0]
    negatives = self.false_positives[0] + self.true_negatives[0]
    defined = ops.cast(ops.logical_and(positives > 0, negatives > 0), 'float32')
    saved, self.label_weights = self.label_weights, defined
    try:
      return super().result()
    finally:
      self.label_weights = saved


@keras.saving.register_keras_serializable(package='posternet')
class PrecisionAtK(keras.metrics.Metric):
  """The share of the k most probable genres that are true genres.

  The tutorial shows a poster's top 3 genres, so this is the number a user of
  its output sees: of the 3 genres printed, how many are right.
  """

  def __init__(self, k=3, name=None, **kwargs):
    super().__init__(name=name or f'precision_at_{k}', **kwargs)
    self.k = k
    self.hits = self.add_variable(shape=(), initializer='zeros', name='hits')
    self.count = self.add_variable(shape=(), initializer='zeros', name='count')

  def update_state(self, y_true, y_pred, sample_weight=None):
    del sample_weight  # every poster counts the same
    top = ops.top_k(y_pred, self.k, sorted=False)[1]
    hits = ops.take_along_axis(ops.cast(y_true, self.dtype), top, axis=-1)
    self.hits.assign_add(ops.sum(hits))
    self.count.assign_add(ops.cast(ops.size(hits), self.dtype))

  def result(self):
    return ops.divide_no_nan(self.hits, self.count)

  def reset_state(self):
    self.hits.assign(0.0)
    self.count.assign(0.0)

  def get_config(self):
    return {**super().get_config(), 'k': self.k}


def make_metrics() -> list:
  """The metrics logged for train and val, besides the loss."""
  return [
      # The tutorial's metrics=['accuracy'], which under binary cross-entropy
      # is binary accuracy over all 25 outputs.
      keras.metrics.BinaryAccuracy(name='accuracy', threshold=0.5),
      GenreAUC(curve='ROC', name='roc_auc'),
      GenreAUC(curve='PR', name='pr_auc'),
      # threshold explicit: F1Score(threshold=None) takes the argmax, which
      # is wrong for multi-label.
      keras.metrics.F1Score(average='micro', threshold=0.5, name='f1_micro'),
      keras.metrics.F1Score(average='macro', threshold=0.5, name='f1_macro'),
      PrecisionAtK(k=3, name='precision_at_3'),
  ]


def evaluate_arrays(labels: np.ndarray, probabilities: np.ndarray) -> dict:
  """The loss and every metric of make_metrics, on whole arrays."""
  labels = tf.constant(labels, tf.float32)
  probabilities = tf.constant(probabilities, tf.float32)
  results = {'loss': float(keras.losses.binary_crossentropy(
      labels, probabilities).numpy().mean())}
  for metric in make_metrics():
    metric.update_state(labels, probabilities)
    results[metric.name] = float(metric.result())
  return results
