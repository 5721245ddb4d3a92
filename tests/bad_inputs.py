"""Odd image files, made with Pillow, for the bad-input tests.

Each function returns the bytes of one kind of file a poster folder may hold
in the wild: fine images in other formats named .jpg, and broken ones.
"""

import io
import struct
import zlib

import numpy as np
from PIL import Image


def pixels(height: int = 48, width: int = 32, seed: int = 0) -> np.ndarray:
  """A smooth uint8 RGB image (gradients plus a little noise): JPEG-friendly."""
  rng = np.random.default_rng(seed)
  y, x = np.mgrid[0:height, 0:width]
  base = np.stack([x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1),
                   (x + y) * 255 // max(width + height - 2, 1)], axis=-1)
  noise = rng.integers(-8, 9, size=base.shape)
  return np.clip(base + noise + rng.integers(0, 60), 0, 255).astype(np.uint8)


def save(image: Image.Image, image_format: str, **options) -> bytes:
  buffer = io.BytesIO()
  image.save(buffer, image_format, **options)
  return buffer.getvalue()


def rgb_jpeg(seed: int = 0, height: int = 48, width: int = 32) -> bytes:
  return save(Image.fromarray(pixels(height, width, seed)), 'JPEG', quality=90)


def gray_jpeg(seed: int = 0) -> bytes:
  return save(Image.fromarray(pixels(seed=seed)).convert('L'), 'JPEG')


def cmyk_jpeg(seed: int = 0) -> bytes:
  return save(Image.fromarray(pixels(seed=seed)).convert('CMYK'), 'JPEG')


def png(seed: int = 0) -> bytes:
  return save(Image.fromarray(pixels(seed=seed)), 'PNG')


def rgba_png(seed: int = 0) -> bytes:
  return save(Image.fromarray(pixels(seed=seed)).convert('RGBA'), 'PNG')


def png16(seed: int = 0) -> bytes:
  """A 16-bit grayscale PNG."""
  gray = pixels(seed=seed)[..., 0].astype(np.uint16) * 257
  return save(Image.fromarray(gray), 'PNG')


def gif(seed: int = 0) -> bytes:
  return save(Image.fromarray(pixels(seed=seed)), 'GIF')


def webp(seed: int = 0) -> bytes:
  return save(Image.fromarray(pixels(seed=seed)), 'WEBP', quality=90)


def bmp(seed: int = 0) -> bytes:
  return save(Image.fromarray(pixels(seed=seed)), 'BMP')


def tiff(seed: int = 0) -> bytes:
  return save(Image.fromarray(pixels(seed=seed)), 'TIFF')


def truncated_jpeg(seed: int = 0) -> bytes:
  data = rgb_jpeg(seed, height=96, width=64)
  return data[:len(data) // 2]


def text_file() -> bytes:
  return b'this is not a poster\n'


def _png_chunk(kind: bytes, body: bytes) -> bytes:
  return (struct.pack('>I', len(body)) + kind + body
          + struct.pack('>I', zlib.crc32(kind + body)))


def huge_png_header(width: int = 20000, height: int = 20000) -> bytes:
  """A PNG whose header claims width x height pixels: a decompression bomb.

  Only the header is valid; decoding it would try to allocate
  width * height * 3 bytes, so the converter must refuse it from the header.
  """
  header = struct.pack('>IIBBBBB', width, height, 8, 2, 0, 0, 0)
  return (b'\x89PNG\r\n\x1a\n' + _png_chunk(b'IHDR', header)
          + _png_chunk(b'IDAT', zlib.compress(b'\0' * 64))
          + _png_chunk(b'IEND', b''))


def blank_png(width: int = 20000, height: int = 20000) -> bytes:
  """A valid all-black PNG of width x height: a bomb that really decodes.

  1-bit grayscale, so 20000x20000 is ~50 KB here and 1.2 GB as the RGB
  pixels a decoder makes. Compressed 100 rows at a time: making it holds
  neither the pixels nor all the rows (~0.15 s).
  """
  header = struct.pack('>IIBBBBB', width, height, 1, 0, 0, 0, 0)
  rows = b'\0' * (1 + (width + 7) // 8) * 100  # filter byte + packed bits
  compressor = zlib.compressobj(9)
  data = [compressor.compress(rows) for _ in range(height // 100)]
  data += [compressor.compress(rows[:len(rows) // 100 * (height % 100)]),
           compressor.flush()]
  return (b'\x89PNG\r\n\x1a\n' + _png_chunk(b'IHDR', header)
          + _png_chunk(b'IDAT', b''.join(data)) + _png_chunk(b'IEND', b''))


# Fine images that are not plain RGB/gray JPEGs: stored re-encoded.
REENCODED = {'png': png, 'rgba_png': rgba_png, 'png16': png16, 'gif': gif,
             'webp': webp, 'bmp': bmp, 'cmyk_jpeg': cmyk_jpeg}
