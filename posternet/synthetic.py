"""Synthetic posters in the tutorial's exact format: a CSV and an Images/ folder.

The real dataset cannot ship with the project, so tests, demos and benchmarks
run on posters made here. They imitate the real set where it matters for
posternet: the CSV's 27 columns, the label counts and genre frequencies, and
JPEGs of the real sizes, quality and entropy, so that they decode at the speed
of real posters. Each genre leaves a visual trace (a motif of its own shape and
colour, drawn a few times at random places and scales, and a mood that tints
the background), so a small CNN learns something in a few epochs, while noise
and random placement keep any single pixel from giving a label away.

Usage:
  python -m posternet.synthetic --out=data/synthetic --num_posters=7254 --seed=0
"""

import concurrent.futures
import csv
import ctypes
import functools
import io
import multiprocessing
import os
import re
import time
from typing import Optional, Sequence

from absl import app
from absl import flags
import numpy as np
from PIL import Image
from PIL import ImageChops
from PIL import ImageDraw

from posternet import cli
from posternet import genres

# The tutorial calls its CSV this; the converter also accepts `train.csv`.
CSV_NAME = 'multi_label_train.csv'
IMAGES_DIR = 'Images'

# Real label counts: 1, 2 or 3 genres per poster (real_sample/README.md).
LABEL_COUNT_SHARES = (0.18, 0.31, 0.51)

# Real share of posters with each genre (real_sample/README.md).
GENRE_FREQUENCY = {
    'Drama': 0.499, 'Comedy': 0.400, 'Action': 0.185, 'Romance': 0.184,
    'Crime': 0.162, 'Thriller': 0.127, 'Adventure': 0.120,
    'Documentary': 0.090, 'Horror': 0.069, 'Fantasy': 0.064, 'Mystery': 0.063,
    'Biography': 0.061, 'Family': 0.060, 'Sci-Fi': 0.055, 'Music': 0.042,
    'Animation': 0.034, 'History': 0.031, 'Sport': 0.030, 'War': 0.020,
    'Musical': 0.013, 'Western': 0.007, 'Short': 0.006, 'News': 0.003,
    'N/A': 0.001, 'Reality-TV': 0.0003,
}

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

# Random streams: each poster's pixels come from (seed, _POSTER_STREAM, index),
# so the output does not depend on how posters are split across workers.
_LABEL_STREAM, _EXTRA_LABEL_STREAM, _POSTER_STREAM, _DUPLICATE_STREAM = range(4)

# Grain amplitude range (+-, in levels): tuned so the JPEGs have the real
# sizes (median ~33 KB at 300x442) and decode speed.
_GRAIN = (3, 16)

# Share of the background colour that comes from the poster's genres.
_TINT = 0.5

# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3

# Posters per task sent to a worker: large enough to amortise the hand-off.
_CHUNK = 32


def _inclusion_probabilities(weights: np.ndarray) -> np.ndarray:
  """P(genre is among the first k draws), k = 1, 2, 3, for weighted draws.

  Draws are successive, without replacement, each proportional to the weights
  of the genres left (what the Gumbel top-k trick in sample_labels does).

  Returns:
    [3, NUM_GENRES]: row k-1 holds the probabilities for k draws.
  """
  w = weights / weights.sum()
  n = len(w)
  first = w
  not_j = 1.0 - w  # Weight left after genre j was drawn first.
  # pair[j, l]: j first, then l.
  pair = w[:, None] * w[None, :] / not_j[:, None]
  np.fill_diagonal(pair, 0.0)
  second = pair.sum(axis=0)
  left = 1.0 - w[:, None] - w[None, :]  # Weight left after j and l.
  third = np.zeros(n)
  for i in range(n):
    valid = np.ones((n, n), bool)
    np.fill_diagonal(valid, False)
    valid[i, :] = valid[:, i] = False
    third[i] = np.sum(np.where(valid, pair * w[i] / np.where(valid, left, 1.0),
                               0.0))
  return np.cumsum([first, second, third], axis=0)


@functools.lru_cache(maxsize=None)
def _genre_log_weights() -> np.ndarray:
  """Draw weights calibrated so each genre's marginal matches the real share.

  Drawing k genres proportionally to the real shares would flatten them (a
  common genre cannot be drawn twice), so the weights are fitted by a few
  multiplicative updates on the exact inclusion probabilities.
  """
  target = np.array([GENRE_FREQUENCY[g] for g in genres.GENRES])
  mean_count = np.dot(LABEL_COUNT_SHARES, [1, 2, 3])
  target *= mean_count / target.sum()  # The shares must add up to the count.
  weights = target.copy()
  for _ in range(200):
    marginal = np.dot(LABEL_COUNT_SHARES, _inclusion_probabilities(weights))
    weights *= target / marginal
    weights /= weights.sum()
  return np.log(weights)


