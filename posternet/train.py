r"""Trains a poster-genre model on a records folder, streaming it with tf.data.

  python -m posternet.train --flagfile=configs/seed.cfg
  python -m posternet.train --flagfile=configs/demo.cfg

A run lives in --logdir/<run_name>/:
  config.json         the resolved settings (precision chosen and why, ...)
  flags.txt           the flags, as a flagfile that repeats the run
  train/ validation/  TensorBoard event files
  history.csv         one row of metrics per epoch
  checkpoints/        epoch-NNNN.keras, the model after each epoch (atomic)
  backup/             the resume state while a run is unfinished
  summary.json        final validation metrics, steps, throughput
  export/             the exported model (unless --export_dir says elsewhere)

A run that was killed (even with kill -9) continues from its last finished
epoch when started again with the same flags, and ends after the same number
of steps. Starting a finished run again starts it over.

This module is the flags and `main`; the work is `run(Config)`, which tests
call directly.
"""

# (A comment, not the docstring: the docstring is the command's --help.)
# What a run builds on has a module each: hardware (precision, XLA,
# strategy), models (compiled_model), metrics, checkpoints (resume state and
# epoch checkpoints), dashboards (TensorBoard), input_pipeline and
# data_service (the input). What stays is the run and its flags, over ~400
# lines by: the flag list (_define_flags, ~90 lines); Throughput, the run's
# own per-epoch report (its natural home, dashboards, is itself over size
# and changing in parallel); and the run's input wiring
# (_distributed_datasets, predict_split, warn_if_upscaled), which moves
# once the records handle (issue 10) has settled how the manifest is passed.

import contextlib
import dataclasses
import functools
import json
import os
import sys
import time
from typing import Optional, Sequence, Tuple

from absl import app
from absl import flags
from absl import logging
import keras
import numpy as np
import tensorflow as tf

from posternet import augment as augment_lib
from posternet import checkpoints
from posternet import cli
from posternet import dashboards
from posternet import data_service
from posternet import export
from posternet import files
from posternet import hardware
from posternet import hparams_dashboard
from posternet import input_pipeline
from posternet import metrics
from posternet import models
from posternet import multi_worker
from posternet import optim
from posternet import records
from posternet import remote
from posternet import step_scalars


@dataclasses.dataclass(frozen=True)
class Config:
  """Everything a training run needs, as plain values.

  One field per flag of _define_flags, in the order flags.txt lists them
  (FLAG_NAMES is made from these fields; a test checks the two agree).
  """
  records: str
  logdir: str = 'runs'
  run_name: Optional[str] = None        # default: <model>_<H>x<W>
  model: str = 'seed_cnn'
  image_size: Tuple[int, int] = (400, 400)
  model_size: Optional[Tuple[int, int]] = None  # default: image_size
  batch_size: int = 64
  epochs: int = 10
  learning_rate: float = 1e-3
  export_dir: Optional[str] = None      # default: <run>/export; '' = none
  precision: str = 'auto'
  jit_compile: str = 'auto'             # 'auto', 'true' or 'false'
  steps_per_execution: int = 1
  strategy: str = 'auto'
  resume: bool = True
  shuffle_buffer: int = 1024
  cache: bool = False
  threadpool_size: Optional[int] = None
  ignore_errors: bool = False
  init_weights: Optional[str] = None
  seed: int = 0
  keep_checkpoints: int = 2
  verbose: str = 'auto'                 # model.fit's progress output
  log_every_steps: int = 20             # train scalars every N steps; 0: off
  dashboard_every_epochs: int = 1       # per-genre and poster grid; 0: off
  profile_steps: Optional[Tuple[int, int]] = None  # (first, last) traced
  data_service: Optional[str] = None    # grpc://HOST:PORT: train input there
  data_service_mode: str = 'parallel_epochs'
  data_service_job: Optional[str] = None  # shared by trainers that give it
  # How the weights are fitted (posternet.optim.Recipe's fields).
  optimizer: str = 'adam'
  weight_decay: float = 0.0
  schedule: str = 'constant'
  warmup_epochs: float = 0.0
  loss: str = 'bce'
  label_smoothing: float = 0.0
  # Training augmentation (posternet.augment): ops, crop area, colour.
  augment: str = 'none'
  crop_area: float = 0.35
  color_jitter: float = 0.2
  export_epoch: str = 'best'            # 'best' (val ROC-AUC) or 'last'

  def recipe(self) -> optim.Recipe:
    """The optimizer, schedule and loss settings."""
    return optim.Recipe(**{field.name: getattr(self, field.name)
                           for field in dataclasses.fields(optim.Recipe)
                           if hasattr(self, field.name)})

  def augmentation(self) -> Optional[augment_lib.Augment]:
    """The training augmentation, or None.

    Raises:
      cli.UserError: an unknown op or a value out of range.
    """
    try:
      ops = augment_lib.parse_ops(self.augment)
      if not ops:
        return None
      return augment_lib.Augment(ops=ops, crop_area=(self.crop_area, 1.0),
                             color=self.color_jitter, seed=self.seed)
    except ValueError as e:
      raise cli.UserError(f'--augment={self.augment}: {e}') from None


