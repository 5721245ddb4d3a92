"""Decoding and resizing posters: shared by the converter, pipeline and predictor.

One implementation, so a poster is turned into pixels the same way when it is
converted, when it is trained on and when it is predicted.
"""

from typing import Optional, Sequence

import tensorflow as tf

# Interpolation for every resize in posternet. Antialiasing keeps downscaled
# posters free of aliasing (text and edges); the cost is paid once per use.
RESIZE_METHOD = 'bilinear'


def decode_rgb(encoded: tf.Tensor) -> tf.Tensor:
  """Decodes JPEG, PNG, GIF (first frame), BMP or WebP bytes to uint8 [H, W, 3].

  decode_image, not decode_jpeg: decode_jpeg returns 4-D for WebP and fails on
  BMP. Grayscale and RGBA become RGB.
  """
  image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
  image.set_shape([None, None, 3])
  return image


def jpeg_ratio(stored_hw: Sequence[int], target_hw: Sequence[int]) -> int:
  """The largest DCT-domain downscale (1, 2, 4 or 8) that keeps >= target size.

  decode_jpeg(ratio=r) skips most of the decode work when r > 1, so a small
  training size costs far less than a full decode followed by a resize.
  """
  ratio = 1
  for candidate in (2, 4, 8):
    if all(s // candidate >= t for s, t in zip(stored_hw, target_hw)):
      ratio = candidate
  return ratio


def resize_uint8(image: tf.Tensor, size: Sequence[int]) -> tf.Tensor:
  """Resizes uint8 [H, W, 3] (or a batch) to `size`, staying uint8."""
  resized = tf.image.resize(image, size, method=RESIZE_METHOD, antialias=True)
  return tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8)


def encode_jpeg(image: tf.Tensor, quality: int = 95) -> bytes:
  """Encodes uint8 RGB as a baseline JPEG (what every record stores)."""
  return tf.io.encode_jpeg(image, format='rgb', quality=quality,
                           optimize_size=False, progressive=False).numpy()


def maybe_resize(image: tf.Tensor,
                 size: Optional[Sequence[int]]) -> tf.Tensor:
  """Resizes only when `size` is given and differs from the image's size."""
  if size is None:
    return image
  height, width = tf.shape(image)[0], tf.shape(image)[1]
  same = tf.logical_and(tf.equal(height, size[0]), tf.equal(width, size[1]))
  return tf.cond(same, lambda: image, lambda: resize_uint8(image, size))
