"""Tests of posternet/train/trainer.py: flags and settings, training end to end.

The training runs use small_cnn on tiny synthetic records (record_fixtures),
in-process through trainer.run (the test seam) or as the real command in a
subprocess where exit codes and kill -9 matter.
"""

import contextlib
import csv
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request

from absl import flags
import keras
import numpy as np
import pytest
import tensorflow as tf

import record_fixtures
from posternet import cli
from posternet import settings
from posternet.data import augment
from posternet.data import pipeline
from posternet.model import optim
from posternet.train import head_phase
from posternet.train import inputs
from posternet.serve import export
from posternet import genres
from posternet.train import hardware
from posternet.observe import hparams_dashboard
from posternet.model import networks
from posternet.data import records
from posternet.observe import step_scalars
from posternet.train import trainer
from posternet.train import config as train_config
# The learning runs: small enough for seconds, big enough to learn.
NUM_TRAIN, NUM_VAL, SIZE = 512, 64, 24
LEARN = dict(model='small_cnn', image_size=(SIZE, SIZE), batch_size=16,
             epochs=4, learning_rate=3e-3, verbose=0)


# --- Flags and settings. ---


def _flag_values(*args):
  """The trainer's flags, defined into a FlagValues of their own and parsed."""
  values = flags.FlagValues()
  train_config.define_flags(values)
  values(['posternet.train', *args])
  return values


def test_every_setting_of_the_tree_has_a_flag_with_help_and_back():
  values = _flag_values('--records=r')
  leaves = list(settings.leaves(trainer.Config))
  assert set(values) == {leaf.name for leaf in leaves}
  assert len(leaves) == len(set(values))  # leaf names unique: flags are flat
  assert all(values[name].help.strip() for name in values)
  # Every field of every class in the tree is a group or a leaf with help:
  # a default without its flag cannot hide in a sub-config.
  for owner in (trainer.Config, optim.Recipe, head_phase.HeadPhase,
                augment.Settings):
    for field in dataclasses.fields(owner):
      assert 'group' in field.metadata or field.metadata['help'].strip(), (
          owner, field.name)
  # flags.txt lists them in this order; the tree's order decides it.
  assert train_config.FLAG_NAMES == (
      'records', 'logdir', 'run_name', 'model', 'image_size', 'model_size',
      'batch_size', 'epochs', 'learning_rate', 'optimizer', 'weight_decay',
      'schedule', 'warmup_epochs', 'loss', 'label_smoothing', 'export_dir',
      'export_epoch', 'precision', 'jit_compile', 'steps_per_execution',
      'strategy', 'resume', 'overwrite', 'shuffle_buffer', 'resize_on',
      'cache', 'threadpool_size', 'ignore_errors', 'augment', 'crop_area',
      'color_jitter', 'init_weights', 'pretrained', 'fine_tune_blocks',
      'head_epochs', 'head_learning_rate', 'feature_passes', 'seed',
      'keep_checkpoints', 'verbose', 'log_every_steps',
      'dashboard_every_epochs', 'profile_steps', 'data_service',
      'data_service_mode', 'data_service_job', 'data_service_timeout')


def test_settings_build_the_tree_from_flat_values():
  config = train_config.build(records='r', optimizer='adamw', head_epochs=2,
                              augment='flip', epochs=3)
  assert config.recipe == optim.Recipe(optimizer='adamw')
  assert config.head.head_epochs == 2 and config.epochs == 3
  assert config.make_augment().ops == ('flip',)
  row = settings.flat(config)
  assert row['optimizer'] == 'adamw' and 'recipe' not in row
  assert settings.build(trainer.Config, **row) == config
  with pytest.raises(TypeError, match='no setting colour'):
    train_config.build(records='r', colour=1)


def test_flag_defaults_are_config_defaults():
  assert train_config.config_from_flags(_flag_values('--records=r')) == (
      train_config.build(records='r'))


