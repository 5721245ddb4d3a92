"""A split's shards, from the manifest to interleaved serialized records.

The first stages of the pipeline (pipeline.make_dataset, read_labels):

  manifest shard list (each must open) → this worker's share (by file) →
  file shuffle → interleaved reads, each shard's records counted against
  the manifest → serialized records

The count check is what turns a damaged or vanished shard into an error
that names it (input_errors.ERROR_TAG; TFRecordDataset's own error names
no file), or, with ignore_errors, a warning and a skip. The records stay
encoded here; parse and decode are decode_ops.py's.
"""

import os
from typing import Sequence

import tensorflow as tf

from posternet import cli
from posternet.data import input_errors
from posternet.data import records

AUTOTUNE = tf.data.AUTOTUNE


def shard_list(manifest: records.Manifest, split: str) -> tuple:
  """(paths, counts) of a split's shards from the manifest; each must open."""
  paths = manifest.shard_paths(split)
  counts = [shard.num_examples for shard in manifest.split_info(split).shards]
  for path in paths:
    # Opened here: a shard that cannot be opened would make the reader's
    # ignore_errors retry forever.
    try:
      with tf.io.gfile.GFile(path, 'rb') as f:
        f.read(1)
    except tf.errors.OpError as e:
      raise cli.UserError(
          f'shard {path} is listed in the manifest but cannot be read '
          f'({e.message.strip()}); convert the data again with `make records`'
          ) from None
  if not paths or sum(counts) == 0:
    raise cli.UserError(
        f'the {split} split of {manifest.records_dir} holds no posters')
  return paths, counts


def shard_for_worker(paths: Sequence[str], counts: Sequence[int],
                     input_context=None) -> tuple:
  """This input pipeline's share of the shards: every n-th file.

  By file, not by example, so each worker reads only its own bytes; before
  any shuffle, so the workers' shares are disjoint whatever their seeds.
  """
  if input_context is None or input_context.num_input_pipelines == 1:
    return list(paths), list(counts)
  workers = input_context.num_input_pipelines
  if len(paths) < workers:
    raise cli.UserError(
        f'{len(paths)} shard files cannot be shared among {workers} input '
        f'workers; convert again with tools.make_records '
        f'--min_shards={workers} (make records '
        f'RECORDS_FLAGS=--min_shards={workers})')
  index = input_context.input_pipeline_id
  return list(paths[index::workers]), list(counts[index::workers])


def _count_check(path: tf.Tensor, expected: tf.Tensor, ignore_errors: bool):
  """A scan function: counts a shard's records, checking at its end marker.

  A shortfall fails with a message naming the shard and the number of
  records lost (tagged for input_errors.as_user_error), or, with ignore_errors, prints
  that message as a warning and reading goes on. Without ignore_errors it is
  branch-free (an Assert, no tf.cond): it runs once per batch of records.
  """
  name = tf.strings.regex_replace(path, r'^.*[/\\]', '')

  def check(seen, batch):
    total = seen + tf.size(batch, tf.int64)
    short = tf.logical_and(tf.equal(tf.size(batch), 0), total < expected)
    message = tf.strings.join([
        'shard ', name, ': ', tf.strings.as_string(expected - total), ' of ',
        tf.strings.as_string(expected), ' records could not be read (damaged '
        'or truncated)'])
    if ignore_errors:
      done = tf.cond(short, lambda: input_errors.warn(message + ', skipped'),
                     lambda: tf.constant(True))
    else:
      done = tf.debugging.Assert(tf.logical_not(short), [tf.strings.join([
          input_errors.ERROR_TAG, message, '; run `make verify`, convert the '
          'data again, or skip damaged records with ignore_errors'])])
    with tf.control_dependencies([done]):
      return total, tf.identity(batch)

  return check


def _assert_present(path: tf.Tensor) -> tf.Operation:
  """Fails, naming the shard, when it has gone since make_dataset checked it.

  Without this, TFRecordDataset's open error would be retried forever by the
  ignore_errors that catches damaged records. One glob per shard pass.
  """
  pattern = tf.strings.regex_replace(path, r'([*?\[])', r'[\1]')  # literal
  message = tf.strings.join([input_errors.ERROR_TAG, 'shard ', path,
                             ' has disappeared; convert the data again '
                             'with `make records`'])
  return tf.debugging.Assert(tf.size(tf.io.matching_files(pattern)) > 0,
                             [message])


def read_shard(path: tf.Tensor, expected: tf.Tensor, read_batch: int,
               ignore_errors: bool, compression: str = '') -> tf.data.Dataset:
  """One shard's serialized records, in batches, checked against the manifest.

  A damaged record ends TFRecordDataset's pass over its file with a
  DataLossError that does not name the file. Here that error is swallowed and
  the records read are counted instead; an empty batch marks the shard's end,
  where _count_check reports a shortfall by shard name (the empty batch then
  vanishes in the unbatch). Records travel in batches: one hand-off between
  threads and one count per batch, not per record. Few dataset ops per
  shard: each shard pass pays for setting them up (~0.5 ms). compression:
  the manifest's (records.Manifest.tfrecord_compression).
  """
  with tf.control_dependencies([_assert_present(path)]):
    path = tf.identity(path)
  dataset = tf.data.TFRecordDataset(path, compression).ignore_errors().batch(
      read_batch)
  end = tf.data.Dataset.from_tensors(tf.zeros([0], tf.string))
  return dataset.concatenate(end).scan(
      tf.constant(0, tf.int64), _count_check(path, expected, ignore_errors))


def _interleave_widths(opts) -> tuple:
  """(cycle_length, num_parallel_calls) for the reads that tf.data accepts.

  A fixed parallelism may not exceed the cycle length; when only the
  parallelism is fixed, the cycle stays as wide as TensorFlow's default (the
  core count), so shards mix the same way.
  """
  cycle, parallel = opts.cycle_length, opts.num_parallel_calls
  if parallel == AUTOTUNE:
    return cycle, parallel
  cycle = cycle or max(parallel, os.cpu_count() or 1)
  return cycle, min(parallel, cycle)


def read_records(paths: Sequence[str], counts: Sequence[int],
                 opts, compression: str = '') -> tf.data.Dataset:
  """Serialized records from all shards, interleaved; endless when training.

  opts: the pipeline's Options (pipeline.make_options); compression: the
  shards' (records.Manifest.tfrecord_compression).
  """
  files = tf.data.Dataset.from_tensor_slices(
      (tf.constant(list(paths)), tf.constant(list(counts), tf.int64)))
  if opts.training and not opts.cache:
    # File-level shuffle: a new shard order every epoch, for free.
    files = files.shuffle(len(paths), seed=opts.seed,
                          reshuffle_each_iteration=True)
    if opts.repeats:
      # Repeat at file level: reading flows on across epoch boundaries.
      files = files.repeat()
  # Parallel interleaved reads: hides file latency and mixes shards.
  cycle_length, parallel = _interleave_widths(opts)
  batches = files.interleave(
      lambda path, count: read_shard(path, count, opts.read_batch,
                                     opts.ignore_errors, compression),
      cycle_length=cycle_length, block_length=1,
      num_parallel_calls=parallel, deterministic=opts.ordered)
  return batches.unbatch()

