"""The records folder: its schema and its manifest, owned here and nowhere else.

The converter (posternet/data/convert.py) writes with these functions and classes,
the input pipeline reads with them, and posternet/data/verify.py checks a folder
against them, so none of them can drift apart. Paths go through tf.io.gfile,
so records may live on any filesystem TensorFlow knows.

A records folder holds:
  train-00000-of-00016.tfrecord …  one tf.train.Example per poster
  val-00000-of-00002.tfrecord …
  manifest.json                    shard lists, counts, checksums, provenance

manifest.json is read into a `Manifest`, a typed, immutable handle (after
TFDS's DatasetInfo): a run opens its folder once with `Manifest.read`, which
checks the file's shape, and hands the object down (pipeline, trainer,
benchmark); nobody else indexes the JSON. The converter and the test fixtures
build the same class and `write` it.
"""

import dataclasses
import hashlib
import json
import math
import os
import types
from typing import Iterable, Mapping, Optional, Sequence, Tuple

import tensorflow as tf

from posternet import cli
from posternet import files
from posternet import genres
from posternet import remote
from posternet.data import typed_json
# Bump when a key, dtype or manifest field changes meaning; readers refuse
# other versions rather than misreading them. Version 2: raw pixels and
# TFRecord compression (store_format, compression), and --store_size as a
# bound that no poster is enlarged to (stored sizes may differ). Version 1
# manifests read as JPEG, uncompressed, every poster at its store size.
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
MANIFEST_NAME = 'manifest.json'
SPLITS = ('train', 'val')

# How posternet.csv_rows.tutorial_split splits, as the manifest states it.
SPLIT_METHOD = ('numpy RandomState(seed).permutation(n): first '
                'ceil(val_fraction*n) are val, rest train, in permutation '
                'order')

# How a record holds its poster (the manifest's store_format): JPEG bytes
# (RGB or grayscale, never re-encoded needlessly), or raw uint8 pixels,
# height x width x 3, row-major, with no codec: no decode when reading.
STORE_FORMATS = ('jpeg', 'raw')
# TFRecord's own compression of whole shard files (the manifest's
# compression; None: none), as tf.data.TFRecordDataset names it.
COMPRESSIONS = ('GZIP', 'ZLIB')

# Feature keys, shared by writer and reader.
IMAGE_KEY = 'image/encoded'    # the poster: JPEG bytes or raw pixels (above)
HEIGHT_KEY = 'image/height'    # stored height in pixels
WIDTH_KEY = 'image/width'      # stored width in pixels
ID_KEY = 'poster/id'           # the CSV's Id, e.g. b'tt0086425'
LABELS_KEY = 'poster/labels'   # 25 floats, 1.0 where the genre applies

FEATURES = {
    IMAGE_KEY: tf.io.FixedLenFeature([], tf.string),
    HEIGHT_KEY: tf.io.FixedLenFeature([], tf.int64),
    WIDTH_KEY: tf.io.FixedLenFeature([], tf.int64),
    ID_KEY: tf.io.FixedLenFeature([], tf.string),
    LABELS_KEY: tf.io.FixedLenFeature([genres.NUM_GENRES], tf.float32),
}

# What a bad manifest's message tells the user to do.
_REMAKE = 'convert the data again with `make records`'


def _not_a_folder(records_dir: str) -> str:
  """Why records_dir, which is not a folder, cannot be opened: one line."""
  if not tf.io.gfile.exists(records_dir):
    return (f'records folder {records_dir} does not exist; make it with '
            '`make records`')
  hint = (f'; give its folder, {os.path.dirname(records_dir) or "."}'
          if os.path.basename(records_dir) == MANIFEST_NAME else '')
  return (f'{records_dir} is a file, not a records folder (the folder `make '
          f'records` wrote, with {MANIFEST_NAME} and the shards){hint}')


def make_example(image_bytes: bytes, height: int, width: int, poster_id: str,
                 labels: Sequence[float]) -> tf.train.Example:
  """Builds the tf.train.Example for one poster."""
  feature = tf.train.Feature
  return tf.train.Example(features=tf.train.Features(feature={
      IMAGE_KEY: feature(bytes_list=tf.train.BytesList(value=[image_bytes])),
      HEIGHT_KEY: feature(int64_list=tf.train.Int64List(value=[height])),
      WIDTH_KEY: feature(int64_list=tf.train.Int64List(value=[width])),
      ID_KEY: feature(bytes_list=tf.train.BytesList(value=[poster_id.encode()])),
      LABELS_KEY: feature(float_list=tf.train.FloatList(value=list(labels))),
  }))


