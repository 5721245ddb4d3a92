"""The record schema: the one place that says how a poster is stored.

The converter (tools/make_records.py) writes with these functions and the
input pipeline reads with them, so the two cannot drift apart. Paths go
through tf.io.gfile, so records may live on any filesystem TensorFlow knows.

A records folder holds:
  train-00000-of-00016.tfrecord …  one tf.train.Example per poster
  val-00000-of-00002.tfrecord …
  manifest.json                    shard lists, counts, checksums, provenance
"""

import json
import os
from typing import Mapping, Sequence

import tensorflow as tf

from posternet import cli
from posternet import genres
from posternet import remote

# Bump when a key, dtype or manifest field changes meaning; readers refuse
# other versions rather than misreading them.
FORMAT_VERSION = 1
MANIFEST_NAME = 'manifest.json'
SPLITS = ('train', 'val')

# Feature keys, shared by writer and reader.
IMAGE_KEY = 'image/encoded'    # JPEG bytes, RGB or grayscale, never re-encoded needlessly
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


def write_manifest(records_dir: str, manifest: Mapping) -> None:
  """Writes manifest.json atomically (temporary name, then rename).

  Keys are sorted so the same content always gives the same bytes.
  """
  text = json.dumps(manifest, indent=2, sort_keys=True) + '\n'
  final = manifest_path(records_dir)
  temporary = final + '.tmp'
  with tf.io.gfile.GFile(temporary, 'w') as f:
    f.write(text)
  tf.io.gfile.rename(temporary, final, overwrite=True)


def read_manifest(records_dir: str) -> dict:
  """Reads and checks manifest.json.

  Raises:
    cli.UserError: the folder or manifest is missing, unreadable, or of
      another format version.
  """
  # s3://, hdfs://, http(s)://: say what to install, not "not implemented".
  remote.check_path(records_dir, 'records folder')
  path = manifest_path(records_dir)
  if not tf.io.gfile.isdir(records_dir):
    raise cli.UserError(f'records folder {records_dir} does not exist; '
                        'make it with `make records`')
  if not tf.io.gfile.exists(path):
    raise cli.UserError(f'{path} not found: {records_dir} is not a finished '
                        'records folder (run `make records`, or let an '
                        'interrupted conversion finish)')
  try:
    with tf.io.gfile.GFile(path) as f:
      manifest = json.load(f)
  except (ValueError, tf.errors.OpError) as e:
    raise cli.UserError(f'{path} is not valid JSON: {e}') from None
  version = manifest.get('format_version')
  if version != FORMAT_VERSION:
    raise cli.UserError(
        f'{path} has format version {version}, this posternet reads version '
        f'{FORMAT_VERSION}; convert the data again with `make records`')
  if list(manifest.get('genres', [])) != list(genres.GENRES):
    raise cli.UserError(f'{path} lists other genres than posternet knows')
  return manifest


def split_info(manifest: Mapping, split: str) -> dict:
  """The manifest's entry for one split: num_examples and shards."""
  if split not in manifest.get('splits', {}):
    raise cli.UserError(f'the manifest has no split {split!r}; it has '
                        f'{sorted(manifest.get("splits", {}))}')
  return manifest['splits'][split]


def shard_paths(records_dir: str, manifest: Mapping, split: str) -> list:
  """Full paths of one split's shards, in order."""
  return [os.path.join(records_dir, shard['file'])
          for shard in split_info(manifest, split)['shards']]


def num_examples(manifest: Mapping, split: str) -> int:
  """How many posters one split holds, from the manifest (no pass over data)."""
  return int(split_info(manifest, split)['num_examples'])
