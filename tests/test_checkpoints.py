"""Tests of posternet/train/checkpoints.py: backups that survive kill -9, and a run
folder that is resumed or started over.

The end-to-end resume after kill -9 is in test_train.py.
"""

import os

import numpy as np

from posternet.train import checkpoints
from posternet.model import networks
SIZE = 24


def _compiled_small_cnn():
  model = networks.build_model('small_cnn', (SIZE, SIZE))
  model.compile(optimizer='adam', loss='binary_crossentropy')
  model.optimizer.build(model.trainable_variables)
  return model


def test_backup_ignores_a_half_written_one(tmp_path):
  backup_dir = str(tmp_path / 'backup')
  saved = _compiled_small_cnn()
  saver = checkpoints.Backup(backup_dir)
  saver.set_model(saved)
  saver.on_epoch_end(0)  # a complete backup of epoch 1
  assert os.listdir(backup_dir) == ['epoch-0001']
  # A kill while epoch 2's backup was being written leaves only this:
  torn = tmp_path / 'backup' / 'epoch-0002.tmp'
  torn.mkdir()
  (torn / checkpoints.Backup.WEIGHTS).write_bytes(b'torn')
  restored = _compiled_small_cnn()
  loader = checkpoints.Backup(backup_dir)
  loader.set_model(restored)
  loader.on_train_begin()
  assert loader.resumed_from_epoch == 1
  assert restored._initial_epoch == 1  # pylint: disable=protected-access
  for want, got in zip(saved.get_weights(), restored.get_weights()):
    np.testing.assert_array_equal(got, want)
  # The next backup replaces the older one once it is complete.
  saver.on_epoch_end(1)
  assert sorted(os.listdir(backup_dir)) == ['epoch-0002']


def test_epoch_checkpoints_keep_the_last_ones(tmp_path):
  folder = tmp_path / 'checkpoints'
  callback = checkpoints.EpochCheckpoint(str(folder), keep=2)
  callback.set_model(_compiled_small_cnn())
  for epoch in range(3):
    callback.on_epoch_end(epoch)
  assert sorted(os.listdir(folder)) == ['epoch-0002.keras',
                                        'epoch-0003.keras']


def _run_folder(folder, unfinished):
  for name in ('checkpoints', 'train'):
    (folder / name).mkdir(parents=True)
  (folder / 'history.csv').write_text('epoch\n0\n')
  (folder / 'config.json').write_text('{}')
  if unfinished:
    (folder / 'backup' / 'epoch-0001').mkdir(parents=True)


def test_run_folder_resumed_only_when_unfinished_and_asked(tmp_path):
  resumed = tmp_path / 'unfinished'
  _run_folder(resumed, unfinished=True)
  checkpoints.prepare_run_dir(str(resumed), resume=True)
  assert sorted(os.listdir(resumed)) == [
      'backup', 'checkpoints', 'config.json', 'history.csv', 'train']
  for name, unfinished, resume in (('finished', False, True),
                                   ('noresume', True, False)):
    folder = tmp_path / name
    _run_folder(folder, unfinished)
    checkpoints.prepare_run_dir(str(folder), resume=resume)
    # config.json is rewritten by the new run; the old outputs are gone.
    assert os.listdir(folder) == ['config.json'], name
  checkpoints.prepare_run_dir(str(tmp_path / 'new' / 'run'), resume=True)
  assert os.path.isdir(tmp_path / 'new' / 'run')


def test_best_epoch_keeps_the_best_weights_across_restarts(tmp_path):
  folder = str(tmp_path / 'best')
  model = _compiled_small_cnn()
  keeper = checkpoints.BestEpoch(folder)
  keeper.set_model(model)
  scores = {0: 0.61, 1: 0.72, 2: 0.69}  # epoch 2 (from 1) is the best
  weights = {}
  for epoch, score in scores.items():
    model.set_weights([w + epoch + 1 for w in model.get_weights()])
    weights[epoch] = model.get_weights()
    keeper.on_epoch_end(epoch, {'val_roc_auc': score, 'loss': 0.3})
  assert keeper.best['epoch'] == 2 and keeper.best['value'] == 0.72
  assert sorted(os.listdir(folder)) == ['best.json', 'epoch-0002.weights.h5']
  # A resumed run reads the record; a worse epoch does not replace it.
  again = checkpoints.BestEpoch(folder)
  again.set_model(model)
  again.on_epoch_end(3, {'val_roc_auc': 0.70})
  assert again.restore(model)['epoch'] == 2
  for want, got in zip(weights[1], model.get_weights()):
    np.testing.assert_array_equal(got, want)
  # No score (no validation), no record.
  empty = checkpoints.BestEpoch(str(tmp_path / 'none'))
  empty.set_model(model)
  empty.on_epoch_end(0, {'loss': 0.3})
  assert empty.best is None and empty.restore(model) is None
