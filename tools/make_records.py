r"""Converts the tutorial's CSV and Images/ folder to sharded TFRecords.

`make records`, or:

  python -m tools.make_records --data_dir=path/Multi_Label_dataset \
      --out=records/
  python -m tools.make_records --csv=path/multi_label_train.csv \
      --images=path/Images --out=records/ [--store_size=400x400]
  python -m tools.make_records --verify=records/

What it writes (posternet/records.py owns every name and key):
  train-00000-of-000NN.tfrecord …, val-…
                       one tf.train.Example per poster
  manifest.json        written last: counts, checksums, provenance
  skipped.csv          with --skip_bad_images: what was left out, and why

Split: the tutorial's, bit for bit (tutorial_split). Identical duplicate rows
are written once, the first row deciding the split; the same Id with other
labels is an error.

Image bytes: a JPEG that tf.io.decode_jpeg decodes keeps its original bytes.
Grayscale JPEGs pass through too (a decision): decode_jpeg(channels=3), as every
reader calls it, makes them RGB, and re-encoding would only lose quality.
PNG, GIF, WebP or BMP named .jpg, CMYK JPEGs and 16-bit or RGBA PNGs are decoded
with images.decode_rgb and stored as RGB JPEG. Pillow reads each header first
(format, mode, size), so a decompression bomb is refused before any pixel is
decoded. --store_size resizes every poster (images.resize_uint8) and re-encodes.

Shard rule: a split of n posters whose stored bytes are estimated at B gets
  k = max(m, ceil(B / 128 MiB)), rounded up to a multiple of m,
  then at most n // 128 (no shard of fewer than 128 posters), at least 1,
  and never fewer than ceil(B / 128 MiB) or --min_shards (one shard a poster
  at most),
with m = 16 for train (2 hosts x 8 parallel readers all get whole shards) and
m = 2 for val. Posters fill shards in split order, in contiguous runs of equal
size (±1). The tutorial's 7,254 posters give 16 train shards of ~408 posters
(~14 MB each) and 2 val shards.

Resume: the plan (which poster goes in which shard) is keyed on the CSV's
sha256, the listed images' sizes and mtimes and the flags, and kept in
`.make_records/` under --out, with one note per finished shard. Each shard is
written under a temporary name and renamed when complete; the manifest comes
last, then the notes go. A rerun with the same key reuses finished shards; any
other plan starts afresh. Output is byte-identical whatever the worker count,
interrupted or not. All record and manifest I/O goes through tf.io.gfile.
"""

import collections
import concurrent.futures
import csv
import dataclasses
import functools
import hashlib
import io
import itertools
import json
import math
import os
import re
import time
import warnings
from typing import Iterable, Iterator, Optional, Sequence

if __name__ == '__main__':
  # Every bad image gets our own one-line message; TF's C++ log would add its
  # own lines per bad JPEG. An explicit setting by the user wins.
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

from absl import app
from absl import flags
import numpy as np
import pandas as pd
from PIL import Image
import tensorflow as tf

from posternet import cli
from posternet import genres
from posternet import images
from posternet import records
from posternet import remote

# A poster has ~0.13 Mpx; 40 Mpx is already a very large photo. Beyond it an
# image is refused from its header alone, before decoding (decompression bombs).
DEFAULT_MAX_PIXELS = 40_000_000

# The shard rule (module docstring).
MAX_SHARD_BYTES = 128 * 2**20
MIN_SHARDS = {'train': 16, 'val': 2}
# Every shard pass costs the reader ~1 ms to set up: 32-poster shards cost
# ~15-25 µs of CPU per poster, against ~150-200 µs to decode a 128x128 one
# (BUILD_NOTES, Benchmark).
MIN_POSTERS_PER_SHARD = 128

# The tutorial's name for the CSV, and the downloadable archive's.
CSV_NAMES = ('multi_label_train.csv', 'train.csv')
IMAGE_SUFFIX = '.jpg'
SKIPPED_REPORT = 'skipped.csv'
STATE_DIR = '.make_records'
PLAN_VERSION = 1  # bump when a change to this file changes the output bytes
SPLIT_METHOD = ('numpy RandomState(seed).permutation(n): first '
                'ceil(val_fraction*n) are val, rest train, in permutation '
                'order')

# Why a poster can be skipped, in the manifest's order.
REASONS = ('missing image', 'unreadable image', 'empty image', 'not an image',
           'unsupported format', 'too large', 'truncated or corrupt image')

# What TensorFlow decodes (Pillow's format names); MPO is a JPEG with extras.
JPEG_FORMATS = ('JPEG', 'MPO')
TF_FORMATS = JPEG_FORMATS + ('PNG', 'GIF', 'BMP', 'WEBP')
# How JPEG, PNG, GIF, BMP and WebP (RIFF) files start: one of these whose
# header does not read is a broken image, not some other kind of file.
IMAGE_SIGNATURES = (b'\xff\xd8', b'\x89PNG', b'GIF8', b'BM', b'RIFF')
# JPEG modes that decode_jpeg(channels=3) renders right (not CMYK).
PASS_THROUGH_MODES = ('RGB', 'L')

_SHARD_FILE = re.compile(r'^(train|val)-\d{5}-of-\d{5}\.tfrecord(\.tmp)?$')


# ----------------------------------------------------------------- the split