def test_flags_txt_repeats_the_run(tmp_path):
  values = _flag_values('--records=r', '--image_size=64x48', '--noresume',
                        '--profile_steps=2,3', '--verbose=0',
                        '--precision=float32')
  text = train_config.flags_text(values)
  lines = text.splitlines()
  assert lines[:3] == ['--records=r', '--logdir=runs', '--model=seed_cnn']
  assert '--image_size=64x48' in lines and '--noresume' in lines
  assert not any(line.startswith('--run_name') for line in lines)  # unset
  flagfile = tmp_path / 'flags.txt'
  flagfile.write_text(text)
  again = _flag_values(f'--flagfile={flagfile}')
  assert train_config.config_from_flags(again) == train_config.config_from_flags(values)


def test_resolved_settings_are_config_json_and_hparams():
  choices = hardware.Choices(
      precision='float32', precision_reason='CPU', jit_compile=False,
      jit_compile_reason='CPU', strategy='default', strategy_reason='one',
      resize_on='host', resize_on_reason='no GPU', num_gpus=0)
  resolved = trainer.Resolved(
      **dataclasses.asdict(choices), steps_per_epoch=8, val_steps=2,
      val_examples=40, run_dir='runs/r', chief_backup=None,
      export_dir='runs/r/export')
  # config.json's 'resolved', as it has always been.
  assert set(dataclasses.asdict(resolved)) == {
      'precision', 'precision_reason', 'jit_compile', 'jit_compile_reason',
      'strategy', 'strategy_reason', 'resize_on', 'resize_on_reason',
      'num_gpus', 'steps_per_epoch', 'val_steps', 'val_examples', 'run_dir',
      'chief_backup', 'export_dir'}
  config = train_config.build(records='r', image_size=(64, 48))
  values = hparams_dashboard.hparams_values(settings.flat(config),
                                            resolved.hparams())
  assert set(values) == {
      'records', 'model', 'image_size', 'model_size', 'batch_size', 'epochs',
      'learning_rate', 'precision', 'jit_compile', 'steps_per_execution',
      'strategy', 'shuffle_buffer', 'resize_on', 'cache', 'ignore_errors',
      'seed',
      'data_service_mode', 'num_gpus', 'steps_per_epoch', 'optimizer',
      'weight_decay', 'schedule', 'warmup_epochs', 'loss', 'label_smoothing',
      'augment', 'crop_area', 'color_jitter', 'export_epoch', 'pretrained',
      'fine_tune_blocks', 'head_epochs', 'head_learning_rate',
      'feature_passes'}
  assert values['precision'] == 'float32' and values['jit_compile'] is False
  assert values['resize_on'] == 'host'  # resolved, not the flag's auto
  assert values['image_size'] == '64x48'


def test_parse_size():
  assert cli.parse_size('400', 'image_size') == (400, 400)
  assert cli.parse_size('128x96', 'image_size') == (128, 96)
  for bad in ('', 'x', '12x', '0', 'axb', '1x2x3'):
    with pytest.raises(cli.UserError, match='expected a size'):
      cli.parse_size(bad, 'image_size')


# --- Training end to end. ---


def _shuffled_copy(source, target, seed=0):
  """The same records with labels permuted against images, split by split.

  What a pipeline that misaligns labels and images would feed the model.
  """
  manifest = records.Manifest.read(source)
  rng = np.random.RandomState(seed)
  labels = {}
  for split in records.SPLITS:
    rows = [ex[records.LABELS_KEY]
            for ex in record_fixtures.read_split(manifest, split)]
    labels[split] = [rows[i] for i in rng.permutation(len(rows))]
  record_fixtures.rewrite_records(
      manifest, lambda split, index, ex: {
          **ex, records.LABELS_KEY: labels[split][index]}, target)


