"""Reads a records folder back completely and checks it against its manifest.

`make verify`, or `python -m tools.make_records --verify=records/`. Beside
the schema (posternet/data/records.py), whose handle it checks: every shard's
size and sha256 as listed, every record's TFRecord CRCs (through the
shards' compression, if any), that it parses as a posternet Example, its
image (a JPEG that decodes to the stored height x width, or raw pixels of
height x width x 3 bytes, as the manifest's store_format says) no larger
than the store size, 0/1 labels with at least one genre, and an Id seen once
in the whole folder; per split, that the shards add up and the stored size
range is as listed. The trainer and evaluate run the same checks
(damaged_record_error) when a poster fails to decode, to name the record
behind it.
"""

import concurrent.futures
import dataclasses
import functools
import itertools
import os
from typing import Optional, Sequence, Tuple

from absl import logging
import numpy as np
import tensorflow as tf

from posternet import cli
from posternet.data import images
from posternet.data import records
def verify(records_dir: str, *, workers: Optional[int] = None,
           progress: bool = False) -> list:
  """Reads a records folder back completely and checks it against its manifest.

  Returns:
    The problems found, each naming the shard (and record index); [] when
    all is well.

  Raises:
    cli.UserError: the folder or its manifest is missing or unreadable.
  """
  return check(records.Manifest.read(records_dir), workers=workers,
               progress=progress)


def damaged_record_error(manifest: records.Manifest,
                         error: Exception) -> Optional[cli.UserError]:
  """The one-line error for a read that a damaged record stopped, or None.

  A record whose CRC is fine but whose JPEG does not decode stops tf.data
  with an InvalidArgumentError that names neither shard nor poster. The
  trainer and evaluate then check the folder as `make verify` does (a pass
  over the records, cheap next to a failed run) to find which record it was.

  Returns:
    A UserError naming the shard, the record and its Id; None when error is
    no InvalidArgumentError or the folder is fine (it had another cause).
  """
  if not isinstance(error, tf.errors.InvalidArgumentError):
    return None
  logging.warning('reading the records failed; checking %s for a damaged '
                  'record, as `make verify` does', manifest.records_dir)
  problems = check(manifest)
  if not problems:
    return None
  more = (f' ({len(problems) - 1} more: run `make verify`)'
          if len(problems) > 1 else '')
  return cli.UserError(
      f'a damaged record in {manifest.records_dir}: {problems[0]}{more}; '
      'convert the data again with `make records`, or skip damaged records '
      'with ignore_errors')


def check(manifest: records.Manifest, *, workers: Optional[int] = None,
          progress: bool = False) -> list:
  """verify() for a folder already opened: the problems, [] when none."""
  jobs = [(manifest, shard) for split in records.SPLITS
          for shard in manifest.split_info(split).shards]
  bar = cli.Progress(len(jobs), f'verifying {manifest.records_dir} (shards)',
                     enabled=progress)
  with concurrent.futures.ThreadPoolExecutor(
      workers or cli.usable_cores()) as pool:
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


def _verify_shard(manifest: records.Manifest,
                  shard: records.ShardInfo) -> _ShardCheck:
  name = shard.file
  check = _ShardCheck(name, [], [], [])
  path = os.path.join(manifest.records_dir, name)
  if not tf.io.gfile.exists(path):
    check.problems.append(f'{name}: missing')
    return check
  size, sha256 = records.size_and_sha256(path)
  if size != shard.bytes:
    check.problems.append(f'{name}: {size} bytes, the manifest says '
                          f'{shard.bytes}')
  if sha256 != shard.sha256:
    check.problems.append(f'{name}: sha256 {sha256} differs from the '
                          f'manifest\'s {shard.sha256}')
  count = _verify_records(path, check, manifest)
  if count != shard.num_examples:
    check.problems.append(f'{name}: {count} records read, the manifest says '
                          f'{shard.num_examples}')
  return check


def _verify_records(path: str, check: _ShardCheck,
                    manifest: records.Manifest) -> int:
  """Checks every record; returns how many could be read.

  A tf.data pass first (fast); when a record does not read, parse or decode,
  a record-by-record pass finds which one.
  """
  facts_of = functools.partial(_record_facts,
                               raw=manifest.store_format == 'raw')
  try:
    facts = list(tf.data.TFRecordDataset(
        path, manifest.tfrecord_compression).map(
            facts_of, num_parallel_calls=tf.data.AUTOTUNE).as_numpy_iterator())
  except tf.errors.OpError:
    return _verify_records_one_by_one(path, check, manifest)
  for index, record in enumerate(facts):
    _check_facts(record, index, check, manifest)
  return len(facts)