def tutorial_split(num_rows: int, val_fraction: float = 0.1,
                   seed: int = 42) -> tuple:
  """The tutorial's train_test_split(test_size=val_fraction, random_state=seed).

  scikit-learn's ShuffleSplit draws RandomState(seed).permutation(n); the first
  ceil(val_fraction * n) indices are the test (here: val) set, the rest train,
  both in permutation order. Reproduced so results compare with the tutorial's.

  Args:
    num_rows: n, the CSV's rows, duplicates included (as the tutorial saw them).
    val_fraction: the validation share, 0 < val_fraction < 1.
    seed: the tutorial's random_state.

  Returns:
    (train_indices, val_indices), int64 arrays of row indices.
  """
  if not 0 < val_fraction < 1:
    raise ValueError(f'val_fraction must be in (0, 1), not {val_fraction}')
  permutation = np.random.RandomState(seed).permutation(num_rows)
  num_val = math.ceil(val_fraction * num_rows)
  return permutation[num_val:], permutation[:num_val]


# ------------------------------------------------------------------- the CSV


@dataclasses.dataclass(frozen=True)
class Table:
  """The CSV, checked: one entry per row, duplicates included."""
  ids: list            # str per row
  labels: np.ndarray   # float32 [rows, 25]
  first: np.ndarray    # bool per row: the first row with its Id
  sha256: str
  name: str            # the CSV's file name, for the manifest

  @property
  def num_rows(self) -> int:
    return len(self.ids)


def _line(row: int) -> int:
  """The CSV line of a data row (line 1 is the header)."""
  return row + 2


def find_inputs(data_dir: str) -> tuple:
  """The CSV and Images/ inside a folder laid out like Multi_Label_dataset/.

  Returns:
    (csv_path, images_dir).
  """
  remote.check_path(data_dir, '--data_dir')
  if not tf.io.gfile.isdir(data_dir):
    raise cli.UserError(f'--data_dir {data_dir} is not a folder')
  found = [os.path.join(data_dir, name) for name in CSV_NAMES
           if tf.io.gfile.exists(os.path.join(data_dir, name))]
  if not found:
    raise cli.UserError(f'{data_dir} holds neither {" nor ".join(CSV_NAMES)}; '
                        'give the CSV with --csv and the posters with --images')
  if len(found) > 1:
    raise cli.UserError(f'{data_dir} holds both {" and ".join(CSV_NAMES)}; '
                        'say which one with --csv (and --images)')
  return found[0], os.path.join(data_dir, 'Images')


def read_csv(csv_path: str) -> Table:
  """Reads and checks the tutorial's CSV; every mistake names its line.

  Raises:
    cli.UserError: the file is missing or empty, the header is not Id, Genre
      and the 25 genres, a label is not 0/1, a row has no genre, an Id is not
      a plain file name, or one Id has two different label rows.
  """
  data = _read_bytes(csv_path)
  frame = _parse_csv(csv_path, data)
  _check_header(csv_path, frame.columns)
  frame.columns = genres.normalize_header(frame.columns)
  labels = _labels(csv_path, frame)
  ids = frame[genres.ID_COLUMN].tolist()
  for row, poster_id in enumerate(ids):
    _check_id(csv_path, row, poster_id)
  return Table(ids=ids, labels=labels, first=_first_rows(csv_path, ids, labels),
               sha256=hashlib.sha256(data).hexdigest(),
               name=os.path.basename(csv_path))


def _read_bytes(csv_path: str) -> bytes:
  if not tf.io.gfile.exists(csv_path):
    raise cli.UserError(f'CSV file {csv_path} not found')
  if tf.io.gfile.isdir(csv_path):
    raise cli.UserError(f'{csv_path} is a folder, not the CSV file')
  try:
    with tf.io.gfile.GFile(csv_path, 'rb') as f:
      return f.read()
  except tf.errors.OpError as e:
    raise cli.UserError(f'cannot read {csv_path}: {_tf_message(e)}') from None


def _parse_csv(csv_path: str, data: bytes) -> pd.DataFrame:
  """All cells as text, nothing turned into NaN behind our back."""
  if not data.strip():
    raise cli.UserError(f'{csv_path} is empty; expected the header Id, Genre, '
                        'then the 25 genre columns')
  try:
    frame = pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False,
                        na_filter=False, encoding='utf-8-sig')
  except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as e:
    message = str(e).strip().splitlines()[-1]
    raise cli.UserError(
        f'{csv_path} is not a readable CSV: {message}') from None
  if frame.empty:
    raise cli.UserError(f'{csv_path} has a header but no rows')
  return frame


def _check_header(csv_path: str, columns: Sequence[str]) -> None:
  """Names compared after stripping spaces: copies of the data have ' Sport'."""
  names = genres.normalize_header(columns)
  missing = [c for c in genres.CSV_COLUMNS if c not in names]
  unknown = [c for c in names if c not in genres.CSV_COLUMNS]
  repeated = sorted({c for c in names if names.count(c) > 1})
  problems = []
  if missing:
    problems.append('missing column(s) ' + ', '.join(map(repr, missing)))
  if unknown:
    problems.append('unknown column(s) ' + ', '.join(map(repr, unknown)))
  if repeated:
    problems.append('repeated column(s) ' + ', '.join(map(repr, repeated)))
  if problems:
    raise cli.UserError(
        f'{csv_path}: header: {"; ".join(problems)} (expected Id, Genre and '
        f'the 25 genres: {", ".join(genres.GENRES)})')


def _labels(csv_path: str, frame: pd.DataFrame) -> np.ndarray:
  """The 25 one-hot columns as float32; a cell other than 0/1 is an error."""
  cells = frame.loc[:, list(genres.GENRES)].to_numpy(dtype=str)
  cells = np.char.strip(cells)
  ones = np.isin(cells, ('1', '1.0'))
  valid = ones | np.isin(cells, ('0', '0.0'))
  ids = frame[genres.ID_COLUMN].tolist()
  if not valid.all():
    row, column = np.argwhere(~valid)[0]
    cell = str(cells[row, column])
    raise cli.UserError(
        f'{csv_path}: line {_line(row)} (Id {ids[row]!r}): column '
        f'{genres.GENRES[column]!r} is {cell!r}; labels must be 0 or 1')
  empty = np.flatnonzero(~ones.any(axis=1))
  if empty.size:
    row = empty[0]
    raise cli.UserError(f'{csv_path}: line {_line(row)} (Id {ids[row]!r}) has '
                        'no genre: all 25 genre columns are 0')
  return ones.astype(np.float32)


