"""Every score, one implementation each: Keras metrics per epoch, exact ones.

The Keras metrics (make_metrics) are what a run logs for train and val per
epoch, besides the loss; ROC-AUC and PR-AUC among them are binned. The exact
scores on whole arrays (score_arrays, summary_scores) are the final ones:
the end of training, posternet.evaluate.

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


# --- Exact scores on whole arrays, in NumPy (posternet.evaluate). ---
#
# The Keras metrics above approximate ROC-AUC and PR-AUC from 200 fixed
# thresholds, which is right for a training curve. A final evaluation wants
# the exact values, as scikit-learn defines them (without depending on it).


def roc_auc_per_genre(labels: np.ndarray, scores: np.ndarray) -> np.ndarray:
  """Each genre's exact ROC-AUC: the chance a positive outscores a negative.

  Ties count half (the Mann-Whitney U statistic from average ranks), as in
  scikit-learn's roc_auc_score.

  Args:
    labels: [N, G] multi-hot labels (0/1).
    scores: [N, G] predicted scores or probabilities.

  Returns:
    float64 [G]; NaN for a genre without both a positive and a negative.
  """
  positive = np.asarray(labels) > 0.5
  scores = np.asarray(scores, np.float64)
  result = np.full(positive.shape[1], np.nan)
  for g in range(positive.shape[1]):
    num_pos = int(positive[:, g].sum())
    num_neg = len(positive) - num_pos
    if num_pos and num_neg:
      rank_sum = _average_ranks(scores[:, g])[positive[:, g]].sum()
      result[g] = (rank_sum - num_pos * (num_pos + 1) / 2) / (num_pos * num_neg)
  return result


def _average_ranks(values: np.ndarray) -> np.ndarray:
  """1-based ranks, tied values sharing the mean of their ranks."""
  order = np.argsort(values, kind='mergesort')
  ordered = values[order]
  new_value = np.r_[True, ordered[1:] != ordered[:-1]]
  starts = np.flatnonzero(new_value)
  ends = np.r_[starts[1:], len(values)]
  ranks = np.empty(len(values))
  ranks[order] = ((starts + ends + 1) / 2)[np.cumsum(new_value) - 1]
  return ranks


def average_precision_per_genre(labels: np.ndarray,
                                scores: np.ndarray) -> np.ndarray:
  """Each genre's average precision, scikit-learn's definition.

  AP = sum over the distinct score thresholds, highest first, of
  (R_n - R_{n-1}) * P_n: the precision at each threshold, weighted by the
  recall it adds. Not interpolated; tied scores enter together.

  Args:
    labels: [N, G] multi-hot labels (0/1).
    scores: [N, G] predicted scores or probabilities.

  Returns:
    float64 [G]; NaN for a genre without a positive.
  """
  positive = np.asarray(labels) > 0.5
  scores = np.asarray(scores, np.float64)
  result = np.full(positive.shape[1], np.nan)
  for g in range(positive.shape[1]):
    if positive[:, g].any():
      result[g] = _average_precision(positive[:, g], scores[:, g])
  return result


def _average_precision(positive: np.ndarray, scores: np.ndarray) -> float:
  """One genre's AP (it has at least one positive)."""
  order = np.argsort(-scores, kind='mergesort')
  ordered, hits = scores[order], positive[order]
  # The last poster at each distinct score: one threshold per score.
  last = np.r_[ordered[1:] != ordered[:-1], True]
  true_pos = np.cumsum(hits)[last]
  predicted = np.flatnonzero(last) + 1
  precision = true_pos / predicted
  recall = true_pos / true_pos[-1]
  return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def precision_at_k_array(labels: np.ndarray, scores: np.ndarray,
                         k: int = 3) -> float:
  """The share of each poster's k highest-scored genres that are true.

  Ties go to the genre listed first, as in PrecisionAtK (ops.top_k).
  """
  top = np.argsort(-np.asarray(scores, np.float64), axis=1, kind='stable')
  hits = np.take_along_axis(np.asarray(labels) > 0.5, top[:, :k], axis=1)
  return float(hits.mean())


