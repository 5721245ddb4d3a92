"""The benchmark's data: synthetic records made as the README says, or the user's.

Without --records, synthetic posters are generated into --work_dir and
converted with --store_size equal to --image_size (the README's way to make
training records: no resize left on the host); later runs reuse them.

--real_size (record_sets) converts posters (synthetic ones, or the first
--num_posters rows of --csv with their --images) at the tutorial's store
size into both formats, JPEG and raw, and copies the raw shards with
TFRecord's GZIP and ZLIB compression: one folder each, reused later.
"""

import csv
import dataclasses
import glob
import hashlib
import io
import os
import shutil
import sys
from typing import Optional, Sequence

import tensorflow as tf

from posternet import cli
from posternet.data import convert
from posternet.data import csv_rows
from posternet import files
from posternet.data import images
from posternet.data import records
from posternet.data import synthetic
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


def _reusable_records(folder: str, csv_path: str, image_size: Sequence[int],
                      store_format: str = 'jpeg',
                      compression: Optional[str] = None) -> bool:
  """Whether `folder` holds finished records of this CSV, as asked for."""
  try:
    manifest = records.Manifest.read(folder)
  except cli.UserError:
    return False
  return (manifest.store_size == tuple(image_size) and
          manifest.format_version == records.FORMAT_VERSION and
          manifest.raw_padded == (store_format == 'raw') and
          (manifest.store_format, manifest.compression) == (store_format,
                                                            compression) and
          manifest.source.csv_sha256 == _file_sha256(csv_path))


def _converted(csv_path: str, images_dir: str, folder: str,
               store_size: Sequence[int], store_format: str = 'jpeg') -> str:
  """Records of the CSV at store_size in folder: made unless already there."""
  if not _reusable_records(folder, csv_path, store_size, store_format):
    print(f'converting {csv_path} to {folder} (--store_size={store_size[0]}x'
          f'{store_size[1]} --store_format={store_format})', file=sys.stderr)
    convert.convert(csv_path, images_dir, folder, store_size=store_size,
                    store_format=store_format, progress=False)
  return folder


def synthetic_records(work_dir: str, num_posters: int,
                      image_size: Sequence[int]) -> tuple:
  """(records folder, Images folder) of synthetic posters, made or reused.

  synthetic.generate (deterministic: seed 0), then convert.convert with
  store_size = image_size, as the README tells users to make training
  records. Both are kept in work_dir for the next run.
  """
  csv_path, images_dir = synthetic_posters(work_dir, num_posters)
  height, width = image_size
  records_dir = _converted(csv_path, images_dir, os.path.join(
      os.path.dirname(csv_path), f'records-{height}x{width}'), image_size)
  return records_dir, images_dir


def synthetic_posters(work_dir: str, num_posters: int) -> tuple:
  """(CSV, Images) of num_posters synthetic posters (seed 0); made once."""
  data_dir = os.path.join(work_dir, f'synthetic-{num_posters}')
  csv_path = os.path.join(data_dir, synthetic.CSV_NAME)
  images_dir = os.path.join(data_dir, synthetic.IMAGES_DIR)
  if not (os.path.exists(csv_path) and _csv_rows(csv_path) == num_posters):
    print(f'generating {num_posters} synthetic posters in {data_dir}',
          file=sys.stderr)
    synthetic.generate(data_dir, num_posters, seed=0)
  return csv_path, images_dir


def first_rows(csv_path: str, images_dir: str, count: int,
               work_dir: str) -> tuple:
  """(CSV, Images) of the CSV's first `count` rows, in work_dir; made once.

  The CSV holds those rows; the Images folder holds copies of their posters
  (the converter refuses links that lead out of --images), so the baselines
  read the same posters as the records. Checked as the converter
  checks a CSV (csv_rows.read_csv), so a bad CSV is one line here.
  """
  if not images_dir or not os.path.isdir(images_dir):
    raise cli.UserError(f'--csv needs the folder of its posters: --images='
                        f'{images_dir} is not a folder')
  table = csv_rows.read_csv(csv_path)
  count = min(count, table.num_rows)
  folder = os.path.join(work_dir, f'first-{count}-of-{table.sha256[:12]}')
  subset_csv = os.path.join(folder, synthetic.CSV_NAME)
  subset_images = os.path.join(folder, synthetic.IMAGES_DIR)
  if os.path.exists(subset_csv):
    return subset_csv, subset_images
  os.makedirs(subset_images, exist_ok=True)
  with open(csv_path, newline='') as f:
    lines = list(csv.reader(f))[:count + 1]
  for poster_id in table.ids[:count]:
    name = poster_id + csv_rows.IMAGE_SUFFIX
    source, copy = (os.path.join(images_dir, name),
                    os.path.join(subset_images, name))
    if os.path.isfile(source) and not os.path.exists(copy):
      shutil.copyfile(source, copy)
  text = io.StringIO()
  csv.writer(text, lineterminator='\n').writerows(lines)
  files.write_atomically(subset_csv, text.getvalue())  # last: marks it done
  return subset_csv, subset_images