EXPORT_EPOCHS = ('best', 'last')

# The flags, in the order flags.txt lists them: Config's fields.
FLAG_NAMES = tuple(field.name for field in dataclasses.fields(Config))


@dataclasses.dataclass(frozen=True)
class Resolved(hardware.Choices):
  """A run's settings as resolved: config.json's 'resolved'.

  The hardware choices (each with its reason), then what follows from the
  records and the run folder.
  """
  steps_per_epoch: int           # train batches per epoch
  val_steps: int                 # val batches per validation pass
  val_examples: int
  run_dir: str                   # this worker's run folder
  chief_backup: Optional[str]    # multi-worker: the chief's backup/ to resume
  export_dir: str                # '': no export

  # The settings, besides Config's fields, that tell runs apart in the
  # HParams dashboard; the rest say where files go or why.
  HPARAMS = ('precision', 'jit_compile', 'strategy', 'num_gpus',
             'steps_per_epoch')

  def hparams(self) -> dict:
    """The HParams dashboard's resolved values (HPARAMS), by name."""
    return {name: getattr(self, name) for name in self.HPARAMS}


# --- Callbacks. ---


class Throughput(keras.callbacks.Callback):
  """Adds images_per_sec (training part of the epoch) to the epoch's logs.

  Listed before the TensorBoard and CSV callbacks, so they record it. Early
  in the first epoch it also warns when an epoch will take an hour or more
  on this machine: a user who picked too big a model or size for the
  hardware learns it in seconds, not after the first epoch.
  """

  # Steps timed for the estimate, after the first (which traces the model).
  ESTIMATE_STEPS = 5
  WARN_EPOCH_SECONDS = 3600

  def __init__(self, images_per_epoch: int, steps_per_epoch: int):
    super().__init__()
    self.images_per_epoch = images_per_epoch
    self.steps_per_epoch = steps_per_epoch
    self._start = self._train_end = None
    self._estimate_from = None
    self._estimated = False

  def on_epoch_begin(self, epoch, logs=None):
    self._start, self._train_end = time.perf_counter(), None

  def on_train_batch_end(self, batch, logs=None):
    if self._estimated:
      return
    if self._estimate_from is None:
      self._estimate_from = (batch, time.perf_counter())
      return
    first, start = self._estimate_from
    if batch - first >= self.ESTIMATE_STEPS:
      self._estimated = True
      step_seconds = (time.perf_counter() - start) / (batch - first)
      self._warn_if_slow(step_seconds)

  def _warn_if_slow(self, step_seconds: float) -> None:
    epoch_seconds = step_seconds * self.steps_per_epoch
    if epoch_seconds >= self.WARN_EPOCH_SECONDS:
      logging.warning(
          'at %.1f s a step, one epoch of %d steps will take about %.1f hours '
          'on this machine; a smaller --model_size or model trains faster',
          step_seconds, self.steps_per_epoch, epoch_seconds / 3600)

  def on_test_begin(self, logs=None):
    self._train_end = self._train_end or time.perf_counter()

  def on_epoch_end(self, epoch, logs=None):
    seconds = (self._train_end or time.perf_counter()) - self._start
    rate = self.images_per_epoch / max(seconds, 1e-9)
    if logs is not None:
      logs['images_per_sec'] = rate
    logging.info('epoch %d: %.1f images/s (%.1f s of training)%s', epoch + 1,
                 rate, seconds, '' if epoch else ', first epoch with tracing')


