"""Decoding and resizing posters: shared by the converter, pipeline and predictor.

One implementation, so a poster is turned into pixels the same way when it is
converted, when it is trained on and when it is predicted.
"""

from typing import Optional, Sequence

import tensorflow as tf

# The most pixels a poster may have, everywhere: the converter refuses a
# larger image from its header (Pillow's), prediction and the serving
# signature from its header too (header_size), before decoding. A poster has
# ~0.13 Mpx; 40 Mpx is already a very large photo, and a decompression bomb
# (a 1 MB PNG of 20000x20000) would otherwise take 1.2 GB to decode.
MAX_PIXELS = 40_000_000

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
  """Resizes uint8 [H, W, 3] (or a batch) to `size`, staying uint8.

  Antialiasing only where a side shrinks: enlarging gives the same pixels
  without it (within 1e-4 of a level before rounding) at ~60 % of the cost,
  and the never-enlarging converter leaves the pipeline a share of small
  posters to enlarge (BUILD_NOTES.md, "At the tutorial's size").
  """
  height, width = image.shape[-3], image.shape[-2]
  if height is not None and width is not None:
    shrinks = height > size[0] or width > size[1]
  else:
    dynamic = tf.shape(image)
    shrinks = tf.logical_or(dynamic[-3] > size[0], dynamic[-2] > size[1])
  resized = tf.cond(
      tf.convert_to_tensor(shrinks),
      lambda: tf.image.resize(image, size, RESIZE_METHOD, antialias=True),
      lambda: tf.image.resize(image, size, RESIZE_METHOD, antialias=False))
  return tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8)


def encode_jpeg(image: tf.Tensor, quality: int = 95) -> bytes:
  """Encodes uint8 RGB as a baseline JPEG (what every record stores)."""
  return tf.io.encode_jpeg(image, format='rgb', quality=quality,
                           optimize_size=False, progressive=False).numpy()


def crop_and_resize(images: tf.Tensor, boxes: tf.Tensor,
                    size: Sequence[int]) -> tf.Tensor:
  """Each image's box, bilinearly resized to size: float32 [B, H, W, C].

  tf.image.crop_and_resize(images, boxes, range(B), size), in ops that XLA
  compiles too (CropAndResize has no XLA kernel, and the model's input
  stage runs inside the XLA-compiled train step on GPUs): the same sample
  points, (y1, x1, y2, x2) normalised so that 0 and 1 are an image's first
  and last pixel, x1 > x2 mirroring. Boxes must lie within their images.

  Args:
    images: [B, h, w, C], uint8 or float.
    boxes: float32 [B, 4].
    size: (height, width) of the output, static.
  """
  shape = tf.shape(images)
  rows = _interpolate(images, _sample_points(boxes[:, 0], boxes[:, 2],
                                             shape[1], int(size[0])), 1)
  return _interpolate(rows, _sample_points(boxes[:, 1], boxes[:, 3],
                                           shape[2], int(size[1])), 2)


def _sample_points(start: tf.Tensor, end: tf.Tensor, extent: tf.Tensor,
                   count: int) -> tf.Tensor:
  """count points from start to end (normalised) in pixels: [B, count]."""
  last = tf.cast(extent - 1, tf.float32)
  if count == 1:
    return (0.5 * (start + end) * last)[:, None]
  step = (end - start) * last / (count - 1)
  return (start * last)[:, None] + step[:, None] * tf.range(count,
                                                            dtype=tf.float32)


def _interpolate(images: tf.Tensor, points: tf.Tensor, axis: int) -> tf.Tensor:
  """Linear interpolation of images along axis (1 or 2) at points [B, n]."""
  low = tf.floor(points)
  last = tf.shape(images)[axis] - 1
  index = lambda p: tf.clip_by_value(tf.cast(p, tf.int32), 0, last)
  before = tf.cast(tf.gather(images, index(low), axis=axis, batch_dims=1),
                   tf.float32)
  after = tf.cast(tf.gather(images, index(low + 1), axis=axis, batch_dims=1),
                  tf.float32)
  weight = points - low
  weight = weight[:, :, None, None] if axis == 1 else weight[:, None, :, None]
  return before + (after - before) * weight


def maybe_resize(image: tf.Tensor,
                 size: Optional[Sequence[int]]) -> tf.Tensor:
  """Resizes only when `size` is given and differs from the image's size."""
  if size is None:
    return image
  height, width = tf.shape(image)[0], tf.shape(image)[1]
  same = tf.logical_and(tf.equal(height, size[0]), tf.equal(width, size[1]))
  return tf.cond(same, lambda: image, lambda: resize_uint8(image, size))


# The IDCT of every JPEG decode on the model's path (pipeline, predictor,
# serving), so a poster gives the same pixels in training and in prediction.
# INTEGER_ACCURATE (libjpeg's ISLOW) measured as fast as INTEGER_FAST here
# (libjpeg-turbo's SIMD; BUILD_NOTES.md, "Input pipeline") and is exact to
# the standard. TensorFlow's own default ('' in decode_jpeg and decode_image)
# is INTEGER_FAST, so decode_rgb's pixels may differ by a level or two.
DCT_METHOD = 'INTEGER_ACCURATE'

