"""Which poster goes into which shard: the converter's plan, and its resume key.

Shard rule: a split of n posters whose stored bytes are estimated at B gets
  k = max(m, ceil(B / 128 MiB)), rounded up to a multiple of m,
  then at most n // 128 (no shard of fewer than 128 posters), at least 1,
  and never fewer than ceil(B / 128 MiB) or --min_shards (one shard a poster
  at most),
with m = 16 for train (2 hosts x 8 parallel readers all get whole shards) and
m = 2 for val. Posters fill shards in split order, in contiguous runs of equal
size (±1). The tutorial's 7,254 posters give 16 train shards of ~408 posters
(~14 MB each) and 2 val shards.

The plan's key (a sha256) covers everything that decides the output bytes:
the CSV, the listed images' sizes and mtimes, the options and the shards. A
resumed conversion (posternet/data/staging.py) reuses finished shards only
under the same key.
"""

import concurrent.futures
import dataclasses
import functools
import hashlib
import json
import math
import os
from typing import Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from posternet import cli
from posternet.data import csv_rows
from posternet.data import images
from posternet.data import poster_files
from posternet.data import records
from posternet import remote
from posternet import settings

# The shard rule (module docstring).
MAX_SHARD_BYTES = 128 * 2**20
MIN_SHARDS = {'train': 16, 'val': 2}
# Every shard pass costs the reader ~1 ms to set up: 32-poster shards cost
# ~15-25 µs of CPU per poster, against ~150-200 µs to decode a 128x128 one
# (BUILD_NOTES, Benchmark).
MIN_POSTERS_PER_SHARD = 128

# Bump when a change to the converter changes the output bytes, or the
# resume notes' format (posternet/data/staging.py, shard_writer.py): older
# state is then ignored.
PLAN_VERSION = 4  # 4: raw records padded to the store size

# A raw record's bytes beside its pixels: Id, labels, keys, TFRecord framing.
RAW_RECORD_OVERHEAD = 256
# A typical poster's size, for estimates where a header does not read.
UNKNOWN_POSTER_SIZE = (400, 300)


@dataclasses.dataclass(frozen=True)
class Options:
  """What a conversion was asked for: convert's keywords, make_records' flags.

  All of it goes into the plan's key: other options, other output.
  """
  val_fraction: float = settings.setting(
      records.SplitRule.val_fraction, "Validation share of the tutorial's "
      'split: the first ceil(val_fraction * rows) of the permutation.')
  seed: int = settings.setting(
      records.SplitRule.seed, "Seed of the split (the tutorial's "
      'random_state=42).')
  skip_bad_images: bool = settings.setting(
      False, 'Skip (count, and list in skipped.csv) bad images instead of '
      'stopping at the first.')
  store_size: Optional[Tuple[int, int]] = settings.setting(
      None, 'HxW, e.g. 400x400: shrink each poster at conversion to at most '
      'this on each side, so the host decodes no more pixels than training '
      'needs; smaller posters keep their own size (never enlarged). '
      'Default: keep each poster as it is.', parse=cli.parse_size,
      text=cli.size_text)
  max_pixels: int = settings.setting(
      images.MAX_PIXELS, 'Refuse images with more pixels than this, from '
      'their header, before decoding (decompression bombs).', minimum=1)
  min_shards: int = settings.setting(
      1, 'At least this many shards per split (at most one a poster). '
      'Shards hold 128 posters or more, so a small set gets few; '
      'multi-worker training needs one per input worker in each split.',
      minimum=1)
  store_format: str = settings.setting(
      records.STORE_FORMATS[0], 'jpeg: JPEG bytes (small on disk; decoded '
      'every epoch). raw: uint8 pixels with no codec (nothing to decode; 3 '
      'bytes a pixel on disk: ~360 KB a poster at 400x300); with '
      '--store_size each record is that box, the poster in its corner, so '
      'a batch is read in one reshape.',
      choices=records.STORE_FORMATS)


@dataclasses.dataclass(frozen=True)
class Shard:
  split: str
  file: str
  rows: tuple   # CSV row indices, in split order
  # Its share of the split's estimated bytes (the disk-space check).
  estimated_bytes: int = 0