# --- The run. ---


def run_dir(config: Config) -> str:
  """The run's folder: --logdir/--run_name (default <model>_<H>x<W>)."""
  name = config.run_name or (
      f'{config.model}_{config.image_size[0]}x{config.image_size[1]}')
  return os.path.join(config.logdir, name)


def check_config(config: Config) -> None:
  """Value checks the flags cannot express; cli.UserError on a bad value."""
  positive = ('batch_size', 'epochs', 'steps_per_execution', 'keep_checkpoints')
  for name in positive:
    if getattr(config, name) < 1:
      raise cli.UserError(f'--{name} must be at least 1, not '
                          f'{getattr(config, name)}')
  for name, problem in optim.check(config.recipe()):
    raise cli.UserError(f'--{name}={getattr(config, name)}: {problem}')
  config.augmentation()  # raises on a bad --augment
  if config.export_epoch not in EXPORT_EPOCHS:
    raise cli.UserError(f'--export_epoch={config.export_epoch}: choose one '
                        f'of {", ".join(EXPORT_EPOCHS)}')
  choices = {'precision': hardware.PRECISIONS,
             'strategy': hardware.STRATEGIES,
             'jit_compile': hardware.JIT_COMPILE}
  for name, allowed in choices.items():
    if getattr(config, name) not in allowed:
      raise cli.UserError(f'--{name}={getattr(config, name)}: choose one of '
                          f'{", ".join(allowed)}')
  for name in ('log_every_steps', 'dashboard_every_epochs'):
    if getattr(config, name) < 0:
      raise cli.UserError(f'--{name} must be at least 0, not '
                          f'{getattr(config, name)}')
  models.check_input(config.model, config.image_size, config.model_size)
  remote.check_path(config.logdir, '--logdir')
  export_to = config.logdir if config.export_dir is None else config.export_dir
  if export_to and remote.scheme(export_to):
    # export.py writes with local file calls: a URL would become a local path.
    raise cli.UserError(f'the export is written to a local folder, not '
                        f'{export_to}; give --export_dir=LOCAL_FOLDER (or '
                        '--export_dir= for none)')
  if config.data_service:
    data_service.parse_address(config.data_service)
    data_service.processing_mode(config.data_service_mode)


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
      take, unusable --init_weights, out of memory, a damaged shard.
  """
  check_config(config)
  manifest = records.Manifest.read(config.records)  # opened once, passed down
  warn_if_upscaled(manifest, config.image_size)
  if config.data_service:
    # A wrong address fails here within seconds; TF's client would retry.
    data_service.probe_dispatcher(config.data_service)
  choices = hardware.resolve(config.precision, config.jit_compile,
                             config.strategy)
  for key in ('precision', 'jit_compile', 'strategy'):
    logging.info('%s: %s (%s)', key, getattr(choices, key),
                 getattr(choices, f'{key}_reason'))
  # Multi-worker: TF_CONFIG checked first; only the chief writes run_dir().
  task = (multi_worker.task_from_tf_config()
          if choices.strategy == 'multi_worker' else None)
  folder = multi_worker.worker_folder(run_dir(config), task)
  checkpoints.prepare_run_dir(folder, config.resume)
  settings = Resolved(
      **dataclasses.asdict(choices),
      steps_per_epoch=manifest.steps_per_epoch('train', config.batch_size),
      val_steps=manifest.steps_per_epoch('val', config.batch_size),
      val_examples=manifest.num_examples('val'),
      run_dir=folder,
      chief_backup=(os.path.join(run_dir(config), 'backup')
                    if folder != run_dir(config) else None),
      export_dir=(config.export_dir
                  if config.export_dir is not None and folder == run_dir(config)
                  else os.path.join(folder, 'export')))
  _write_run_config(folder, config, settings, flags_text)
  previous_policy = keras.mixed_precision.global_policy()
  keras.mixed_precision.set_global_policy(settings.precision)
  try:
    summary = _train_and_export(config, settings, manifest)
  finally:
    keras.mixed_precision.set_global_policy(previous_policy)
  # A non-chief's outputs were only its share of the work: delete them.
  multi_worker.remove_worker_folder(folder, task)
  return summary


def warn_if_upscaled(manifest: records.Manifest,
                     image_size: Sequence[int]) -> bool:
  """Warns, in one line, when the host must enlarge posters to image_size.

  Upscaling costs a resize per poster and adds no detail (configs/seed.cfg on
  128x128 records would train at 400x400 without a word otherwise).

  Returns:
    Whether it warned.
  """
  (min_h, min_w), _ = manifest.stored_size_range('train')
  if min_h >= image_size[0] and min_w >= image_size[1]:
    return False
  stored = (f'are stored at {min_h}x{min_w}' if manifest.store_size
            else f'hold posters as small as {min_h}x{min_w}')
  logging.warning(
      'the records %s, smaller than --image_size=%s: the host upscales them, '
      'which costs time and adds no detail; convert with --store_size=%s, or '
      'train at a smaller --image_size', stored, _size_text(image_size),
      _size_text(image_size))
  return True


def _train_and_export(config: Config, settings: Resolved,
                      manifest: records.Manifest) -> dict:
  """The body of run(), under the chosen precision policy."""
  keras.utils.set_random_seed(config.seed)
  strategy = hardware.make_strategy(settings.strategy)
  with strategy.scope():
    model = models.compiled_model(
        config.model, config.image_size, model_size=config.model_size,
        init_weights=config.init_weights,
        optimizer=optim.make_optimizer(config.recipe(),
                                       settings.steps_per_epoch,
                                       config.epochs),
        loss=optim.make_loss(config.recipe()),
        jit_compile=settings.jit_compile,
        steps_per_execution=config.steps_per_execution)
  logging.info('%s: %s parameters, input %s, %d replica(s)', model.name,
               f'{model.count_params():,}', model.input_shape[1:],
               strategy.num_replicas_in_sync)
  clock = step_scalars.InputClock()  # times the train pipeline's get_next
  train_data, val_data = _distributed_datasets(config, strategy, clock,
                                               manifest)
  callbacks = _callbacks(config, settings, clock, manifest)
  start = time.perf_counter()
  with _user_errors(config):
    # shuffle=False: the pipeline shuffles. validation_steps: the val
    # split's batches, so Keras need not run into its end to find it.
    model.fit(train_data, validation_data=val_data, epochs=config.epochs,
              steps_per_epoch=settings.steps_per_epoch,
              validation_steps=settings.val_steps, shuffle=False,
              callbacks=callbacks, verbose=_fit_verbosity(config.verbose))
  backup = next(c for c in callbacks if isinstance(c, checkpoints.Backup))
  # Optimizer updates applied (under mixed_float16, steps skipped for an
  # overflowing loss scale are not counted), before the best epoch's weights
  # (and optimizer state) are loaded back.
  steps = int(model.optimizer.iterations.numpy())
  exported_epoch = _choose_export_epoch(model, config, callbacks)
  summary = _finish(model, config, settings, manifest,
                    backup.resumed_from_epoch, time.perf_counter() - start,
                    exported_epoch, steps)
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
                 record['epoch'], config.epochs, record['monitor'],
                 record['value'])
    return record['epoch']
  return config.epochs


def _fit_verbosity(verbose):
  """model.fit's verbose: 'auto' is a progress bar on a terminal only.

  Elsewhere (a log file, CI) the bar's redraws have no newline, and the
  epoch's log lines would be glued to its end: one line per epoch instead.
  """
  if verbose != 'auto':
    return verbose
  return 1 if sys.stdout.isatty() else 2


def _pipeline_options(config: Config) -> dict:
  """The input pipeline's keyword options, from the config."""
  return {'shuffle_buffer': config.shuffle_buffer, 'cache': config.cache,
          'threadpool_size': config.threadpool_size,
          'ignore_errors': config.ignore_errors, 'seed': config.seed,
          # Used by the train split only (make_dataset ignores it elsewhere).
          'augment': config.augmentation()}