@pytest.fixture(scope='module')
def learnable(tmp_path_factory, make_records):
  """{'real': records folder, 'shuffled': the same with labels shuffled}."""
  real = make_records('real', num_train=NUM_TRAIN, num_val=NUM_VAL,
                      image_hw=(SIZE, SIZE), num_shards=2, seed=3).records_dir
  shuffled = str(tmp_path_factory.mktemp('records') / 'shuffled')
  _shuffled_copy(real, shuffled)
  return {'real': real, 'shuffled': shuffled}


def _history(run_dir):
  with open(os.path.join(run_dir, 'history.csv')) as f:
    return list(csv.DictReader(f))


def _learns_and_control_does_not(learnable, logdir, settings) -> tuple:
  """Trains on real and on shuffled labels; both runs' summaries.

  The same steps, the same model: only the image/label pairing differs.
  """
  summary = trainer.run(train_config.build(records=learnable['real'], logdir=logdir,
                                   run_name='real', **settings))
  control = trainer.run(train_config.build(records=learnable['shuffled'],
                                   logdir=logdir, run_name='shuffled',
                                   export_dir='', **settings))
  assert summary['val']['roc_auc'] > 0.75, summary['val']
  assert control['val']['roc_auc'] < 0.62, control['val']
  return summary, control


def test_training_learns_and_shuffled_labels_do_not(learnable, tmp_path):
  logdir = str(tmp_path / 'runs')
  summary, control = _learns_and_control_does_not(learnable, logdir, LEARN)
  assert summary['val']['precision_at_3'] > control['val']['precision_at_3']
  history = _history(os.path.join(logdir, 'real'))
  assert len(history) == LEARN['epochs']
  assert float(history[-1]['loss']) < 0.8 * float(history[0]['loss'])
  assert float(history[-1]['val_roc_auc']) > float(history[0]['val_roc_auc'])
  assert all(float(row['images_per_sec']) > 0 for row in history)
  steps = NUM_TRAIN // LEARN['batch_size']
  assert summary['steps'] == LEARN['epochs'] * steps
  assert summary['precision'] == hardware.precision_here('auto')[0]


# configs/real.cfg's recipe, at the tests' size: the ResNet built at 32x32
# (its smallest), AdamW, warm-up + cosine, augmentation after the cache.
RECIPE = dict(LEARN, model='resnet_small', model_size=(32, 32), epochs=5,
              optimizer='adamw', weight_decay=0.05, schedule='cosine',
              warmup_epochs=1, augment='crop,flip,color', cache=True)


def test_resnet_recipe_learns_and_exports_its_best_epoch(learnable, tmp_path):
  logdir = str(tmp_path / 'runs')
  summary, _ = _learns_and_control_does_not(learnable, logdir, RECIPE)
  # The export is the epoch with the best validation ROC-AUC, and scores it.
  history = _history(os.path.join(logdir, 'real'))
  scores = [float(row['val_roc_auc']) for row in history]
  best = int(np.argmax(scores)) + 1
  assert summary['exported_epoch'] == best
  assert summary['val']['roc_auc'] == pytest.approx(scores[best - 1],
                                                    abs=0.01)
  info = export.read_info(os.path.join(logdir, 'real', 'export'))
  assert info['info']['epoch'] == best


