"""The models: the tutorial's CNN and one stronger keras.applications network.

Every model takes the pipeline's uint8 posters [B, H, W, 3] and does the float
work itself, on the device: cast + Rescaling(1/255), a Resizing layer when the
network's input size differs from the pipeline's, the network, then
Dense(25, sigmoid) in float32 so the probabilities (and the loss) stay float32
under mixed precision. The host never materialises float pixels.

The resize rule: the pipeline delivers `image_size`; the network is built at
`model_size`, which defaults to the model's fixed native size if it has one,
else to `image_size`. A Resizing layer is added only when the two differ. Both
built-in networks accept any size at or above their minimum (seed_cnn's
Flatten makes its Dense layer depend on the size, EfficientNetV2 pools
globally), so by default they are built at the pipeline's size and never
resize. Pass a different model_size to keep resizing off the host, e.g.
records stored at 128×128, network at 224×224.

Models are built under the global Keras dtype policy; the trainer sets it
(mixed precision) before calling build_model. compiled_model adds what the
trainer trains with (optimizer, loss, metrics); the trainer and the prefetch
benchmark both build their model with it.
"""

import dataclasses
import os
import re
from typing import Callable, Optional, Sequence, Tuple

import keras
from keras import layers

from posternet import cli
from posternet import genres
from posternet import metrics

# ImageNet statistics the EfficientNetV2-B weights were trained with, applied
# after our Rescaling(1/255) (what its include_preprocessing=True would do).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_VARIANCE = (0.229**2, 0.224**2, 0.225**2)


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """How to build one named network.

  Attributes:
    body: (float [0, 1] image tensor, backbone_weights path or None) → the
      feature tensor that the 25-way output layer is put on.
    min_size: the smallest height/width the network can take.
    native_size: the network's fixed input size, or None if it takes any.
    backbone_weights: whether a plain `.h5` --init_weights file is the
      backbone's (keras.applications' own weights files), not a whole model's.
    description: one line for --help and error messages.
  """
  body: Callable
  min_size: int
  native_size: Optional[Tuple[int, int]] = None
  backbone_weights: bool = False
  description: str = ''


def _seed_cnn_body(x, backbone_weights=None):
  """The tutorial's CNN, layer for layer, up to its output layer.

  Keras defaults throughout, as in the tutorial: 'valid' padding, stride 1,
  pool stride = pool size, glorot_uniform kernels, zero biases.
  """
  del backbone_weights  # seed_cnn has no separate backbone
  for filters in (16, 32, 64, 64):
    x = layers.Conv2D(filters, (5, 5), activation='relu')(x)
    x = layers.MaxPooling2D(pool_size=(2, 2))(x)
    x = layers.Dropout(0.25)(x)
  x = layers.Flatten()(x)
  x = layers.Dense(128, activation='relu')(x)
  x = layers.Dropout(0.5)(x)
  x = layers.Dense(64, activation='relu')(x)
  return layers.Dropout(0.5)(x)


def _efficientnetv2b0_body(x, backbone_weights=None):
  """EfficientNetV2-B0 (keras.applications), global average pooled.

  include_preprocessing=False because the model already rescaled to [0, 1]:
  with it on, EfficientNetV2-B would apply its own Rescaling(1/255) a second
  time. Its ImageNet normalisation is added here instead, so a local copy of
  Keras' ImageNet weights file can be loaded with --init_weights.
  """
  x = layers.Normalization(mean=IMAGENET_MEAN, variance=IMAGENET_VARIANCE,
                           dtype='float32', name='imagenet_normalize')(x)
  backbone = keras.applications.EfficientNetV2B0(
      include_top=False, weights=backbone_weights,
      input_shape=tuple(x.shape[1:]), pooling='avg',
      include_preprocessing=False)
  x = backbone(x)
  return layers.Dropout(0.2, name='top_dropout')(x)  # as in its own top


def _small_cnn_body(x, backbone_weights=None):
  """Three strided 3×3 convolutions and global average pooling.

  Not the tutorial's model: a fast one for demos and smoke tests on CPUs.
  Global pooling makes it size-agnostic and quick to pick up what a genre
  looks like anywhere on the poster; seed_cnn's Flatten + Dropout(0.5) need
  many more steps before they rank genres better than chance.
  """
  del backbone_weights
  for filters in (32, 64, 128):
    x = layers.Conv2D(filters, (3, 3), strides=2, activation='relu')(x)
  return layers.GlobalAveragePooling2D()(x)


MODELS = {
    'seed_cnn': ModelSpec(
        body=_seed_cnn_body, min_size=76,
        description="the tutorial's CNN (3,790,457 parameters at 400x400)"),
    'efficientnetv2b0': ModelSpec(
        body=_efficientnetv2b0_body, min_size=32, backbone_weights=True,
        description='EfficientNetV2-B0 from keras.applications (weights=None)'),
    'small_cnn': ModelSpec(
        body=_small_cnn_body, min_size=16,
        description='a small, fast CNN for demos and smoke tests on CPUs'),
}