def parse_examples(serialized: tf.Tensor) -> dict:
  """Parses a batch (or one) of serialized Examples into the FEATURES dict."""
  return tf.io.parse_example(serialized, FEATURES)


def shard_name(split: str, index: int, num_shards: int) -> str:
  """Sortable shard file name: train-00003-of-00016.tfrecord."""
  return f'{split}-{index:05d}-of-{num_shards:05d}.tfrecord'


def manifest_path(records_dir: str) -> str:
  return os.path.join(records_dir, MANIFEST_NAME)


def size_and_sha256(path: str) -> tuple:
  """(bytes, sha256 hex) of a file, as the manifest records a shard."""
  digest, size = hashlib.sha256(), 0
  with tf.io.gfile.GFile(path, 'rb') as f:
    while chunk := f.read(8 << 20):
      digest.update(chunk)
      size += len(chunk)
  return size, digest.hexdigest()


# --- The manifest's parts: field names are the JSON keys (or metadata 'key'),
# written and read by typed_json. ---


@dataclasses.dataclass(frozen=True)
class ShardInfo:
  """One shard file of a split, as listed in the manifest."""
  file: str           # the file name inside the records folder
  num_examples: int
  bytes: int
  sha256: str

  @classmethod
  def of_file(cls, path: str, num_examples: int) -> 'ShardInfo':
    """The entry of a finished shard file: its name, size and checksum."""
    size, sha256 = size_and_sha256(path)
    return cls(os.path.basename(path), num_examples, size, sha256)

  def to_dict(self) -> dict:
    return typed_json.to_json(self)

  @classmethod
  def from_dict(cls, data, path: str = 'shard entry') -> 'ShardInfo':
    """Reads a shard entry back (the converter's resume notes hold them)."""
    return typed_json.from_json(data, cls, path)


@dataclasses.dataclass(frozen=True)
class SplitInfo:
  """One split: its shards, poster count and stored size range."""
  num_examples: int
  shards: Tuple[ShardInfo, ...]
  min_height: Optional[int] = None   # None: no poster stored
  min_width: Optional[int] = None
  max_height: Optional[int] = None
  max_width: Optional[int] = None

  def __post_init__(self):
    object.__setattr__(self, 'shards', tuple(self.shards))

  @classmethod
  def build(cls, shards: Sequence[ShardInfo],
            sizes: Iterable[Sequence[int]]) -> 'SplitInfo':
    """A split from its shards and stored (height, width) sizes.

    sizes: every poster's, or each shard's smallest and largest: only the
    extremes count. The poster count is the shards' sum.
    """
    sizes = list(sizes)
    heights, widths = [h for h, _ in sizes], [w for _, w in sizes]
    return cls(num_examples=sum(s.num_examples for s in shards),
               shards=tuple(shards),
               min_height=min(heights, default=None),
               min_width=min(widths, default=None),
               max_height=max(heights, default=None),
               max_width=max(widths, default=None))

  @property
  def size_range(self) -> tuple:
    """((min_h, min_w), (max_h, max_w)) of the stored posters."""
    return ((self.min_height, self.min_width),
            (self.max_height, self.max_width))


@dataclasses.dataclass(frozen=True)
class SplitRule:
  """How the CSV's rows were split (the tutorial's train_test_split)."""
  seed: int = 42
  val_fraction: float = 0.1
  method: str = SPLIT_METHOD


@dataclasses.dataclass(frozen=True)
class Source:
  """The data the records were made from, and how its rows were counted."""
  csv: str                  # the CSV's file name
  csv_sha256: str
  csv_rows: int             # data rows, duplicates included
  unique_ids: int
  duplicate_rows: int = 0   # identical repeats, written once
  unlisted_images: int = 0  # files in Images/ that the CSV does not name