def test_run_folder_outputs(learnable, tmp_path):
  config = train_config.build(records=learnable['real'], logdir=str(tmp_path),
                        run_name='r', keep_checkpoints=2, export_epoch='last',
                        **{**LEARN, 'epochs': 3})
  trainer.run(config)
  folder = str(tmp_path / 'r')
  assert sorted(os.listdir(os.path.join(folder, 'checkpoints'))) == [
      'epoch-0002.keras', 'epoch-0003.keras']
  assert not os.path.exists(os.path.join(folder, 'backup'))  # finished
  for events in ('train', 'validation'):
    assert any(name.startswith('events.out.tfevents')
               for name in os.listdir(os.path.join(folder, events)))
  with open(os.path.join(folder, 'config.json')) as f:
    resolved = json.load(f)['resolved']
  assert resolved['steps_per_epoch'] == NUM_TRAIN // LEARN['batch_size']
  assert resolved['precision_reason']
  # The export: thresholds tuned on val, and it predicts like the model.
  info = export.read_info(os.path.join(folder, 'export'))
  assert len(info['thresholds']) == genres.NUM_GENRES
  assert info['image_size'] == [SIZE, SIZE]
  # A checkpoint is a valid --init_weights for the same model and size;
  # built under the run's precision, it computes what the export computes.
  with keras_policy(resolved['precision']):
    start = networks.build_model('small_cnn', (SIZE, SIZE), init_weights=(
        os.path.join(folder, 'checkpoints', 'epoch-0003.keras')))
  exported = export.load_keras_model(os.path.join(folder, 'export'))
  posters = np.random.RandomState(1).randint(0, 256, (4, SIZE, SIZE, 3),
                                             np.uint8)
  inputs = pipeline.model_inputs({pipeline.IMAGE: posters})
  np.testing.assert_allclose(start(inputs), exported(inputs), atol=1e-6)


@contextlib.contextmanager
def keras_policy(name: str):
  """Builds layers under the Keras dtype policy `name` while inside."""
  previous = keras.mixed_precision.global_policy()
  keras.mixed_precision.set_global_policy(name)
  try:
    yield
  finally:
    keras.mixed_precision.set_global_policy(previous)


def test_resume_after_kill_9_ends_with_the_same_steps(learnable, tmp_path,
                                                      run_module):
  epochs, batch = 4, 8
  args = [f'--records={learnable["real"]}', f'--logdir={tmp_path}',
          '--run_name=k', '--model=small_cnn', f'--image_size={SIZE}',
          f'--batch_size={batch}', f'--epochs={epochs}', '--verbose=0',
          '--export_dir=']
  marker = tmp_path / 'k' / 'backup' / 'epoch-0001'  # complete when it exists
  first = run_module('posternet.train', *args, start=True)
  deadline = time.time() + 120
  while not marker.exists() and first.poll() is None and time.time() < deadline:
    time.sleep(0.02)
  assert first.poll() is None, 'the run ended before it could be killed'
  first.send_signal(signal.SIGKILL)
  first.communicate()
  assert first.returncode == -signal.SIGKILL
  second = run_module('posternet.train', *args, start=True)
  _, stderr = second.communicate(timeout=180)
  assert second.returncode == 0, stderr[-2000:]
  with open(tmp_path / 'k' / 'summary.json') as f:
    summary = json.load(f)
  steps_per_epoch = NUM_TRAIN // batch
  assert summary['resumed_from_epoch'] >= 1  # it resumed, not restarted
  assert summary['steps'] == epochs * steps_per_epoch
  epochs_logged = [int(row['epoch']) for row in _history(tmp_path / 'k')]
  assert sorted(set(epochs_logged)) == list(range(1, epochs + 1))


# --- The command as a user meets it (issue 21). ---

CLI_EPOCHS = 2


def _train_args(records_dir, logdir, *more):
  return [f'--records={records_dir}', f'--logdir={logdir}', '--run_name=cli',
          '--model=small_cnn', f'--image_size={SIZE}', '--batch_size=64',
          f'--epochs={CLI_EPOCHS}', *more]


@pytest.fixture(scope='module')
def cli_run(learnable, tmp_path_factory, run_module):
  """The trainer as a command, stdout and stderr in one pipe (a log file)."""
  logdir = tmp_path_factory.mktemp('cli') / 'runs'
  args = _train_args(learnable['real'], logdir)
  process = run_module('posternet.train', *args, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=300)
  assert process.returncode == 0, process.stdout[-3000:]
  with open(logdir / 'cli' / 'summary.json') as f:
    summary = json.load(f)
  return dict(args=args, logdir=logdir, folder=logdir / 'cli',
              lines=process.stdout.splitlines(), output=process.stdout,
              summary=summary)


