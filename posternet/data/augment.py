"""Training augmentation: named ops on uint8 batches, seeded, train split only.

Each op takes a batch of posters (float32 [B, H, W, 3], 0–255) and a stateless
seed, and returns the batch transformed, one random draw per poster. They run
inside tf.data after decode (and after the cache, so cached posters are still
augmented differently every epoch), on whole batches: one call per batch costs
far less host time than one per poster. `augment_batch` chains the chosen ops
and gives uint8 back, so the model still gets what validation and prediction
give it, which never pass through here.

The ops, and why each is there (BUILD_NOTES.md, "Real posters", measured):
  crop   random resized crop: a random part of the poster (an area share and
         an aspect change around the poster's own shape: posters are tall, so
         the crop box is drawn in the poster's own coordinates, not square),
         resized back to the batch's size. A title block, a face or a colour
         field, anywhere in the frame, must mean the same genre.
  flip   left-right mirror: a mirrored poster has the same genres.
  color  brightness, contrast and saturation scaled by 1 ± `color`: print and
         scan differences, not genre, change these a little.

The random numbers come from stateless ops seeded by (seed, batch index): the
same seed repeats the same augmentations, and every batch of every epoch gets
new ones.
"""

import dataclasses
import math
from typing import Optional, Tuple

import tensorflow as tf

from posternet import settings
from posternet.data import images as images_lib

OPS = ('crop', 'flip', 'color')

# The model's input stage (posternet.model.input_stage) leaves a poster as it
# is with these: its whole box, and its colours unchanged.
WHOLE_BOX = (0.0, 0.0, 1.0, 1.0)
UNIT_COLOR = (1.0, 1.0, 1.0)


@dataclasses.dataclass(frozen=True)
class Settings:
  """The trainer's augmentation flags (Augment's ops and strengths)."""
  augment: str = settings.setting(
      'none', 'Training augmentation, comma-separated: crop (random resized '
      'crop in the poster\'s own shape), flip (left-right), color '
      '(brightness, contrast, saturation); none for none. On uint8 batches '
      'after decode and --cache, train split only.')
  crop_area: float = settings.setting(
      0.35, 'The smallest share of a poster\'s area a random crop keeps '
      '(--augment=crop).')
  color_jitter: float = settings.setting(
      0.2, 'Brightness, contrast and saturation vary by a factor in 1 +- '
      'this (--augment=color).')

  def make(self, seed: int) -> Optional['Augment']:
    """The Augment these flags describe, seeded; None for no ops.

    Raises:
      ValueError: naming the flags, for an unknown op or a value out of range.
    """
    try:
      ops = parse_ops(self.augment)
    except ValueError as e:
      raise ValueError(f'--augment={self.augment}: {e}') from None
    if not ops:
      return None
    try:
      return Augment(ops=ops, crop_area=(self.crop_area, 1.0),
                     color=self.color_jitter, seed=seed)
    except ValueError as e:
      raise ValueError(f'--crop_area={self.crop_area} --color_jitter='
                       f'{self.color_jitter}: {e}') from None


@dataclasses.dataclass(frozen=True)
class Augment:
  """Which ops run, and how strongly.

  Attributes:
    ops: names from OPS, applied in OPS order.
    crop_area: (min, max) share of the poster's area a crop keeps.
    crop_aspect: (min, max) change of the crop's aspect ratio against the
      poster's own (1.0: the poster's shape).
    color: brightness, contrast and saturation vary by a factor in 1 ± color.
    seed: with the batch index, seeds every draw.
  """
  ops: Tuple[str, ...] = OPS
  crop_area: Tuple[float, float] = (Settings.crop_area, 1.0)
  crop_aspect: Tuple[float, float] = (3 / 4, 4 / 3)
  color: float = Settings.color_jitter
  seed: int = 0

  def __post_init__(self):
    unknown = sorted(set(self.ops) - set(OPS))
    if unknown:
      raise ValueError(f'unknown augmentation {", ".join(unknown)}; choose '
                       f'from {", ".join(OPS)}')
    low, high = self.crop_area
    if not 0 < low <= high <= 1:
      raise ValueError(f'crop area {self.crop_area}: need 0 < min <= max <= 1')
    if not 0 <= self.color < 1:
      raise ValueError(f'color {self.color}: need 0 <= color < 1')


