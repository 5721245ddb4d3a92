r"""Trains a poster-genre model on a records folder, streaming it with tf.data.

  python -m posternet.train --flagfile=configs/seed.cfg
  python -m posternet.train --flagfile=configs/demo.cfg

A run lives in --logdir/<run_name>/:
  config.json         the resolved settings (precision chosen and why, ...)
  flags.txt           the flags, as a flagfile that repeats the run
  train/ validation/  TensorBoard event files
  history.csv         one row of metrics per epoch, epochs counted from 1
  checkpoints/        epoch-NNNN.keras, the model after each epoch
  best/               the weights of the best epoch so far (val ROC-AUC)
  backup/             the resume state, while the run is unfinished
  summary.json        exact validation scores of the export, steps, throughput
  export/             the exported model (unless --export_dir says elsewhere)

Each epoch prints one line (loss, val loss, val ROC-AUC, val precision@3,
images/s), scored exactly on the whole val split (posternet.metrics); at the
end the exported epoch is scored so again, the same numbers `python -m
posternet.evaluate` gives for the export.

A run that was killed (even with kill -9) continues from its last finished
epoch when started again with the same flags, and ends after the same number
of steps. One that stopped after its last epoch (killed, or its export
failed) only scores, exports and summarises when started again. A finished
run (summary.json written) is kept: starting it again stops with an error;
--overwrite trains it again from scratch, another --run_name beside it.
"""

# (A comment, not the docstring: the docstring is the command's --help.)
# This module is `main`; the work is `run(Config)`, which tests call
# directly. The flags are train_config's.
# What a run builds on has a module each: train/config (Config, its flags,
# Resolved), hardware (precision, XLA, strategy), networks (compiled_model),
# optim (optimizer, schedule, loss), val_scores and metrics (each epoch's
# validation), checkpoints (resume state, epoch checkpoints, the best epoch),
# dashboards and step_scalars (TensorBoard, throughput), train/inputs (the
# run's datasets from data/pipeline, augment and service). What stays here
# is the run, top to bottom, and main.

import contextlib
import dataclasses
import json
import os
import time
from typing import Optional, Sequence

from absl import app
from absl import flags
from absl import logging
import keras
import numpy as np
import tensorflow as tf

from posternet.train import checkpoints
from posternet import cli
from posternet.train import console
from posternet.observe import dashboards
from posternet.data import service as data_service
from posternet.serve import export
from posternet import files
from posternet.train import hardware
from posternet.train import head_phase
from posternet.observe import hparams_dashboard
from posternet.data import input_errors
from posternet import metrics
from posternet.model import networks
from posternet.train import inputs
from posternet.train import multi_worker
from posternet.train import val_scores
from posternet.model import optim
from posternet.data import records
from posternet.observe import step_scalars
from posternet.train import config as train_config
from posternet.data import verify
from posternet import settings as settings_lib
# The run's argument: `train.run(train.Config(records=...))`.
Config = train_config.Config
Resolved = train_config.Resolved


def run(config: Config, flags_text: Optional[str] = None) -> dict:
  """Trains, evaluates on the full val split, tunes thresholds and exports.

  Args:
    config: the run's settings.
    flags_text: the command's flags, saved as flags.txt (a flagfile).

  Returns:
    The summary written to summary.json: final validation metrics, steps,
    epochs, throughput and where the outputs are.

  Raises:
    cli.UserError: bad records folder or manifest, a size the model cannot
      take, unusable --init_weights, out of memory, a damaged shard or
      record (named), a run folder or export that cannot be written.
  """
  train_config.check_config(config)
  manifest = records.Manifest.read(config.records)  # opened once, passed down
  inputs.warn_if_upscaled(manifest, config.image_size)
  if config.data_service:
    # A wrong address fails here within seconds; TF's client would retry.
    data_service.probe_dispatcher(config.data_service)
  choices = hardware.resolve(config.precision, config.jit_compile,
                             config.strategy, config.resize_on)
  # Multi-worker: TF_CONFIG checked first; only the chief writes run_dir().
  task = (multi_worker.task_from_tf_config()
          if choices.strategy == 'multi_worker' else None)
  run_dir = train_config.run_dir(config)
  folder = multi_worker.worker_folder(run_dir, task)
  resuming = checkpoints.prepare_run_dir(folder, config.resume,
                                         config.overwrite)
  logging.info('; '.join(f'{key} {getattr(choices, key)} '
                         f'({getattr(choices, f"{key}_reason")})'
                         for key in ('precision', 'jit_compile', 'strategy',
                                     'resize_on')))
  settings = _resolved(config, manifest, choices, run_dir, folder)
  if settings.export_dir and not (resuming or config.overwrite):
    _keep_another_export(settings.export_dir, folder)
  _write_run_config(folder, config, settings, flags_text)
  # From here the run reads its records as resolved (auto: by the hardware).
  config = dataclasses.replace(config, resize_on=settings.resize_on)
  logging.info('run folder %s (its flags: flags.txt; settings: config.json)',
               folder)
  if settings.export_dir:
    export.check_writable(settings.export_dir)  # now, not after training
  previous_policy = keras.mixed_precision.global_policy()
  keras.mixed_precision.set_global_policy(settings.precision)
  try:
    summary = _train_and_export(config, settings, manifest)
  finally:
    keras.mixed_precision.set_global_policy(previous_policy)
  # A non-chief's outputs were only its share of the work: delete them.
  multi_worker.remove_worker_folder(folder, task)
  return summary