def _message(line):
  """An absl log line's message, after its 'I1204 21:18:15.18 … file.py:12] '."""
  return line.split('] ', 1)[1] if '] ' in line else line


def test_the_console_gets_a_short_line_per_epoch(cli_run):
  lines = [_message(line) for line in cli_run['lines']]
  epochs = [line for line in lines if line.startswith('epoch ')]
  assert [line.split(':')[0] for line in epochs] == [
      f'epoch {e}/{CLI_EPOCHS}' for e in range(1, CLI_EPOCHS + 1)]
  for line in epochs:
    assert 'val ROC-AUC ' in line and 'images/s' in line, line
    assert len(line) < 160, line
  # A few lines before the first epoch; the flags are in the run folder.
  assert lines.index(epochs[0]) <= 4, lines[:8]
  assert not any(line.startswith(('flags:', '--records')) for line in lines)
  assert (cli_run['folder'] / 'flags.txt').read_text().startswith(
      '--records=')
  assert '\r' not in cli_run['output'] and '\x1b[' not in cli_run['output']


def test_epochs_are_counted_from_1_everywhere(cli_run):
  folder = cli_run['folder']
  assert [int(row['epoch']) for row in _history(folder)] == [1, 2]
  assert sorted(os.listdir(folder / 'checkpoints')) == [
      'epoch-0001.keras', 'epoch-0002.keras']
  best = json.loads((folder / 'best' / 'best.json').read_text())
  assert best['epoch'] in (1, 2) and best['epoch'] == (
      cli_run['summary']['exported_epoch'])
  assert cli_run['summary']['epochs'] == CLI_EPOCHS


def _hint(lines, label):
  """The command a log line offers after `label`, as printed."""
  line = next(_message(l) for l in lines if _message(l).startswith(label))
  return line[len(label):].split('; per genre: ')[-1]


def test_the_final_score_is_evaluate_s_and_its_hint_works(cli_run, repo):
  # The per-genre hint, run as printed: posternet.evaluate on the export.
  command = _hint(cli_run['lines'], 'exported model: ')
  assert ' -m posternet.evaluate --model=' in command
  evaluation = subprocess.run(command, shell=True, cwd=repo, text=True,
                              capture_output=True, timeout=300)
  assert evaluation.returncode == 0, evaluation.stderr[-2000:]
  with open(cli_run['folder'] / 'export' / 'evaluation-val.json') as f:
    scores = json.load(f)['metrics']['model']
  val = cli_run['summary']['val']
  for mine, theirs in (('roc_auc', 'roc_auc'),
                       ('average_precision', 'average_precision'),
                       ('precision_at_3', 'precision_at_3'),
                       ('loss', 'bce'), ('f1_micro', 'f1_micro'),
                       ('f1_macro', 'f1_macro')):
    assert val[mine] == pytest.approx(scores[theirs], abs=1e-5), mine
  done = next(_message(l) for l in cli_run['lines']
              if _message(l).startswith('done: '))
  assert 'scored exactly' in done and f'ROC-AUC {val["roc_auc"]:.3f}' in done
  assert f'macro AP {val["average_precision"]:.3f}' in done


def test_the_tensorboard_hint_works_as_printed(cli_run, repo, free_port):
  command = _hint(cli_run['lines'], 'TensorBoard: ')
  assert command.split()[1:3] == ['-m', 'posternet.board'], command
  port = free_port()
  board = subprocess.Popen(
      f'{command} --host=127.0.0.1 --port={port}', shell=True, cwd=repo,
      text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
      start_new_session=True)
  try:
    deadline = time.time() + 60
    served = None
    while time.time() < deadline and served is None:
      try:
        with urllib.request.urlopen(
            f'http://127.0.0.1:{port}/data/runs', timeout=5) as response:
          served = json.load(response)
      except OSError:
        assert board.poll() is None, board.communicate()[0][-2000:]
        time.sleep(0.5)
    assert served is not None and 'train' in served, served
  finally:
    os.killpg(board.pid, signal.SIGTERM)
    board.communicate(timeout=30)