def build_model(name: str, image_size: Sequence[int], *,
                model_size: Optional[Sequence[int]] = None,
                init_weights: Optional[str] = None) -> keras.Model:
  """Builds a named model that takes uint8 posters of image_size.

  Args:
    name: a key of MODELS.
    image_size: (height, width) of the pipeline's uint8 posters.
    model_size: (height, width) the network itself is built at; default: its
      native size if fixed, else image_size. A Resizing layer bridges the two.
    init_weights: a local weights file to start from (never downloaded):
      `.keras` or `.weights.h5` holds a whole posternet model of the same
      architecture and size; another `.h5` file holds the backbone's weights
      (e.g. Keras' efficientnetv2-b0_notop.h5), for models with a backbone.

  Returns:
    An uncompiled keras.Model: uint8 [B, H, W, 3] → float32 [B, 25].

  Raises:
    cli.UserError: unknown name, a size the network cannot take, or an
      init_weights file that is missing or does not fit.
  """
  spec = _spec(name)
  image_size = _pair(image_size)
  model_size = check_input(name, image_size, model_size)
  whole_model_weights, backbone_weights = _split_weights(spec, init_weights)
  inputs = keras.Input((*image_size, 3), dtype='uint8', name='image')
  # float32: scaling and resizing are cheap and exact; the network's first
  # layer casts to the mixed compute dtype itself.
  x = layers.Rescaling(1 / 255, dtype='float32', name='rescale')(inputs)
  if model_size != image_size:
    x = layers.Resizing(*model_size, dtype='float32', name='resize')(x)
  x = _call_body(spec, x, backbone_weights)
  outputs = layers.Dense(genres.NUM_GENRES, activation='sigmoid',
                         dtype='float32', name='genres')(x)
  model = keras.Model(inputs, outputs, name=name)
  if whole_model_weights:
    load_weights(model, whole_model_weights)
  return model


def compiled_model(name: str, image_size: Sequence[int], *,
                   model_size: Optional[Sequence[int]] = None,
                   init_weights: Optional[str] = None,
                   learning_rate: float = 1e-3, jit_compile: bool = False,
                   steps_per_execution: int = 1) -> keras.Model:
  """build_model, compiled as the trainer trains it.

  Adam, binary cross-entropy (the tutorial's) and metrics.make_metrics().
  Call it under the distribution strategy's scope and the dtype policy the
  model is to train with.

  Args:
    name, image_size, model_size, init_weights: as for build_model.
    learning_rate: Adam's learning rate.
    jit_compile: XLA-compile the train step (hardware.choose_jit_compile).
    steps_per_execution: train steps per tf.function call.

  Returns:
    The compiled keras.Model.

  Raises:
    cli.UserError: as build_model.
  """
  model = build_model(name, image_size, model_size=model_size,
                      init_weights=init_weights)
  model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                loss=keras.losses.BinaryCrossentropy(),
                metrics=metrics.make_metrics(), jit_compile=jit_compile,
                steps_per_execution=steps_per_execution)
  return model


def check_input(name: str, image_size: Sequence[int],
                model_size: Optional[Sequence[int]] = None) -> Tuple[int, int]:
  """Checks a model name and sizes before anything is built or read.

  Returns:
    The size the network is built at (see build_model's model_size).

  Raises:
    cli.UserError: an unknown model, or a size the network cannot take.
  """
  spec = _spec(name)
  size = _pair(model_size or spec.native_size or image_size)
  _check_size(name, spec, size)
  return size


def _spec(name: str) -> ModelSpec:
  if name not in MODELS:
    raise cli.UserError(f'unknown model {name!r}; choose one of '
                        f'{", ".join(sorted(MODELS))}')
  return MODELS[name]


def _pair(size: Sequence[int]) -> Tuple[int, int]:
  height, width = (int(s) for s in size)
  return height, width


def _check_size(name: str, spec: ModelSpec, size: Tuple[int, int]) -> None:
  """A clear error instead of Keras' negative-dimension traceback."""
  if min(size) < spec.min_size:
    raise cli.UserError(
        f'{name} needs an input of at least {spec.min_size}x{spec.min_size} '
        f'pixels, not {size[0]}x{size[1]}; raise --image_size (or set '
        '--model_size to resize on the device)')


def _split_weights(spec: ModelSpec, path: Optional[str]) -> tuple:
  """(whole-model weights file, backbone weights file); at most one is set."""
  if not path:
    return None, None
  if not os.path.isfile(path):
    raise cli.UserError(f'--init_weights file {path} does not exist (weights '
                        'are never downloaded; copy the file there first)')
  if path.endswith(('.keras', '.weights.h5')):
    return path, None
  if spec.backbone_weights and path.endswith('.h5'):
    return None, path
  raise cli.UserError(f'--init_weights {path}: expected a .keras or '
                      '.weights.h5 file' + (' (or the backbone\'s .h5 file)'
                                            if spec.backbone_weights else ''))


def _call_body(spec: ModelSpec, x, backbone_weights: Optional[str]):
  """Runs spec.body; a backbone weights file that does not fit is a UserError."""
  try:
    return spec.body(x, backbone_weights)
  except ValueError as e:
    if backbone_weights is None:
      raise
    raise cli.UserError(f'--init_weights {backbone_weights} does not fit the '
                        f'backbone: {cli.tf_message(e)}') from None


def load_weights(model: keras.Model, path: str) -> None:
  """Loads a whole model's weights file; shapes that differ are a UserError."""
  try:
    model.load_weights(path)
  except (ValueError, OSError, KeyError) as e:
    raise cli.UserError(
        f'--init_weights {path} does not fit {model.name} with input '
        f'{tuple(model.input_shape[1:3])}: {_shape_mismatch(e)}') from None


def _shape_mismatch(error: Exception) -> str:
  """The useful part of Keras' multi-line load error: which shapes differ."""
  found = re.search(r'path=(\S+), shape=(\([^)]*\))', str(error))
  value = re.search(r'value\.shape=(\([^)]*\))', str(error))
  if found and value:
    return (f'{found.group(1)} has shape {found.group(2)} here, '
            f'{value.group(1)} in the file')
  return cli.tf_message(error)
