"""A run folder's checkpoints and resume state, safe against kill -9.

  checkpoints/  epoch-NNNN.keras: the whole model after each epoch
                (EpochCheckpoint; the last --keep_checkpoints kept)
  backup/       epoch-NNNN/: weights and optimizer state of the last finished
                epoch (Backup), while the run is unfinished: until its
                summary is written (finish_run), so a run that stops after
                its last epoch (killed, or its export failed) resumes there
                and only scores, exports and summarises
  best/         the weights of the epoch with the best validation score so
                far, and best.json saying which epoch and score (BestEpoch)
  history.csv   a row of metrics per epoch, counted from 1 (HistoryCSV)

Every write is atomic (a temporary name, then a rename), so a killed run
never leaves a torn file under a final name. prepare_run_dir decides at start
whether a folder's state is resumed from, kept (a finished run) or cleared.
"""

import json
import os
from typing import Optional

from absl import logging
import keras
import tensorflow as tf

from posternet import cli
from posternet import files


class Backup(keras.callbacks.BackupAndRestore):
  """BackupAndRestore whose backup survives kill -9 at any instant.

  Keras writes the weights file in place and the epoch to a second file
  after it, so a kill while writing leaves a torn file, and a kill between the
  two writes leaves weights and epoch that disagree. Here each backup is a
  folder backup/epoch-NNNN/ (weights, optimizer state included) written under
  a temporary name and renamed when complete: the epoch is in the name, so it
  cannot disagree with the weights, and a half-written backup is never read.
  The newest complete folder wins; older ones are removed after it exists.
  The backup outlives model.fit: finish_run removes it once the run's
  outputs are all written.
  """

  PREFIX = 'epoch-'
  WEIGHTS = 'state.weights.h5'

  def __init__(self, backup_dir: str, restore_dir: Optional[str] = None):
    super().__init__(backup_dir, save_freq='epoch', delete_checkpoint=False)
    self.resumed_from_epoch = 0
    # Multi-worker: every worker resumes from the chief's backup where it is
    # visible, so all resume from the same epoch (as Keras 2 did).
    self.restore_dir = restore_dir

  def _completed(self, folder: Optional[str] = None) -> list:
    """(epoch, folder) of the complete backups in folder, oldest first."""
    found = []
    for path in tf.io.gfile.glob(os.path.join(folder or self.backup_dir,
                                              self.PREFIX + '*')):
      suffix = os.path.basename(path)[len(self.PREFIX):]
      if suffix.isdigit():
        found.append((int(suffix), path))
    return sorted(found)

  def completed_epochs(self) -> int:
    """The epochs a run started now resumes after (0: it starts afresh)."""
    completed = ((self._completed(self.restore_dir) if self.restore_dir
                  else []) or self._completed())
    return completed[-1][0] if completed else 0

  def _load_model(self):
    completed = self._completed(self.restore_dir) if self.restore_dir else []
    completed = completed or self._completed()
    if not completed:
      return
    epoch, folder = completed[-1]
    if self.model.optimizer is not None and not self.model.optimizer.built:
      self.model.optimizer.build(self.model.trainable_variables)
    self.model.load_weights(os.path.join(folder, self.WEIGHTS))
    self.resumed_from_epoch = epoch
    self.model._initial_epoch = epoch  # pylint: disable=protected-access
    logging.info('resuming from %s: %d epochs already done', folder, epoch)

  def _save_model(self):
    name = f'{self.PREFIX}{self._current_epoch:04d}'
    with files.atomic_folder(os.path.join(self.backup_dir, name)) as partial:
      self.model.save_weights(os.path.join(partial, self.WEIGHTS))
    for _, older in self._completed()[:-1]:
      tf.io.gfile.rmtree(older)


class EpochCheckpoint(keras.callbacks.Callback):
  """Saves the whole model (.keras) after every epoch, atomically.

  Keras' ModelCheckpoint writes the .keras zip in place; a kill mid-write
  would leave a torn file under the final name. Keeps the last `keep`.
  """

  def __init__(self, folder: str, keep: int):
    super().__init__()
    self.folder, self.keep = folder, keep

  def on_epoch_end(self, epoch, logs=None):
    tf.io.gfile.makedirs(self.folder)
    with files.atomic_path(self.path(epoch + 1), temporary=os.path.join(
        self.folder, 'partial.keras')) as partial:  # Keras needs .keras
      self.model.save(partial, overwrite=True)
    for old in sorted(tf.io.gfile.glob(self.path('*')))[:-self.keep]:
      tf.io.gfile.remove(old)

  def path(self, epoch) -> str:
    name = f'epoch-{epoch:04d}.keras' if epoch != '*' else 'epoch-*.keras'
    return os.path.join(self.folder, name)


