"""Tests of posternet/metrics.py: exact values on small hand-made arrays.

(The average precision and ROC-AUC examples that evaluate's report relies
on are in test_evaluate.py.)
"""

import numpy as np
import pytest

from posternet import genres
from posternet import metrics


def _rank_auc(positive, scores):
  """ROC-AUC by pairwise ranking (ties count half), for one genre."""
  pos, neg = scores[positive], scores[~positive]
  wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (
      pos[:, None] == neg[None, :]).sum()
  return wins / (len(pos) * len(neg))


def test_macro_roc_auc_skips_genres_without_positives():
  rng = np.random.RandomState(0)
  labels = (rng.rand(200, genres.NUM_GENRES) < 0.3).astype(np.float32)
  labels[:, 5] = 0  # no poster of genre 5
  scores = np.round(np.clip(labels * 0.3 + rng.rand(*labels.shape) * 0.7,
                            0, 1), 2)  # rounded: ties
  per_genre = metrics.roc_auc_per_genre(labels, scores)
  assert np.isnan(per_genre[5])
  expected = [_rank_auc(labels[:, g] > 0, scores[:, g])
              for g in range(genres.NUM_GENRES) if g != 5]
  np.testing.assert_allclose(np.delete(per_genre, 5), expected, atol=1e-12)
  assert metrics.score_arrays(labels, scores)['roc_auc'] == pytest.approx(
      np.mean(expected), abs=1e-12)


def test_precision_at_3_counts_true_genres_among_top3():
  labels = np.zeros((2, genres.NUM_GENRES), np.float32)
  scores = np.zeros((2, genres.NUM_GENRES), np.float32)
  scores[0, [0, 1, 2]] = [0.9, 0.8, 0.7]
  labels[0, [0, 2, 9]] = 1  # 2 of its top 3 are true
  scores[1, [3, 4, 5]] = [0.9, 0.8, 0.7]
  labels[1, 24] = 1  # none of its top 3
  assert metrics.precision_at_k_array(labels, scores, 3) == pytest.approx(
      2 / 6)


def test_f1_predicts_every_genre_above_the_threshold():
  labels = np.zeros((2, genres.NUM_GENRES), np.float32)
  labels[0, [0, 1]] = 1
  labels[1, 2] = 1
  scores = np.full((2, genres.NUM_GENRES), 0.1, np.float32)
  scores[0, [0, 1]] = 0.6  # both above 0.5: argmax would predict only one
  scores[1, 3] = 0.7       # a false positive; genre 2 missed
  micro, macro = metrics.f1_array(labels, scores)
  assert micro == pytest.approx(2 * 2 / (3 + 3))
  per_genre = metrics.f1_per_genre(labels, scores)
  assert per_genre[[0, 1, 2, 3]].tolist() == [1.0, 1.0, 0.0, 0.0]
  assert macro == pytest.approx(per_genre.mean())
  # Per-genre thresholds: genre 3 at 0.8 is no longer predicted.
  thresholds = np.full(genres.NUM_GENRES, 0.5)
  thresholds[3] = 0.8
  tuned = metrics.f1_per_genre(labels, scores, thresholds)
  assert tuned[[0, 1, 2, 3]].tolist() == [1.0, 1.0, 0.0, 0.0]
  assert tuned.sum() == per_genre.sum()  # genre 3: never true, 0 either way


def test_summary_scores_name_the_loss_and_accuracy():
  labels = np.zeros((2, genres.NUM_GENRES), np.float32)
  labels[0, 0] = labels[1, 1] = 1
  probabilities = np.full_like(labels, 0.25)
  probabilities[0, 0] = probabilities[1, 1] = 0.75
  results = metrics.summary_scores(labels, probabilities)
  assert tuple(results) == metrics.SUMMARY_SCORES
  assert results['loss'] == pytest.approx(-np.log(0.75), rel=1e-9)
  assert results['roc_auc'] == pytest.approx(1.0)
  assert results['precision_at_3'] == pytest.approx(1 / 3)
  assert results['accuracy'] == pytest.approx(1.0)
