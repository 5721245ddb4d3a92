"""One synthetic poster's pixels: a JPEG like a real poster, with genre traces.

The JPEGs have the real sizes, quality and entropy, so they decode at the
speed of real posters. Each genre leaves a visual trace (a motif of its own
shape and colour, drawn a few times at random places and scales, and a mood
that tints the background), so a small CNN learns something in a few epochs,
while noise and random placement keep any single pixel from giving a label
away.
"""

import io
from typing import Sequence

import numpy as np
from PIL import Image
from PIL import ImageChops
from PIL import ImageDraw

from posternet import genres

# Each genre's trace: motif colour (RGB), motif shape, and mood (-1 darkens
# the background, +1 lightens it). Every (colour, shape) pair is distinct, and
# the frequent genres differ in both.
GENRE_STYLE = {
    'Action': ((225, 35, 30), 'star', 0),
    'Adventure': ((245, 135, 20), 'triangle', 0.5),
    'Animation': ((255, 225, 0), 'star', 1),
    'Biography': ((150, 100, 55), 'square', 0),
    'Comedy': ((250, 215, 25), 'disc', 1),
    'Crime': ((0, 150, 140), 'bar', -1),
    'Documentary': ((240, 240, 240), 'square', 0),
    'Drama': ((35, 70, 215), 'ring', 0),
    'Family': ((120, 220, 80), 'disc', 1),
    'Fantasy': ((210, 45, 225), 'star', 0),
    'History': ((190, 160, 100), 'bar', 0),
    'Horror': ((120, 0, 0), 'cross', -1),
    'Music': ((255, 100, 160), 'ring', 0.5),
    'Musical': ((255, 165, 0), 'disc', 1),
    'Mystery': ((95, 110, 150), 'diamond', -1),
    'N/A': ((128, 128, 128), 'hexagon', 0),
    'News': ((0, 90, 170), 'bar', 0),
    'Reality-TV': ((255, 0, 255), 'square', 0.5),
    'Romance': ((250, 110, 180), 'diamond', 0.5),
    'Sci-Fi': ((0, 215, 240), 'hexagon', -0.5),
    'Short': ((170, 255, 200), 'triangle', 0),
    'Sport': ((60, 180, 40), 'hexagon', 0.5),
    'Thriller': ((100, 0, 240), 'triangle', -1),
    'War': ((85, 95, 50), 'cross', -1),
    'Western': ((200, 120, 60), 'diamond', 0),
}

# Grain amplitude range (+-, in levels): tuned so the JPEGs have the real
# sizes (median ~33 KB at 300x442) and decode speed.
_GRAIN = (3, 16)

# Share of the background colour that comes from the poster's genres.
_TINT = 0.5


def _poster_size(rng: np.random.Generator) -> tuple:
  """(width, height) drawn from the real set's size distribution.

  86 % are 300 px wide, mostly 420-455 high (median ~442); the rest are the
  narrower shapes seen in the real sample.
  """
  kind = rng.random()
  if kind < 0.86:
    if rng.random() < 0.5:
      height = int(rng.integers(440, 451))
    elif rng.random() < 0.85:
      height = int(rng.integers(400, 472))
    else:
      height = int(rng.integers(300, 480))
    return 300, height
  if kind < 0.92:
    return 216, int(rng.integers(312, 348))
  if kind < 0.98:
    return int(rng.integers(250, 300)), int(rng.choice([475, 475, 500, 432]))
  width = int(rng.integers(89, 200))
  return width, int(width * rng.uniform(1.4, 1.55))


def _background(rng: np.random.Generator, width: int, height: int,
                names: Sequence[str]) -> Image.Image:
  """A vertical gradient with soft blotches, tinted by the genres.

  The tint (half the base colour comes from the genres' colours) and the mood
  (dark for horror, light for comedy) are a global trace that survives any
  downscale; the random half and the blotches keep it from being a giveaway.
  Built at 1/40 scale and enlarged by Pillow: smooth, and nearly free.
  """
  styles = [GENRE_STYLE[name] for name in names] or [((128,) * 3, None, 0.0)]
  tint = np.mean([color for color, _, _ in styles], axis=0)
  mood = np.mean([mood for _, _, mood in styles])
  top = (0.5 * rng.uniform(0, 255, 3) + _TINT * tint
         + 60 * mood + rng.normal(0, 30))
  bottom = top + rng.normal(0, 40, 3)
  small_h, small_w = height // 40 + 2, width // 40 + 2
  ramp = np.linspace(0.0, 1.0, small_h)[:, None, None]
  # Blotches vary mostly in lightness, as in a photo, little in hue.
  small = (top * (1 - ramp) + bottom * ramp
           + rng.normal(0, 30, (small_h, small_w, 1))
           + rng.normal(0, 8, (small_h, small_w, 3)))
  small = Image.fromarray(np.uint8(np.clip(small, 0, 255)))
  return small.resize((width, height), Image.BILINEAR)