def binary_crossentropy_array(labels: np.ndarray,
                              probabilities: np.ndarray) -> float:
  """Mean binary cross-entropy over every poster and genre.

  Probabilities are clipped to [1e-7, 1 - 1e-7], as Keras' loss does, so a
  genre predicted with probability 0 costs ~16, not infinity.
  """
  p = np.clip(np.asarray(probabilities, np.float64), 1e-7, 1 - 1e-7)
  y = np.asarray(labels, np.float64)
  return float(np.mean(-(y * np.log(p) + (1 - y) * np.log(1 - p))))


def f1_array(labels: np.ndarray, probabilities: np.ndarray,
             threshold: float = 0.5) -> tuple:
  """(micro, macro) F1 when a genre is predicted above the threshold.

  As the trainer's F1Score metrics: macro averages all genres, a genre that
  is neither true nor predicted anywhere counting 0.
  """
  truth = np.asarray(labels) > 0.5
  predicted = np.asarray(probabilities, np.float64) > threshold
  true_pos = np.sum(truth & predicted, axis=0)
  total = truth.sum(axis=0) + predicted.sum(axis=0)
  per_genre = np.where(total > 0, 2 * true_pos / np.maximum(total, 1), 0.0)
  micro = 2 * true_pos.sum() / max(total.sum(), 1)
  return float(micro), float(per_genre.mean())


def score_arrays(labels: np.ndarray, probabilities: np.ndarray) -> dict:
  """Every evaluation metric, exactly, on whole arrays.

  Returns:
    {'roc_auc', 'average_precision', 'precision_at_3', 'bce', 'f1_micro',
    'f1_macro'}: the macro means over the genres where each is defined
    (ROC-AUC: a positive and a negative; AP: a positive), as floats (NaN when
    no genre qualifies).
  """
  auc = roc_auc_per_genre(labels, probabilities)
  ap = average_precision_per_genre(labels, probabilities)
  f1_micro, f1_macro = f1_array(labels, probabilities)
  return {
      'roc_auc': _nan_mean(auc),
      'average_precision': _nan_mean(ap),
      'precision_at_3': precision_at_k_array(labels, probabilities, 3),
      'bce': binary_crossentropy_array(labels, probabilities),
      'f1_micro': f1_micro,
      'f1_macro': f1_macro,
  }


def binary_accuracy_array(labels: np.ndarray, probabilities: np.ndarray,
                          threshold: float = 0.5) -> float:
  """The share of (poster, genre) pairs on the right side of the threshold.

  The tutorial's metrics=['accuracy'] (BinaryAccuracy: predicted when the
  probability is above the threshold).
  """
  predicted = np.asarray(probabilities, np.float64) > threshold
  return float(np.mean(predicted == (np.asarray(labels) > 0.5)))


def summary_scores(labels: np.ndarray, probabilities: np.ndarray) -> dict:
  """The trainer's final validation scores: score_arrays's, plus accuracy.

  Exact, so the end of training and `posternet.evaluate` on the export and
  split give the same numbers; the per-epoch Keras metrics above are binned.
  The binary cross-entropy is under 'loss' (Keras' name in history.csv and
  the dashboards) instead of 'bce'.

  Returns:
    The SUMMARY_SCORES, by name.
  """
  scores = score_arrays(labels, probabilities)
  scores['loss'] = scores.pop('bce')
  scores['accuracy'] = binary_accuracy_array(labels, probabilities)
  return {name: scores[name] for name in SUMMARY_SCORES}


# summary_scores's names: summary.json's 'val', the final_* scalars.
SUMMARY_SCORES = ('roc_auc', 'average_precision', 'precision_at_3', 'loss',
                  'f1_micro', 'f1_macro', 'accuracy')


def _nan_mean(values: np.ndarray) -> float:
  """The mean of the defined values; NaN when none is."""
  defined = values[~np.isnan(values)]
  return float(defined.mean()) if defined.size else float('nan')