def _resolved(config: Config, manifest: records.Manifest,
              choices: hardware.Choices, run_dir: str,
              folder: str) -> Resolved:
  """The run's settings as resolved: hardware, step counts, folders.

  folder is this worker's run folder (run_dir on the chief); a worker's
  export goes to its own folder, and it resumes from the chief's backup.
  """
  return Resolved(
      **dataclasses.asdict(choices),
      steps_per_epoch=manifest.steps_per_epoch('train', config.batch_size),
      val_steps=manifest.steps_per_epoch('val', config.batch_size),
      val_examples=manifest.num_examples('val'),
      run_dir=folder,
      chief_backup=(os.path.join(run_dir, 'backup')
                    if folder != run_dir else None),
      export_dir=(config.export_dir
                  if config.export_dir is not None and folder == run_dir
                  else os.path.join(folder, 'export')))


def _keep_another_export(export_dir: str, folder: str) -> None:
  """A new run does not replace an export outside its folder unless asked.

  The run folder's own export/ belongs to the run (kept or replaced with
  it); an --export_dir elsewhere may hold another run's model.

  Raises:
    cli.UserError: export_dir, outside folder, holds an exported model.
  """
  inside = os.path.abspath(export_dir).startswith(
      os.path.join(os.path.abspath(folder), ''))
  if not inside and os.path.isfile(os.path.join(export_dir, export.INFO_NAME)):
    raise cli.UserError(
        f'--export_dir {export_dir} holds an exported model, kept: give '
        'another --export_dir, or --overwrite to replace it')


def _train_and_export(config: Config, settings: Resolved,
                      manifest: records.Manifest) -> dict:
  """The body of run(), under the chosen precision policy."""
  keras.utils.set_random_seed(config.seed)
  strategy = hardware.make_strategy(settings.strategy)
  with strategy.scope():
    model = networks.compiled_model(
        config.model, config.image_size, model_size=config.model_size,
        init_weights=config.init_weights, pretrained=config.pretrained,
        fine_tune_blocks=config.fine_tune_blocks,
        optimizer=optim.make_optimizer(config.recipe,
                                       settings.steps_per_epoch,
                                       config.epochs),
        loss=optim.make_loss(config.recipe),
        jit_compile=settings.jit_compile,
        steps_per_execution=config.steps_per_execution)
  logging.info('%s: %s parameters, posters of %s resized on the %s, '
               '%d replica(s)', model.name, f'{model.count_params():,}',
               networks.input_size(model), config.resize_on,
               strategy.num_replicas_in_sync)
  clock = step_scalars.InputClock()  # times the train pipeline's get_next
  train_data = inputs.distributed_train_data(config, strategy, clock,
                                             manifest)
  callbacks = _callbacks(config, settings, clock, manifest, model.loss)
  backup = next(c for c in callbacks if isinstance(c, checkpoints.Backup))
  start = time.perf_counter()
  head_scores = None
  if config.head.head_epochs and not backup.completed_epochs():
    with strategy.scope(), _user_errors(config, manifest):
      head_scores = head_phase.train_head(
          model, networks.MODELS[config.model].backbone, config.head,
          manifest, inputs.one_pass_fn(config, manifest), config.recipe,
          config.batch_size, _fit_verbosity(config.verbose))
  watch = (data_service.Watch(clock, config.data_service,
                              config.data_service_timeout)
           if config.data_service else contextlib.nullcontext())
  with _user_errors(config, manifest), watch:
    # shuffle=False: the pipeline shuffles. No validation_data: the first
    # callback (val_scores.ValidationScores) scores the val split.
    model.fit(train_data, epochs=config.epochs,
              steps_per_epoch=settings.steps_per_epoch, shuffle=False,
              callbacks=callbacks, verbose=_fit_verbosity(config.verbose))
  if backup.resumed_from_epoch >= config.epochs:
    logging.info('all %d epochs were trained before: only scoring, exporting '
                 'and summarising', backup.resumed_from_epoch)
  # Optimizer updates applied (under mixed_float16, steps skipped for an
  # overflowing loss scale are not counted), before the best epoch's weights
  # (and optimizer state) are loaded back.
  steps = int(model.optimizer.iterations.numpy())
  exported_epoch = _choose_export_epoch(model, config, callbacks)
  summary = _finish(model, config, settings, manifest,
                    backup.resumed_from_epoch, time.perf_counter() - start,
                    exported_epoch, steps, head_scores)
  # Multi-worker: no worker leaves while another still exports.
  multi_worker.wait_for_all(strategy)
  return summary