def _draw_motif(draw: ImageDraw.ImageDraw, shape: str, center: tuple,
                radius: float, color: tuple, rotation: float) -> None:
  """Draws one motif: the shape that marks a genre."""
  x, y = center
  box = (x - radius, y - radius, x + radius, y + radius)
  if shape == 'disc':
    draw.ellipse(box, fill=color)
  elif shape == 'ring':
    draw.ellipse(box, outline=color, width=max(2, int(radius / 3)))
  elif shape == 'square':
    draw.rectangle(box, fill=color)
  elif shape == 'bar':
    draw.rectangle((x - 2 * radius, y - radius / 3, x + 2 * radius,
                    y + radius / 3), fill=color)
  elif shape == 'cross':
    draw.rectangle((x - radius, y - radius / 4, x + radius, y + radius / 4),
                   fill=color)
    draw.rectangle((x - radius / 4, y - radius, x + radius / 4, y + radius),
                   fill=color)
  elif shape == 'diamond':
    draw.regular_polygon((x, y, radius), 4, rotation=45, fill=color)
  elif shape == 'triangle':
    draw.regular_polygon((x, y, radius), 3, rotation=rotation, fill=color)
  elif shape == 'hexagon':
    draw.regular_polygon((x, y, radius), 6, rotation=rotation, fill=color)
  elif shape == 'star':
    angles = np.deg2rad(rotation) + np.arange(10) * np.pi / 5
    radii = np.where(np.arange(10) % 2 == 0, radius, radius * 0.45)
    draw.polygon(list(zip(x + radii * np.sin(angles),
                          y - radii * np.cos(angles))), fill=color)
  else:
    raise ValueError(f'unknown motif shape {shape!r}')


def _motifs(rng: np.random.Generator, names: Sequence[str], width: int,
            height: int) -> list:
  """Each genre's motifs at random places and scales, in random draw order."""
  motifs = []
  for name in names:
    color, shape, _ = GENRE_STYLE[name]
    for _ in range(int(rng.integers(3, 6))):
      center = (rng.uniform(0, width), rng.uniform(0, height))
      radius = rng.uniform(0.07, 0.17) * width
      jitter = np.clip(np.array(color) + rng.normal(0, 14, 3), 0, 255)
      motifs.append((shape, center, radius, tuple(int(c) for c in jitter),
                     rng.uniform(0, 360)))
  return [motifs[i] for i in rng.permutation(len(motifs))]


# One character cell of a text block, as a mask: a letter, then the gaps to
# the next letter and to the next line.
_GLYPH = np.array([[1, 1, 1, 0]] * 3 + [[0, 0, 0, 0]] * 2, np.uint8) * 255


def _text_block(image: Image.Image, rng: np.random.Generator, box: tuple,
                letter: float, color: tuple) -> None:
  """Lines of letter-like blocks (a title, a billing block), as on posters.

  Drawn as one mask enlarged by Pillow, so a block of hundreds of letters
  costs about as little as one rectangle.
  """
  left, top, right, bottom = (int(v) for v in box)
  lines = max(1, int((bottom - top) / (1.6 * letter)))
  letters = max(1, int((right - left) / letter))
  cells = (rng.random((lines, letters)) < 0.8).astype(np.uint8)
  mask = Image.fromarray(np.kron(cells, _GLYPH))
  mask = mask.resize((right - left, bottom - top), Image.NEAREST)
  image.paste(color, (left, top, right, bottom), mask)


def _decorate(image: Image.Image, rng: np.random.Generator) -> None:
  """Genre-free content: figures, a title and a billing block."""
  width, height = image.size
  draw = ImageDraw.Draw(image)
  for _ in range(int(rng.integers(0, 3))):  # Figures: large, muted ellipses.
    cx, cy = rng.uniform(0, width), rng.uniform(height * 0.2, height)
    rx, ry = rng.uniform(0.1, 0.3) * width, rng.uniform(0.2, 0.5) * height
    shade = tuple(int(c) for c in rng.uniform(20, 160, 3))
    draw.ellipse((cx - rx, cy - ry, cx + rx, cy + ry), fill=shade)
  ink = tuple(int(c) for c in (rng.uniform(200, 255, 3) if rng.random() < 0.6
                               else rng.uniform(0, 50, 3)))
  title_top = rng.uniform(0.03, 0.7) * height
  _text_block(image, rng, (0.08 * width, title_top, 0.92 * width,
                           title_top + rng.uniform(0.06, 0.14) * height),
              rng.uniform(0.05, 0.09) * width, ink)
  _text_block(image, rng, (0.1 * width, 0.88 * height, 0.9 * width,
                           0.97 * height), rng.uniform(0.012, 0.02) * width,
              ink)


def _add_grain(rng: np.random.Generator, image: Image.Image) -> Image.Image:
  """Adds film grain of a random strength.

  Real posters are photos: the grain gives their entropy (file size, decode
  cost) and blurs any one pixel's link to a label. Random bytes mapped by a
  lookup table, and ImageChops, keep it in C.
  """
  amplitude = int(rng.integers(_GRAIN[0], _GRAIN[1] + 1))
  noise = Image.frombytes('L', image.size,
                          rng.bytes(image.size[0] * image.size[1]))
  # Byte b -> b * (2 * amplitude + 1) // 256: uniform on 0 .. 2 * amplitude.
  noise = noise.point([b * (2 * amplitude + 1) // 256 for b in range(256)])
  return ImageChops.add(image, noise.convert('RGB'), scale=1.0,
                        offset=-amplitude)


def render_poster(rng: np.random.Generator, labels: np.ndarray) -> bytes:
  """One poster as baseline JPEG bytes, the same for the same arguments.

  Args:
    rng: the poster's own random generator (its state decides every pixel).
    labels: its 25-dim multi-hot label vector.

  Returns:
    The JPEG file's bytes.
  """
  names = genres.names_of(labels)
  width, height = _poster_size(rng)
  image = _background(rng, width, height, names)
  _decorate(image, rng)
  draw = ImageDraw.Draw(image)
  for motif in _motifs(rng, names, width, height):
    _draw_motif(draw, *motif)
  poster = _add_grain(rng, image)
  if rng.random() < 0.015:  # A few real posters are black and white.
    poster = poster.convert('L').convert('RGB')
  buffer = io.BytesIO()
  poster.save(buffer, 'JPEG', quality=int(rng.integers(80, 91)), subsampling=2,
              optimize=False, progressive=False)
  return buffer.getvalue()
