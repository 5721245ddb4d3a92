"""Tests of posternet/metrics.py: exact values on small hand-made arrays."""

import zipfile

import keras
import numpy as np
import pytest
import tensorflow as tf

from posternet import genres
from posternet import metrics
from posternet.model import networks
def _rank_auc(positive, scores):
  """ROC-AUC by pairwise ranking (ties count half), for one genre."""
  pos, neg = scores[positive], scores[~positive]
  wins = (pos[:, None] > neg[None, :]).sum() + 0.5 * (
      pos[:, None] == neg[None, :]).sum()
  return wins / (len(pos) * len(neg))


def test_genre_auc_skips_genres_without_positives():
  rng = np.random.RandomState(0)
  labels = (rng.rand(200, genres.NUM_GENRES) < 0.3).astype(np.float32)
  labels[:, 5] = 0  # no poster of genre 5
  scores = np.clip(labels * 0.3 + rng.rand(*labels.shape) * 0.7, 0, 1)
  metric = metrics.GenreAUC(curve='ROC')
  metric.update_state(labels, scores)
  expected = np.mean([_rank_auc(labels[:, g] > 0, scores[:, g])
                      for g in range(genres.NUM_GENRES) if g != 5])
  assert float(metric.result()) == pytest.approx(expected, abs=0.01)
  # Keras' own AUC counts genre 5 as 0 and is pulled down by 1/25.
  keras_auc = tf.keras.metrics.AUC(multi_label=True,
                                   num_labels=genres.NUM_GENRES)
  keras_auc.update_state(labels, scores)
  assert float(keras_auc.result()) < expected - 0.02


def test_precision_at_3_counts_true_genres_among_top3():
  labels = np.zeros((2, genres.NUM_GENRES), np.float32)
  scores = np.zeros((2, genres.NUM_GENRES), np.float32)
  scores[0, [0, 1, 2]] = [0.9, 0.8, 0.7]
  labels[0, [0, 2, 9]] = 1  # 2 of its top 3 are true
  scores[1, [3, 4, 5]] = [0.9, 0.8, 0.7]
  labels[1, 24] = 1  # none of its top 3
  metric = metrics.PrecisionAtK(k=3)
  metric.update_state(labels, scores)
  assert float(metric.result()) == pytest.approx(2 / 6)


def test_f1_metrics_use_threshold_half():
  f1 = {m.name: m for m in metrics.make_metrics() if 'f1' in m.name}
  assert set(f1) == {'f1_micro', 'f1_macro'}
  assert all(m.threshold == 0.5 for m in f1.values())
  labels = np.zeros((1, genres.NUM_GENRES), np.float32)
  labels[0, [0, 1]] = 1
  scores = np.full((1, genres.NUM_GENRES), 0.1, np.float32)
  scores[0, [0, 1]] = 0.6  # both above 0.5: argmax would predict only one
  f1['f1_micro'].update_state(labels, scores)
  assert float(f1['f1_micro'].result()) == pytest.approx(1.0, abs=1e-4)


def test_evaluate_arrays_scores_the_loss_and_every_metric():
  labels = np.zeros((2, genres.NUM_GENRES), np.float32)
  labels[0, 0] = labels[1, 1] = 1
  probabilities = np.full_like(labels, 0.25)
  probabilities[0, 0] = probabilities[1, 1] = 0.75
  results = metrics.evaluate_arrays(labels, probabilities)
  assert set(results) == {'loss', *(m.name for m in metrics.make_metrics())}
  assert results['loss'] == pytest.approx(-np.log(0.75), rel=1e-5)
  assert results['roc_auc'] == pytest.approx(1.0)
  assert results['precision_at_3'] == pytest.approx(1 / 3)


def _with_module(path: str, old: str, new: str, target: str) -> None:
  """A copy of a .keras file whose config names module `new` for `old`."""
  with zipfile.ZipFile(path) as source, zipfile.ZipFile(target, 'w') as copy:
    for item in source.infolist():
      data = source.read(item)
      if item.filename == 'config.json':
        assert f'"module": "{old}"'.encode() in data
        data = data.replace(f'"module": "{old}"'.encode(),
                            f'"module": "{new}"'.encode())
      copy.writestr(item, data)


def test_checkpoints_load_by_registered_name(tmp_path):
  # A .keras checkpoint names the metrics 'posternet>GenreAUC' and by
  # module; checkpoints from before this module named posternet.train.
  assert keras.saving.get_registered_name(metrics.GenreAUC) == (
      'posternet>GenreAUC')
  assert keras.saving.get_registered_name(metrics.PrecisionAtK) == (
      'posternet>PrecisionAtK')
  model = networks.compiled_model('small_cnn', (24, 24))
  posters = np.zeros((2, 24, 24, 3), np.uint8)
  labels = np.zeros((2, genres.NUM_GENRES), np.float32)
  model.fit(posters, labels, verbose=0)  # builds the metrics and optimizer
  model.save(str(tmp_path / 'now.keras'))
  _with_module(str(tmp_path / 'now.keras'), 'posternet.metrics',
               'posternet.train', str(tmp_path / 'before.keras'))
  for name in ('now.keras', 'before.keras'):
    loaded = keras.saving.load_model(str(tmp_path / name))
    results = loaded.evaluate(posters, labels, verbose=0, return_dict=True)
    assert {'roc_auc', 'pr_auc', 'precision_at_3'} <= set(results), name
