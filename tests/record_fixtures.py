"""Small synthetic records folders for tests (after tf-models' tfexample_utils).

A folder made here looks exactly like one made by the converter
(posternet/data/convert.py): shards named by records.shard_name, Examples built by
records.make_example, JPEGs encoded by images.encode_jpeg (or raw pixels),
stored sizes by poster_files.stored_size, and manifest.json built and
written by records.Manifest.
Posters are tiny and learnable: each of a poster's genres paints one
horizontal band in that genre's own colour, over light noise, so a small CNN
can learn the labels in a few steps while nothing is constant across posters.

Usage in a test:
  manifest = record_fixtures.write_records(str(tmp_path), num_train=32,
                                           num_val=8, image_hw=(32, 32))
  dataset = pipeline.make_dataset(manifest, 'train', 8, (32, 32))
"""

import dataclasses
import hashlib
import os
from typing import Callable, Optional, Sequence

import numpy as np
import tensorflow as tf

from posternet import genres
from posternet.data import images
from posternet.data import poster_files
from posternet.data import records
# One colour per genre, fixed for every fixture (the learnable signal): the
# 3×3×3 grid of channel levels 0/128/255 without mid grey and black, so any
# two genres differ by at least 127 in some channel, far above the noise.
GENRE_COLOURS = np.array(
    [(r, g, b) for r in (0, 128, 255) for g in (0, 128, 255)
     for b in (0, 128, 255) if (r, g, b) not in ((128, 128, 128), (0, 0, 0))],
    np.uint8)

# Varied stored sizes when image_hw is None: poster-like, taller than wide.
VARIED_HEIGHTS = (40, 72)
VARIED_WIDTHS = (28, 52)

def poster_id(split: str, index: int) -> str:
  """The Id of a fixture poster; train and val Ids never collide."""
  offset = 0 if split == 'train' else 5_000_000
  return f'tt{offset + index:07d}'


def sample_labels(rng: np.random.RandomState, count: int) -> np.ndarray:
  """1 to 3 distinct genres per poster, as float32 multi-hot [count, 25]."""
  labels = np.zeros((count, genres.NUM_GENRES), np.float32)
  for row in labels:
    row[rng.choice(genres.NUM_GENRES, rng.randint(1, 4), replace=False)] = 1.0
  return labels


def poster_pixels(rng: np.random.RandomState, labels: np.ndarray,
                  hw: Sequence[int]) -> np.ndarray:
  """uint8 [H, W, 3]: one band per genre in its colour, plus light noise."""
  height, width = hw
  noise = rng.randint(-20, 21, size=(height, width, 3))
  pixels = np.full((height, width, 3), 128, np.int32) + noise
  chosen = np.flatnonzero(labels > 0.5)
  bands = np.array_split(np.arange(height), len(chosen))
  for genre, rows in zip(chosen, bands):
    pixels[rows] = GENRE_COLOURS[genre].astype(np.int32) + noise[rows]
  return np.clip(pixels, 0, 255).astype(np.uint8)


def _poster_hw(rng: np.random.RandomState,
               image_hw: Optional[Sequence[int]]) -> tuple:
  """The size a poster is drawn at: image_hw, or random in the varied range."""
  if image_hw is not None:
    return tuple(int(x) for x in image_hw)
  return (rng.randint(VARIED_HEIGHTS[0], VARIED_HEIGHTS[1] + 1),
          rng.randint(VARIED_WIDTHS[0], VARIED_WIDTHS[1] + 1))


def _encoded_poster(rng, labels, image_hw, store_size, store_format) -> tuple:
  """(stored bytes, stored height, stored width) of one poster."""
  pixels = tf.constant(poster_pixels(rng, labels, _poster_hw(rng, image_hw)))
  if store_size is not None:
    # What the converter's --store_size does: shrink once, at conversion,
    # never enlarging.
    pixels = images.maybe_resize(
        pixels, poster_files.stored_size(pixels.shape[:2], store_size))
  height, width = int(pixels.shape[0]), int(pixels.shape[1])
  data = (pixels.numpy().tobytes() if store_format == 'raw'
          else images.encode_jpeg(pixels))
  return data, height, width


def _write_split(records_dir, split, count, num_shards, rng, image_hw,
                 store_size, store_format, compression) -> records.SplitInfo:
  """Writes one split's shards; returns its manifest entry."""
  labels = sample_labels(rng, count)
  shards = min(num_shards, max(count, 1))
  entries, sizes = [], []
  for shard, indices in enumerate(np.array_split(np.arange(count), shards)):
    path = os.path.join(records_dir, records.shard_name(split, shard, shards))
    with tf.io.TFRecordWriter(path, compression) as writer:
      for index in indices:
        encoded, height, width = _encoded_poster(rng, labels[index], image_hw,
                                                 store_size, store_format)
        sizes.append((height, width))
        writer.write(records.make_example(
            encoded, height, width, poster_id(split, int(index)),
            labels[index]).SerializeToString())
    entries.append(records.ShardInfo.of_file(path, len(indices)))
  return records.SplitInfo.build(entries, sizes)