def _check_id(csv_path: str, row: int, poster_id: str) -> None:
  """An Id names a file inside --images: no path, nothing outside it opened."""
  bad = (not poster_id or poster_id != poster_id.strip()
         or poster_id in ('.', '..')
         or any(c in poster_id for c in ('/', '\\', '\0', os.sep)))
  if bad:
    raise cli.UserError(
        f'{csv_path}: line {_line(row)}: Id {poster_id!r} is not a plain file '
        f'name (the poster must be Images/<Id>{IMAGE_SUFFIX})')


def _first_rows(csv_path: str, ids: Sequence[str],
                labels: np.ndarray) -> np.ndarray:
  """Marks each Id's first row; repeats must carry the same labels."""
  first_row = {}
  first = np.zeros(len(ids), bool)
  for row, poster_id in enumerate(ids):
    earlier = first_row.setdefault(poster_id, row)
    if earlier == row:
      first[row] = True
    elif not np.array_equal(labels[earlier], labels[row]):
      raise cli.UserError(
          f'{csv_path}: Id {poster_id!r} on line {_line(row)} has other '
          f'labels than on line {_line(earlier)} '
          f'({genres.names_of(labels[row])} vs '
          f'{genres.names_of(labels[earlier])})')
  return first


# ---------------------------------------------------------------- the images


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


def load_poster(path: str, *, max_pixels: int = DEFAULT_MAX_PIXELS,
                store_size: Optional[Sequence[int]] = None) -> Poster:
  """Reads one poster file and returns the JPEG bytes to store.

  Original bytes when the file is a JPEG that decode_jpeg renders as RGB and
  no resize is asked for; otherwise decoded and re-encoded as RGB JPEG.

  Raises:
    BadImage: the file is missing, empty, not an image, of a format TF cannot
      decode, larger than max_pixels, or truncated/corrupt.
  """
  data = _read_image(path)
  image_format, mode = _check_header_of_image(data, max_pixels)
  pass_through = image_format in JPEG_FORMATS and mode in PASS_THROUGH_MODES
  try:
    image = (images.decode_jpeg(data) if pass_through
             else images.decode_rgb(data))
  except tf.errors.OpError as e:
    raise BadImage('truncated or corrupt image', _tf_message(e)) from None
  if store_size is not None and tuple(image.shape[:2]) != tuple(store_size):
    image = images.resize_uint8(image, store_size)
    pass_through = False
  if not pass_through:
    data = images.encode_jpeg(image)
  return Poster(data, int(image.shape[0]), int(image.shape[1]))


def _read_image(path: str) -> bytes:
  try:
    with tf.io.gfile.GFile(path, 'rb') as f:
      data = f.read()
  except tf.errors.NotFoundError:
    raise BadImage('missing image', 'no such file') from None
  except tf.errors.OpError as e:
    raise BadImage('unreadable image', _tf_message(e)) from None
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


def _tf_message(error: tf.errors.OpError) -> str:
  """TF's error text on one line, without the op-name decoration."""
  text = re.sub(r'\{\{[^}]*\}\}\s*', '', error.message or str(error))
  text = text.split(' [Op:')[0]
  return ' '.join(text.split())


# ------------------------------------------------------------------ the plan


@dataclasses.dataclass(frozen=True)
class Shard:
  split: str
  file: str
  rows: tuple   # CSV row indices, in split order