def parse_ops(text: str) -> Tuple[str, ...]:
  """'crop,flip' → ('crop', 'flip'); '' or 'none' → (). Order: OPS order."""
  names = {name.strip() for name in text.split(',') if name.strip()}
  names.discard('none')
  unknown = sorted(names - set(OPS))
  if unknown:
    raise ValueError(f'unknown augmentation {", ".join(unknown)}; choose from '
                     f'{", ".join(OPS)} (or none)')
  return tuple(name for name in OPS if name in names)


def random_crop(images: tf.Tensor, seed: tf.Tensor, area: Tuple[float, float],
                aspect: Tuple[float, float]) -> tf.Tensor:
  """A random part of each poster, resized back to the batch's size."""
  boxes = crop_boxes(tf.shape(images)[0], seed, area, aspect)
  return images_lib.crop_and_resize(images, boxes, images.shape[1:3])


def crop_boxes(batch: tf.Tensor, seed: tf.Tensor, area: Tuple[float, float],
               aspect: Tuple[float, float]) -> tf.Tensor:
  """Random crop boxes, float32 [B, 4], as shares of each poster's sides.

  (y1, x1, y2, x2) in crop_and_resize's terms for a poster that fills its
  image: [0, 0, 1, 1] is the whole poster.
  """
  seeds = tf.random.experimental.stateless_split(seed, 4)
  share = tf.random.stateless_uniform([batch], seeds[0], area[0], area[1])
  log_aspect = tf.random.stateless_uniform(
      [batch], seeds[1], math.log(aspect[0]), math.log(aspect[1]))
  # Box sides as shares of the poster's height and width: aspect 1 keeps the
  # poster's own shape, whatever it is.
  height = tf.minimum(tf.sqrt(share / tf.exp(log_aspect)), 1.0)
  width = tf.minimum(tf.sqrt(share * tf.exp(log_aspect)), 1.0)
  top = tf.random.stateless_uniform([batch], seeds[2]) * (1.0 - height)
  left = tf.random.stateless_uniform([batch], seeds[3]) * (1.0 - width)
  # Box [0, 0, 1, 1] samples the poster's own pixels: (0, 0) to (H-1, W-1).
  return tf.stack([top, left, top + height, left + width], axis=1)