def _verify_records_one_by_one(path: str, check: _ShardCheck,
                               manifest: records.Manifest) -> int:
  iterator = iter(tf.data.TFRecordDataset(path,
                                          manifest.tfrecord_compression))
  for index in itertools.count():
    try:
      serialized = next(iterator)
    except StopIteration:
      return index
    except tf.errors.OpError as e:  # DataLossError: CRC mismatch, truncation
      check.problems.append(f'{check.file} record {index}: unreadable '
                            f'({cli.tf_message(e)})')
      return index
    try:
      record = {k: v.numpy() for k, v in _record_facts(
          serialized, manifest.store_format == 'raw').items()}
    except tf.errors.OpError as e:
      check.problems.append(f'{check.file} record {index}: '
                            f'{_failure_of(serialized)} '
                            f'({cli.tf_message(e)})')
      continue
    _check_facts(record, index, check, manifest)


def _failure_of(serialized: tf.Tensor) -> str:
  """What fails in a record _record_facts cannot read: parse, or decode."""
  try:
    example = tf.io.parse_single_example(serialized, records.FEATURES)
  except tf.errors.OpError:
    return 'does not parse'
  poster_id = example[records.ID_KEY].numpy().decode('utf-8', 'replace')
  return f'Id {poster_id}: the image does not decode'


def _record_facts(serialized: tf.Tensor, raw: bool = False) -> dict:
  """Parses one record and decodes its image: what _check_facts looks at.

  Raw pixels have no codec to run: their byte length is the fact (shape -1).
  """
  example = tf.io.parse_single_example(serialized, records.FEATURES)
  encoded = example[records.IMAGE_KEY]
  return {'id': example[records.ID_KEY],
          'height': example[records.HEIGHT_KEY],
          'width': example[records.WIDTH_KEY],
          'labels': example[records.LABELS_KEY],
          'magic': tf.strings.substr(encoded, 0, 2),
          'length': tf.strings.length(encoded),
          'shape': (tf.constant([-1, -1, -1]) if raw
                    else tf.shape(images.decode_jpeg(encoded)))}


def _check_facts(record: dict, index: int, check: _ShardCheck,
                 manifest: records.Manifest) -> None:
  """Notes the record's Id and size, and what is wrong with it, if anything."""
  poster_id = record['id'].decode('utf-8', 'replace')
  height, width = int(record['height']), int(record['width'])
  labels = record['labels']
  store_size = manifest.store_size
  check.ids.append((poster_id, index))
  check.sizes.append((height, width))
  problem = None
  if not poster_id:
    problem = 'empty Id'
  elif manifest.store_format == 'raw':
    problem = _raw_problem(int(record['length']), height, width,
                           manifest.raw_box)
  else:
    problem = _jpeg_problem(record, height, width)
  if problem:
    problem = f'Id {poster_id}: {problem}'
  elif store_size and (height > store_size[0] or width > store_size[1]):
    problem = (f'Id {poster_id}: {height}x{width}, larger than the store '
               f'size {store_size[0]}x{store_size[1]}')
  elif not np.isin(labels, (0.0, 1.0)).all() or not labels.any():
    problem = f'Id {poster_id}: labels {labels.tolist()} are not multi-hot'
  if problem:
    check.problems.append(f'{check.file} record {index}: {problem}')


def _jpeg_problem(record: dict, height: int, width: int) -> Optional[str]:
  """What is wrong with a JPEG record's image, or None."""
  shape = tuple(int(d) for d in record['shape'])
  if record['magic'] != b'\xff\xd8':
    return 'the image is not a JPEG'
  if shape != (height, width, 3):
    return (f'the image decodes to {shape}, the record says '
            f'{height}x{width}')
  return None


def _raw_problem(length: int, height: int, width: int,
                 box: Optional[Tuple[int, int]] = None) -> Optional[str]:
  """What is wrong with a raw record's pixels (their length), or None.

  box: the manifest's raw_box, which every record fills (padded).
  """
  if box is None and length != height * width * 3:
    return (f'{length} bytes of raw pixels, the record says {height}x'
            f'{width} (x 3 = {height * width * 3} bytes)')
  if box is not None and length != box[0] * box[1] * 3:
    return (f'{length} bytes of raw pixels, not the {box[0]}x{box[1]} box '
            f'the manifest says every record holds')
  return None


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


def _check_split_totals(manifest: records.Manifest,
                        results: Sequence[_ShardCheck]) -> list:
  """Per split: the shards add up to its count; stored sizes as listed."""
  problems = []
  for split in records.SPLITS:
    info = manifest.split_info(split)
    files = {shard.file for shard in info.shards}
    if sum(s.num_examples for s in info.shards) != info.num_examples:
      problems.append(f'manifest: the {split} shards do not add up to '
                      f'num_examples={info.num_examples}')
    sizes = [hw for r in results if r.file in files for hw in r.sizes]
    if sizes:
      found = records.SplitInfo.build((), sizes)
      for field in ('min_height', 'max_height', 'min_width', 'max_width'):
        listed, seen = getattr(info, field), getattr(found, field)
        if listed != seen:
          problems.append(f'manifest: {split} {field} is {listed}, the '
                          f'records say {seen}')
  return problems