def sample_labels(rng: np.random.Generator, num_posters: int) -> np.ndarray:
  """Draws multi-hot labels with the real label counts and genre frequencies.

  Args:
    rng: the random generator to draw from.
    num_posters: how many label vectors to draw.

  Returns:
    float32 [num_posters, NUM_GENRES], 1 to 3 ones per row.
  """
  counts = rng.choice(3, size=num_posters, p=LABEL_COUNT_SHARES) + 1
  # Gumbel top-k: the k largest perturbed log-weights are k successive
  # weighted draws without replacement.
  keys = _genre_log_weights() + rng.gumbel(size=(num_posters, genres.NUM_GENRES))
  rank = np.argsort(np.argsort(-keys, axis=1), axis=1)
  return (rank < counts[:, None]).astype(np.float32)


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


def render_poster(seed: int, index: int, labels: np.ndarray) -> bytes:
  """One poster as baseline JPEG bytes, the same for the same arguments.

  Args:
    seed: the dataset's seed.
    index: the poster's index; with the seed it seeds the poster's pixels.
    labels: its 25-dim multi-hot label vector.

  Returns:
    The JPEG file's bytes.
  """
  rng = np.random.default_rng([seed, _POSTER_STREAM, index])
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


def poster_id(index: int) -> str:
  """The IMDb-style Id of the poster with this index: tt0000001, …"""
  return f'tt{index + 1:07d}'


def _write_atomic(path: str, data: bytes) -> None:
  """Writes under a temporary name, then renames: no half-written file."""
  temporary = f'{path}.tmp-{os.getpid()}'
  with open(temporary, 'wb') as f:
    f.write(data)
  os.replace(temporary, path)


def _write_posters(images_dir: str, seed: int, start: int,
                   labels: np.ndarray) -> int:
  """Renders and writes posters start, start + 1, …; returns bytes written."""
  total = 0
  for offset, vector in enumerate(labels):
    data = render_poster(seed, start + offset, vector)
    _write_atomic(os.path.join(images_dir, poster_id(start + offset) + '.jpg'),
                  data)
    total += len(data)
  return total


def _init_worker() -> None:
  """Keeps freed image buffers in the worker's heap instead of unmapping them.

  glibc returns each large buffer (a poster is ~0.4 MB) to the kernel when it
  is freed, and the next poster faults it back in page by page: a sixth of the
  CPU time went to the kernel. Raising the mmap and trim thresholds cuts that
  tenfold. Other C libraries have no mallopt: nothing to do there.
  """
  try:
    libc = ctypes.CDLL(None)
    libc.mallopt(_M_MMAP_THRESHOLD, 32 << 20)
    libc.mallopt(_M_TRIM_THRESHOLD, 64 << 20)
  except (AttributeError, OSError):
    pass


def _write_all_posters(images_dir: str, seed: int, labels: np.ndarray,
                       workers: int) -> int:
  """Writes every poster, in a process pool when workers > 1."""
  starts = range(0, len(labels), _CHUNK)
  if workers == 1:
    return sum(_write_posters(images_dir, seed, s, labels[s:s + _CHUNK])
               for s in starts)
  # spawn: safe even when the caller has already started TensorFlow threads.
  context = multiprocessing.get_context('spawn')
  with concurrent.futures.ProcessPoolExecutor(
      workers, mp_context=context, initializer=_init_worker) as pool:
    futures = [pool.submit(_write_posters, images_dir, seed, s,
                           labels[s:s + _CHUNK]) for s in starts]
    return sum(f.result() for f in futures)


def _csv_rows(labels: np.ndarray, seed: int, duplicate_rows: int) -> list:
  """The CSV's rows; duplicated rows reappear identically later in the file."""
  rows = []
  for index, vector in enumerate(labels):
    rows.append([poster_id(index), genres.genre_string(genres.names_of(vector))]
                + [int(v) for v in vector])
  rng = np.random.default_rng([seed, _DUPLICATE_STREAM])
  for original in np.sort(rng.choice(len(labels), duplicate_rows,
                                     replace=False))[::-1]:
    position = int(rng.integers(original + 1, len(rows) + 1))
    rows.insert(position, list(rows[original]))
  return rows


def _write_csv(path: str, rows: list) -> None:
  """Writes the tutorial's CSV (27 columns, '\\n' line ends) atomically."""
  buffer = io.StringIO()
  writer = csv.writer(buffer, lineterminator='\n')
  writer.writerow(genres.CSV_COLUMNS)
  writer.writerows(rows)
  _write_atomic(path, buffer.getvalue().encode('utf-8'))


def _remove_stale(images_dir: str, keep: set) -> None:
  """Removes synthetic posters (and temporary files) from an earlier run."""
  pattern = re.compile(r'tt\d{7}\.jpg(\.tmp-\d+)?$')
  for name in os.listdir(images_dir):
    if pattern.match(name) and name not in keep:
      os.remove(os.path.join(images_dir, name))


