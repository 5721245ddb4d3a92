"""The converter's shards: posters converted on threads, written in order.

write_pending turns each pending shard of the plan (shard_plan.Shard) into
a TFRecord file in the staging folder (staging.py): the posters of its
rows, converted by poster_files.load_poster on a thread pool, written as
tf.train.Examples (records.make_example) in row order. Each finished shard
is renamed into place (files.atomic_path) and noted, with its sha256, so
that a stopped run resumes there. Output is byte-identical whatever the
worker count, interrupted or not.
"""

import collections
import concurrent.futures
import functools
import itertools
import os
from typing import Iterable, Iterator, Sequence

import tensorflow as tf

from posternet import cli
from posternet.data import csv_rows
from posternet import files
from posternet.data import poster_files
from posternet.data import records
from posternet.data import shard_plan
from posternet.data import staging


def write_pending(out_dir: str, pending: Sequence[shard_plan.Shard],
                  table: csv_rows.Table, images_dir: str,
                  options: shard_plan.Options, workers: int, progress: bool,
                  done: dict) -> None:
  """Writes the shards not finished yet into staging, noting each when done."""
  bar = cli.Progress(sum(len(s.rows) for s in pending),
                     f'converting to {out_dir}', enabled=progress)
  try:
    for note in _write_shards(staging.staging_dir(out_dir), pending, table,
                              images_dir, options, workers, bar):
      done[staging.save_note(out_dir, note)] = note
  finally:
    bar.close()


def _write_shards(folder: str, shards: Sequence[shard_plan.Shard],
                  table: csv_rows.Table, images_dir: str,
                  options: shard_plan.Options, workers: int,
                  bar: cli.Progress) -> Iterator:
  """Converts posters on a thread pool, writing shards in order; yields notes.

  TF's decode and encode ops release the GIL, so threads use every core; the
  results come back in input order, which makes the bytes independent of
  the worker count.
  """
  load = functools.partial(poster_files.load_poster,
                           max_pixels=options.max_pixels,
                           store_size=options.store_size,
                           images_dir=images_dir,
                           store_format=options.store_format)
  paths = (shard_plan.image_path(images_dir, table.ids[row])
           for shard in shards for row in shard.rows)
  with concurrent.futures.ThreadPoolExecutor(workers) as pool:
    futures = _ordered(pool, load, paths, window=4 * workers)
    try:
      for shard in shards:
        yield _write_shard(folder, shard, futures, table, images_dir,
                           options.skip_bad_images, bar)
    finally:
      pool.shutdown(wait=True, cancel_futures=True)


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


def _write_shard(folder: str, shard: shard_plan.Shard, futures: Iterator,
                 table: csv_rows.Table, images_dir: str,
                 skip_bad_images: bool, bar: cli.Progress) -> dict:
  """Writes one shard under a temporary name, renames it, returns its note."""
  with files.atomic_path(os.path.join(folder, shard.file)) as temporary:
    with tf.io.TFRecordWriter(temporary) as writer:
      sizes, skipped = _write_examples(writer, shard, futures, table,
                                       images_dir, skip_bad_images, bar)
    size, sha256 = records.size_and_sha256(temporary)
  heights, widths = zip(*sizes) if sizes else ((), ())
  return {'shard': records.ShardInfo(shard.file, len(sizes), size,
                                     sha256).to_dict(),
          'skipped_rows': skipped,
          'stored_sizes': ([[min(heights), min(widths)],
                            [max(heights), max(widths)]] if sizes else [])}


def _write_examples(writer: tf.io.TFRecordWriter, shard: shard_plan.Shard,
                    futures: Iterator, table: csv_rows.Table,
                    images_dir: str, skip_bad_images: bool,
                    bar: cli.Progress) -> tuple:
  """Writes a shard's posters in row order; (stored sizes, skipped rows)."""
  sizes, skipped = [], []
  for row in shard.rows:
    poster_id = table.ids[row]
    try:
      poster = next(futures).result()
    except poster_files.BadImage as e:
      if not skip_bad_images:
        raise cli.UserError(
            f'{shard_plan.image_path(images_dir, poster_id)} (line '
            f'{table.line_of(row)}, Id {poster_id}): {e}; fix or remove '
            'the row, or pass --skip_bad_images to leave such posters '
            'out') from None
      skipped.append([table.line_of(row), poster_id,
                      poster_id + csv_rows.IMAGE_SUFFIX, e.reason, e.detail])
    else:
      example = records.make_example(poster.data, poster.height,
                                     poster.width, poster_id,
                                     table.labels[row])
      # deterministic: map order otherwise differs between processes, and
      # a resumed run must write the very bytes of an uninterrupted one.
      writer.write(example.SerializeToString(deterministic=True))
      sizes.append((poster.height, poster.width))
    bar.update()
  return sizes, skipped