# DCT-domain downscale factors libjpeg supports in decode_jpeg(ratio=…).
JPEG_RATIOS = (1, 2, 4, 8)


def decode_jpeg(encoded: tf.Tensor, ratio: int = 1,
                dct_method: str = DCT_METHOD) -> tf.Tensor:
  """Decodes JPEG bytes to uint8 [ceil(H/ratio), ceil(W/ratio), 3].

  The pipeline's decode: the ratio is a static choice (an op attribute),
  made once from the manifest's stored sizes.
  """
  image = tf.io.decode_jpeg(encoded, channels=3, ratio=ratio,
                            dct_method=dct_method)
  image.set_shape([None, None, 3])
  return image


def _dynamic_jpeg_ratio(encoded: tf.Tensor,
                        image_size: Sequence[int]) -> tf.Tensor:
  """jpeg_ratio from the JPEG header, in graph: an index into JPEG_RATIOS."""
  stored = tf.cast(tf.io.extract_jpeg_shape(encoded)[:2], tf.int32)
  target = tf.constant([int(image_size[0]), int(image_size[1])], tf.int32)
  fits = [tf.reduce_all(stored // r >= target) for r in JPEG_RATIOS[1:]]
  return tf.reduce_sum(tf.cast(tf.stack(fits), tf.int32))


def decode_jpeg_at_its_ratio(encoded: tf.Tensor, image_size: Sequence[int],
                             dct_method: str = DCT_METHOD) -> tf.Tensor:
  """JPEG bytes → uint8 at the poster's own DCT ratio (jpeg_ratio), no resize.

  The ratio comes from the JPEG's header, in the graph: each poster is
  decoded as small as it can be while still covering image_size.
  """
  branches = [lambda r=r: decode_jpeg(encoded, r, dct_method)
              for r in JPEG_RATIOS]
  return tf.switch_case(_dynamic_jpeg_ratio(encoded, image_size), branches)


def _header_uint(header: tf.Tensor, start: int, length: int,
                 big_endian: bool = False) -> tf.Tensor:
  """An unsigned integer of `length` bytes at `start` of header (uint8 [N])."""
  digits = tf.cast(header[start:start + length], tf.int64)
  weights = [256 ** i for i in range(length)]
  return tf.reduce_sum(digits * (weights[::-1] if big_endian else weights))


def header_size(encoded: tf.Tensor) -> tf.Tensor:
  """(height, width), int64, from an image's header, without decoding it.

  JPEG: tf.io.extract_jpeg_shape. PNG: IHDR. GIF: the logical screen. BMP:
  BITMAPINFOHEADER (a bottom-up image has a negative height). WebP: the
  VP8X canvas, or the VP8 / VP8L frame. Anything else is (0, 0): the
  decoder then says what it is not.
  """
  head = tf.strings.substr(tf.strings.join([encoded, '\0' * 30]), 0, 30)
  header = tf.io.decode_raw(head, tf.uint8)
  uint = lambda start, length, big=False: _header_uint(header, start, length,
                                                       big)
  starts = lambda magic: tf.strings.substr(encoded, 0, len(magic)) == magic
  webp_chunk = tf.strings.substr(head, 12, 4)
  bmp_height = uint(22, 4)
  sizes = [  # (is this format, lambda: (height, width))
      (tf.io.is_jpeg(encoded), lambda: tf.cast(
          tf.io.extract_jpeg_shape(encoded)[:2], tf.int64)),
      (starts(b'\x89PNG'), lambda: tf.stack([uint(20, 4, True),
                                             uint(16, 4, True)])),
      (starts(b'GIF8'), lambda: tf.stack([uint(8, 2), uint(6, 2)])),
      (starts(b'BM'), lambda: tf.stack([
          tf.where(bmp_height >= 2**31, 2**32 - bmp_height, bmp_height),
          uint(18, 4)])),
      (webp_chunk == 'VP8X', lambda: tf.stack([uint(27, 3) + 1,
                                               uint(24, 3) + 1])),
      (webp_chunk == 'VP8 ', lambda: tf.stack([uint(28, 2) % 2**14,
                                               uint(26, 2) % 2**14])),
      (webp_chunk == 'VP8L', lambda: tf.stack([
          uint(21, 4) // 2**14 % 2**14 + 1, uint(21, 4) % 2**14 + 1])),
  ]
  size = tf.zeros([2], tf.int64)
  for is_format, read_size in reversed(sizes):
    size = tf.cond(is_format, read_size, lambda size=size: size)
  return size


def _check_pixel_limit(encoded: tf.Tensor, max_pixels: int) -> tf.Tensor:
  """encoded, once its header says it has at most max_pixels pixels.

  Fails (InvalidArgumentError, 'too large: WxH …') before any decode.
  """
  height, width = tf.unstack(header_size(encoded))
  message = tf.strings.join([
      'too large: ', tf.strings.as_string(width), 'x',
      tf.strings.as_string(height), ' pixels, more than the limit of ',
      f'{max_pixels:,}; not a poster, maybe a decompression bomb'])
  check = tf.debugging.Assert(height * width <= max_pixels, [message])
  with tf.control_dependencies([check]):
    return tf.identity(encoded)


def decode_for_model(encoded: tf.Tensor, image_size: Sequence[int], *,
                     stored_hw: Optional[Sequence[int]] = None,
                     ratio: Optional[int] = None,
                     dct_method: str = DCT_METHOD,
                     max_pixels: Optional[int] = MAX_PIXELS) -> tf.Tensor:
  """One poster's bytes → uint8 [H, W, 3] at image_size: the one decode rule.

  The training pipeline, the predictor and the serving signature all decode
  here, so a poster becomes the same pixels in training and in prediction.
  The rule: a JPEG is decoded with DCT_METHOD at the largest DCT ratio that
  keeps it at least image_size (jpeg_ratio of its own size), then resized
  only if that differs from image_size. Other formats (PNG, GIF, BMP, WebP)
  go through decode_rgb, then the same resize. An image whose header claims
  more than max_pixels pixels fails before it is decoded.

  Args:
    encoded: scalar string tensor of the poster's bytes.
    image_size: (height, width) of the output.
    stored_hw: the poster's size when known before the graph runs (JPEG
      records whose posters all have one stored size): the same rule,
      decided once when the graph is built, with no header read, no format
      test and no resize when the ratio lands on image_size.
    ratio: the DCT ratio, when sizes differ but the rule gives every poster
      this one (JPEG records whose smallest and largest stored sizes get the
      same jpeg_ratio): no header read; a resize only where needed.
    dct_method: the IDCT; DCT_METHOD unless a benchmark compares.
    max_pixels: the most pixels an image of unknown size may have
      (InvalidArgumentError 'too large: …' before decoding); None: no limit,
      for records, whose sizes the converter checked (its --max_pixels).

  Returns:
    uint8 [image_size[0], image_size[1], 3], with a static shape.
  """
  size = [int(image_size[0]), int(image_size[1])]
  if stored_hw is not None:
    ratio = jpeg_ratio(stored_hw, size)
    image = decode_jpeg(encoded, ratio, dct_method)
    decoded = [-(-int(side) // ratio) for side in stored_hw]  # rounds up
    if decoded != size:
      image = resize_uint8(image, size)
    return tf.ensure_shape(image, size + [3])
  if ratio is not None:
    image = maybe_resize(decode_jpeg(encoded, ratio, dct_method), size)
    return tf.ensure_shape(image, size + [3])
  image = maybe_resize(decode_at_its_ratio(encoded, size, dct_method,
                                           max_pixels), size)
  return tf.ensure_shape(image, size + [3])


def decode_at_its_ratio(encoded: tf.Tensor, image_size: Sequence[int],
                        dct_method: str = DCT_METHOD,
                        max_pixels: Optional[int] = MAX_PIXELS) -> tf.Tensor:
  """Any poster's bytes → uint8 [h, w, 3], decoded but not resized.

  A JPEG at its own DCT ratio for image_size (decode_jpeg_at_its_ratio),
  another format through decode_rgb; an image whose header claims more
  than max_pixels pixels fails first (None: no limit). What the model's
  input stage then resizes on the device (the serving signature).
  """
  if max_pixels is not None:
    encoded = _check_pixel_limit(encoded, max_pixels)
  return tf.cond(tf.io.is_jpeg(encoded),
                 lambda: decode_jpeg_at_its_ratio(encoded, image_size,
                                                  dct_method),
                 lambda: decode_rgb(encoded))


def decode_raw(data: tf.Tensor, stored_hw: Sequence,
               image_size: Optional[Sequence[int]] = None) -> tf.Tensor:
  """Raw records' pixels → uint8 [H, W, 3] (or a batch) at image_size.

  The raw counterpart of decode_for_model, with the same resize rule (only
  where the stored size differs from image_size) and no codec: a raw
  record's bytes are the pixels, row-major height x width x 3 (what
  poster_files stores), so reading them is a reshape.

  Args:
    data: one poster's bytes (a scalar string), or a batch [B] of posters
      of one stored size.
    stored_hw: (height, width): ints when known before the graph runs (all
      posters of one size; the resize is then decided once), else the
      record's own scalar tensors (one poster only).
    image_size: (height, width) of the output; None: the stored size.

  Returns:
    uint8 [H, W, 3], or [B, H, W, 3] for a batch.
  """
  # A batch keeps its static size: compiled steps see one input shape.
  leading = [data.shape[0]] if data.shape.rank == 1 else []
  static = all(isinstance(side, int) for side in stored_hw)
  sides = [side if static else tf.cast(side, tf.int32) for side in stored_hw]
  image = tf.reshape(tf.io.decode_raw(data, tf.uint8),
                     [-1 if n is None else n for n in leading] + sides + [3])
  if image_size is None:
    return image
  size = [int(image_size[0]), int(image_size[1])]
  if not static:
    image = maybe_resize(image, size)
  elif list(stored_hw) != size:
    image = resize_uint8(image, size)
  return tf.ensure_shape(image, leading + size + [3])