def test_a_finished_run_is_kept_unless_overwrite(cli_run, tmp_path,
                                                 run_module):
  logdir = tmp_path / 'runs'
  shutil.copytree(cli_run['folder'], logdir / 'cli')
  summary = logdir / 'cli' / 'summary.json'
  before = sorted(p.name for p in (logdir / 'cli').iterdir())
  args = [a if not a.startswith('--logdir=') else f'--logdir={logdir}'
          for a in cli_run['args']]
  again = run_module('posternet.train', *args)
  assert again.returncode == 2, again.stderr[-2000:]
  assert 'Traceback' not in again.stderr
  assert again.stderr.strip().splitlines()[-1] == (
      f'error: {logdir / "cli"} holds a finished run ({CLI_EPOCHS} epochs, '
      f'val ROC-AUC {cli_run["summary"]["val"]["roc_auc"]:.3f}), kept: give '
      'another --run_name, or --overwrite to train it again from scratch')
  assert sorted(p.name for p in (logdir / 'cli').iterdir()) == before
  assert json.loads(summary.read_text()) == cli_run['summary']
  over = run_module('posternet.train', *args, '--overwrite', '--epochs=1',
                    '--verbose=0', timeout=300)
  assert over.returncode == 0, over.stderr[-2000:]
  assert json.loads(summary.read_text())['epochs'] == 1
  assert [int(row['epoch']) for row in _history(logdir / 'cli')] == [1]
  # flags.txt repeats the run, but never with --overwrite.
  assert '--overwrite' not in (logdir / 'cli' / 'flags.txt').read_text()


def test_an_export_dir_of_another_run_is_kept(cli_run, learnable, tmp_path):
  other = str(cli_run['folder'] / 'export')
  with pytest.raises(cli.UserError, match='holds an exported model, kept'):
    trainer.run(train_config.build(records=learnable['real'],
                           logdir=str(tmp_path), run_name='new',
                           export_dir=other, **LEARN))
  assert not (tmp_path / 'new').exists() or not any(
      (tmp_path / 'new').iterdir())


def test_missing_records_is_one_line_exit_2(tmp_path, run_module):
  process = run_module('posternet.train', '--flagfile=configs/seed.cfg',
                       f'--records={tmp_path / "missing"}',
                       f'--logdir={tmp_path}', start=True)
  _, stderr = process.communicate(timeout=120)
  assert process.returncode == 2
  assert 'Traceback' not in stderr
  errors = [line for line in stderr.splitlines() if line.startswith('error:')]
  assert errors == [f'error: records folder {tmp_path / "missing"} does not '
                    'exist; make it with `make records`']
  assert stderr.strip().splitlines()[-1] == errors[0]
  assert not os.listdir(tmp_path)  # nothing written


@pytest.mark.parametrize('config', ['demo', 'real', 'real_pretrained'])
def test_configs_parse(tmp_path, run_module, config):
  (tmp_path / 'empty').mkdir()
  process = run_module('posternet.train', f'--flagfile=configs/{config}.cfg',
                       f'--records={tmp_path / "empty"}',
                       f'--logdir={tmp_path}', '--epochs=0', start=True)
  _, stderr = process.communicate(timeout=120)
  assert process.returncode == 2 and 'Traceback' not in stderr
  assert stderr.strip().splitlines()[-1] == (
      'error: --epochs must be at least 1, not 0')


