"""The streaming tf.data pipeline: a records folder → uint8 batches for the model.

Stages, in order (make_dataset reads top to bottom):
  manifest shard list → (worker shard) → file shuffle → interleaved reads with
  a per-shard count check → example shuffle → batch-wise parse → parallel
  decode (DCT-ratio + resize only where needed) → batch → prefetch.

Nothing here holds the dataset in memory unless `cache=True` asks for it, and
the output stays uint8: the model rescales (and casts) on the device.

Each stage is a small function, so tools/prefetch_bench.py can time partial
pipelines (`stop_after=`) with the very same code.
"""

import dataclasses
import math
import os
import re
from typing import Mapping, Optional, Sequence

import tensorflow as tf

from posternet import cli
from posternet import images
from posternet import records

AUTOTUNE = tf.data.AUTOTUNE

# The stages make_dataset can stop after (the benchmark times each prefix).
# 'decode' is a full-size decode without resize (for timing only); 'resize'
# is the real decode path (DCT ratio and resize to image_size).
STAGES = ('read', 'parse', 'decode', 'resize', 'batch', 'prefetch')

# Damaged-shard errors raised inside tf.data start with this; as_user_error
# turns them into one line for the user.
ERROR_TAG = 'posternet-input-error: '


@dataclasses.dataclass(frozen=True)
class Options:
  """make_dataset's keyword options (the trainer exposes them as flags).

  Attributes:
    training: shuffle, repeat forever, drop the last partial batch, and let
      parallel stages deliver out of order. Default: split == 'train'.
    shuffle_buffer: examples in the shuffle buffer (serialized records, a few
      tens of KB each, not pixels).
    cache: keep decoded images in RAM after the first pass (for data that
      fits); the shuffle then moves after the cache.
    threadpool_size: a private thread pool of this size for the pipeline;
      None keeps TensorFlow's shared pool.
    ignore_errors: skip damaged records and posters instead of failing; every
      skip is logged (on stderr) with its shard and count.
    deterministic: override the order guarantee (default: not training).
    num_parallel_calls: parallelism of the reads, parse and decode
      (AUTOTUNE, or a number; 1 for the benchmark's serial variant).
    prefetch: batches prefetched (AUTOTUNE, or a number; 0 turns it off).
    parse_batch: serialized records parsed per parse_example call.
    cycle_length: shards read at once (None: TensorFlow picks).
    dct_method: the JPEG IDCT (images.DCT_METHOD unless benchmarking).
    with_ids: add the poster Ids as a third element (for evaluation reports
      and tests; Keras would read a third element as sample weights).
    seed: seeds the file and example shuffles (tests, reproducible runs).
    stop_after: the last stage to build, one of STAGES (benchmark only).
  """
  training: bool = False
  shuffle_buffer: int = 1024
  cache: bool = False
  threadpool_size: Optional[int] = None
  ignore_errors: bool = False
  deterministic: Optional[bool] = None
  num_parallel_calls: int = AUTOTUNE
  prefetch: int = AUTOTUNE
  parse_batch: int = 64
  cycle_length: Optional[int] = None
  dct_method: str = images.DCT_METHOD
  with_ids: bool = False
  seed: Optional[int] = None
  stop_after: str = 'prefetch'

  @property
  def ordered(self) -> bool:
    """Whether parallel stages keep their input order."""
    return not self.training if self.deterministic is None else self.deterministic


def make_options(split: str, **options) -> Options:
  """Options from keywords, with `training` defaulting to split == 'train'.

  Raises:
    TypeError: an unknown option (a programming mistake).
    cli.UserError: a value out of range (these come from flags).
  """
  options.setdefault('training', split == 'train')
  opts = Options(**options)
  if opts.shuffle_buffer < 1:
    raise cli.UserError(f'shuffle_buffer must be >= 1, not {opts.shuffle_buffer}')
  if opts.parse_batch < 1:
    raise cli.UserError(f'parse_batch must be >= 1, not {opts.parse_batch}')
  if opts.threadpool_size is not None and opts.threadpool_size < 1:
    raise cli.UserError(
        f'threadpool_size must be >= 1 (or unset), not {opts.threadpool_size}')
  if opts.stop_after not in STAGES:
    raise cli.UserError(f'stop_after must be one of {STAGES}, '
                        f'not {opts.stop_after!r}')
  return opts


