"""Hardware-dependent choices: precision, XLA and the distribution strategy.

Each choice is a pure function of what was detected (GPUs and their compute
capability, the CPU's flags) and comes with a one-line reason, which the
trainer logs and writes into config.json. `resolve` makes all three for this
machine; the trainer and the benchmark both call it, so they train alike.
"""

import dataclasses
import os
from typing import Sequence, Set, Tuple

import tensorflow as tf

from posternet import cli
from posternet.train import multi_worker
PRECISIONS = ('auto', 'float32', 'mixed_float16', 'mixed_bfloat16')
JIT_COMPILE = ('auto', 'true', 'false')
STRATEGIES = ('auto', 'default', 'mirrored', 'multi_worker')
# --resize_on: device means pipeline.make_dataset(pad_to_box=True).
RESIZE_ON = ('auto', 'device', 'host')
CPU_BF16_FLAGS = ('amx_bf16', 'avx512_bf16')
# What --precision=auto resolves to, whatever the hardware: runs the test
# suite (and any command) under either precision on one machine.
PRECISION_ENV = 'POSTERNET_PRECISION'


@dataclasses.dataclass(frozen=True)
class Choices:
  """The hardware-dependent settings of a run, each with its reason."""
  precision: str            # a Keras dtype policy name
  precision_reason: str
  jit_compile: bool         # XLA-compile the train step
  jit_compile_reason: str
  strategy: str             # 'default', 'mirrored' or 'multi_worker'
  strategy_reason: str
  resize_on: str            # 'device' or 'host'
  resize_on_reason: str
  num_gpus: int


def resolve(precision: str = 'auto', jit_compile: str = 'auto',
            strategy: str = 'auto', resize_on: str = 'auto') -> Choices:
  """The choices for this machine, from the requested values ('auto' or one).

  Raises:
    cli.UserError: $POSTERNET_PRECISION names no policy.
  """
  capabilities = gpu_compute_capabilities()
  policy, policy_why = precision_here(precision)
  jit, jit_why = choose_jit_compile(jit_compile, bool(capabilities))
  distribute, distribute_why = choose_strategy(strategy, len(capabilities))
  resize, resize_why = choose_resize_on(resize_on, bool(capabilities))
  return Choices(precision=policy, precision_reason=policy_why,
                 jit_compile=jit, jit_compile_reason=jit_why,
                 strategy=distribute, strategy_reason=distribute_why,
                 resize_on=resize, resize_on_reason=resize_why,
                 num_gpus=len(capabilities))


def choose_precision(requested: str, gpu_compute_capabilities: Sequence,
                     cpu_flags: Set[str]) -> Tuple[str, str]:
  """The Keras dtype policy to train with, and why.

  Args:
    requested: --precision: 'auto' or a policy name.
    gpu_compute_capabilities: one (major, minor) per visible GPU, or None
      where unknown; empty when there is no GPU.
    cpu_flags: the flags of /proc/cpuinfo.

  Returns:
    (policy name, one-line reason).
  """
  if requested != 'auto':
    return requested, 'set by --precision'
  if gpu_compute_capabilities:
    known = [cc for cc in gpu_compute_capabilities if cc]
    if known and min(known) >= (8, 0):
      return 'mixed_bfloat16', (
          f'GPU compute capability {min(known)[0]}.{min(known)[1]} >= 8.0: '
          'bfloat16 tensor cores, float32 range, no loss scaling')
    return 'mixed_float16', ('GPU before compute capability 8.0 (or unknown): '
                             'float16 tensor cores, with loss scaling')
  found = sorted(set(CPU_BF16_FLAGS) & set(cpu_flags))
  if found:
    return 'mixed_bfloat16', f'CPU has {", ".join(found)}: native bfloat16 math'
  return 'float32', ('CPU without amx_bf16 or avx512_bf16: bfloat16 would be '
                     'emulated, slower than float32')


def precision_here(requested: str) -> Tuple[str, str]:
  """choose_precision for this machine; $POSTERNET_PRECISION overrides auto.

  Raises:
    cli.UserError: the variable names no policy.
  """
  forced = os.environ.get(PRECISION_ENV)
  if requested == 'auto' and forced:
    if forced not in PRECISIONS[1:]:
      raise cli.UserError(f'{PRECISION_ENV}={forced}: choose one of '
                          f'{", ".join(PRECISIONS[1:])}')
    return forced, f'set by {PRECISION_ENV}'
  return choose_precision(requested, gpu_compute_capabilities(), cpu_flags())


def choose_jit_compile(requested: str, has_gpu: bool) -> Tuple[bool, str]:
  """Whether to XLA-compile the train step, and why."""
  if requested in ('true', 'false'):
    return requested == 'true', 'set by --jit_compile'
  if has_gpu:
    return True, 'GPU: XLA fuses ops'
  return False, 'CPU: XLA made seed_cnn 15x slower on CPUs (BUILD_NOTES.md)'


def choose_resize_on(requested: str, has_gpu: bool) -> Tuple[str, str]:
  """Where posters are resized, 'device' or 'host', and why."""
  if requested != 'auto':
    return requested, 'set by --resize_on'
  if has_gpu:
    return 'device', 'GPU: the host only decodes, the GPU crops and resizes'
  return 'host', ('no GPU: tf.data resizes on the CPU beside the training '
                  'step (on the device the CPU does it inside the step: '
                  'make demo ~20 % more CPU per poster, BUILD_NOTES.md)')


def choose_strategy(requested: str, num_gpus: int) -> Tuple[str, str]:
  """'default' or 'mirrored', and why."""
  if requested != 'auto':
    return requested, 'set by --strategy'
  if num_gpus > 1:
    return 'mirrored', f'{num_gpus} GPUs: one replica per GPU'
  return 'default', 'one device'


def cpu_flags(path: str = '/proc/cpuinfo') -> Set[str]:
  """The CPU's feature flags (empty where /proc/cpuinfo does not exist)."""
  try:
    with open(path) as f:
      for line in f:
        if line.startswith('flags'):
          return set(line.split(':', 1)[1].split())
  except OSError:
    pass
  return set()


def gpu_compute_capabilities() -> list:
  """(major, minor) or None for each GPU TensorFlow sees."""
  capabilities = []
  for gpu in tf.config.list_physical_devices('GPU'):
    details = tf.config.experimental.get_device_details(gpu)
    capabilities.append(details.get('compute_capability'))
  return capabilities


def make_strategy(name: str) -> tf.distribute.Strategy:
  """The tf.distribute strategy called `name`."""
  if name == 'multi_worker':
    # The cluster from TF_CONFIG; one replica per worker.
    return multi_worker.make_strategy()
  if name == 'mirrored':
    return tf.distribute.MirroredStrategy()
  return tf.distribute.get_strategy()