@pytest.mark.parametrize('settings, message', [
    (dict(augment='crop,rotate'), '--augment=crop,rotate: unknown augmentation'),
    (dict(augment='crop', crop_area=0.0), '--crop_area=0.0 --color_jitter'),
    (dict(augment='color', color_jitter=1.5), '--color_jitter=1.5: color'),
    (dict(optimizer='adam', weight_decay=0.1), '--weight_decay=0.1: needs'),
    (dict(export_epoch='first'), '--export_epoch=first: choose one of'),
])
def test_bad_recipe_flags_are_one_line_errors(settings, message):
  with pytest.raises(cli.UserError, match=message):
    train_config.check_config(train_config.build(records='r', **settings))


def test_real_config_is_the_recipe(repo, monkeypatch):
  monkeypatch.chdir(repo)  # flagfiles name each other from the repository
  values = _flag_values('--flagfile=configs/real.cfg')
  config = train_config.config_from_flags(values)
  assert (config.model, config.recipe.optimizer,
          config.recipe.schedule) == (
      'resnet_small', 'adamw', 'cosine')
  assert config.cache and config.make_augment().ops == ('crop', 'flip',
                                                        'color')
  assert config.export_epoch == 'best'


def test_upscaling_records_warns(learnable):
  manifest = records.Manifest.read(learnable['real'])
  assert not inputs.warn_if_upscaled(manifest, (SIZE, SIZE))
  assert not inputs.warn_if_upscaled(manifest, (SIZE - 8, SIZE))
  assert inputs.warn_if_upscaled(manifest, (SIZE, SIZE + 1))


def test_an_epoch_of_hours_is_announced_early(caplog):
  def steps(callback, count, seconds):
    for batch in range(count):
      time.sleep(seconds)
      callback.on_train_batch_end(batch)

  quick = step_scalars.Throughput(images_per_epoch=64, steps_per_epoch=1000)
  steps(quick, 8, 0.001)  # ~1 s an epoch
  slow = step_scalars.Throughput(images_per_epoch=64, steps_per_epoch=10**6)
  steps(slow, 8, 0.01)    # ~3 hours an epoch
  warnings = [r.getMessage() for r in caplog.records
              if r.levelname == 'WARNING' and 'hours' in r.getMessage()]
  assert len(warnings) == 1, warnings
  assert 'one epoch of 1000000 steps will take about' in warnings[0]


def test_bad_records_and_sizes_are_user_errors(learnable, tmp_path,
                                               tiny_records):
  base = dict(logdir=str(tmp_path / 'runs'), **LEARN)
  empty = tmp_path / 'empty'
  empty.mkdir()
  with pytest.raises(cli.UserError, match='manifest.json not found'):
    trainer.run(train_config.build(records=str(empty), **base))
  old = tiny_records.records_dir
  dataclasses.replace(tiny_records, format_version=0).write(old)
  with pytest.raises(cli.UserError, match='format version 0'):
    trainer.run(train_config.build(records=old, **base))
  with pytest.raises(cli.UserError, match='seed_cnn needs .* at least 76x76'):
    trainer.run(train_config.build(records=learnable['real'],
                           **{**base, 'model': 'seed_cnn'}))


def test_damaged_shard_names_the_shard(learnable, tmp_path):
  damaged = str(tmp_path / 'damaged')
  _shuffled_copy(learnable['real'], damaged)
  shard = records.Manifest.read(damaged).shard_paths('train')[0]
  with open(shard, 'r+b') as f:
    f.truncate(os.path.getsize(shard) // 2)
  with pytest.raises(cli.UserError, match=os.path.basename(shard)):
    trainer.run(train_config.build(records=damaged, logdir=str(tmp_path / 'runs'),
                           export_dir='', **{**LEARN, 'epochs': 1}))


def test_out_of_memory_becomes_a_batch_size_hint():
  config = train_config.build(records='r', batch_size=64)
  with pytest.raises(cli.UserError, match=r'lower --batch_size \(e.g. 32\)'):
    with trainer._user_errors(config, None):  # pylint: disable=protected-access
      raise tf.errors.ResourceExhaustedError(None, None, 'OOM when allocating')
