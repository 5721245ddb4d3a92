"""The benchmark's data: synthetic records made as the README says, or the user's.

Without --records, synthetic posters are generated into --work_dir and
converted with --store_size equal to --image_size (the README's way to make
training records: no resize left on the host); later runs reuse them.
"""

import dataclasses
import glob
import hashlib
import os
import sys
from typing import Optional, Sequence

import tensorflow as tf

from posternet import cli
from posternet import convert
from posternet import records
from posternet import synthetic

# How much more the big data set of the memory check holds.
SCALE = 4


def poster_paths(images_dir: str) -> list:
  """The folder's .jpg posters, in name order (the CSV's order for Ids)."""
  return sorted(glob.glob(os.path.join(images_dir, '*.jpg')))


def _file_sha256(path: str) -> str:
  with open(path, 'rb') as f:
    return hashlib.sha256(f.read()).hexdigest()


def _csv_rows(csv_path: str) -> int:
  with open(csv_path) as f:
    return sum(1 for _ in f) - 1


def _reusable_records(folder: str, csv_path: str,
                      image_size: Sequence[int]) -> bool:
  """Whether `folder` holds finished records of this CSV at this store size."""
  try:
    manifest = records.Manifest.read(folder)
  except cli.UserError:
    return False
  return (manifest.store_size == tuple(image_size) and
          manifest.source.csv_sha256 == _file_sha256(csv_path))


def synthetic_records(work_dir: str, num_posters: int,
                      image_size: Sequence[int]) -> tuple:
  """(records folder, Images folder) of synthetic posters, made or reused.

  synthetic.generate (deterministic: seed 0), then convert.convert with
  store_size = image_size, as the README tells users to make training
  records. Both are kept in work_dir for the next run.
  """
  data_dir = os.path.join(work_dir, f'synthetic-{num_posters}')
  csv_path = os.path.join(data_dir, synthetic.CSV_NAME)
  images_dir = os.path.join(data_dir, synthetic.IMAGES_DIR)
  if not (os.path.exists(csv_path) and _csv_rows(csv_path) == num_posters):
    print(f'generating {num_posters} synthetic posters in {data_dir}',
          file=sys.stderr)
    synthetic.generate(data_dir, num_posters, seed=0)
  height, width = image_size
  records_dir = os.path.join(data_dir, f'records-{height}x{width}')
  if not _reusable_records(records_dir, csv_path, image_size):
    print(f'converting them to {records_dir} (--store_size={height}x{width})',
          file=sys.stderr)
    convert.convert(csv_path, images_dir, records_dir, store_size=image_size,
                    progress=False)
  return records_dir, images_dir


def posters_from_records(manifest: records.Manifest, out_dir: str) -> str:
  """Writes the records' posters as <Id>.jpg files (baselines need files)."""
  os.makedirs(out_dir, exist_ok=True)
  for split in records.SPLITS:
    paths = manifest.shard_paths(split)
    for batch in tf.data.TFRecordDataset(paths).batch(256).map(
        records.parse_examples):
      for poster_id, data in zip(batch[records.ID_KEY].numpy(),
                                 batch[records.IMAGE_KEY].numpy()):
        with open(os.path.join(out_dir, poster_id.decode() + '.jpg'),
                  'wb') as f:
          f.write(data)
  return out_dir


def scaled_records(manifest: records.Manifest, out_dir: str,
                   scale: int = SCALE) -> str:
  """A records folder listing every shard `scale` times (as symbolic links).

  To the pipeline it is a data set `scale` times larger: more files, more
  records, more bytes read per epoch; only the pixels repeat.
  """
  if os.path.isdir(out_dir):
    for name in os.listdir(out_dir):
      os.remove(os.path.join(out_dir, name))
  os.makedirs(out_dir, exist_ok=True)
  splits = {}
  for split in records.SPLITS:
    info = manifest.split_info(split)
    total = scale * len(info.shards)
    shards = []
    for copy in range(scale):
      for index, shard in enumerate(info.shards):
        name = records.shard_name(split, copy * len(info.shards) + index,
                                  total)
        os.symlink(os.path.abspath(os.path.join(manifest.records_dir,
                                                shard.file)),
                   os.path.join(out_dir, name))
        shards.append(dataclasses.replace(shard, file=name))
    splits[split] = dataclasses.replace(
        info, shards=shards, num_examples=scale * info.num_examples)
  dataclasses.replace(manifest, splits=splits).write(out_dir)
  return out_dir


def prepare(records_dir: Optional[str], images_dir: Optional[str],
            work_dir: str, num_posters: int,
            image_size: Sequence[int]) -> tuple:
  """(records, images): the data measured, made or checked; clear errors.

  Returns:
    (records.Manifest of the records folder, opened; images folder).
  """
  os.makedirs(work_dir, exist_ok=True)
  if records_dir is None:
    if images_dir is not None:
      raise cli.UserError('--images is for the baselines of --records made '
                          'from that folder; give --records too, or neither')
    records_dir, images_dir = synthetic_records(work_dir, num_posters,
                                                image_size)
    return records.Manifest.read(records_dir), images_dir
  manifest = records.Manifest.read(records_dir)  # A clear error if not.
  if images_dir is None:
    images_dir = posters_from_records(
        manifest, os.path.join(work_dir, 'posters-from-records'))
  elif not os.path.isdir(images_dir):
    raise cli.UserError(f'--images={images_dir} is not a folder')
  if not poster_paths(images_dir):
    raise cli.UserError(f'{images_dir} holds no .jpg posters for the baselines')
  return manifest, images_dir