def record_sets(work_dir: str, num_posters: int, store_size: Sequence[int],
                csv_path: Optional[str] = None,
                images_dir: Optional[str] = None,
                compressions: Sequence[str] = records.COMPRESSIONS) -> tuple:
  """--real_size's records: ({set name: folder}, the posters' Images folder).

  Sets: 'jpeg' at store_size (each poster at most its own size); 'raw' at
  the JPEG records' largest stored size, which holds the same pixels and is
  the box every raw record is padded to (400x300 for the tutorial's
  posters, not 400x400's third more bytes); and the raw shards copied with
  each TFRecord compression ('raw GZIP', 'raw ZLIB'). Posters: the first
  num_posters rows of csv_path (with images_dir), else num_posters
  synthetic ones.
  """
  if csv_path:
    csv_path, images_dir = first_rows(csv_path, images_dir, num_posters,
                                      work_dir)
  else:
    csv_path, images_dir = synthetic_posters(work_dir, num_posters)
  base = os.path.join(os.path.dirname(csv_path),
                      'records-{}x{}'.format(*store_size))
  jpeg = _converted(csv_path, images_dir, base, store_size)
  box = largest_stored_size(records.Manifest.read(jpeg))
  raw_base = os.path.join(os.path.dirname(csv_path),
                          'records-{}x{}-raw'.format(*box))
  sets = {'jpeg': jpeg,
          'raw': _converted(csv_path, images_dir, raw_base, box, 'raw')}
  raw = records.Manifest.read(sets['raw'])
  for compression in compressions:
    folder = f'{raw_base}-{compression.lower()}'
    if not _reusable_records(folder, csv_path, box, 'raw', compression):
      compressed_copy(raw, folder, compression)
    sets[f'raw {compression}'] = folder
  return sets, images_dir


def largest_stored_size(manifest: records.Manifest) -> tuple:
  """(height, width): the largest stored side of each, over both splits."""
  largest = [manifest.stored_size_range(split)[1] for split in records.SPLITS]
  return tuple(max(sides) for sides in zip(*largest))


def compressed_copy(manifest: records.Manifest, out_dir: str,
                    compression: str) -> str:
  """The records rewritten with TFRecord compression, and their manifest.

  The same Examples, shard by shard; the manifest says the compression, so
  the pipeline and --verify read the copy as any records folder.
  """
  os.makedirs(out_dir, exist_ok=True)
  splits = {}
  for split in records.SPLITS:
    info = manifest.split_info(split)
    shards = []
    for shard, source in zip(info.shards, manifest.shard_paths(split)):
      path = os.path.join(out_dir, shard.file)
      with files.atomic_path(path) as temporary:
        with tf.io.TFRecordWriter(temporary, compression) as writer:
          for record in tf.data.TFRecordDataset(
              source, manifest.tfrecord_compression):
            writer.write(record.numpy())
      shards.append(records.ShardInfo.of_file(path, shard.num_examples))
    splits[split] = dataclasses.replace(info, shards=shards)
  dataclasses.replace(manifest, splits=splits, compression=compression,
                      format_version=records.FORMAT_VERSION).write(out_dir)
  return out_dir


def posters_from_records(manifest: records.Manifest, out_dir: str) -> str:
  """Writes the records' posters as <Id>.jpg files (baselines need files).

  Raw pixels are encoded as JPEG (images.encode_jpeg) first.
  """
  os.makedirs(out_dir, exist_ok=True)
  raw = manifest.store_format == 'raw'
  for split in records.SPLITS:
    paths = manifest.shard_paths(split)
    for batch in tf.data.TFRecordDataset(
        paths, manifest.tfrecord_compression).batch(256).map(
            records.parse_examples):
      for poster_id, data, height, width in zip(
          batch[records.ID_KEY].numpy(), batch[records.IMAGE_KEY].numpy(),
          batch[records.HEIGHT_KEY].numpy(), batch[records.WIDTH_KEY].numpy()):
        if raw:
          box = manifest.raw_box or (int(height), int(width))
          data = images.encode_jpeg(images.decode_raw(
              tf.constant(data), box)[:int(height), :int(width)])
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
            work_dir: str, num_posters: int, image_size: Sequence[int],
            csv_path: Optional[str] = None) -> tuple:
  """(records, images): the data measured, made or checked; clear errors.

  records_dir, else the first num_posters rows of csv_path (of images_dir)
  converted at image_size, else synthetic posters.

  Returns:
    (records.Manifest of the records folder, opened; images folder).
  """
  os.makedirs(work_dir, exist_ok=True)
  if csv_path is not None:
    csv_path, images_dir = first_rows(csv_path, images_dir, num_posters,
                                      work_dir)
    folder = os.path.join(os.path.dirname(csv_path),
                          'records-{}x{}'.format(*image_size))
    _converted(csv_path, images_dir, folder, image_size)
    return records.Manifest.read(folder), images_dir
  if records_dir is None:
    if images_dir is not None:
      raise cli.UserError('--images is for the baselines of --records made '
                          'from that folder; give --records too (or --csv), '
                          'or neither')
    records_dir, images_dir = synthetic_records(work_dir, num_posters,
                                                image_size)
    return records.Manifest.read(records_dir), images_dir
  manifest = records.Manifest.read(records_dir)  # A clear error if not.
  if manifest.store_format != 'jpeg':
    raise cli.UserError(
        f'{records_dir} holds {manifest.store_format} records: the rows are '
        "measured against the decode of JPEG records' bytes; give JPEG "
        'records, or --real_size to measure both formats')
  if images_dir is None:
    images_dir = posters_from_records(
        manifest, os.path.join(work_dir, 'posters-from-records'))
  elif not os.path.isdir(images_dir):
    raise cli.UserError(f'--images={images_dir} is not a folder')
  if not poster_paths(images_dir):
    raise cli.UserError(f'{images_dir} holds no .jpg posters for the baselines')
  return manifest, images_dir

