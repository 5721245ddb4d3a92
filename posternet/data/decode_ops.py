"""The pipeline's parse and decode: serialized records → uint8 posters.

decode_plan decides, once per split from the manifest's stored sizes, what
decoding a poster takes (JPEG: the DCT ratio, a resize only where the
decoded size is not the training size; raw pixels: a reshape). The factory
functions below build the tf functions pipeline.make_dataset maps over
batches (decode_batch) or single posters (decode_one, for cache and
ignore_errors). The image ops themselves are images.py's, shared with
prediction; what is here is how the pipeline applies them to the records'
features, and the length check that names a damaged raw record.
"""

from typing import Mapping, Optional, Sequence

import tensorflow as tf

from posternet.data import images
from posternet.data import input_errors
from posternet.data import records


def decode_plan(stored_range: tuple, image_size: Sequence[int],
                store_format: str = 'jpeg') -> dict:
  """What the decode rule comes to for a split's posters.

  stored_range: Manifest.stored_size_range(split); store_format: the
  manifest's (images.decode_for_model for 'jpeg', images.decode_raw for
  'raw').

  Returns:
    {'format': store_format, 'stored_hw': (h, w) or None, 'ratio': r or
    None, 'decoded_hw': (h, w) or None}. When every poster has one stored
    size, stored_hw is it, and the decoded size is fixed: the decode is
    decided once (JPEG: the DCT ratio, with no header read), and the resize
    is left out of the graph when the decoded size is image_size. When sizes
    vary, stored_hw and decoded_hw are None: each poster is decoded at its
    own size, then resized where needed; a JPEG at its own ratio from its
    header (the same rule as prediction's), unless every size in the range
    gets the same ratio (then ratio is it: no header read, measured ~10 %
    less CPU per 128x128 poster). Raw pixels have no ratio (None).
  """
  (min_h, min_w), (max_h, max_w) = stored_range
  fixed = (min_h, min_w) == (max_h, max_w)
  if store_format == 'raw':
    hw = (min_h, min_w) if fixed else None
    return {'format': 'raw', 'stored_hw': hw, 'ratio': None, 'decoded_hw': hw}
  if not fixed:
    # The ratio grows with the size: if the extremes share one, all do.
    ratio = images.jpeg_ratio((min_h, min_w), image_size)
    common = ratio == images.jpeg_ratio((max_h, max_w), image_size)
    return {'format': 'jpeg', 'stored_hw': None,
            'ratio': ratio if common else None, 'decoded_hw': None}
  ratio = images.jpeg_ratio((min_h, min_w), image_size)
  return {'format': 'jpeg', 'stored_hw': (min_h, min_w), 'ratio': ratio,
          'decoded_hw': (-(-min_h // ratio), -(-min_w // ratio))}


def parse(serialized: tf.Tensor) -> dict:
  """Parses serialized records (a batch, or one) into the schema's features."""
  return records.parse_examples(serialized)


def decode_one(plan: Mapping, image_size: Sequence[int],
               dct_method: str = images.DCT_METHOD):
  """A function JPEG bytes → uint8 [H, W, 3] at image_size.

  images.decode_for_model, as the plan decides it.
  """
  # max_pixels=None: the converter checked the records' sizes (--max_pixels).
  ratio = plan['ratio'] if plan['stored_hw'] is None else None
  return lambda encoded: images.decode_for_model(
      encoded, image_size, stored_hw=plan['stored_hw'], ratio=ratio,
      dct_method=dct_method, max_pixels=None)


def decode_batch(plan: Mapping, image_size: Sequence[int],
                 dct_method: str = images.DCT_METHOD):
  """A function JPEG bytes [B] → uint8 [B, H, W, 3]: map_fn over the batch."""
  spec = tf.TensorSpec([int(image_size[0]), int(image_size[1]), 3], tf.uint8)
  one = decode_one(plan, image_size, dct_method)
  return lambda encoded: tf.map_fn(one, encoded, fn_output_signature=spec)


def decode_features(plan: Mapping, image_size: Sequence[int],
                    dct_method: str = images.DCT_METHOD, batched: bool = True,
                    records_dir: str = 'the records',
                    raw_box: Optional[Sequence[int]] = None):
  """A function parsed features → uint8 posters at image_size, by format.

  JPEG: decode_batch / decode_one on the image bytes. Raw: the pixels
  checked against their record (checked_raw), then images.decode_raw: one
  reshape for a batch of one stored size, poster by poster otherwise.

  Args:
    plan: decode_plan's answer for the split.
    image_size: (height, width) of the output.
    dct_method: the JPEG IDCT.
    batched: features of a batch (parse of [B] records), or of one poster.
    records_dir: the folder, for the message about a damaged raw record.
    raw_box: the manifest's raw_box: each raw poster is cut out of it.
  """
  if plan['format'] != 'raw':
    decode = (decode_batch if batched else decode_one)(plan, image_size,
                                                       dct_method)
    return lambda features: decode(features[records.IMAGE_KEY])
  stored_hw = plan['stored_hw']

  def one(data, height, width):
    if raw_box is None:
      return images.decode_raw(data, (height, width), image_size)
    poster = images.decode_raw(data, tuple(raw_box))[:height, :width]
    return tf.ensure_shape(images.maybe_resize(poster, image_size),
                           [int(image_size[0]), int(image_size[1]), 3])

  # Records of one length: each poster fills it, or is cut out of the box.
  one_reshape = stored_hw is not None and (
      raw_box is None or tuple(stored_hw) == tuple(raw_box))

  def raw(features):
    data = checked_raw(features, stored_hw, records_dir, raw_box)
    if one_reshape:
      return images.decode_raw(data, stored_hw, image_size)
    sides = (features[records.HEIGHT_KEY], features[records.WIDTH_KEY])
    if not batched:
      return one(data, *sides)
    spec = tf.TensorSpec([int(image_size[0]), int(image_size[1]), 3],
                         tf.uint8)
    return tf.map_fn(lambda poster: one(*poster), (data,) + sides,
                     fn_output_signature=spec)

  return raw


def checked_raw(features: Mapping, stored_hw: Optional[Sequence[int]],
                records_dir: str,
                raw_box: Optional[Sequence[int]] = None) -> tf.Tensor:
  """The raw pixels of parsed records, once their lengths are checked.

  Every poster must hold height x width x 3 bytes, by its record's height
  and width, which must be stored_hw when all posters have one size; with
  raw_box (the manifest's: records padded to it), box bytes, and a height
  and width within it. A record that does not fails (tagged for
  input_errors.as_user_error) naming the poster, the folder, and the
  command (--verify) that names its shard. Branch-free: it runs on every
  batch.
  """
  flat = lambda key: tf.reshape(features[key], [-1])
  data, ids = flat(records.IMAGE_KEY), flat(records.ID_KEY)
  height, width = flat(records.HEIGHT_KEY), flat(records.WIDTH_KEY)
  lengths = tf.cast(tf.strings.length(data), tf.int64)
  if raw_box is None:
    bad = tf.not_equal(lengths, height * width * 3)
  else:
    bad = (tf.not_equal(lengths, raw_box[0] * raw_box[1] * 3) |
           (height > raw_box[0]) | (width > raw_box[1]))
  if stored_hw is not None:
    bad |= tf.not_equal(height, stored_hw[0]) | tf.not_equal(width,
                                                             stored_hw[1])
  first = tf.argmax(tf.cast(bad, tf.int32))
  text = lambda values: tf.strings.as_string(values[first])
  every = ('' if stored_hw is None else
           ', where every poster is {}x{}'.format(*stored_hw))
  if raw_box is not None:
    every += ', in a {}x{} box'.format(*raw_box)
  message = tf.strings.join([
      input_errors.ERROR_TAG, records_dir, ': poster ', ids[first],
      ' holds ', text(lengths), ' bytes of raw pixels, its record says ',
      text(height), 'x', text(width), ' (x 3 bytes)', every,
      '; the records are damaged: `python -m tools.make_records --verify=',
      records_dir, '` names the shard; convert the data again'])
  check = tf.debugging.Assert(tf.logical_not(tf.reduce_any(bad)), [message])
  with tf.control_dependencies([check]):
    return tf.identity(features[records.IMAGE_KEY])


# --- Padded batches: the host decodes, the device resizes (input_stage). ---


def box_size(plan: Mapping, stored_range: tuple,
             raw_box: Optional[Sequence[int]] = None) -> tuple:
  """(height, width) of the box a padded batch has: its largest decoded poster.

  The manifest's largest stored poster, divided by the plan's DCT ratio
  when every poster shares one; with per-poster ratios (or raw pixels) the
  largest stored size, which no decoded poster exceeds; raw records padded
  to a box (raw_box): that box, which they are read as.
  """
  if raw_box is not None:
    return tuple(int(side) for side in raw_box)
  _, (max_h, max_w) = stored_range
  ratio = plan['ratio'] or 1
  return (-(-max_h // ratio), -(-max_w // ratio))


def decode_padded(plan: Mapping, image_size: Sequence[int],
                  box_hw: Sequence[int], dct_method: str = images.DCT_METHOD,
                  batched: bool = True, records_dir: str = 'the records',
                  raw_box: Optional[Sequence[int]] = None):
  """A function parsed features → (uint8 posters in the box, int32 sizes).

  Each poster is decoded at its stored size (JPEG: at the plan's DCT ratio,
  or its own jpeg_ratio for image_size; raw: a reshape) and put in the
  box's top-left corner, zeros around it; no resize on the host. Its size
  goes along, so that the device crops it out of the box and resizes it
  (posternet.model.input_stage). Raw records of one length (posters of one
  stored size, or padded to the manifest's raw_box, which box_hw then is)
  are a batch's one decode_raw and reshape.

  Returns:
    features → (uint8 [B, box_h, box_w, 3], int32 [B, 2]) for a batch, or
    (uint8 [box_h, box_w, 3], int32 [2]) for one poster (batched=False).
  """
  box = [int(box_hw[0]), int(box_hw[1])]
  size = [int(image_size[0]), int(image_size[1])]

  def one(encoded, height, width):
    if plan['format'] == 'raw':
      image = tf.reshape(tf.io.decode_raw(encoded, tf.uint8),
                         tf.cast(tf.stack([height, width, 3]), tf.int32))
    elif plan['ratio'] is not None:
      image = images.decode_jpeg(encoded, plan['ratio'], dct_method)
    else:
      image = images.decode_jpeg_at_its_ratio(encoded, size, dct_method)
    if plan['decoded_hw'] is not None:  # one decoded size: the box itself
      return tf.ensure_shape(image, box + [3]), tf.constant(box, tf.int32)
    sides = tf.shape(image)[:2]
    padded = tf.image.pad_to_bounding_box(image, 0, 0, *box)
    return tf.ensure_shape(padded, box + [3]), sides

  def decode(features):
    encoded = (checked_raw(features, plan['stored_hw'], records_dir, raw_box)
               if plan['format'] == 'raw' else features[records.IMAGE_KEY])
    if plan['format'] == 'raw' and raw_box is not None:
      sizes = tf.stack([features[records.HEIGHT_KEY],
                        features[records.WIDTH_KEY]], axis=-1)
      return images.decode_raw(encoded, tuple(box)), tf.cast(sizes, tf.int32)
    if plan['format'] == 'raw' and plan['stored_hw'] is not None:
      sizes = tf.broadcast_to(tf.constant(box, tf.int32),
                              tf.concat([tf.shape(encoded), [2]], 0))
      return images.decode_raw(encoded, tuple(box)), sizes
    parts = (encoded, features[records.HEIGHT_KEY],
             features[records.WIDTH_KEY])
    if not batched:
      return one(*parts)
    return tf.map_fn(lambda poster: one(*poster), parts,
                     fn_output_signature=(
                         tf.TensorSpec(box + [3], tf.uint8),
                         tf.TensorSpec([2], tf.int32)))

  return decode