@dataclasses.dataclass(frozen=True)
class Skipped:
  """Posters left out (--skip_bad_images): how many, why, and the report."""
  count: int = 0
  by_reason: Mapping[str, int] = dataclasses.field(default_factory=dict)
  report: Optional[str] = None   # skipped.csv, when written

  def __post_init__(self):
    object.__setattr__(self, 'by_reason',
                       types.MappingProxyType(dict(self.by_reason)))


# --- The manifest. ---


@dataclasses.dataclass(frozen=True)
class Manifest:
  """A records folder's manifest.json: the handle a run opens once.

  Build one (the converter, the fixtures) and `write` it, or `read` a
  folder's; either way it then knows its folder (records_dir) and answers
  for the splits: shard paths, counts, stored sizes, steps per epoch.
  """
  splits: Mapping[str, SplitInfo]
  source: Source
  split_rule: SplitRule = dataclasses.field(default=SplitRule(),
                                            metadata={'key': 'split'})
  skipped: Skipped = Skipped()
  # --store_size, if given: no poster is stored larger on either side.
  store_size: Optional[Tuple[int, int]] = None
  genre_names: Tuple[str, ...] = dataclasses.field(default=genres.GENRES,
                                                   metadata={'key': 'genres'})
  format_version: int = FORMAT_VERSION
  # Absent from version 1 files: those are JPEG, uncompressed.
  store_format: str = dataclasses.field(default='jpeg',
                                        metadata={'optional': True})
  compression: Optional[str] = dataclasses.field(default=None,
                                                 metadata={'optional': True})
  # Raw records padded to store_size, each poster in its top-left corner
  # (poster_files.raw_bytes): all of one length. Absent: each record holds
  # its poster's own height x width x 3 bytes.
  raw_padded: bool = dataclasses.field(default=False,
                                       metadata={'optional': True})
  # The folder it was read from or written to: not part of the file.
  records_dir: Optional[str] = dataclasses.field(
      default=None, compare=False, metadata={'stored': False})

  def __post_init__(self):
    object.__setattr__(self, 'splits', types.MappingProxyType(
        dict(self.splits)))
    object.__setattr__(self, 'genre_names', tuple(self.genre_names))
    if self.store_size is not None:
      object.__setattr__(self, 'store_size',
                         tuple(int(s) for s in self.store_size))

  # Reading and writing.

  @classmethod
  def read(cls, records_dir: str) -> 'Manifest':
    """Opens a records folder: reads and checks its manifest.json, once.

    Raises:
      cli.UserError: the folder or manifest is missing or unreadable, of
        another format version, or not shaped as a manifest (one line that
        names manifest.json and the field).
    """
    # s3://, hdfs://, http(s)://: say what to install, not "not implemented".
    remote.check_path(records_dir, 'records folder')
    path = manifest_path(records_dir)
    if not tf.io.gfile.isdir(records_dir):
      raise cli.UserError(_not_a_folder(records_dir))
    if not tf.io.gfile.exists(path):
      raise cli.UserError(f'{path} not found: {records_dir} is not a finished '
                          'records folder (run `make records`, or let an '
                          'interrupted conversion finish)')
    try:
      with tf.io.gfile.GFile(path) as f:
        data = json.load(f)
    except (ValueError, tf.errors.OpError) as e:
      raise cli.UserError(f'{path} is not valid JSON: {e}') from None
    return cls.from_dict(data, path).at(records_dir)

  @classmethod
  def from_dict(cls, data, path: str = MANIFEST_NAME) -> 'Manifest':
    """The manifest in parsed JSON, its shape checked (path: for messages)."""
    version = typed_json.expect(data, dict, path, advice=_REMAKE).get(
        'format_version')
    if type(version) is not int or version not in READABLE_VERSIONS:
      raise cli.UserError(
          f'{path} has format version {version}, this posternet reads '
          f'versions {", ".join(map(str, READABLE_VERSIONS))}; {_REMAKE}')
    if data.get('genres') != list(genres.GENRES):
      raise cli.UserError(f'{path} lists other genres than posternet knows')
    manifest = typed_json.from_json(data, cls, path, advice=_REMAKE)
    _check_storage(manifest, path)
    for split, info in manifest.splits.items():
      for index, shard in enumerate(info.shards):
        if shard.file in ('', '.', '..') or (
            os.path.basename(shard.file) != shard.file):
          raise cli.UserError(
              f'{path}: splits.{split}.shards[{index}].file {shard.file!r} is '
              f'not a file name inside the folder; {_REMAKE}')
    return manifest

  def to_dict(self) -> dict:
    """The manifest as the JSON object manifest.json holds."""
    return typed_json.to_json(self)

  def to_json(self) -> str:
    """manifest.json's text: sorted keys, so equal content, equal bytes."""
    return json.dumps(self.to_dict(), indent=2, sort_keys=True) + '\n'

  def write(self, records_dir: str) -> 'Manifest':
    """Writes manifest.json atomically (temporary name, then rename).

    Returns:
      This manifest, knowing records_dir as its folder.
    """
    files.write_atomically(manifest_path(records_dir), self.to_json())
    return self.at(records_dir)

  def at(self, records_dir: str) -> 'Manifest':
    """The same manifest, for the shards in records_dir."""
    return dataclasses.replace(self, records_dir=records_dir)

  @property
  def path(self) -> str:
    """Where manifest.json is (or goes)."""
    return manifest_path(self._folder())

  # What readers ask.

  def split_info(self, split: str) -> SplitInfo:
    """One split's entry: shards, count, stored sizes.

    Raises:
      cli.UserError: the manifest has no such split.
    """
    if split not in self.splits:
      raise cli.UserError(f'the manifest has no split {split!r}; it has '
                          f'{sorted(self.splits)}')
    return self.splits[split]

  def num_examples(self, split: str) -> int:
    """How many posters a split holds (no pass over the data)."""
    return self.split_info(split).num_examples

  def shard_paths(self, split: str) -> list:
    """Full paths of one split's shards, in order."""
    folder = self._folder()
    return [os.path.join(folder, shard.file)
            for shard in self.split_info(split).shards]

  def stored_size_range(self, split: str) -> tuple:
    """((min_h, min_w), (max_h, max_w)) of the split's stored posters.

    Each poster's own size up to the store size: no poster is enlarged
    when stored, so with --store_size the sizes may still differ.
    """
    return self.split_info(split).size_range

  @property
  def raw_box(self) -> Optional[Tuple[int, int]]:
    """(height, width) every raw record holds, padded; None if they vary."""
    return self.store_size if self.raw_padded else None

  @property
  def tfrecord_compression(self) -> str:
    """The shards' compression_type for tf.data.TFRecordDataset ('': none)."""
    return self.compression or ''

  def steps_per_epoch(self, split: str, batch_size: int,
                      drop_remainder: Optional[bool] = None) -> int:
    """Batches in one pass over a split (no pass over the data).

    Args:
      split: 'train' or 'val'.
      batch_size: the global batch size.
      drop_remainder: whether the last partial batch is dropped; default: as
        the input pipeline does (train drops it, val keeps it).

    Returns:
      floor(n / batch_size) when dropping the remainder, else ceil.

    Raises:
      cli.UserError: no such split, or not even one batch.
    """
    if batch_size < 1:
      raise cli.UserError(f'batch_size must be >= 1, not {batch_size}')
    drop = split == 'train' if drop_remainder is None else drop_remainder
    count = self.num_examples(split)
    steps = count // batch_size if drop else math.ceil(count / batch_size)
    if steps == 0:
      raise cli.UserError(f'the {split} split has {count} posters, fewer than '
                          f'one batch of {batch_size}; lower the batch size')
    return steps

  def _folder(self) -> str:
    if self.records_dir is None:
      raise ValueError('this Manifest has no folder yet: write() it, or '
                       'at(records_dir)')
    return self.records_dir


def _check_storage(manifest: Manifest, path: str) -> None:
  """Refuses a store format or compression this posternet cannot read."""
  if manifest.store_format not in STORE_FORMATS:
    typed_json.fail(path, 'store_format',
                    f'is {manifest.store_format!r}, not one of '
                    f'{", ".join(STORE_FORMATS)}', _REMAKE)
  if manifest.compression is not None and (
      manifest.compression not in COMPRESSIONS):
    typed_json.fail(path, 'compression',
                    f'is {manifest.compression!r}, not null or one of '
                    f'{", ".join(COMPRESSIONS)}', _REMAKE)