def _distributed_datasets(config: Config, strategy,
                          clock: step_scalars.InputClock,
                          manifest: records.Manifest) -> tuple:
  """(train, val) datasets, built per input pipeline with its input context.

  The clock times the training steps' waits for input (the dashboards).
  """

  def dataset_fn(split):
    return lambda context: input_pipeline.make_dataset(
        manifest, split, config.batch_size, config.image_size, context,
        **_pipeline_options(config))

  def service_fn(context):
    # The tf.data service's workers read and decode; it splits the work, so
    # no per-worker file shard here, only this replica's batch size.
    return data_service.make_dataset(
        manifest, 'train',
        input_pipeline.per_replica_batch_size(config.batch_size, context),
        config.image_size, config.data_service, config.data_service_mode,
        config.data_service_job, **_pipeline_options(config))

  train_fn = service_fn if config.data_service else dataset_fn('train')
  return (strategy.distribute_datasets_from_function(
              lambda context: clock.wrap(train_fn(context))),
          strategy.distribute_datasets_from_function(dataset_fn('val')))


def _callbacks(config: Config, settings: Resolved,
               clock: step_scalars.InputClock,
               manifest: records.Manifest) -> list:
  """The epoch's callbacks, in the order they run.

  Throughput first, so the loggers after it record images_per_sec (and the
  dashboards' input_wait_share, for the CSV log). The
  backup last: an epoch the backup counts as done is already in the logs
  and checkpoints (a kill before it only repeats that epoch).
  """
  folder = settings.run_dir
  return [
      Throughput(settings.steps_per_epoch * config.batch_size,
                 settings.steps_per_epoch),
      *dashboards.make_callbacks(
          folder, clock, manifest=manifest,
          image_size=config.image_size, batch_size=config.batch_size,
          hparams=hparams_dashboard.hparams_values(_config_dict(config),
                                                   settings.hparams()),
          metric_names=[metric.name for metric in metrics.make_metrics()],
          log_every_steps=config.log_every_steps,
          dashboard_every_epochs=config.dashboard_every_epochs,
          profile_steps=config.profile_steps),
      keras.callbacks.CSVLogger(os.path.join(folder, 'history.csv'),
                                append=True),
      checkpoints.EpochCheckpoint(os.path.join(folder, 'checkpoints'),
                                  config.keep_checkpoints),
      checkpoints.BestEpoch(os.path.join(folder, 'best')),
      checkpoints.Backup(os.path.join(folder, 'backup'),
                         restore_dir=settings.chief_backup),
  ]