def num_shards(num_posters: int, estimated_bytes: int, split: str,
               min_shards: int = 1) -> int:
  """How many shards a split gets: the rule in the module docstring.

  min_shards lets a small data set be shared among that many input workers
  (each reads whole shards), below the 128-poster minimum.
  """
  if num_posters == 0:
    return 0
  minimum = MIN_SHARDS[split]
  by_bytes = -(-estimated_bytes // MAX_SHARD_BYTES)
  wanted = -(-max(minimum, by_bytes) // minimum) * minimum
  wanted = min(wanted, num_posters // MIN_POSTERS_PER_SHARD)
  return min(num_posters, max(1, by_bytes, wanted, min_shards))


def plan_shards(split: str, rows: np.ndarray, estimated_bytes: int,
                min_shards: int = 1) -> list:
  """Cuts a split's rows (in order) into contiguous, equal-size shards."""
  count = num_shards(len(rows), estimated_bytes, split, min_shards)
  bounds = [len(rows) * i // count for i in range(count + 1)]
  return [Shard(split, records.shard_name(split, i, count),
                tuple(int(r) for r in rows[bounds[i]:bounds[i + 1]]))
          for i in range(count)]


def _image_path(images_dir: str, poster_id: str) -> str:
  return os.path.join(images_dir, poster_id + IMAGE_SUFFIX)


def _stat_images(paths: Sequence[str], workers: int) -> list:
  """(bytes, mtime_ns) per file, (-1, -1) when missing: for the plan's key."""

  def stat(path):
    try:
      info = tf.io.gfile.stat(path)
      return int(info.length), int(info.mtime_nsec)
    except tf.errors.OpError:
      return -1, -1

  with concurrent.futures.ThreadPoolExecutor(workers) as pool:
    return list(pool.map(stat, paths))


def _count_unlisted(images_dir: str, table: Table) -> int:
  """Entries in --images that the CSV does not name (ignored, counted)."""
  if not tf.io.gfile.isdir(images_dir):
    raise cli.UserError(f'images folder {images_dir} not found')
  listed = {poster_id + IMAGE_SUFFIX for poster_id in table.ids}
  return sum(1 for name in tf.io.gfile.listdir(images_dir)
             if name.rstrip('/') not in listed)


def _estimated_bytes(rows: np.ndarray, sizes: Sequence[tuple],
                     store_size: Optional[Sequence[int]]) -> int:
  """Stored bytes of a split, guessed before converting (for the shard count).

  Source sizes when bytes pass through; otherwise 3/4 byte per stored pixel,
  a generous guess for a q95 JPEG of a poster.
  """
  if store_size is not None:
    return len(rows) * store_size[0] * store_size[1] * 3 // 4
  return sum(max(sizes[r][0], 0) for r in rows)


# ---------------------------------------------------- resumable state on disk


def _json_bytes(value) -> bytes:
  return (json.dumps(value, indent=2, sort_keys=True) + '\n').encode()


def _write_atomic(path: str, data: bytes) -> None:
  temporary = path + '.tmp'
  with tf.io.gfile.GFile(temporary, 'wb') as f:
    f.write(data)
  tf.io.gfile.rename(temporary, path, overwrite=True)


def _read_json(path: str):
  """The JSON in path, or None when absent or unreadable (half-written)."""
  try:
    with tf.io.gfile.GFile(path, 'rb') as f:
      return json.loads(f.read())
  except (tf.errors.OpError, ValueError):
    return None


def _clear_outputs(out_dir: str) -> None:
  """Removes what an earlier conversion wrote here; nothing else is touched."""
  for name in tf.io.gfile.listdir(out_dir):
    name = name.rstrip('/')
    if (_SHARD_FILE.match(name) or name in (records.MANIFEST_NAME,
                                            SKIPPED_REPORT)):
      tf.io.gfile.remove(os.path.join(out_dir, name))
  state = os.path.join(out_dir, STATE_DIR)
  if tf.io.gfile.exists(state):
    tf.io.gfile.rmtree(state)


def _start_or_resume(out_dir: str, plan: dict) -> dict:
  """Keeps finished shards of the same plan, else starts afresh.

  Returns:
    {shard file: its note} for shards finished by an earlier run.
  """
  state = os.path.join(out_dir, STATE_DIR)
  plan_file = os.path.join(state, 'plan.json')
  old = _read_json(plan_file)
  if not old or old.get('key') != plan['key']:
    _clear_outputs(out_dir)
    tf.io.gfile.makedirs(state)
    _write_atomic(plan_file, _json_bytes(plan))
    return {}
  notes = {}
  for shard_file in plan['shards']:
    note = _read_json(os.path.join(state, shard_file + '.json'))
    path = os.path.join(out_dir, shard_file)
    if (note and tf.io.gfile.exists(path)
        and tf.io.gfile.stat(path).length == note['bytes']):
      notes[shard_file] = note
  return notes


# --------------------------------------------------------- writing the shards


def _ordered(pool, function, items: Iterable, window: int) -> Iterator:
  """Futures of function(item) in input order, at most `window` in flight."""
  items = iter(items)
  pending = collections.deque(
      pool.submit(function, item) for item in itertools.islice(items, window))
  while pending:
    future = pending.popleft()
    pending.extend(pool.submit(function, item)
                   for item in itertools.islice(items, 1))
    yield future


def _size_and_sha256(path: str) -> tuple:
  digest, size = hashlib.sha256(), 0
  with tf.io.gfile.GFile(path, 'rb') as f:
    while chunk := f.read(8 << 20):
      digest.update(chunk)
      size += len(chunk)
  return size, digest.hexdigest()


def _write_shard(out_dir: str, shard: Shard, futures: Iterator,
                 table: Table, images_dir: str, skip_bad_images: bool,
                 bar: cli.Progress) -> dict:
  """Writes one shard under a temporary name, renames it, returns its note."""
  path = os.path.join(out_dir, shard.file)
  sizes, skipped = [], []
  with tf.io.TFRecordWriter(path + '.tmp') as writer:
    for row in shard.rows:
      poster_id = table.ids[row]
      try:
        poster = next(futures).result()
      except BadImage as e:
        if not skip_bad_images:
          raise cli.UserError(
              f'{_image_path(images_dir, poster_id)} (line {_line(row)}, Id '
              f'{poster_id}): {e}; fix or remove the row, or pass '
              '--skip_bad_images to leave such posters out') from None
        skipped.append([_line(row), poster_id, poster_id + IMAGE_SUFFIX,
                        e.reason, e.detail])
      else:
        example = records.make_example(poster.data, poster.height,
                                       poster.width, poster_id,
                                       table.labels[row])
        # deterministic: map order otherwise differs between processes, and
        # a resumed run must write the very bytes of an uninterrupted one.
        writer.write(example.SerializeToString(deterministic=True))
        sizes.append((poster.height, poster.width))
      bar.update()
  size, sha256 = _size_and_sha256(path + '.tmp')
  tf.io.gfile.rename(path + '.tmp', path, overwrite=True)
  heights, widths = zip(*sizes) if sizes else ((), ())
  return {'file': shard.file, 'num_examples': len(sizes), 'bytes': size,
          'sha256': sha256, 'skipped': skipped,
          'min_height': min(heights, default=None),
          'max_height': max(heights, default=None),
          'min_width': min(widths, default=None),
          'max_width': max(widths, default=None)}


def _write_shards(out_dir: str, shards: Sequence[Shard], table: Table,
                  images_dir: str, options: dict, workers: int,
                  bar: cli.Progress) -> Iterator:
  """Converts posters on a thread pool, writing shards in order; yields notes.

  TF's decode and encode ops release the GIL, so threads use every core; the
  results come back in input order, which makes the bytes independent of
  the worker count.
  """
  load = functools.partial(load_poster, max_pixels=options['max_pixels'],
                           store_size=options['store_size'])
  paths = (_image_path(images_dir, table.ids[row])
           for shard in shards for row in shard.rows)
  with concurrent.futures.ThreadPoolExecutor(workers) as pool:
    futures = _ordered(pool, load, paths, window=4 * workers)
    try:
      for shard in shards:
        yield _write_shard(out_dir, shard, futures, table, images_dir,
                           options['skip_bad_images'], bar)
    finally:
      pool.shutdown(wait=True, cancel_futures=True)


# ------------------------------------------------------------- the manifest


def _split_entry(notes: Sequence[dict]) -> dict:
  def extreme(function, key):
    values = [n[key] for n in notes if n[key] is not None]
    return function(values) if values else None

  return {
      'num_examples': sum(n['num_examples'] for n in notes),
      'min_height': extreme(min, 'min_height'),
      'min_width': extreme(min, 'min_width'),
      'max_height': extreme(max, 'max_height'),
      'max_width': extreme(max, 'max_width'),
      'shards': [{k: n[k] for k in ('file', 'num_examples', 'bytes', 'sha256')}
                 for n in notes],
  }


def _manifest(table: Table, options: dict, unlisted: int,
              notes_by_split: dict, skipped: Sequence) -> dict:
  by_reason = collections.Counter(entry[3] for entry in skipped)
  store_size = options['store_size']
  return {
      'format_version': records.FORMAT_VERSION,
      'genres': list(genres.GENRES),
      'store_size': list(store_size) if store_size else None,
      'split': {'seed': options['seed'],
                'val_fraction': options['val_fraction'],
                'method': SPLIT_METHOD},
      'source': {'csv': table.name, 'csv_sha256': table.sha256,
                 'csv_rows': table.num_rows,
                 'unique_ids': int(table.first.sum()),
                 'duplicate_rows': int(table.num_rows - table.first.sum()),
                 'unlisted_images': unlisted},
      'skipped': {'count': len(skipped),
                  'by_reason': {r: by_reason[r] for r in REASONS},
                  'report': (SKIPPED_REPORT if options['skip_bad_images']
                             else None)},
      'splits': {split: _split_entry(notes)
                 for split, notes in notes_by_split.items()},
  }


def _skipped_report(skipped: Sequence) -> bytes:
  text = io.StringIO()
  writer = csv.writer(text, lineterminator='\n')
  writer.writerow(['line', 'Id', 'file', 'reason', 'detail'])
  writer.writerows(sorted(skipped))
  return text.getvalue().encode()


# ------------------------------------------------------------------ convert


def convert(csv_path: str, images_dir: str, out_dir: str, *,
            val_fraction: float = 0.1, seed: int = 42,
            workers: Optional[int] = None, skip_bad_images: bool = False,
            store_size: Optional[Sequence[int]] = None,
            max_pixels: int = DEFAULT_MAX_PIXELS, min_shards: int = 1,
            progress: bool = True) -> dict:
  """Converts the tutorial's CSV + Images/ to shards and manifest.json.

  Args:
    csv_path: the tutorial's CSV (Id, Genre, 25 genre columns).
    images_dir: the folder of <Id>.jpg posters.
    out_dir: where shards, manifest.json (and skipped.csv) go; created.
    val_fraction: validation share of the tutorial's split.
    seed: the split's seed (the tutorial's random_state).
    workers: threads decoding posters; None means all cores.
    skip_bad_images: leave bad images out (counted, listed in skipped.csv)
      instead of stopping at the first.
    store_size: (height, width) to resize every poster to, or None.
    max_pixels: images larger than this are refused from their header.
    min_shards: at least this many shards per split (at most one a poster),
      for that many input workers on a small data set.
    progress: show a progress line on stderr.

  Returns:
    The summary: posters written per split, skipped by reason, duplicate
    rows, unlisted images, shards (and how many were reused), bytes, seconds.

  Raises:
    cli.UserError: bad CSV, bad image (without skip_bad_images), or an
      output folder that cannot be written.
  """
  start = time.monotonic()
  # s3://, hdfs://, http(s)://: say what to install, before any work.
  for path, what in ((csv_path, '--csv'), (images_dir, '--images'),
                     (out_dir, '--out')):
    remote.check_path(path, what)
  workers = workers or _cores()
  store_size = tuple(int(s) for s in store_size) if store_size else None
  options = {'val_fraction': val_fraction, 'seed': seed,
             'skip_bad_images': skip_bad_images, 'store_size': store_size,
             'max_pixels': max_pixels, 'min_shards': min_shards}
  table = read_csv(csv_path)
  unlisted = _count_unlisted(images_dir, table)
  shards, key = _plan(table, images_dir, options, workers)
  done = _prepare_output(out_dir, shards, key)
  pending = [s for s in shards if s.file not in done]
  try:
    _write_pending(out_dir, pending, table, images_dir, options, workers,
                   progress, done)
    manifest = _finish(out_dir, table, options, unlisted, shards, done)
  except tf.errors.OpError as e:
    raise _unwritable(out_dir, e) from None
  return _summary(manifest, out_dir, len(shards) - len(pending),
                  time.monotonic() - start)


def _write_pending(out_dir: str, pending: Sequence[Shard], table: Table,
                   images_dir: str, options: dict, workers: int,
                   progress: bool, done: dict) -> None:
  """Writes the shards not finished yet, noting each as it is renamed."""
  bar = cli.Progress(sum(len(s.rows) for s in pending),
                     f'converting to {out_dir}', enabled=progress)
  try:
    for note in _write_shards(out_dir, pending, table, images_dir, options,
                              workers, bar):
      _write_atomic(os.path.join(out_dir, STATE_DIR, note['file'] + '.json'),
                    _json_bytes(note))
      done[note['file']] = note
  finally:
    bar.close()


def _cores() -> int:
  """The cores this process may use (a container's limit, not the host's)."""
  if hasattr(os, 'sched_getaffinity'):
    return len(os.sched_getaffinity(0))
  return os.cpu_count() or 1


def _plan(table: Table, images_dir: str, options: dict, workers: int) -> tuple:
  """The shards (which rows, in which order) and the key a resume must match."""
  train, val = tutorial_split(table.num_rows, options['val_fraction'],
                              options['seed'])
  paths = [_image_path(images_dir, poster_id) for poster_id in table.ids]
  stats = _stat_images(paths, max(workers, 16))  # I/O-bound: more threads
  shards = []
  for split, rows in (('train', train), ('val', val)):
    rows = rows[table.first[rows]]  # a repeated Id goes with its first row
    if not len(rows):
      raise cli.UserError(f'the {split} split is empty: {table.num_rows} CSV '
                          f'rows with val_fraction={options["val_fraction"]}')
    shards += plan_shards(split, rows,
                          _estimated_bytes(rows, stats, options['store_size']),
                          options['min_shards'])
  key_source = [PLAN_VERSION, records.FORMAT_VERSION, table.sha256,
                _absolute(images_dir), stats, options,
                [(s.file, s.rows) for s in shards]]
  key = hashlib.sha256(json.dumps(key_source).encode()).hexdigest()
  return shards, key


def _absolute(path: str) -> str:
  """An absolute local path; a URL (gs://...) as it is (abspath would mangle it)."""
  return path if remote.scheme(path) else os.path.abspath(path)


def _prepare_output(out_dir: str, shards: Sequence[Shard], key: str) -> dict:
  """Creates --out (a clear error when impossible); resumes a same-key run."""
  plan = {'key': key, 'shards': [s.file for s in shards]}
  try:
    tf.io.gfile.makedirs(out_dir)
    return _start_or_resume(out_dir, plan)
  except tf.errors.OpError as e:
    raise _unwritable(out_dir, e) from None


def _unwritable(out_dir: str, error: tf.errors.OpError) -> cli.UserError:
  return cli.UserError(f'cannot write to {out_dir}: {_tf_message(error)}')


def _finish(out_dir: str, table: Table, options: dict, unlisted: int,
            shards: Sequence[Shard], done: dict) -> dict:
  """Writes skipped.csv, the manifest (last), then drops the resume state."""
  notes_by_split = {split: [done[s.file] for s in shards if s.split == split]
                    for split in records.SPLITS}
  skipped = [entry for s in shards for entry in done[s.file]['skipped']]
  if options['skip_bad_images']:
    _write_atomic(os.path.join(out_dir, SKIPPED_REPORT),
                  _skipped_report(skipped))
  for split, notes in notes_by_split.items():
    if not sum(n['num_examples'] for n in notes):
      raise cli.UserError(f'every poster of the {split} split was skipped; '
                          f'see {os.path.join(out_dir, SKIPPED_REPORT)}')
  manifest = _manifest(table, options, unlisted, notes_by_split, skipped)
  records.write_manifest(out_dir, manifest)
  tf.io.gfile.rmtree(os.path.join(out_dir, STATE_DIR))
  return manifest


def _summary(manifest: dict, out_dir: str, reused: int,
             seconds: float) -> dict:
  splits = manifest['splits']
  return {
      'out_dir': out_dir,
      'train': splits['train']['num_examples'],
      'val': splits['val']['num_examples'],
      'shards': {split: len(splits[split]['shards']) for split in splits},
      'shards_reused': reused,
      'csv_rows': manifest['source']['csv_rows'],
      'skipped': manifest['skipped']['count'],
      'skipped_by_reason': {reason: count for reason, count in
                            manifest['skipped']['by_reason'].items() if count},
      'duplicate_rows': manifest['source']['duplicate_rows'],
      'unlisted_images': manifest['source']['unlisted_images'],
      'bytes': sum(shard['bytes'] for split in splits.values()
                   for shard in split['shards']),
      'seconds': seconds,
  }


def format_summary(summary: dict) -> str:
  """The summary as the few lines a person reads at the end of a run."""
  s = summary
  rate = (s['train'] + s['val']) / max(s['seconds'], 1e-9)
  reasons = ', '.join(f'{n} {r}' for r, n in s['skipped_by_reason'].items())
  lines = [
      f'wrote {s["train"]:,} train + {s["val"]:,} val posters to '
      f'{s["out_dir"]} ({s["shards"]["train"]} + {s["shards"]["val"]} shards, '
      f'{s["bytes"] / 1e6:,.1f} MB) in {s["seconds"]:.1f} s '
      f'({rate:,.0f} posters/s)',
      f'skipped {s["skipped"]} poster(s)' + (f': {reasons}' if reasons else ''),
      f'CSV rows {s["csv_rows"]:,} = written {s["train"] + s["val"]:,} + '
      f'skipped {s["skipped"]} + duplicate rows {s["duplicate_rows"]}; '
      f'{s["unlisted_images"]} image(s) not in the CSV ignored',
  ]
  if s['shards_reused']:
    lines.append(f'resumed: {s["shards_reused"]} shard(s) from an '
                 'interrupted run reused')
  return '\n'.join(lines)


# ------------------------------------------------------------------- verify


def verify(records_dir: str, *, workers: Optional[int] = None,
           progress: bool = False) -> list:
  """Reads a records folder back completely and checks it against its manifest.

  Every shard: size and sha256 as in the manifest; every record: TFRecord
  CRCs, parses as a posternet Example, a JPEG that decodes to the stored
  height x width, 0/1 labels with at least one genre, an Id seen once.

  Returns:
    The problems found, each naming the shard (and record index); [] when
    all is well.

  Raises:
    cli.UserError: the folder or its manifest is missing or unreadable.
  """
  manifest = records.read_manifest(records_dir)
  store_size = manifest.get('store_size')
  jobs = [(records_dir, entry, store_size) for split in records.SPLITS
          for entry in records.split_info(manifest, split)['shards']]
  bar = cli.Progress(len(jobs), f'verifying {records_dir} (shards)',
                     enabled=progress)
  with concurrent.futures.ThreadPoolExecutor(workers or _cores()) as pool:
    results = []
    for result in pool.map(lambda job: _verify_shard(*job), jobs):
      results.append(result)
      bar.update()
  bar.close()
  problems = [p for result in results for p in result.problems]
  problems += _duplicate_ids(results)
  problems += _check_split_totals(manifest, results)
  return problems


@dataclasses.dataclass
class _ShardCheck:
  file: str
  problems: list
  ids: list     # (Id, record index)
  sizes: list   # (height, width)


def _verify_shard(records_dir: str, entry: dict,
                  store_size: Optional[Sequence[int]]) -> _ShardCheck:
  name = entry['file']
  check = _ShardCheck(name, [], [], [])
  path = os.path.join(records_dir, name)
  if not tf.io.gfile.exists(path):
    check.problems.append(f'{name}: missing')
    return check
  size, sha256 = _size_and_sha256(path)
  if size != entry['bytes']:
    check.problems.append(f'{name}: {size} bytes, the manifest says '
                          f'{entry["bytes"]}')
  if sha256 != entry['sha256']:
    check.problems.append(f'{name}: sha256 {sha256} differs from the '
                          f'manifest\'s {entry["sha256"]}')
  count = _verify_records(path, check, store_size)
  if count != entry['num_examples']:
    check.problems.append(f'{name}: {count} records read, the manifest says '
                          f'{entry["num_examples"]}')
  return check


def _verify_records(path: str, check: _ShardCheck,
                    store_size: Optional[Sequence[int]]) -> int:
  """Checks every record; returns how many could be read.

  A tf.data pass first (fast); when a record does not read, parse or decode,
  a record-by-record pass finds which one.
  """
  try:
    facts = list(tf.data.TFRecordDataset(path).map(
        _record_facts, num_parallel_calls=tf.data.AUTOTUNE).as_numpy_iterator())
  except tf.errors.OpError:
    return _verify_records_one_by_one(path, check, store_size)
  for index, record in enumerate(facts):
    _check_facts(record, index, check, store_size)
  return len(facts)


def _verify_records_one_by_one(path: str, check: _ShardCheck,
                               store_size: Optional[Sequence[int]]) -> int:
  iterator = iter(tf.data.TFRecordDataset(path))
  for index in itertools.count():
    try:
      serialized = next(iterator)
    except StopIteration:
      return index
    except tf.errors.OpError as e:  # DataLossError: CRC mismatch, truncation
      check.problems.append(f'{check.file} record {index}: unreadable '
                            f'({_tf_message(e)})')
      return index
    try:
      record = {k: v.numpy() for k, v in _record_facts(serialized).items()}
    except tf.errors.OpError as e:
      check.problems.append(f'{check.file} record {index}: does not parse or '
                            f'decode ({_tf_message(e)})')
      continue
    _check_facts(record, index, check, store_size)


def _record_facts(serialized: tf.Tensor) -> dict:
  """Parses one record and decodes its image: what _check_facts looks at."""
  example = tf.io.parse_single_example(serialized, records.FEATURES)
  encoded = example[records.IMAGE_KEY]
  return {'id': example[records.ID_KEY],
          'height': example[records.HEIGHT_KEY],
          'width': example[records.WIDTH_KEY],
          'labels': example[records.LABELS_KEY],
          'magic': tf.strings.substr(encoded, 0, 2),
          'shape': tf.shape(images.decode_jpeg(encoded))}


def _check_facts(record: dict, index: int, check: _ShardCheck,
                 store_size: Optional[Sequence[int]]) -> None:
  """Notes the record's Id and size, and what is wrong with it, if anything."""
  poster_id = record['id'].decode('utf-8', 'replace')
  height, width = int(record['height']), int(record['width'])
  shape = tuple(int(d) for d in record['shape'])
  labels = record['labels']
  check.ids.append((poster_id, index))
  check.sizes.append((height, width))
  problem = None
  if not poster_id:
    problem = 'empty Id'
  elif record['magic'] != b'\xff\xd8':
    problem = f'Id {poster_id}: the image is not a JPEG'
  elif shape != (height, width, 3):
    problem = (f'Id {poster_id}: the image decodes to {shape}, the record '
               f'says {height}x{width}')
  elif store_size and [height, width] != list(store_size):
    problem = (f'Id {poster_id}: {height}x{width}, not the store size '
               f'{store_size}')
  elif not np.isin(labels, (0.0, 1.0)).all() or not labels.any():
    problem = f'Id {poster_id}: labels {labels.tolist()} are not multi-hot'
  if problem:
    check.problems.append(f'{check.file} record {index}: {problem}')


def _duplicate_ids(results: Sequence[_ShardCheck]) -> list:
  seen, problems = {}, []
  for result in results:
    for poster_id, index in result.ids:
      where = f'{result.file} record {index}'
      if poster_id in seen:
        problems.append(f'{where}: Id {poster_id} already in {seen[poster_id]}')
      else:
        seen[poster_id] = where
  return problems


def _check_split_totals(manifest: dict, results: Sequence[_ShardCheck]) -> list:
  """Per split: the shards add up to num_examples; stored sizes as listed."""
  problems = []
  for split in records.SPLITS:
    info = records.split_info(manifest, split)
    files = {shard['file'] for shard in info['shards']}
    if sum(s['num_examples'] for s in info['shards']) != info['num_examples']:
      problems.append(f'manifest: the {split} shards do not add up to '
                      f'num_examples={info["num_examples"]}')
    sizes = [hw for r in results if r.file in files for hw in r.sizes]
    if sizes:
      heights, widths = zip(*sizes)
      found = {'min_height': min(heights), 'max_height': max(heights),
               'min_width': min(widths), 'max_width': max(widths)}
      for key, value in found.items():
        if info.get(key) != value:
          problems.append(f'manifest: {split} {key} is {info.get(key)}, the '
                          f'records say {value}')
  return problems


# ------------------------------------------------------------ command line


def _define_flags() -> None:
  """Defines the command's flags (only when run as a command).

  This module is also a library (the benchmark and tests import convert), so
  importing it must not claim flag names other entry points may use.
  """
  flags.DEFINE_string(
      'data_dir', None, 'Folder laid out like the downloadable '
      'Multi_Label_dataset/: multi_label_train.csv or train.csv, and Images/. '
      'Or give --csv and --images.')
  flags.DEFINE_string('csv', None, "The tutorial's CSV: Id, Genre and the 25 "
                      'genre columns.')
  flags.DEFINE_string('images', None, 'Folder of the posters, <Id>.jpg.')
  flags.DEFINE_string('out', None, 'Output folder for the shards, '
                      'manifest.json (and skipped.csv); created if needed.')
  flags.DEFINE_float('val_fraction', 0.1, "Validation share of the tutorial's "
                     'split: the first ceil(val_fraction * rows) of the '
                     'permutation.')
  flags.DEFINE_integer('seed', 42, "Seed of the split (the tutorial's "
                       'random_state=42).')
  flags.DEFINE_integer('workers', None, 'Threads decoding posters; default: '
                       'all cores. The output does not depend on it.')
  flags.DEFINE_bool('skip_bad_images', False, 'Skip (count, and list in '
                    'skipped.csv) bad images instead of stopping at the first.')
  flags.DEFINE_string('store_size', None, 'HxW, e.g. 400x400: resize every '
                      'poster at conversion so training needs no resize on the '
                      'host. Default: keep each poster as it is.')
  flags.DEFINE_integer('max_pixels', DEFAULT_MAX_PIXELS, 'Refuse images with '
                       'more pixels than this, from their header, before '
                       'decoding (decompression bombs).')
  flags.DEFINE_integer('min_shards', 1, 'At least this many shards per split '
                       '(at most one a poster). Shards hold 128 posters or '
                       'more, so a small set gets few; multi-worker training '
                       'needs one per input worker in each split.')
  flags.DEFINE_string('verify', None, 'Instead of converting: read every '
                      'record of this records folder back, check CRCs, '
                      'checksums, counts, decode every image; exit 0 only if '
                      'all is well.')
  flags.DEFINE_bool('progress', True, 'Show a progress line on stderr.')


FLAGS = flags.FLAGS


def _source_paths() -> tuple:
  if FLAGS.data_dir and (FLAGS.csv or FLAGS.images):
    raise app.UsageError('give --data_dir, or --csv and --images, not both')
  if FLAGS.data_dir:
    return find_inputs(FLAGS.data_dir)
  if not (FLAGS.csv and FLAGS.images):
    raise app.UsageError('give --data_dir, or both --csv and --images')
  return FLAGS.csv, FLAGS.images


def _check_flags() -> None:
  if not 0 < FLAGS.val_fraction < 1:
    raise app.UsageError(f'--val_fraction={FLAGS.val_fraction}: must be '
                         'between 0 and 1')
  if FLAGS.workers is not None and FLAGS.workers < 1:
    raise app.UsageError(f'--workers={FLAGS.workers}: must be at least 1')
  if FLAGS.max_pixels < 1:
    raise app.UsageError(f'--max_pixels={FLAGS.max_pixels}: must be positive')
  if FLAGS.min_shards < 1:
    raise app.UsageError(f'--min_shards={FLAGS.min_shards}: must be at least 1')
  if not FLAGS.out:
    raise app.UsageError('--out is required: the folder for the records')


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  # Our own --max_pixels check comes first; Pillow's warning would be noise.
  warnings.simplefilter('ignore', Image.DecompressionBombWarning)
  if FLAGS.verify:
    if FLAGS.data_dir or FLAGS.csv or FLAGS.images or FLAGS.out:
      raise app.UsageError('--verify checks a finished records folder; give '
                           'it without --data_dir, --csv, --images or --out')
    _run_verify(FLAGS.verify)
    return
  csv_path, images_dir = _source_paths()
  _check_flags()
  summary = convert(
      csv_path, images_dir, FLAGS.out, val_fraction=FLAGS.val_fraction,
      seed=FLAGS.seed, workers=FLAGS.workers,
      skip_bad_images=FLAGS.skip_bad_images,
      store_size=(cli.parse_size(FLAGS.store_size, 'store_size')
                  if FLAGS.store_size else None),
      max_pixels=FLAGS.max_pixels, min_shards=FLAGS.min_shards,
      progress=FLAGS.progress)
  print(format_summary(summary))


def _run_verify(records_dir: str) -> None:
  start = time.monotonic()
  problems = verify(records_dir, workers=FLAGS.workers,
                    progress=FLAGS.progress)
  for problem in problems:
    print(problem)
  if problems:
    raise cli.UserError(f'{len(problems)} problem(s) in {records_dir}')
  manifest = records.read_manifest(records_dir)
  counts = ' + '.join(f'{records.num_examples(manifest, split):,} {split}'
                      for split in records.SPLITS)
  print(f'{records_dir}: all well ({counts} posters, every record read, '
        f'checked and decoded in {time.monotonic() - start:.1f} s)')


def entry() -> None:
  """The console script `posternet-make-records`."""
  _define_flags()
  cli.run(main)


if __name__ == '__main__':
  entry()