def _choose_export_epoch(model: keras.Model, config: Config,
                         callbacks: Sequence) -> int:
  """Loads the best epoch's weights (--export_epoch=best); its number.

  The final scoring, thresholds, export and summary are then all of that
  epoch. With --export_epoch=last, or no validation score, the last epoch.
  """
  best = next(c for c in callbacks if isinstance(c, checkpoints.BestEpoch))
  if config.export_epoch == 'best' and best.best is not None:
    record = best.restore(model)
    logging.info('exporting epoch %d of %d: the best %s (%.4f)',
                 record['epoch'], config.epochs,
                 record['monitor'].replace('val_roc_auc', 'val ROC-AUC'),
                 record['value'])
    return record['epoch']
  return config.epochs


def _fit_verbosity(verbose):
  """model.fit's verbose: none under 'auto', where console.EpochLine prints.

  Keras' own output (1: a progress bar, 2: a line per epoch) lists every
  metric for train and validation, ~600 characters an epoch.
  """
  return 0 if verbose == 'auto' else verbose


def _callbacks(config: Config, settings: Resolved,
               clock: step_scalars.InputClock, manifest: records.Manifest,
               loss: keras.losses.Loss) -> list:
  """The epoch's callbacks, in the order they run.

  The validation scores first, so that every later one sees them; then
  throughput, so the loggers after it record images_per_sec (and the
  dashboards' input_wait_share, for the CSV log and the epoch line). The
  backup last: an epoch the backup counts as done is already in the logs
  and checkpoints (a kill before it only repeats that epoch).
  """
  folder = settings.run_dir
  epoch_line = ([console.EpochLine(config.epochs, settings.steps_per_epoch)]
                if config.verbose == 'auto' else [])
  scores = val_scores.ValidationScores(
      lambda: inputs.split_dataset(config, manifest, 'val'), loss)
  return [
      scores,
      step_scalars.Throughput(settings.steps_per_epoch * config.batch_size,
                 settings.steps_per_epoch),
      *dashboards.make_callbacks(
          folder, clock, manifest=manifest,
          image_size=config.image_size, batch_size=config.batch_size,
          hparams=hparams_dashboard.hparams_values(_config_dict(config),
                                                   settings.hparams()),
          metric_names=[name for name in metrics.SUMMARY_SCORES
                        if name != 'loss'],
          val_predictions=lambda: scores.latest,
          log_every_steps=config.log_every_steps,
          dashboard_every_epochs=config.dashboard_every_epochs,
          profile_steps=config.profile_steps),
      checkpoints.HistoryCSV(os.path.join(folder, 'history.csv')),
      *epoch_line,
      checkpoints.EpochCheckpoint(os.path.join(folder, 'checkpoints'),
                                  config.keep_checkpoints),
      checkpoints.BestEpoch(os.path.join(folder, 'best')),
      checkpoints.Backup(os.path.join(folder, 'backup'),
                         restore_dir=settings.chief_backup),
  ]


@contextlib.contextmanager
def _user_errors(config: Config, manifest: records.Manifest):
  """Turns out-of-memory and damaged-shard errors into one-line UserErrors.

  A damaged shard is named by the pipeline itself; a record that reads but
  does not decode is found by verify (naming its shard and Id).
  """
  try:
    yield
  except tf.errors.ResourceExhaustedError:
    raise cli.UserError(
        f'out of memory at --batch_size={config.batch_size} and '
        f'--image_size={cli.size_text(config.image_size)}; lower '
        '--batch_size '
        f'(e.g. {max(config.batch_size // 2, 1)}) or --image_size') from None
  except tf.errors.OpError as e:
    user_error = (input_errors.as_user_error(e) or
                  verify.damaged_record_error(manifest, e))
    if user_error is None:
      raise
    raise user_error from None