# Stage 1: shard list and counts from the manifest.


def shard_list(records_dir: str, manifest: Mapping, split: str) -> tuple:
  """(paths, counts) of a split's shards, from the manifest; checks they exist."""
  paths = records.shard_paths(records_dir, manifest, split)
  counts = [int(s['num_examples'])
            for s in records.split_info(manifest, split)['shards']]
  for path in paths:
    if not tf.io.gfile.exists(path):
      raise cli.UserError(f'shard {path} is listed in the manifest but missing;'
                          ' convert the data again with `make records`')
  return paths, counts


def steps_per_epoch(records_dir_or_manifest, split: str, batch_size: int,
                    drop_remainder: Optional[bool] = None) -> int:
  """Batches in one pass over a split, from the manifest (no pass over data).

  Args:
    records_dir_or_manifest: a records folder, or its manifest dict.
    split: 'train' or 'val'.
    batch_size: the global batch size.
    drop_remainder: whether the last partial batch is dropped; default: as
      make_dataset does (train drops it, val keeps it).

  Returns:
    floor(n / batch_size) when dropping the remainder, else ceil.
  """
  manifest = records_dir_or_manifest
  if isinstance(manifest, (str, os.PathLike)):
    manifest = records.read_manifest(os.fspath(manifest))
  if batch_size < 1:
    raise cli.UserError(f'batch_size must be >= 1, not {batch_size}')
  drop = split == 'train' if drop_remainder is None else drop_remainder
  count = records.num_examples(manifest, split)
  steps = count // batch_size if drop else math.ceil(count / batch_size)
  if steps == 0:
    raise cli.UserError(f'the {split} split has {count} posters, fewer than '
                        f'one batch of {batch_size}; lower the batch size')
  return steps


def stored_size_range(manifest: Mapping, split: str) -> tuple:
  """((min_h, min_w), (max_h, max_w)) of the split's stored posters."""
  if manifest.get('store_size'):
    size = tuple(int(x) for x in manifest['store_size'])
    return size, size
  info = records.split_info(manifest, split)
  return ((int(info['min_height']), int(info['min_width'])),
          (int(info['max_height']), int(info['max_width'])))


# Stage 3: per-worker sharding.


def per_replica_batch_size(batch_size: int, input_context=None) -> int:
  """The batch one replica gets: batch_size is global when distributed."""
  if input_context is None:
    return batch_size
  return input_context.get_per_replica_batch_size(batch_size)


def shard_for_worker(paths: Sequence[str], counts: Sequence[int],
                     input_context=None) -> tuple:
  """This input pipeline's share of the shards: every n-th file, by file.

  By file, not by example: each worker then reads only its own bytes.
  """
  if input_context is None or input_context.num_input_pipelines == 1:
    return list(paths), list(counts)
  workers = input_context.num_input_pipelines
  if len(paths) < workers:
    raise cli.UserError(
        f'{len(paths)} shard files cannot be shared among {workers} input '
        f'workers; convert again with at least {workers} shards per split')
  index = input_context.input_pipeline_id
  return list(paths[index::workers]), list(counts[index::workers])


# Stages 2 and 4: file shuffle and interleaved reads, with a count check.


def _check_count(path: tf.Tensor, expected: tf.Tensor, count: tf.Tensor,
                 ignore_errors: bool) -> tf.Tensor:
  """At a shard's end: fail, or log and go on, if records went missing."""
  name = tf.strings.regex_replace(path, r'^.*[/\\]', '')
  message = tf.strings.join([
      tf.strings.as_string(expected - count), ' of ',
      tf.strings.as_string(expected), ' records of shard ', name,
      ' could not be read (damaged or truncated shard)'])
  if ignore_errors:
    return _warn_if(count < expected, message)
  hint = ('; run `make verify`, convert the data again, or skip damaged '
          'records with ignore_errors')
  tf.debugging.Assert(count >= expected, [ERROR_TAG + message + hint])
  return tf.constant(True)


def _warn_if(condition: tf.Tensor, message: tf.Tensor) -> tf.Tensor:
  """Prints one warning line on stderr when condition holds; returns True."""

  def warn():
    line = tf.strings.join(['warning: posternet input: skipped: ', message,
                            ' (ignore_errors)'])
    # PrintV2 on the joined line: tf.print would quote the string tensor.
    with tf.control_dependencies([tf.raw_ops.PrintV2(
        input=line, output_stream='stderr')]):
      return tf.constant(True)

  return tf.cond(condition, warn, lambda: tf.constant(True))