class BestEpoch(keras.callbacks.Callback):
  """Keeps the weights of the epoch with the best validation score.

  A model trained from scratch on a few thousand posters often peaks before
  its last epoch; the export should be that peak, and say which epoch it was.
  Each best epoch's weights are written as best/epoch-NNNN.weights.h5, then
  best.json (epoch, score, file) is replaced atomically: the record is the
  commit point, so a kill at any instant leaves a record that names complete
  weights. A resumed run picks the record up.
  """

  RECORD = 'best.json'

  def __init__(self, folder: str, monitor: str = 'val_roc_auc'):
    super().__init__()
    self.folder, self.monitor = folder, monitor
    self.best = self.read_record(folder)

  @classmethod
  def read_record(cls, folder: str) -> Optional[dict]:
    """{'epoch': N (from 1), 'monitor', 'value', 'weights': file} or None."""
    path = os.path.join(folder, cls.RECORD)
    if not tf.io.gfile.exists(path):
      return None
    with tf.io.gfile.GFile(path) as f:
      return json.load(f)

  def on_epoch_end(self, epoch, logs=None):
    value = (logs or {}).get(self.monitor)
    if value is None or (self.best and not value > self.best['value']):
      return
    tf.io.gfile.makedirs(self.folder)
    weights = f'epoch-{epoch + 1:04d}.weights.h5'
    with files.atomic_path(os.path.join(self.folder, weights),
                           temporary=os.path.join(
                               self.folder, 'partial.weights.h5')) as partial:
      self.model.save_weights(partial, overwrite=True)  # Keras' suffix
    self.best = {'epoch': epoch + 1, 'monitor': self.monitor,
                 'value': float(value), 'weights': weights}
    files.write_atomically(os.path.join(self.folder, self.RECORD),
                           json.dumps(self.best, sort_keys=True) + '\n')
    for old in tf.io.gfile.glob(os.path.join(self.folder, 'epoch-*.h5')):
      if os.path.basename(old) != weights:
        tf.io.gfile.remove(old)

  def restore(self, model: keras.Model) -> Optional[dict]:
    """Loads the best epoch's weights into model; its record, or None."""
    if self.best is None:
      return None
    model.load_weights(os.path.join(self.folder, self.best['weights']))
    return self.best


class HistoryCSV(keras.callbacks.CSVLogger):
  """Keras' CSVLogger with epochs counted from 1, as everywhere else.

  Keras numbers its epochs from 0; the console, the checkpoint names and
  summary.json count them from 1, and so does history.csv's `epoch` column.
  Rows are appended: a resumed run continues the file.
  """

  def __init__(self, path: str):
    super().__init__(path, append=True)

  def on_epoch_end(self, epoch, logs=None):
    super().on_epoch_end(epoch + 1, logs)


def prepare_run_dir(folder: str, resume: bool, overwrite: bool = False) -> bool:
  """Keeps an unfinished run's state to resume from; keeps a finished run.

  An unfinished run has a backup/ folder: with resume it is continued. A
  finished run (summary.json written) is the result of a whole training:
  it is kept, and starting it again is an error unless overwrite. Anything
  else (a run started over with --noresume or overwrite, or leftovers of a
  run stopped before its first epoch ended) is removed, so the new run's
  logs and checkpoints do not mix with the old ones.

  Returns:
    Whether the run resumes (its backup/ is kept).

  Raises:
    cli.UserError: the folder holds a finished run and overwrite is off.
  """
  if tf.io.gfile.exists(os.path.join(folder, 'backup')) and resume and (
      not overwrite):
    return True
  if not overwrite:
    _refuse_a_finished_run(folder)
  outputs = ('backup', 'best', 'checkpoints', 'train', 'validation',
             'history.csv', 'summary.json')
  old = [name for name in outputs
         if tf.io.gfile.exists(os.path.join(folder, name))]
  if old:
    logging.warning('starting %s over: removing %s of the previous run',
                    folder, ', '.join(old))
  for name in old:
    path = os.path.join(folder, name)
    if tf.io.gfile.isdir(path):
      tf.io.gfile.rmtree(path)
    else:
      tf.io.gfile.remove(path)
  _makedirs(folder)
  return False


def _refuse_a_finished_run(folder: str) -> None:
  """A one-line UserError if folder holds a finished run (its summary.json)."""
  path = os.path.join(folder, 'summary.json')
  if not tf.io.gfile.exists(path):
    return
  try:
    with tf.io.gfile.GFile(path) as f:
      summary = json.load(f)
    what = (f" ({summary['epochs']} epochs, val ROC-AUC "
            f"{summary['val']['roc_auc']:.3f})")
  except (ValueError, KeyError, TypeError, tf.errors.OpError):
    what = ''
  raise cli.UserError(
      f'{folder} holds a finished run{what}, kept: give another --run_name, '
      'or --overwrite to train it again from scratch')


def finish_run(folder: str) -> None:
  """Marks a run finished: removes its resume state (backup/).

  Called once summary.json is written: until then a run started again
  resumes after its last finished epoch instead of starting over.
  """
  backup = os.path.join(folder, 'backup')
  if tf.io.gfile.exists(backup):
    tf.io.gfile.rmtree(backup)


def _makedirs(folder: str) -> None:
  """Creates the run folder; a place that cannot be written is a UserError."""
  try:
    tf.io.gfile.makedirs(folder)
  except (tf.errors.OpError, OSError) as e:
    raise cli.UserError(f'cannot create the run folder {folder}: '
                        f'{getattr(e, "message", e)}') from None