def random_flip(images: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
  """Mirrors a random half of the posters left to right."""
  batch = tf.shape(images)[0]
  flip = tf.random.stateless_uniform([batch, 1, 1, 1], seed) < 0.5
  return tf.where(flip, tf.reverse(images, axis=[2]), images)


def random_color(images: tf.Tensor, seed: tf.Tensor,
                 strength: float) -> tf.Tensor:
  """Scales saturation, contrast and brightness by 1 ± strength each."""
  return apply_color(images, color_factors(tf.shape(images)[0], seed,
                                           strength))


def color_factors(batch: tf.Tensor, seed: tf.Tensor,
                  strength: float) -> tf.Tensor:
  """Random (saturation, contrast, brightness) factors in 1 ± strength: [B, 3]."""
  return 1.0 + strength * tf.random.stateless_uniform([batch, 3], seed, -1.0,
                                                      1.0)


def apply_color(images: tf.Tensor, factors: tf.Tensor) -> tf.Tensor:
  """Saturation, contrast and brightness scaled by factors [B, 3] (1: kept).

  images: float32 [B, H, W, 3] in 0..255.
  """
  saturation, contrast, brightness = (
      factors[:, i, None, None, None] for i in range(3))
  gray = tf.reduce_mean(images, axis=-1, keepdims=True)
  images = gray + (images - gray) * saturation
  mean = tf.reduce_mean(images, axis=[1, 2, 3], keepdims=True)
  images = mean + (images - mean) * contrast
  return images * brightness


def constant_rows(batch: tf.Tensor, values) -> tf.Tensor:
  """values repeated for each poster of a batch: float32 [B, len(values)]."""
  return tf.tile(tf.constant([values], tf.float32), [batch, 1])


def poster_boxes(sizes: tf.Tensor, box_hw) -> tf.Tensor:
  """Each poster's whole box in a padded batch: float32 [B, 4] (or [4]).

  In crop_and_resize's terms, (y1, x1, y2, x2) normalised so that 0 and 1
  are the box's first and last pixel: a poster of h x w pixels in the
  top-left corner spans 0 .. (h - 1) / (box_h - 1). sizes: [B, 2] or [2].
  """
  extent = tf.maximum(tf.cast(box_hw, tf.float32) - 1.0, 1.0)
  ends = (tf.cast(sizes, tf.float32) - 1.0) / extent
  return tf.concat([tf.zeros_like(ends), ends], axis=-1)


def device_draws(sizes: tf.Tensor, box_hw, augment: Optional[Augment],
                 batch_index: tf.Tensor) -> Tuple[tf.Tensor, tf.Tensor]:
  """A padded batch's crop boxes [B, 4] and colour factors [B, 3].

  What the model's input stage applies on the device, in one
  crop_and_resize and a few multiplications. Without augment: each poster's
  whole box and unit colours. With it, augment_batch's own draws, from the
  same seeds: the crop box (in the poster's own coordinates, scaled into
  the padded box), mirrored (x1 and x2 swapped) for a flip, and the colour
  factors.
  """
  batch = tf.shape(sizes)[0]
  whole = poster_boxes(sizes, box_hw)
  colors = constant_rows(batch, UNIT_COLOR)
  if augment is None or not augment.ops:
    return whole, colors
  seeds = _batch_seeds(augment, batch_index)
  boxes = (crop_boxes(batch, seeds[0], augment.crop_area, augment.crop_aspect)
           if 'crop' in augment.ops else constant_rows(batch, WHOLE_BOX))
  if 'flip' in augment.ops:
    flip = tf.random.stateless_uniform([batch], seeds[1]) < 0.5
    boxes = tf.where(flip[:, None], tf.gather(boxes, [0, 3, 2, 1], axis=1),
                     boxes)
  if 'color' in augment.ops and augment.color > 0:
    colors = color_factors(batch, seeds[2], augment.color)
  return boxes * tf.tile(whole[:, 2:], [1, 2]), colors


def _batch_seeds(augment: Augment, batch_index: tf.Tensor) -> tf.Tensor:
  """One stateless seed per op (OPS order), from the seed and batch index."""
  seed = tf.stack([tf.constant(augment.seed, tf.int64),
                   tf.cast(batch_index, tf.int64)])
  return tf.random.experimental.stateless_split(seed, len(OPS))


def augment_batch(images: tf.Tensor, augment: Augment,
                  batch_index: tf.Tensor) -> tf.Tensor:
  """The augmented batch: uint8 [B, H, W, 3] in, uint8 of the same shape out.

  Args:
    images: a batch of posters, uint8.
    augment: the ops and their strengths.
    batch_index: int64 scalar, the batch's position in the stream: with
      augment.seed it seeds this batch's draws.
  """
  if not augment.ops:
    return images
  seeds = _batch_seeds(augment, batch_index)
  result = tf.cast(images, tf.float32)
  if 'crop' in augment.ops:
    result = random_crop(result, seeds[0], augment.crop_area,
                         augment.crop_aspect)
  if 'flip' in augment.ops:
    result = random_flip(result, seeds[1])
  if 'color' in augment.ops and augment.color > 0:
    result = random_color(result, seeds[2], augment.color)
  result = tf.cast(tf.clip_by_value(tf.round(result), 0.0, 255.0), tf.uint8)
  return tf.ensure_shape(result, images.shape)


def apply(dataset: tf.data.Dataset, augment: Augment,
          image_key: str) -> tf.data.Dataset:
  """Augments the uint8 images of a dataset of dict batches, in parallel."""

  def one_batch(index, batch):
    return {**batch, image_key: augment_batch(batch[image_key], augment,
                                              index)}

  return dataset.enumerate().map(one_batch,
                                 num_parallel_calls=tf.data.AUTOTUNE)
