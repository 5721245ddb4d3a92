"""Every score, one implementation each, exact, in NumPy on whole arrays.

ROC-AUC, average precision, precision@k, binary cross-entropy, F1 and
binary accuracy, per genre and macro, as scikit-learn defines them (without
depending on it). Every number posternet reports comes from here: the
validation scores of each epoch (posternet.train.val_scores, which feeds
history.csv, the console line, the best-epoch choice and the dashboards),
the trainer's final summary, `posternet.evaluate`, the export's thresholds
and the benchmark. The same predictions therefore give the same numbers
everywhere: summary.json's val scores are what evaluate reports for the
export on the same records.
"""

import numpy as np


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

  Ties go to the genre listed first.
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


def f1_per_genre(labels: np.ndarray, probabilities: np.ndarray,
                 thresholds=0.5) -> np.ndarray:
  """Each genre's F1 when it is predicted above its threshold.

  Args:
    labels: [N, G] multi-hot labels (0/1).
    probabilities: [N, G] predicted probabilities.
    thresholds: a number or [G] thresholds.

  Returns:
    float64 [G]; 0 for a genre that is neither true nor predicted anywhere.
  """
  truth, predicted = _decisions(labels, probabilities, thresholds)
  true_pos = np.sum(truth & predicted, axis=0)
  total = truth.sum(axis=0) + predicted.sum(axis=0)
  return np.where(total > 0, 2 * true_pos / np.maximum(total, 1), 0.0)


def f1_array(labels: np.ndarray, probabilities: np.ndarray,
             threshold: float = 0.5) -> tuple:
  """(micro, macro) F1 when a genre is predicted above the threshold.

  Macro averages all genres, a genre that is neither true nor predicted
  anywhere counting 0 (as Keras' F1Score does).
  """
  truth, predicted = _decisions(labels, probabilities, threshold)
  total = truth.sum() + predicted.sum()
  micro = 2 * np.sum(truth & predicted) / max(total, 1)
  return float(micro), float(
      f1_per_genre(labels, probabilities, threshold).mean())


def _decisions(labels: np.ndarray, probabilities: np.ndarray,
               thresholds) -> tuple:
  """(true, predicted) boolean [N, G]: predicted above the threshold(s)."""
  return (np.asarray(labels) > 0.5,
          np.asarray(probabilities, np.float64) > np.asarray(thresholds))


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
  truth, predicted = _decisions(labels, probabilities, threshold)
  return float(np.mean(predicted == truth))


def summary_scores(labels: np.ndarray, probabilities: np.ndarray) -> dict:
  """The trainer's validation scores: score_arrays's, plus accuracy.

  Per epoch and at the end of training, so the end of training and
  `posternet.evaluate` on the export and split give the same numbers. The
  binary cross-entropy is under 'loss' (Keras' name in history.csv and the
  dashboards) instead of 'bce'.

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