def _check_arguments(num_posters: int, duplicate_rows: int, extra_images: int,
                     workers: Optional[int]) -> None:
  """Raises cli.UserError for values that cannot make a dataset."""
  if num_posters < 1:
    raise cli.UserError(f'--num_posters must be at least 1, not {num_posters}')
  if not 0 <= duplicate_rows <= num_posters:
    raise cli.UserError(f'--duplicate_rows must be between 0 and --num_posters'
                        f' ({num_posters}), not {duplicate_rows}')
  if extra_images < 0:
    raise cli.UserError(f'--extra_images must be >= 0, not {extra_images}')
  if num_posters + extra_images > 9_999_999:
    raise cli.UserError('at most 9,999,999 posters fit in 7-digit Ids')
  if workers is not None and workers < 1:
    raise cli.UserError(f'--workers must be at least 1, not {workers}')


def default_workers() -> int:
  """The number of CPU cores this process may use."""
  return len(os.sched_getaffinity(0))


def generate(out_dir: str, num_posters: int, seed: int = 0, *,
             duplicate_rows: int = 0, extra_images: int = 0,
             workers: Optional[int] = None) -> str:
  """Writes out_dir/multi_label_train.csv and out_dir/Images/<Id>.jpg.

  The CSV comes last, so a CSV present means every poster it names is there.

  Args:
    out_dir: the folder to write (created if missing). Synthetic posters left
      there by an earlier run are removed.
    num_posters: unique posters the CSV names (Ids tt0000001, …).
    seed: the same seed gives byte-identical output, whatever `workers` is.
    duplicate_rows: CSV rows repeated identically (the real CSV has 12); the
      CSV has num_posters + duplicate_rows rows.
    extra_images: posters in Images/ that the CSV does not name (the real
      folder has 625).
    workers: processes rendering posters; default: all usable cores.

  Returns:
    The CSV's path.

  Raises:
    cli.UserError: for impossible arguments or an unwritable out_dir.
  """
  _check_arguments(num_posters, duplicate_rows, extra_images, workers)
  labels = sample_labels(np.random.default_rng([seed, _LABEL_STREAM]),
                         num_posters)
  extra = sample_labels(np.random.default_rng([seed, _EXTRA_LABEL_STREAM]),
                        extra_images)
  images_dir = os.path.join(out_dir, IMAGES_DIR)
  csv_path = os.path.join(out_dir, CSV_NAME)
  try:
    os.makedirs(images_dir, exist_ok=True)
    if os.path.exists(csv_path):
      os.remove(csv_path)  # Absent until every poster is written again.
    total = num_posters + extra_images
    _remove_stale(images_dir, {poster_id(i) + '.jpg' for i in range(total)})
    _write_all_posters(images_dir, seed, np.concatenate([labels, extra]),
                       workers or default_workers())
    _write_csv(csv_path, _csv_rows(labels, seed, duplicate_rows))
  except OSError as e:
    raise cli.UserError(f'cannot write synthetic data to {out_dir}: {e}') from e
  return csv_path


FLAGS = flags.FLAGS


def _define_flags() -> None:
  """Defines the command's flags (only when run as a command).

  Tests and other tools import generate(); importing must not claim flag
  names (--out, --seed, --workers) that their own entry points use.
  """
  flags.DEFINE_string('out', 'data/synthetic',
                      'Folder for multi_label_train.csv and Images/.')
  flags.DEFINE_integer('num_posters', 7254,
                       'Unique posters (CSV rows without the duplicates).')
  flags.DEFINE_integer('seed', 0, 'Random seed; the same seed gives '
                       'byte-identical output.')
  flags.DEFINE_integer('duplicate_rows', 0, 'CSV rows to repeat identically '
                       '(the real CSV has 12).')
  flags.DEFINE_integer('extra_images', 0, 'Posters in Images/ that the CSV '
                       'does not name (the real folder has 625).')
  flags.DEFINE_integer('workers', None, 'Processes that render posters; '
                       'default: all usable cores. The output does not '
                       'depend on it.')


def main(argv: Sequence[str]) -> None:
  """Checks the flags, generates the data set, prints a one-line summary."""
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  workers = FLAGS.workers or default_workers()
  start = time.perf_counter()
  csv_path = generate(FLAGS.out, FLAGS.num_posters, FLAGS.seed,
                      duplicate_rows=FLAGS.duplicate_rows,
                      extra_images=FLAGS.extra_images, workers=FLAGS.workers)
  seconds = time.perf_counter() - start
  print(f'wrote {FLAGS.num_posters} posters (+{FLAGS.duplicate_rows} duplicate '
        f'rows, +{FLAGS.extra_images} unlisted images) in {seconds:.1f} s '
        f'with {workers} workers: {csv_path}')


def entry() -> None:
  """The console script `posternet-synthetic` and `python -m`."""
  _define_flags()
  cli.run(main)


if __name__ == '__main__':
  entry()