def num_shards(num_posters: int, estimated_bytes: int, split: str,
               min_shards: int) -> int:
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
                min_shards: int) -> list:
  """Cuts a split's rows (in order) into contiguous, equal-size shards."""
  count = num_shards(len(rows), estimated_bytes, split, min_shards)
  bounds = [len(rows) * i // count for i in range(count + 1)]
  return [Shard(split, records.shard_name(split, i, count),
                tuple(int(r) for r in rows[bounds[i]:bounds[i + 1]]),
                estimated_bytes * (bounds[i + 1] - bounds[i]) // len(rows))
          for i in range(count)]


def image_path(images_dir: str, poster_id: str) -> str:
  """Where a poster's file is: Images/<Id>.jpg."""
  return os.path.join(images_dir, poster_id + csv_rows.IMAGE_SUFFIX)


def count_unlisted(images_dir: str, table: csv_rows.Table) -> int:
  """Entries in --images that the CSV does not name (ignored, counted)."""
  if not tf.io.gfile.isdir(images_dir):
    raise cli.UserError(f'images folder {images_dir} not found')
  listed = {poster_id + csv_rows.IMAGE_SUFFIX for poster_id in table.ids}
  return sum(1 for name in tf.io.gfile.listdir(images_dir)
             if name.rstrip('/') not in listed)


def make_plan(table: csv_rows.Table, images_dir: str, options: Options,
              workers: int) -> tuple:
  """The shards (which rows, in which order) and the key a resume must match.

  Args:
    table: the checked CSV.
    images_dir: the posters' folder.
    options: the conversion's options; all of them go into the key.
    workers: threads for the conversion (the stat calls use more).

  Raises:
    cli.UserError: a split would be empty.
  """
  train, val = csv_rows.tutorial_split(table.num_rows, options.val_fraction,
                                       options.seed)
  paths = [image_path(images_dir, poster_id) for poster_id in table.ids]
  stats = _stat_images(paths, max(workers, 16))  # I/O-bound: more threads
  # Raw records without a store box hold each poster's pixels: read from
  # its header.
  sizes = (_header_sizes(paths, images_dir, max(workers, 16))
           if options.store_format == 'raw' and not options.store_size
           else None)
  shards = []
  for split, rows in (('train', train), ('val', val)):
    rows = rows[table.first[rows]]  # a repeated Id goes with its first row
    if not len(rows):
      raise cli.UserError(f'the {split} split is empty: {table.num_rows} CSV '
                          f'rows with val_fraction={options.val_fraction}')
    shards += plan_shards(split, rows,
                          _estimated_bytes(rows, stats, options, sizes),
                          options.min_shards)
  key_source = [PLAN_VERSION, records.FORMAT_VERSION, table.sha256,
                _absolute(images_dir), stats, dataclasses.asdict(options),
                [(s.file, s.rows) for s in shards]]
  key = hashlib.sha256(json.dumps(key_source).encode()).hexdigest()
  return shards, key


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


def _header_sizes(paths: Sequence[str], images_dir: str, workers: int) -> list:
  """(height, width) per file from its header, None where it does not read."""
  header_size = functools.partial(poster_files.header_size,
                                  images_dir=images_dir)
  with concurrent.futures.ThreadPoolExecutor(workers) as pool:
    return list(pool.map(header_size, paths))


def _estimated_bytes(rows: np.ndarray, stats: Sequence[tuple],
                     options: Options,
                     sizes: Optional[Sequence] = None) -> int:
  """Stored bytes of a split, estimated before converting.

  For the shard count and the disk-space check. Raw: 3 bytes per pixel of
  the store size's box (every record holds it, poster_files.raw_bytes);
  without one, of each poster (its header's size, 400x300 where a header
  does not read); plus RAW_RECORD_OVERHEAD.
  JPEG: the source sizes when bytes pass through; with a store size, 3/4
  byte per pixel of it, a generous guess for a q95 JPEG of a poster.
  """
  store_size = options.store_size
  if options.store_format == 'raw':
    return sum(3 * math.prod(store_size or sizes[r] or UNKNOWN_POSTER_SIZE)
               + RAW_RECORD_OVERHEAD for r in rows)
  if store_size is not None:
    return len(rows) * store_size[0] * store_size[1] * 3 // 4
  return sum(max(stats[r][0], 0) for r in rows)


def _absolute(path: str) -> str:
  """An absolute local path; a URL (gs://...) as it is (abspath mangles it)."""
  return path if remote.scheme(path) else os.path.abspath(path)
