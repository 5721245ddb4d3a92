"""One poster file → the JPEG bytes to store, or a BadImage saying why not.

The file is opened only if it is a regular file inside the images folder
(files.read_regular_file): a FIFO would block, a symlink could lead to
/etc/passwd; both are bad images, refused unopened. A JPEG that tf.io.decode_jpeg decodes keeps its original bytes. Grayscale
JPEGs pass through too (a decision): decode_jpeg(channels=3), as every
reader calls it, makes them RGB, and re-encoding would only lose quality.
PNG, GIF, WebP or BMP named .jpg, CMYK JPEGs and 16-bit or RGBA PNGs are
decoded with images.decode_rgb and stored as RGB JPEG. Pillow reads each
header first (format, mode, size), so a decompression bomb is refused before
any pixel is decoded. A store size resizes every poster
(images.resize_uint8) and re-encodes.
"""

import dataclasses
import io
from typing import Optional, Sequence

from PIL import Image
import tensorflow as tf

from posternet import cli
from posternet import files
from posternet import images

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
  data: bytes   # the JPEG bytes to store
  height: int
  width: int


def load_poster(path: str, *, max_pixels: int = images.MAX_PIXELS,
                store_size: Optional[Sequence[int]] = None,
                images_dir: Optional[str] = None) -> Poster:
  """Reads one poster file and returns the JPEG bytes to store.

  Original bytes when the file is a JPEG that decode_jpeg renders as RGB and
  no resize is asked for; otherwise decoded and re-encoded as RGB JPEG.
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
  if store_size is not None and tuple(image.shape[:2]) != tuple(store_size):
    image = images.resize_uint8(image, store_size)
    pass_through = False
  if not pass_through:
    data = images.encode_jpeg(image)
  return Poster(data, int(image.shape[0]), int(image.shape[1]))


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
