"""Per-genre results and the val poster grid: the run's validation/ dashboards.

Per epoch (every --dashboard_every_epochs): genre_roc_auc/<g> and
genre_support/<g> scalars, the genre_table text, a PR curve per genre
(pr_curves/<g>), the val_posters image grid (true genres and top-3
predictions) and its val_posters_table text.

The per-genre numbers cost no extra pass: they are scored (posternet.metrics,
exactly, as the epoch's val_roc_auc is) on the predictions that the epoch's
ValidationScores made of the whole val split. Only the poster grid runs the
model, on 8 posters.
"""

import math
from typing import Callable, Sequence, Tuple

import keras
from keras import ops
import numpy as np
import tensorflow as tf
from tensorboard.plugins.pr_curve import summary as pr_summary

from posternet import genres
from posternet import metrics
from posternet.data import pipeline
from posternet.data import records
from posternet.observe import render
GRID_POSTERS = 8      # validation posters in the val_posters grid


# --- Per-genre results from the validation pass. ---


def genre_results(labels: np.ndarray,
                  probabilities: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
  """(ROC-AUC, support) per genre; NaN for a genre without both classes.

  The mean over the defined genres is the epoch's val_roc_auc.
  """
  return (metrics.roc_auc_per_genre(labels, probabilities),
          np.asarray(labels > 0.5).sum(axis=0))


def pr_curve_summary(tag: str, labels: np.ndarray, probabilities: np.ndarray,
                     genre: int):
  """The PR-curve plugin's Summary proto for one genre (its 201 thresholds)."""
  summary = pr_summary.pb(tag, labels=np.asarray(labels[:, genre]) > 0.5,
                          predictions=np.asarray(probabilities[:, genre],
                                                 np.float32))
  summary.value[0].tag = tag  # pb appends '/pr_curves'
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
  dataset = pipeline.make_dataset(manifest, 'val', count, image_size)
  for batch in dataset.take(1):
    return (batch[pipeline.IMAGE].numpy(), batch[pipeline.LABELS].numpy(),
            [i.decode('utf-8', 'replace')
             for i in batch[pipeline.ID].numpy()])
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

  Scores the epoch's val predictions (val_predictions(): labels and
  probabilities of the whole split, from ValidationScores, which runs
  first) and runs the model on GRID_POSTERS val posters for the grid.
  """

  def __init__(self, validation_dir: str, manifest: records.Manifest,
               image_size: Sequence[int], val_predictions: Callable,
               every_epochs: int):
    super().__init__()
    self.val_predictions = val_predictions
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
    labels, probabilities = self.val_predictions()
    auc, support = genre_results(labels, probabilities)
    for index, name in enumerate(genres.GENRES):
      tf.summary.scalar(f'genre_support/{name}', support[index], step=step)
      if not math.isnan(auc[index]):
        tf.summary.scalar(f'genre_roc_auc/{name}', auc[index], step=step)
      tf.summary.experimental.write_raw_pb(
          pr_curve_summary(f'pr_curves/{name}', labels, probabilities,
                           index).SerializeToString(), step=step)
    tf.summary.text('genre_table', genre_table(auc, support), step=step)

  def _write_grid(self, step: int) -> None:
    images_, labels, ids = self._posters
    if not len(images_):
      return
    inputs = pipeline.model_inputs({pipeline.IMAGE: tf.constant(images_)})
    probabilities = ops.convert_to_numpy(ops.cast(
        self.model(inputs, training=False), 'float32'))
    grid = render.poster_grid(images_, labels, probabilities, ids)
    tf.summary.image('val_posters', grid[None], step=step)
    tf.summary.text('val_posters_table',
                    grid_table(labels, probabilities, ids), step=step)

