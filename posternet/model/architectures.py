"""The architectures: each network's body, [0, 1] pixels → features.

A body takes the rescaled (and resized) float image tensor and returns the
features that networks.build_model puts the 25-way output layer on:

  seed_cnn_body          the tutorial's CNN, layer for layer
  efficientnetv2b0_body  keras.applications' EfficientNetV2-B0, pooled
  efficientnet_lite_body EfficientNet-Lite0/1/2 (efficientnet_lite.py) with
                         an MLP head
  small_cnn_body         a small, fast CNN for demos and smoke tests
  resnet_small_body      a narrow ResNet for training from scratch

Each is `body(x, backbone_weights=None)`: backbone_weights is the path of
a backbone's weights file, for the bodies that have one. What wraps a
body into a model (rescale, resize, output layer, the registry of names)
is networks.py's.
"""

from typing import Callable

import keras
from keras import layers

from posternet.model import efficientnet_lite

# ImageNet statistics the EfficientNetV2-B weights were trained with, applied
# after our Rescaling(1/255) (what its include_preprocessing=True would do).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_VARIANCE = (0.229**2, 0.224**2, 0.225**2)


def seed_cnn_body(x, backbone_weights=None):
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


def efficientnetv2b0_body(x, backbone_weights=None):
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


def efficientnet_lite_body(name: str) -> Callable:
  """EfficientNet-Lite (posternet.efficientnet_lite) and an MLP head.

  The head, a 512-unit hidden layer between two Dropout(0.5), is what
  learned the frozen backbone's features best on real posters (BUILD_NOTES,
  "Real posters, pretrained"); Dropout(0.5) in front of it also stands in
  for the ImageNet classifier's own dropout.
  """

  def body(x, backbone_weights=None):
    backbone = efficientnet_lite.build(name, tuple(x.shape[1:]))
    if backbone_weights:
      efficientnet_lite.load_imagenet(backbone, backbone_weights)
    x = backbone(x)
    x = layers.Dropout(0.5, name='head_dropout')(x)
    x = layers.Dense(512, activation='relu', name='head_hidden')(x)
    return layers.Dropout(0.5, name='head_hidden_dropout')(x)

  return body


def small_cnn_body(x, backbone_weights=None):
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


def _basic_block(x, filters: int, stride: int):
  """ResNet's basic block: two 3×3 convolutions with batch norm, plus x.

  The second batch norm starts at zero (gamma 0), so each block starts as
  the identity: a deep-enough net trains from scratch without warm tricks.
  """
  shortcut = x
  y = layers.Conv2D(filters, 3, strides=stride, padding='same',
                    use_bias=False)(x)
  y = layers.BatchNormalization()(y)
  y = layers.ReLU()(y)
  y = layers.Conv2D(filters, 3, padding='same', use_bias=False)(y)
  y = layers.BatchNormalization(gamma_initializer='zeros')(y)
  if stride != 1 or shortcut.shape[-1] != filters:
    shortcut = layers.Conv2D(filters, 1, strides=stride, use_bias=False)(x)
    shortcut = layers.BatchNormalization()(shortcut)
  return layers.ReLU()(layers.Add()([y, shortcut]))


def resnet_small_body(x, backbone_weights=None,
                      widths=(32, 64, 128, 256), blocks=(1, 1, 1, 1)):
  """A narrow ResNet for training from scratch on a few thousand posters.

  Stem: a strided 3×3 convolution and a max-pool (a quarter of the input's
  side), so 2 CPU cores train it at ~150x100 px (BUILD_NOTES.md, "Real
  posters"). Then one basic block per stage, widths 32 to 256, each stage
  after the first halving the side; batch norm throughout; global average
  pooling, so any input size and the posters' tall shape work.
  """
  del backbone_weights
  x = layers.Conv2D(widths[0], 3, strides=2, padding='same', use_bias=False)(x)
  x = layers.BatchNormalization()(x)
  x = layers.ReLU()(x)
  x = layers.MaxPooling2D(3, strides=2, padding='same')(x)
  for stage, (filters, count) in enumerate(zip(widths, blocks)):
    for index in range(count):
      x = _basic_block(x, filters, 2 if stage and not index else 1)
  x = layers.GlobalAveragePooling2D()(x)
  return layers.Dropout(0.2)(x)