@contextlib.contextmanager
def _user_errors(config: Config):
  """Turns out-of-memory and damaged-shard errors into one-line UserErrors."""
  try:
    yield
  except tf.errors.ResourceExhaustedError:
    raise cli.UserError(
        f'out of memory at --batch_size={config.batch_size} and '
        f'--image_size={_size_text(config.image_size)}; lower --batch_size '
        f'(e.g. {max(config.batch_size // 2, 1)}) or --image_size') from None
  except tf.errors.OpError as e:
    user_error = input_pipeline.as_user_error(e)
    if user_error is None:
      raise
    raise user_error from None


def _finish(model, config: Config, settings: Resolved,
            manifest: records.Manifest, resumed_from_epoch: int,
            seconds: float, exported_epoch: int, steps: int) -> dict:
  """Scores the whole val split once, tunes thresholds, exports, summarises.

  The model holds the weights of exported_epoch (the best, or the last).
  """
  logging.info('scoring all %d val posters, tuning thresholds',
               settings.val_examples)
  with _user_errors(config):
    labels, probabilities = predict_split(model, config, manifest, 'val')
  logging.info('scored %d val posters', len(labels))
  val = metrics.evaluate_arrays(labels, probabilities)
  thresholds = export.tune_thresholds(labels, probabilities)
  val['f1_macro_tuned'] = float(np.mean(
      export.f1_scores(labels, probabilities, thresholds.values)))
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
  if settings.export_dir:
    export.export_model(model, settings.export_dir,
                        image_size=config.image_size, thresholds=thresholds,
                        info={'val_metrics': val, 'model': config.model,
                              'epoch': exported_epoch,
                              'config': _config_dict(config)})
  hparams_dashboard.write_final_metrics(settings.run_dir, val,
                                        step=config.epochs - 1)
  files.write_atomically(os.path.join(settings.run_dir, 'summary.json'),
                         json.dumps(summary, indent=2, sort_keys=True) + '\n')
  _log_summary(summary, settings)
  return summary


