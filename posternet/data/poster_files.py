"""One poster file → the bytes to store (JPEG or raw pixels), or a BadImage.

The file is opened only if it is a regular file inside the images folder
(files.read_regular_file): a FIFO would block, a symlink could lead to
/etc/passwd; both are bad images, refused unopened. A JPEG that tf.io.decode_jpeg decodes keeps its original bytes. Grayscale
JPEGs pass through too (a decision): decode_jpeg(channels=3), as every
reader calls it, makes them RGB, and re-encoding would only lose quality.
PNG, GIF, WebP or BMP named .jpg, CMYK JPEGs and 16-bit or RGBA PNGs are
decoded with images.decode_rgb and stored as RGB JPEG. Pillow reads each
header first (format, mode, size), so a decompression bomb is refused before
any pixel is decoded.

A store size is a bound, never a target to enlarge to (stored_size): each
side of a poster is shrunk to at most the store size's, and a poster already
within it keeps its own pixels (and, as a JPEG, its own bytes). Enlarging
adds no detail, only pixels to decode; the pipeline resizes to the model's
size where a stored poster differs from it. Raw records (store_format 'raw')
hold the same pixels, decoded here once, with no codec; with a store size,
each in the top-left corner of that box (raw_bytes).
"""

import dataclasses
import io
from typing import Optional, Sequence, Tuple

import numpy as np
from PIL import Image
import tensorflow as tf

from posternet import cli
from posternet import files
from posternet.data import images
# JPEG quality of a poster shrunk to the store size: the real posters' own
# (q85). Measured on 300 real posters shrunk to at most 400x400 (one core,
# CPU per decode; BUILD_NOTES.md, "Converter"): q85 decodes 3-6 % faster
# than the originals, q90 as fast, q95 12 % slower (47 KB against 32 KB).
# Other re-encodes (PNG, CMYK, ...) keep images.encode_jpeg's q95.
SHRUNK_QUALITY = 85

# Why a poster can be skipped, in the manifest's order.
REASONS = ('missing image', 'not a regular file', 'outside the images folder',
           'unreadable image', 'empty image', 'not an image',
           'unsupported format', 'too large', 'truncated or corrupt image')

# What TensorFlow decodes (Pillow's format names); MPO is a JPEG with extras.
JPEG_FORMATS = ('JPEG', 'MPO')
TF_FORMATS = JPEG_FORMATS + ('PNG', 'GIF', 'BMP', 'WEBP')
# How JPEG, PNG, GIF, BMP and WebP (RIFF) files start: one of these whose
# header does not read is a broken image, not some other kind of file.
IMAGE_SIGNATURES = (b'\xff\xd8', b'\x89PNG', b'GIF8', b'BM', b'RIFF')
# JPEG modes that decode_jpeg(channels=3) renders right (not CMYK).
PASS_THROUGH_MODES = ('RGB', 'L')


class BadImage(Exception):
  """A poster that cannot be stored; `reason` is one of REASONS."""

  def __init__(self, reason: str, detail: str):
    super().__init__(f'{reason}: {detail}')
    self.reason, self.detail = reason, detail


@dataclasses.dataclass(frozen=True)
class Poster:
  data: bytes   # what the record stores: JPEG bytes, or raw pixels
  height: int
  width: int


def stored_size(own_hw: Sequence[int],
                store_size: Optional[Sequence[int]]) -> Tuple[int, int]:
  """The size a poster is stored at: each side at most the store size's.

  Never larger than the poster on either side, so it keeps at most its own
  pixels: a 444x300 poster with store size 400x400 is stored at 400x300.
  """
  if store_size is None:
    return int(own_hw[0]), int(own_hw[1])
  return (min(int(own_hw[0]), int(store_size[0])),
          min(int(own_hw[1]), int(store_size[1])))