def write_records(records_dir: str, num_train: int = 32, num_val: int = 8,
                  image_hw: Optional[Sequence[int]] = (32, 32),
                  num_shards: int = 2, seed: int = 0,
                  store_size: Optional[Sequence[int]] = None,
                  store_format: str = 'jpeg',
                  compression: Optional[str] = None) -> records.Manifest:
  """Writes a complete records folder of tiny synthetic posters.

  Args:
    records_dir: the folder to write (created if missing).
    num_train: posters in the train split.
    num_val: posters in the val split.
    image_hw: (height, width) of every poster, or None for varied sizes
      (heights 40–72, widths 28–52), like real posters.
    num_shards: shards per split (fewer when a split has fewer posters).
    seed: makes labels, sizes and pixels reproducible.
    store_size: (height, width) no poster is stored larger than (each side
      shrunk to at most it), as the converter's --store_size does; recorded
      in the manifest.
    store_format: 'jpeg', or 'raw' for uint8 pixels (the converter's
      --store_format).
    compression: the shards' TFRecord compression, None or 'GZIP'/'ZLIB'.

  Returns:
    The records handle (records.Manifest) of the folder, as written.
  """
  os.makedirs(records_dir, exist_ok=True)
  rng = np.random.RandomState(seed)
  total = num_train + num_val
  splits = {split: _write_split(records_dir, split, count, num_shards, rng,
                                image_hw, store_size, store_format,
                                compression)
            for split, count in (('train', num_train), ('val', num_val))}
  manifest = records.Manifest(
      splits=splits,
      source=records.Source(
          csv='multi_label_train.csv',
          csv_sha256=hashlib.sha256(
              f'fixture {seed} {total}'.encode()).hexdigest(),
          csv_rows=total, unique_ids=total),
      split_rule=records.SplitRule(
          val_fraction=round(num_val / max(total, 1), 6)),
      store_size=store_size, store_format=store_format,
      compression=compression)
  return manifest.write(records_dir)


def read_split(folder, split: str) -> list:
  """Every record of a split, in shard order, as parsed numpy dicts.

  The ground truth tests compare the pipeline against: read directly, without
  the pipeline. folder: a records folder, or its records.Manifest.
  """
  if not isinstance(folder, records.Manifest):
    folder = records.Manifest.read(folder)
  paths = folder.shard_paths(split)
  serialized = list(tf.data.TFRecordDataset(
      paths, folder.tfrecord_compression).as_numpy_iterator())
  if not serialized:
    return []
  parsed = {key: value.numpy() for key, value in
            records.parse_examples(tf.constant(serialized)).items()}
  return [{key: value[i] for key, value in parsed.items()}
          for i in range(len(serialized))]


def rewrite_records(manifest: records.Manifest,
                    edit: Callable[[str, int, dict], dict],
                    target_dir: Optional[str] = None) -> records.Manifest:
  """Writes every record again, as edit(split, index, example) returns it.

  The shards keep their names and counts, get valid CRCs, and the manifest
  their new sizes and checksums: records that read fine and hold whatever
  edit put there (misaligned labels, an image that does not decode).

  Args:
    manifest: the folder to read.
    edit: gets each record of read_split (split, index in the split, the
      parsed dict) and returns the dict to write.
    target_dir: where to write; default: over manifest's own folder.

  Returns:
    The handle of the folder written.
  """
  target_dir = target_dir or manifest.records_dir
  os.makedirs(target_dir, exist_ok=True)
  splits = {}
  for split in records.SPLITS:
    examples = read_split(manifest, split)
    start, shards = 0, []
    for shard in manifest.split_info(split).shards:
      path = os.path.join(target_dir, shard.file)
      with tf.io.TFRecordWriter(path) as writer:
        for index in range(start, start + shard.num_examples):
          ex = edit(split, index, examples[index])
          writer.write(records.make_example(
              ex[records.IMAGE_KEY], int(ex[records.HEIGHT_KEY]),
              int(ex[records.WIDTH_KEY]), ex[records.ID_KEY].decode(),
              ex[records.LABELS_KEY]).SerializeToString())
      start += shard.num_examples
      shards.append(records.ShardInfo.of_file(path, shard.num_examples))
    splits[split] = dataclasses.replace(manifest.split_info(split),
                                        shards=shards)
  return dataclasses.replace(manifest, splits=splits).write(target_dir)


def replace_image(manifest: records.Manifest, split: str, index: int,
                  image: bytes) -> tuple:
  """Puts image in place of one poster's image, CRCs and checksums valid.

  Returns:
    (the shard's file name, the record's index in it, the poster's Id).
  """
  rewrite_records(manifest, lambda s, i, ex: (
      {**ex, records.IMAGE_KEY: image} if (s, i) == (split, index) else ex))
  ids = [ex[records.ID_KEY].decode() for ex in read_split(manifest, split)]
  start = 0
  for shard in manifest.split_info(split).shards:
    if index < start + shard.num_examples:
      return shard.file, index - start, ids[index]
    start += shard.num_examples
  raise IndexError(f'the {split} split has no poster {index}')