def predict_split(model: keras.Model, config: Config,
                  manifest: records.Manifest, split: str) -> tuple:
  """(labels, probabilities) for every poster of a split, in one pass."""
  dataset = input_pipeline.make_dataset(
      manifest, split, config.batch_size, config.image_size,
      **_pipeline_options(config))
  forward = tf.function(lambda images: model(images, training=False))
  labels, probabilities = [], []
  for images, batch_labels in dataset:
    probabilities.append(tf.cast(forward(images), tf.float32).numpy())
    labels.append(batch_labels.numpy())
  return np.concatenate(labels), np.concatenate(probabilities)


def _log_summary(summary: dict, settings: Resolved) -> None:
  val = summary['val']
  logging.info(
      'done: %d steps; val ROC-AUC %.3f, PR-AUC %.3f, F1 micro %.3f, '
      'precision@3 %.3f, loss %.4f', summary['steps'], val['roc_auc'],
      val['pr_auc'], val['f1_micro'], val['precision_at_3'], val['loss'])
  logging.info('TensorBoard: tensorboard --logdir %s', settings.run_dir)
  if settings.export_dir:
    logging.info('exported model: %s', settings.export_dir)


# --- The run folder. ---


def _config_dict(config: Config) -> dict:
  return dataclasses.asdict(config)


def _write_run_config(folder: str, config: Config, settings: Resolved,
                      flags_text: Optional[str]) -> None:
  """config.json (settings as resolved) and flags.txt (to repeat the run)."""
  document = {'config': _config_dict(config),
              'resolved': dataclasses.asdict(settings),
              'tensorflow': tf.__version__, 'keras': keras.__version__}
  files.write_atomically(os.path.join(folder, 'config.json'),
                         json.dumps(document, indent=2, sort_keys=True) + '\n')
  if flags_text is not None:
    files.write_atomically(os.path.join(folder, 'flags.txt'), flags_text)


# --- Flags and main. ---


def _size_text(size: Sequence[int]) -> str:
  return f'{size[0]}x{size[1]}'


