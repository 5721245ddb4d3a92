"""The model's input stage: posters cut out of their box and resized, on the device.

The host only reads and decodes (pipeline.make_dataset(pad_to_box=True)): a
batch arrives as one uint8 box [B, box_h, box_w, 3], each poster in its
top-left corner, with a crop box per poster (BOX: the whole poster, or in
training a random part of it, mirrored for a flip) and colour factors
(COLOR: saturation, contrast, brightness; ones unless augmenting). The
model's first layer, PosterInput, turns them into posters at the training
size in one batched crop and resize (images.crop_and_resize: the sampling
of tf.image.crop_and_resize, in gathers that XLA compiles) on the
accelerator (DALI's split of the work), so the host does no per-poster
geometry. Prediction runs the same graph with the whole poster's box and
unit colours.

Interpolation: the crop is bilinear with corner-aligned sampling (a
poster's corner pixels land on the output's corners) and no antialiasing;
the host's images.resize_uint8 samples at pixel centres and antialiases when
it shrinks. The two agree within a few levels where a poster is enlarged or
kept (tests/test_input_stage.py states the bound); the host still decodes at
the DCT ratio that keeps a poster just above the training size, so the
device rarely shrinks by much. The output is rounded to whole levels, as
uint8 posters are, so that a poster already at the training size passes
through unchanged and a served poster (export.py) gets the same pixels.
"""

from typing import Sequence

import keras
import tensorflow as tf

from posternet.data import augment
from posternet.data import images


def resize_poster(poster: tf.Tensor, image_size: Sequence[int]) -> tf.Tensor:
  """One decoded poster at image_size, as the input stage makes it: uint8.

  The whole poster's box, unit colours, rounded: a batch of these goes
  through PosterInput unchanged, so serving a poster gives the pixels that
  the pipeline's box and the device give it.
  """
  whole = augment.constant_rows(1, augment.WHOLE_BOX)
  unit = augment.constant_rows(1, augment.UNIT_COLOR)
  return tf.cast(posters_of(poster[None], whole, unit, image_size)[0],
                 tf.uint8)


def posters_of(boxed: tf.Tensor, boxes: tf.Tensor, colors: tf.Tensor,
               image_size: Sequence[int]) -> tf.Tensor:
  """The input stage: crop and resize, colour, round. float32, 0..255.

  Each step only where the batch needs it (a tf.cond on the data): a batch
  of posters already at image_size, whole, costs a cast, as before the
  input stage; unit colours skip the colour arithmetic.
  """
  size = tf.constant([int(image_size[0]), int(image_size[1])])
  as_they_are = tf.logical_and(
      tf.reduce_all(tf.equal(tf.shape(boxed)[1:3], size)),
      tf.reduce_all(tf.equal(boxes, augment.WHOLE_BOX)))
  posters = tf.cond(
      as_they_are, lambda: tf.cast(boxed, tf.float32),
      lambda: images.crop_and_resize(boxed, boxes, image_size))
  # Rounded once, at the end, as host augmentation rounds.
  return tf.cond(
      tf.reduce_all(tf.equal(colors, augment.UNIT_COLOR)),
      lambda: tf.round(posters),
      lambda: tf.round(tf.clip_by_value(
          augment.apply_color(posters, colors), 0.0, 255.0)))


@keras.saving.register_keras_serializable(package='posternet')
class PosterInput(keras.layers.Layer):
  """(box of posters, crop boxes, colour factors) → float32 posters, 0..255.

  One crop and resize for the whole batch, then the colour factors, then
  rounding to whole levels (see the module docstring). No weights.
  """

  def __init__(self, image_size: Sequence[int], **kwargs):
    kwargs.setdefault('dtype', 'float32')
    super().__init__(**kwargs)
    self.image_size = (int(image_size[0]), int(image_size[1]))

  def call(self, boxed, boxes, colors):
    return posters_of(boxed, boxes, colors, self.image_size)

  def compute_output_shape(self, boxed_shape, boxes_shape, colors_shape):
    return (boxed_shape[0], *self.image_size, 3)

  def get_config(self):
    return {**super().get_config(), 'image_size': self.image_size}