def _finish(model, config: Config, settings: Resolved,
            manifest: records.Manifest, resumed_from_epoch: int,
            seconds: float, exported_epoch: int, steps: int,
            head_scores: Optional[dict] = None) -> dict:
  """Scores the whole val split once, tunes thresholds, exports, summarises.

  The model holds the weights of exported_epoch (the best, or the last).
  head_scores: the head phase's validation scores, if it ran in this call.
  """
  logging.info('scoring all %d val posters, tuning thresholds',
               settings.val_examples)
  with _user_errors(config, manifest):
    labels, probabilities = inputs.predict_split(model, config, manifest,
                                                 'val')
  logging.info('scored %d val posters', len(labels))
  val = metrics.summary_scores(labels, probabilities)  # exact, as evaluate
  thresholds = export.tune_thresholds(labels, probabilities)
  val['f1_macro_tuned'] = float(np.mean(
      metrics.f1_per_genre(labels, probabilities, thresholds.values)))
  logging.info('tuned thresholds for %d genres (%d+ val positives); the '
               'others keep %g', len(thresholds.tuned_genres),
               thresholds.min_positives, export.DEFAULT_THRESHOLD)
  summary = {
      'val': val,
      'steps': steps,
      'epochs': config.epochs,
      'exported_epoch': exported_epoch,
      'steps_per_epoch': settings.steps_per_epoch,
      'resumed_from_epoch': resumed_from_epoch,
      'train_seconds': round(seconds, 1),
      'precision': settings.precision,
      'export_dir': settings.export_dir or None,
  }
  if head_scores is not None:
    summary['head_phase'] = head_scores
  if settings.export_dir:
    try:
      export.export_model(model, settings.export_dir,
                          image_size=config.image_size, thresholds=thresholds,
                          resize_on=config.resize_on,
                          info={'val_metrics': val, 'model': config.model,
                                'epoch': exported_epoch,
                                'config': _config_dict(config)})
    except (cli.UserError, OSError) as e:
      # backup/ is still there (finish_run comes after the summary).
      raise cli.UserError(f'{e}; the training is kept: start the same '
                          'command again to export without training again'
                          ) from None
  hparams_dashboard.write_final_metrics(settings.run_dir, val,
                                        step=config.epochs - 1)
  files.write_atomically(os.path.join(settings.run_dir, 'summary.json'),
                         json.dumps(summary, indent=2, sort_keys=True) + '\n')
  checkpoints.finish_run(settings.run_dir)
  _log_summary(summary, settings, config.records)
  return summary


def _log_summary(summary: dict, settings: Resolved, records_dir: str) -> None:
  """The result in a few lines, and commands to look further (as printed)."""
  val = summary['val']
  logging.info(
      'done: %d steps; epoch %d of %d, scored exactly on the whole val split '
      '(as posternet.evaluate): ROC-AUC %.3f, macro AP %.3f, precision@3 '
      '%.3f, F1 micro %.3f, binary cross-entropy %.4f', summary['steps'],
      summary['exported_epoch'], summary['epochs'], val['roc_auc'],
      val['average_precision'], val['precision_at_3'], val['f1_micro'],
      val['loss'])
  logging.info('TensorBoard: %s', console.tensorboard_hint(settings.run_dir))
  if settings.export_dir:
    logging.info('exported model: %s; per genre: %s', settings.export_dir,
                 console.evaluate_hint(settings.export_dir, records_dir))


# --- The run folder. ---


def _config_dict(config: Config) -> dict:
  """config.json's 'config': the settings tree as one flat row, by flag."""
  return settings_lib.flat(config)


def _write_run_config(folder: str, config: Config, settings: Resolved,
                      flags_text: Optional[str]) -> None:
  """config.json (settings as resolved) and flags.txt (to repeat the run)."""
  document = {'config': _config_dict(config),
              'resolved': dataclasses.asdict(settings),
              'tensorflow': tf.__version__, 'keras': keras.__version__}
  try:  # the first write into the run folder: a read-only one fails here
    files.write_atomically(os.path.join(folder, 'config.json'),
                           json.dumps(document, indent=2, sort_keys=True)
                           + '\n')
    if flags_text is not None:
      files.write_atomically(os.path.join(folder, 'flags.txt'), flags_text)
  except tf.errors.OpError as e:
    raise cli.UserError(f'cannot write in the run folder {folder} '
                        f'({cli.tf_message(e)}); give a writable --logdir'
                        ) from None


# --- Main. ---


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  values = flags.FLAGS
  if not values.records:
    raise app.UsageError('--records is required: a folder made by '
                         '`make records`')
  # The flags go to the run folder (flags.txt), not to the console.
  run(train_config.config_from_flags(values),
      flags_text=train_config.flags_text(values))


def entry():
  """The `posternet-train` console script and `python -m posternet.train`."""
  train_config.define_flags()
  cli.run(main)


if __name__ == '__main__':
  entry()