def load_poster(path: str, *, max_pixels: int = images.MAX_PIXELS,
                store_size: Optional[Sequence[int]] = None,
                store_format: str = 'jpeg',
                images_dir: Optional[str] = None) -> Poster:
  """Reads one poster file and returns the bytes to store.

  JPEG: the original bytes when the file is a JPEG that decode_jpeg renders
  as RGB and needs no shrinking (stored_size); otherwise decoded (and
  shrunk) and re-encoded as RGB JPEG (a shrunk one at SHRUNK_QUALITY). Raw:
  the decoded (and shrunk) uint8 pixels, row-major height x width x 3.
  With images_dir, a path that leads outside it (a symlink) is refused
  before it is opened.

  Raises:
    BadImage: the file is missing, not a regular file (a FIFO would block),
      outside images_dir, empty, not an image, of a format TF cannot
      decode, larger than max_pixels, or truncated/corrupt.
  """
  data = _read_image(path, images_dir)
  image_format, mode = _check_header_of_image(data, max_pixels)
  pass_through = image_format in JPEG_FORMATS and mode in PASS_THROUGH_MODES
  try:
    image = (images.decode_jpeg(data) if pass_through
             else images.decode_rgb(data))
  except tf.errors.OpError as e:
    raise BadImage('truncated or corrupt image', cli.tf_message(e)) from None
  size = stored_size(image.shape[:2], store_size)
  shrunk = size != tuple(image.shape[:2])
  if shrunk:
    image = images.resize_uint8(image, size)
  if store_format == 'raw':
    data = raw_bytes(image.numpy(), store_size)
  elif shrunk:
    data = images.encode_jpeg(image, SHRUNK_QUALITY)
  elif not pass_through:
    data = images.encode_jpeg(image)
  return Poster(data, int(image.shape[0]), int(image.shape[1]))


def raw_bytes(pixels: np.ndarray, box: Optional[Sequence[int]]) -> bytes:
  """A raw record's bytes: the pixels, row-major, in the box's top-left corner.

  With a store size every raw record is that box (zeros beside a smaller
  poster), so a batch of them is read with one decode_raw and one reshape;
  the record's height and width say where the poster is.
  """
  if box is None:
    return pixels.tobytes()
  padded = np.zeros((int(box[0]), int(box[1]), 3), np.uint8)
  padded[:pixels.shape[0], :pixels.shape[1]] = pixels
  return padded.tobytes()


def header_size(path: str, images_dir: Optional[str] = None
                ) -> Optional[Tuple[int, int]]:
  """(height, width) from an image file's header alone; None if unreadable.

  For estimates before converting (raw records' size on disk): the real
  checks come with load_poster. Opened as load_poster opens it: never a
  FIFO, never outside images_dir.
  """
  try:
    with files.open_regular_file(path, inside=images_dir) as f, \
        Image.open(f) as header:
      width, height = header.size
  except (OSError, ValueError, SyntaxError, tf.errors.OpError,
          Image.DecompressionBombError, files.NotARegularFile,
          files.OutsideFolder):
    return None
  return height, width


def _read_image(path: str, images_dir: Optional[str]) -> bytes:
  try:
    data = files.read_regular_file(path, inside=images_dir)
  except (FileNotFoundError, tf.errors.NotFoundError):
    raise BadImage('missing image', 'no such file') from None
  except files.NotARegularFile as e:
    raise BadImage('not a regular file', e.kind) from None
  except files.OutsideFolder as e:
    raise BadImage('outside the images folder', str(e)) from None
  except (OSError, tf.errors.OpError) as e:
    raise BadImage('unreadable image', cli.tf_message(e)) from None
  if not data:
    raise BadImage('empty image', 'the file is empty (0 bytes)')
  return data


def _check_header_of_image(data: bytes, max_pixels: int) -> tuple:
  """Format, mode and size from the header alone; refuses what can't be stored.

  Returns:
    (Pillow format name, Pillow mode).
  """
  try:
    with Image.open(io.BytesIO(data)) as header:
      image_format, mode = header.format, header.mode
      width, height = header.size
  except Image.DecompressionBombError as e:
    raise BadImage('too large', str(e)) from None
  except (Image.UnidentifiedImageError, OSError, ValueError, SyntaxError):
    if data.startswith(IMAGE_SIGNATURES):
      raise BadImage('truncated or corrupt image', 'the file starts like an '
                     'image but its header does not read') from None
    raise BadImage('not an image', 'neither Pillow nor TensorFlow reads this '
                   'file as an image') from None
  if image_format not in TF_FORMATS:
    raise BadImage('unsupported format', f'a {image_format} image; TensorFlow '
                   'decodes JPEG, PNG, GIF, BMP and WebP: convert it to JPEG')
  if width * height > max_pixels:
    raise BadImage('too large', f'{width}x{height} = {width * height:,} '
                   f'pixels, more than the limit of {max_pixels:,} '
                   '(--max_pixels); not a poster, maybe a decompression bomb')
  return image_format, mode