def _define_flags(values: flags.FlagValues = flags.FLAGS) -> None:
  """Defines the command's flags (only when run as a command).

  One flag per field of Config, with its help text: a flag list, one call
  each, hence longer than ~50 lines. Tests and tools import run(); importing
  must not claim flag names (--model, --seed, ...) that other entry points,
  such as posternet.predict, define. Tests define them into a FlagValues of
  their own (`values`).
  """
  string, integer, enum, boolean, real = (
      functools.partial(define, flag_values=values) for define in (
          flags.DEFINE_string, flags.DEFINE_integer, flags.DEFINE_enum,
          flags.DEFINE_bool, flags.DEFINE_float))
  string('records', None, 'Records folder made by `make records` (shards and '
         'manifest.json).')
  string('logdir', 'runs', 'Parent folder of the run folders (the '
         'TensorBoard logdir).')
  string('run_name', None, 'The run folder under --logdir; default '
         '<model>_<H>x<W>. The same name resumes an unfinished run.')
  enum('model', 'seed_cnn', sorted(models.MODELS), 'The network: ' + '; '.join(
      f'{name}: {spec.description}' for name, spec in
      sorted(models.MODELS.items())) + '.')
  string('image_size', '400', 'Poster size the pipeline delivers: 400 or HxW. '
         'Records stored at this size (make records --store_size) are not '
         'resized on the host.')
  string('model_size', None, 'Size the network is built at, HxW; default '
         '--image_size. When different, the model resizes on the device.')
  integer('batch_size', 64, 'Global batch size (split among replicas).')
  integer('epochs', 10, 'Passes over the train split, of train posters // '
          'batch_size steps each.')
  real('learning_rate', 1e-3, 'Adam learning rate.')
  string('export_dir', None, 'Where the trained model is exported '
         '(model.keras, saved_model/, posternet.json); default <run '
         'folder>/export, "" for none.')
  enum('precision', 'auto', hardware.PRECISIONS, 'Keras dtype policy. auto: '
       'mixed_bfloat16 on GPUs of compute capability >= 8.0, mixed_float16 '
       'on older GPUs, mixed_bfloat16 on CPUs with amx_bf16 or avx512_bf16, '
       'float32 otherwise.')
  enum('jit_compile', 'auto', hardware.JIT_COMPILE, 'XLA-compile the train '
       'step. auto: on with a GPU, off on CPUs (slower there).')
  integer('steps_per_execution', 1, 'Train steps per tf.function call (fewer '
          'Python round trips on fast accelerators).')
  enum('strategy', 'auto', hardware.STRATEGIES, 'tf.distribute strategy. '
       'auto: mirrored with several GPUs, else default. multi_worker: '
       'MultiWorkerMirroredStrategy over the cluster in the TF_CONFIG '
       'environment variable (run the same command on every worker; only '
       'the chief writes the run folder).')
  boolean('resume', True, 'Continue an unfinished run in the run folder from '
          'its last finished epoch; --noresume starts it over.')
  integer('shuffle_buffer', 1024, 'Training examples in the shuffle buffer '
          '(serialized records, not pixels).')
  boolean('cache', False, 'Keep decoded posters in RAM after the first epoch '
          '(only for data that fits).')
  integer('threadpool_size', None, 'A private tf.data thread pool of this '
          'size; default: TensorFlow\'s shared pool.')
  boolean('ignore_errors', False, 'Skip damaged records instead of stopping; '
          'every skip is logged.')
  string('init_weights', None, 'Weights to start from: a .keras or '
         '.weights.h5 of the same model and size; for efficientnetv2b0 also '
         'Keras\' backbone file (efficientnetv2-b0_notop.h5), or imagenet: '
         'that file from Keras\' cache, downloaded into it if missing.')
  integer('seed', 0, 'Seeds weight initialisation, dropout and the '
          'shuffles.')
  integer('keep_checkpoints', 2, 'How many of the latest epoch checkpoints '
          'to keep.')
  string('data_service', None, 'grpc://HOST:PORT of a tf.data service '
         'dispatcher (python -m posternet.data_service dispatcher): the '
         'training input is read and decoded by its workers. Validation '
         'stays local.')
  enum('data_service_mode', 'parallel_epochs', data_service.MODES,
       'parallel_epochs: every service worker streams its own shuffled '
       'passes (survives a lost worker); distributed_epoch: shard files are '
       'handed out so each pass has every poster exactly once (a lost '
       'worker must be replaced for the pass to end).')
  string('data_service_job', None, 'A job name: trainers that give the same '
         'one share one stream (each batch to one of them), e.g. the workers '
         'of a multi_worker run; new for each launch. Default: a job per '
         'trainer.')
  enum('verbose', 'auto', ('auto', '0', '1', '2'), 'model.fit output: 1 a '
       'progress bar, 2 one line per epoch, 0 none; auto: 1 on a terminal, '
       'else 2.')
  integer('log_every_steps', 20, 'TensorBoard train scalars (loss, metrics, '
          'learning rate, images/s, input-wait share) every this many steps; '
          '0: per epoch only.')
  integer('dashboard_every_epochs', 1, 'Per-genre ROC-AUC, support and PR '
          'curves, and the grid of validation posters with their top 3, '
          'every this many epochs; 0: never.')
  string('profile_steps', None, 'a,b: trace steps a to b (from 1) for '
         'TensorBoard\'s Profile dashboard (view it with the optional extra: '
         'pip install \'.[profile]\').')
  enum('optimizer', 'adam', optim.OPTIMIZERS, 'adam (the tutorial\'s) or '
       'adamw (decoupled --weight_decay).')
  real('weight_decay', 0.0, 'AdamW\'s decoupled weight decay (needs '
       '--optimizer=adamw).')
  enum('schedule', 'constant', optim.SCHEDULES, 'Learning rate over the run: '
       'constant (the tutorial\'s), or cosine: linear warm-up for '
       '--warmup_epochs, then cosine decay to 1%% of --learning_rate.')
  real('warmup_epochs', 0.0, 'Epochs of linear learning-rate warm-up from 0 '
       '(--schedule=cosine).')
  enum('loss', 'bce', optim.LOSSES, 'bce: binary cross-entropy (the '
       'tutorial\'s); focal: binary focal cross-entropy (gamma 2), which '
       'weighs easy negatives down.')
  real('label_smoothing', 0.0, 'Pulls the 0/1 targets towards 0.5 by this '
       'much.')
  string('augment', 'none', 'Training augmentation, comma-separated: crop '
         '(random resized crop in the poster\'s own shape), flip (left-'
         'right), color (brightness, contrast, saturation); none for none. '
         'On uint8 batches after decode and --cache, train split only.')
  real('crop_area', 0.35, 'The smallest share of a poster\'s area a random '
       'crop keeps (--augment=crop).')
  real('color_jitter', 0.2, 'Brightness, contrast and saturation vary by a '
       'factor in 1 +- this (--augment=color).')
  enum('export_epoch', 'best', EXPORT_EPOCHS, 'Which epoch\'s weights are '
       'scored, exported and summarised: best (highest validation ROC-AUC) '
       'or last.')


def config_from_flags(values) -> Config:
  """The Config that parsed flag values (flags.FLAGS) describe."""
  v = {name: values[name].value for name in FLAG_NAMES}
  v['image_size'] = cli.parse_size(v['image_size'], 'image_size')
  if v['model_size']:
    v['model_size'] = cli.parse_size(v['model_size'], 'model_size')
  if v['verbose'] != 'auto':
    v['verbose'] = int(v['verbose'])
  v['profile_steps'] = dashboards.parse_profile_steps(v['profile_steps'])
  return Config(**v)


def flags_text(values) -> str:
  """The command's flags as a flagfile that repeats the run."""
  return ''.join(f'{values[name].serialize()}\n' for name in FLAG_NAMES
                 if values[name].value is not None)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  values = flags.FLAGS
  if not values.records:
    raise app.UsageError('--records is required: a folder made by '
                         '`make records`')
  text = flags_text(values)
  logging.info('flags:\n%s', text)
  run(config_from_flags(values), flags_text=text)


def entry():
  """The `posternet-train` console script and `python -m posternet.train`."""
  _define_flags()
  cli.run(main)


if __name__ == '__main__':
  entry()