def read_shard(path: tf.Tensor, expected: tf.Tensor,
               ignore_errors: bool = False) -> tf.data.Dataset:
  """One shard's serialized records, checked against the manifest's count.

  A damaged record ends TFRecordDataset's pass over its file (DataLossError,
  without the file's name). Errors are swallowed per shard here and the count
  is compared at the shard's end instead, so the error names the shard and
  says how many records were lost, or (ignore_errors) the loss is logged.
  """
  dataset = tf.data.TFRecordDataset(path).ignore_errors()
  end = tf.data.Dataset.from_tensors(tf.constant(b''))  # valid records are never empty

  def count(seen, record):
    at_end = tf.equal(tf.strings.length(record), 0)
    checked = tf.cond(at_end,
                      lambda: _check_count(path, expected, seen, ignore_errors),
                      lambda: tf.constant(True))
    with tf.control_dependencies([checked]):
      return seen + 1, tf.identity(record)

  dataset = dataset.concatenate(end).scan(tf.constant(0, tf.int64), count)
  return dataset.filter(lambda record: tf.strings.length(record) > 0)


def read_records(paths: Sequence[str], counts: Sequence[int],
                 opts: Options) -> tf.data.Dataset:
  """Serialized records from all shards, interleaved; endless when training."""
  files = tf.data.Dataset.from_tensor_slices(
      (tf.constant(list(paths)), tf.constant(list(counts), tf.int64)))
  if opts.training and not opts.cache:
    # File-level shuffle: a new shard order each epoch, for free.
    files = files.shuffle(len(paths), seed=opts.seed,
                          reshuffle_each_iteration=True)
    # Repeat at file level: interleave keeps reading across epoch boundaries.
    files = files.repeat()
  # Parallel interleaved reads: hides file latency and mixes shards.
  return files.interleave(
      lambda path, count: read_shard(path, count, opts.ignore_errors),
      cycle_length=opts.cycle_length, block_length=1,
      num_parallel_calls=opts.num_parallel_calls,
      deterministic=opts.ordered)


# Stage 6: batch-wise parse.


def parse(serialized: tf.Tensor) -> dict:
  """Parses serialized records (any batch shape) into the schema's features."""
  return records.parse_examples(serialized)


def parse_batchwise(dataset: tf.data.Dataset, opts: Options) -> tf.data.Dataset:
  """Parses in batches (one parse_example call per batch), then unbatches."""
  dataset = dataset.batch(opts.parse_batch)
  dataset = dataset.map(parse, num_parallel_calls=opts.num_parallel_calls,
                        deterministic=opts.ordered)
  # Unbatch: decode runs per poster, in parallel across posters.
  return dataset.unbatch()


# Stage 7: decode (and resize where needed).


def decode_plan(stored_range: tuple, image_size: Sequence[int]) -> dict:
  """The static decode choice: DCT ratio, and whether and how to resize.

  Returns:
    {'ratio': r, 'decoded_hw': (h, w) or None}. The ratio is the largest that
    keeps even the smallest stored poster at least image_size; decoded_hw is
    the decoded size when every poster has the same stored size (then the
    resize is left out, or done unconditionally), None when sizes vary.
  """
  (min_h, min_w), (max_h, max_w) = stored_range
  ratio = images.jpeg_ratio((min_h, min_w), image_size)
  decoded_hw = None
  if (min_h, min_w) == (max_h, max_w):
    decoded_hw = (-(-min_h // ratio), -(-min_w // ratio))  # libjpeg rounds up
  return {'ratio': ratio, 'decoded_hw': decoded_hw}


def decoder(plan: Optional[Mapping], image_size: Sequence[int],
            dct_method: str = images.DCT_METHOD, with_ids: bool = False):
  """A function features → (image, labels[, id]), decoding at image_size.

  With plan None, a full-size decode without resize (the benchmark's
  'decode' stage).
  """

  def decode(features):
    encoded = features[records.IMAGE_KEY]
    if plan is None:
      image = images.decode_jpeg(encoded, 1, dct_method)
    else:
      image = images.decode_jpeg_to_size(encoded, image_size, plan['ratio'],
                                         dct_method, plan['decoded_hw'])
    if with_ids:
      return image, features[records.LABELS_KEY], features[records.ID_KEY]
    return image, features[records.LABELS_KEY]

  return decode


def _dataset_options(opts: Options) -> tf.data.Options:
  """Global tf.data options: order guarantee and thread pool."""
  options = tf.data.Options()
  options.deterministic = opts.ordered
  if opts.threadpool_size is not None:
    options.threading.private_threadpool_size = opts.threadpool_size
  return options


def make_dataset(records_dir: str, split: str, batch_size: int,
                 image_size: Sequence[int], input_context=None,
                 **options) -> tf.data.Dataset:
  """The streaming dataset of a records folder's split.

  Args:
    records_dir: folder with the shards and manifest.json.
    split: 'train' or 'val'.
    batch_size: the global batch size (split among replicas when an
      input_context is given).
    image_size: (height, width) of the output images.
    input_context: a tf.distribute.InputContext, to shard by file per input
      pipeline and use the per-replica batch size.
    **options: the fields of Options (training, shuffle_buffer, cache,
      threadpool_size, ignore_errors, deterministic, num_parallel_calls,
      prefetch, parse_batch, cycle_length, dct_method, with_ids, seed,
      stop_after).

  Returns:
    A dataset of (images uint8 [B, H, W, 3], labels float32 [B, 25]), plus
    ids string [B] with with_ids. Training: endless, shuffled, full batches.
    Otherwise: one ordered pass, every poster exactly once, last batch partial.

  Raises:
    cli.UserError: missing folder, manifest or shard; bad option values; fewer
      shards than input workers.
  """
  opts = make_options(split, **options)
  manifest = records.read_manifest(records_dir)
  paths, counts = shard_list(records_dir, manifest, split)
  paths, counts = shard_for_worker(paths, counts, input_context)
  batch_size = per_replica_batch_size(batch_size, input_context)
  if batch_size < 1:
    raise cli.UserError(f'batch_size must be >= 1, not {batch_size}')
  plan = decode_plan(stored_size_range(manifest, split), image_size)
  stop = STAGES.index(opts.stop_after)

  dataset = read_records(paths, counts, opts)
  if opts.training and not opts.cache:
    # Example shuffle, bounded: serialized records are small, pixels are not.
    dataset = dataset.shuffle(opts.shuffle_buffer, seed=opts.seed)
  if stop == 0:
    return dataset.with_options(_dataset_options(opts))
  dataset = parse_batchwise(dataset, opts)
  if stop == 1:
    return dataset.with_options(_dataset_options(opts))
  # Parallel decode: the CPU floor of the whole pipeline.
  if stop == 2:
    plan = None
  dataset = dataset.map(decoder(plan, image_size, opts.dct_method,
                                opts.with_ids),
                        num_parallel_calls=opts.num_parallel_calls,
                        deterministic=opts.ordered)
  if opts.ignore_errors:
    # Posters whose bytes do not decode: skipped, each one logged.
    dataset = dataset.ignore_errors(log_warning=True)
  if opts.cache:
    # Decoded pixels in RAM: later epochs skip read, parse and decode.
    dataset = dataset.cache()
    if opts.training:
      dataset = dataset.shuffle(opts.shuffle_buffer, seed=opts.seed).repeat()
  if stop <= 3:
    return dataset.with_options(_dataset_options(opts))
  # drop_remainder when training: static batch shape for the compiled step.
  dataset = dataset.batch(batch_size, drop_remainder=opts.training,
                          num_parallel_calls=opts.num_parallel_calls,
                          deterministic=opts.ordered)
  if stop == 4:
    return dataset.with_options(_dataset_options(opts))
  if opts.prefetch != 0:
    # Prefetch: the next batches are ready while the model steps.
    dataset = dataset.prefetch(opts.prefetch)
  return dataset.with_options(_dataset_options(opts))


def as_user_error(error: Exception) -> Optional[cli.UserError]:
  """The one-line UserError for a damaged-shard error raised inside tf.data.

  Iterating the dataset (model.fit, evaluate) raises tf.errors.OpError with
  a long message; callers turn it into `error: …` with this. None when the
  error is not the pipeline's own.
  """
  match = re.search(re.escape(ERROR_TAG) + r'([^\n\]]*)', str(error))
  if match is None:
    return None
  return cli.UserError(match.group(1).strip())
