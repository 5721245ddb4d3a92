"""The streaming tf.data pipeline: a records folder → uint8 model batches.

make_dataset reads top to bottom, one small function per stage, from the
records handle the caller opened once (records.Manifest):

  manifest shard list → worker shard (by file) → file shuffle → interleaved
  reads, checked per shard → example shuffle → batch → batch-wise parse and
  decode (JPEG: DCT ratio; raw pixels: a reshape; resize only where needed)
  → augment (training batches, when asked: augment.py) → prefetch

The records' manifest says how a poster is stored (store_format: JPEG bytes,
or raw uint8 pixels that need no decode) and whether the shards are
compressed (compression); the read and decode steps follow it.

Parse and decode run on whole batches (one parse_example call, then one
tf.map_fn over the batch's JPEGs whose results land directly in the batch
tensor): measured on 2 cores this costs 0–25 % (typically ~15 %) less CPU
per poster than unbatching and decoding poster by poster (BUILD_NOTES.md,
"Input pipeline").
The per-poster path is kept where it is needed: to skip single undecodable
posters (ignore_errors) and to cache decoded posters (cache).

Nothing here holds the dataset in memory unless cache asks for it, and the
output stays uint8: the model rescales (and casts) on the device.

Over ~400 lines: the stages, their options, the per-shard count checks that
turn a damaged or vanished shard into an error naming it (as_user_error),
and the per-worker sharding belong together: each is a few lines, and
splitting them would spread one stream's order over several modules.
tools/prefetch_bench.py times partial pipelines (stop_after=) built from the
very same stage functions.
"""

import dataclasses
import math
import os
import re
from typing import Mapping, Optional, Sequence

import tensorflow as tf

from posternet.data import augment as augment_lib
from posternet import cli
from posternet.data import images
from posternet.data import records
AUTOTUNE = tf.data.AUTOTUNE

# The stages make_dataset can stop after, in order (for the benchmark).
STAGES = ('read', 'batch', 'parse', 'decode', 'augment', 'prefetch')

# Damaged-shard errors raised inside tf.data carry this tag; as_user_error
# finds it and returns the one-line message for the user.
ERROR_TAG = 'posternet-input-error: '


@dataclasses.dataclass(frozen=True)
class Options:
  """make_dataset's keyword options (the trainer exposes them as flags).

  Attributes:
    training: shuffle, repeat forever, drop the last partial batch, and let
      parallel stages deliver out of order. Default: split == 'train'.
    shuffle_buffer: examples in the shuffle buffer (still-encoded records,
      ~10–40 KB each, not pixels).
    cache: keep decoded posters in RAM after the first pass (for data that
      fits); the example shuffle then comes after the cache.
    threadpool_size: a private thread pool of this size for the pipeline;
      None keeps TensorFlow's shared pool.
    ignore_errors: skip damaged records and undecodable posters instead of
      failing; each skip is logged with its shard or poster, and a finite pass
      logs how many posters it delivered of how many.
    deterministic: override the order guarantee (default: not training).
    num_parallel_calls: parallelism of reads and decode (AUTOTUNE, or a
      number; 1 for the benchmark's serial variant).
    prefetch: batches prefetched (AUTOTUNE, or a number; 0 turns it off).
    read_batch: records moved per hand-off between the reader threads (and
      per count check): fewer, larger hand-offs cost less CPU per record.
    cycle_length: shards read at once (None: TensorFlow picks).
    dct_method: the JPEG IDCT (images.DCT_METHOD unless benchmarking).
    with_ids: add the poster Ids as a third element (evaluation reports and
      tests; Keras would read a third element as sample weights).
    seed: seeds the file and example shuffles (reproducible tests).
    stop_after: the last stage to build, one of STAGES (benchmark only).
    augment: the training augmentation (posternet.augment), applied to
      uint8 batches after decode and after the cache; None for none.
      Ignored unless training: validation and prediction never see it.
    distributed_pass: with training, one shuffled pass instead of endless
      repetition, its last partial batch kept, and no length assertion: the
      pass is split by file among tf.data service workers
      (posternet.data_service, distributed_epoch), each of which sees only
      its share.
  """
  training: bool = False
  shuffle_buffer: int = 1024
  cache: bool = False
  threadpool_size: Optional[int] = None
  ignore_errors: bool = False
  deterministic: Optional[bool] = None
  num_parallel_calls: int = AUTOTUNE
  prefetch: int = AUTOTUNE
  read_batch: int = 256
  cycle_length: Optional[int] = None
  dct_method: str = images.DCT_METHOD
  with_ids: bool = False
  seed: Optional[int] = None
  stop_after: str = 'prefetch'
  distributed_pass: bool = False
  augment: Optional[augment_lib.Augment] = None

  @property
  def repeats(self) -> bool:
    """Whether the dataset is endless (training, unless one pass)."""
    return self.training and not self.distributed_pass

  @property
  def ordered(self) -> bool:
    """Whether parallel stages keep their input order."""
    if self.deterministic is None:
      return not self.training
    return self.deterministic


def make_options(split: str, **options) -> Options:
  """Options from keywords, with `training` defaulting to split == 'train'.

  Raises:
    TypeError: an unknown option (a programming mistake).
    cli.UserError: a value out of range (these come from flags).
  """
  options.setdefault('training', split == 'train')
  opts = Options(**options)
  for name in ('shuffle_buffer', 'read_batch', 'threadpool_size',
               'cycle_length'):
    value = getattr(opts, name)
    if value is not None and value < 1:
      raise cli.UserError(f'{name} must be >= 1, not {value}')
  if opts.stop_after not in STAGES:
    raise cli.UserError(
        f'stop_after must be one of {STAGES}, not {opts.stop_after!r}')
  return opts


# The records handle: shard list and counts.


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


def decode_plan(stored_range: tuple, image_size: Sequence[int],
                store_format: str = 'jpeg') -> dict:
  """What the decode rule comes to for a split's posters.

  stored_range: Manifest.stored_size_range(split); store_format: the
  manifest's (images.decode_for_model for 'jpeg', images.decode_raw for
  'raw').

  Returns:
    {'format': store_format, 'stored_hw': (h, w) or None, 'ratio': r or
    None, 'decoded_hw': (h, w) or None}. When every poster has one stored
    size, stored_hw is it, and the decoded size is fixed: the decode is
    decided once (JPEG: the DCT ratio, with no header read), and the resize
    is left out of the graph when the decoded size is image_size. When sizes
    vary, stored_hw and decoded_hw are None: each poster is decoded at its
    own size, then resized where needed; a JPEG at its own ratio from its
    header (the same rule as prediction's), unless every size in the range
    gets the same ratio (then ratio is it: no header read, measured ~10 %
    less CPU per 128x128 poster). Raw pixels have no ratio (None).
  """
  (min_h, min_w), (max_h, max_w) = stored_range
  fixed = (min_h, min_w) == (max_h, max_w)
  if store_format == 'raw':
    hw = (min_h, min_w) if fixed else None
    return {'format': 'raw', 'stored_hw': hw, 'ratio': None, 'decoded_hw': hw}
  if not fixed:
    # The ratio grows with the size: if the extremes share one, all do.
    ratio = images.jpeg_ratio((min_h, min_w), image_size)
    common = ratio == images.jpeg_ratio((max_h, max_w), image_size)
    return {'format': 'jpeg', 'stored_hw': None,
            'ratio': ratio if common else None, 'decoded_hw': None}
  ratio = images.jpeg_ratio((min_h, min_w), image_size)
  return {'format': 'jpeg', 'stored_hw': (min_h, min_w), 'ratio': ratio,
          'decoded_hw': (-(-min_h // ratio), -(-min_w // ratio))}


# Distribution: per-worker shards and batch size.


def per_replica_batch_size(batch_size: int, input_context=None) -> int:
  """The batch one replica gets: batch_size is global when distributed."""
  if input_context is None:
    return batch_size
  return input_context.get_per_replica_batch_size(batch_size)


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


# Reading, with a per-shard count check.


def _count_check(path: tf.Tensor, expected: tf.Tensor, ignore_errors: bool):
  """A scan function: counts a shard's records, checking at its end marker.

  A shortfall fails with a message naming the shard and the number of
  records lost (tagged for as_user_error), or, with ignore_errors, prints
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
      done = tf.cond(short, lambda: _warn(message + ', skipped'),
                     lambda: tf.constant(True))
    else:
      done = tf.debugging.Assert(tf.logical_not(short), [tf.strings.join([
          ERROR_TAG, message, '; run `make verify`, convert the data again, '
          'or skip damaged records with ignore_errors'])])
    with tf.control_dependencies([done]):
      return total, tf.identity(batch)

  return check


def _warn(message: tf.Tensor) -> tf.Tensor:
  """Prints `warning: posternet input: …` on stderr from inside tf.data.

  PrintV2 on one joined string: tf.print would quote a string tensor, and
  TensorFlow's own log can be silenced with TF_CPP_MIN_LOG_LEVEL.
  """
  line = tf.strings.join(['warning: posternet input: ', message,
                          ' (ignore_errors)'])
  with tf.control_dependencies([tf.raw_ops.PrintV2(input=line,
                                                   output_stream='stderr')]):
    return tf.constant(True)


def _assert_present(path: tf.Tensor) -> tf.Operation:
  """Fails, naming the shard, when it has gone since make_dataset checked it.

  Without this, TFRecordDataset's open error would be retried forever by the
  ignore_errors that catches damaged records. One glob per shard pass.
  """
  pattern = tf.strings.regex_replace(path, r'([*?\[])', r'[\1]')  # literal
  message = tf.strings.join([ERROR_TAG, 'shard ', path, ' has disappeared; '
                             'convert the data again with `make records`'])
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


def _interleave_widths(opts: Options) -> tuple:
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
                 opts: Options, compression: str = '') -> tf.data.Dataset:
  """Serialized records from all shards, interleaved; endless when training.

  compression: the shards' (records.Manifest.tfrecord_compression).
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


# Parse and decode.


def parse(serialized: tf.Tensor) -> dict:
  """Parses serialized records (a batch, or one) into the schema's features."""
  return records.parse_examples(serialized)


def decode_one(plan: Mapping, image_size: Sequence[int],
               dct_method: str = images.DCT_METHOD):
  """A function JPEG bytes → uint8 [H, W, 3] at image_size (decode_for_model)."""
  # max_pixels=None: the converter checked the records' sizes (--max_pixels).
  ratio = plan['ratio'] if plan['stored_hw'] is None else None
  return lambda encoded: images.decode_for_model(
      encoded, image_size, stored_hw=plan['stored_hw'], ratio=ratio,
      dct_method=dct_method, max_pixels=None)


def decode_batch(plan: Mapping, image_size: Sequence[int],
                 dct_method: str = images.DCT_METHOD):
  """A function JPEG bytes [B] → uint8 [B, H, W, 3]: map_fn over the batch."""
  spec = tf.TensorSpec([int(image_size[0]), int(image_size[1]), 3], tf.uint8)
  one = decode_one(plan, image_size, dct_method)
  return lambda encoded: tf.map_fn(one, encoded, fn_output_signature=spec)


def decode_features(plan: Mapping, image_size: Sequence[int],
                    dct_method: str = images.DCT_METHOD, batched: bool = True,
                    records_dir: str = 'the records'):
  """A function parsed features → uint8 posters at image_size, by format.

  JPEG: decode_batch / decode_one on the image bytes. Raw: the pixels
  checked against their record (checked_raw), then images.decode_raw: one
  reshape for a batch of one stored size, poster by poster otherwise.

  Args:
    plan: decode_plan's answer for the split.
    image_size: (height, width) of the output.
    dct_method: the JPEG IDCT.
    batched: features of a batch (parse of [B] records), or of one poster.
    records_dir: the folder, for the message about a damaged raw record.
  """
  if plan['format'] != 'raw':
    decode = (decode_batch if batched else decode_one)(plan, image_size,
                                                       dct_method)
    return lambda features: decode(features[records.IMAGE_KEY])
  stored_hw = plan['stored_hw']

  def raw(features):
    data = checked_raw(features, stored_hw, records_dir)
    if stored_hw is not None:
      return images.decode_raw(data, stored_hw, image_size)
    sides = (features[records.HEIGHT_KEY], features[records.WIDTH_KEY])
    if not batched:
      return images.decode_raw(data, sides, image_size)
    spec = tf.TensorSpec([int(image_size[0]), int(image_size[1]), 3],
                         tf.uint8)
    return tf.map_fn(
        lambda poster: images.decode_raw(poster[0], poster[1:], image_size),
        (data,) + sides, fn_output_signature=spec)

  return raw


def checked_raw(features: Mapping, stored_hw: Optional[Sequence[int]],
                records_dir: str) -> tf.Tensor:
  """The raw pixels of parsed records, once their lengths are checked.

  Every poster must hold height x width x 3 bytes, by its record's height
  and width, which must be stored_hw when all posters have one size. A
  record that does not fails (tagged for as_user_error) naming the poster,
  the folder, and the command (--verify) that names its shard.
  Branch-free: it runs on every batch.
  """
  flat = lambda key: tf.reshape(features[key], [-1])
  data, ids = flat(records.IMAGE_KEY), flat(records.ID_KEY)
  height, width = flat(records.HEIGHT_KEY), flat(records.WIDTH_KEY)
  lengths = tf.cast(tf.strings.length(data), tf.int64)
  bad = tf.not_equal(lengths, height * width * 3)
  if stored_hw is not None:
    bad |= tf.not_equal(height, stored_hw[0]) | tf.not_equal(width,
                                                             stored_hw[1])
  first = tf.argmax(tf.cast(bad, tf.int32))
  text = lambda values: tf.strings.as_string(values[first])
  every = ('' if stored_hw is None else
           ', where every poster is {}x{}'.format(*stored_hw))
  message = tf.strings.join([
      ERROR_TAG, records_dir, ': poster ', ids[first], ' holds ',
      text(lengths), ' bytes of raw pixels, its record says ', text(height),
      'x', text(width), ' (x 3 bytes)', every, '; the records are damaged: '
      '`python -m tools.make_records --verify=', records_dir, '` names the '
      'shard; convert the data again'])
  check = tf.debugging.Assert(tf.logical_not(tf.reduce_any(bad)), [message])
  with tf.control_dependencies([check]):
    return tf.identity(features[records.IMAGE_KEY])


def to_output(features: Mapping, images_: tf.Tensor, with_ids: bool) -> tuple:
  """(images, labels) or, with_ids, (images, labels, ids)."""
  if with_ids:
    return images_, features[records.LABELS_KEY], features[records.ID_KEY]
  return images_, features[records.LABELS_KEY]


# The pipeline.


def _batched_stages(batch_size, plan, image_size, opts: Options,
                    records_dir: str):
  """The default path: shuffle, batch, then parse and decode whole batches."""
  decode = decode_features(plan, image_size, opts.dct_method, True,
                           records_dir)
  return [
      # Bounded example shuffle: encoded records are small, pixels are not.
      ('read', lambda ds: ds.shuffle(opts.shuffle_buffer, seed=opts.seed)
       if opts.training else ds),
      # drop_remainder when training: static shapes for the compiled step.
      ('batch', lambda ds: ds.batch(batch_size, drop_remainder=opts.repeats)),
      # Batch-wise parse: one parse_example call per batch.
      ('parse', lambda ds: ds.map(parse,
                                  num_parallel_calls=opts.num_parallel_calls,
                                  deterministic=opts.ordered)),
      # Parallel decode across batches; the CPU floor of the whole pipeline.
      ('decode', lambda ds: ds.map(
          lambda f: to_output(f, decode(f), opts.with_ids),
          num_parallel_calls=opts.num_parallel_calls,
          deterministic=opts.ordered)),
      _augment_stage(opts),
  ]


def _augment_stage(opts: Options) -> tuple:
  """('augment', stage): uint8 batches in and out; training only."""
  if opts.augment is None or not opts.training:
    return ('augment', lambda ds: ds)
  return ('augment', lambda ds: augment_lib.apply(ds, opts.augment))


def _per_poster_stages(batch_size, plan, image_size, opts: Options,
                       records_dir: str):
  """For cache and ignore_errors: decode poster by poster, then batch."""
  decode = decode_features(plan, image_size, opts.dct_method, False,
                           records_dir)

  def decode_stage(ds):
    ds = ds.map(lambda f: to_output(f, decode(f), opts.with_ids),
                num_parallel_calls=opts.num_parallel_calls,
                deterministic=opts.ordered)
    if opts.ignore_errors:
      # An undecodable poster is dropped alone, and logged.
      ds = ds.ignore_errors(log_warning=True)
    if opts.cache:
      # Decoded posters in RAM: later epochs skip read, parse and decode.
      ds = ds.cache()
      if opts.training:
        ds = ds.shuffle(opts.shuffle_buffer, seed=opts.seed)
        ds = ds.repeat() if opts.repeats else ds
    return ds

  shuffle_here = opts.training and not opts.cache
  return [
      # Bounded example shuffle of encoded records (after the cache if any).
      ('read', lambda ds: ds.shuffle(opts.shuffle_buffer, seed=opts.seed)
       if shuffle_here else ds),
      # Batch-wise parse, then single posters for decode.
      ('parse', lambda ds: ds.batch(opts.read_batch).map(parse).unbatch()),
      ('decode', decode_stage),
      # drop_remainder when training: static shapes for the compiled step.
      ('batch', lambda ds: ds.batch(batch_size, drop_remainder=opts.repeats)),
      # After the cache: cached posters still change every epoch.
      _augment_stage(opts),
  ]


def _count_pass(dataset: tf.data.Dataset, expected: int,
                what: str) -> tf.data.Dataset:
  """Logs, at the end of a finite pass, how many posters were delivered.

  Used with ignore_errors on finite passes: single undecodable posters are
  dropped by tf.data without a count, so the pass counts what it delivers
  and compares it with the manifest.
  """
  empty = tf.nest.map_structure(
      lambda spec: tf.zeros([0] + spec.shape[1:].as_list(), spec.dtype),
      dataset.element_spec)
  size = lambda batch: tf.shape(tf.nest.flatten(batch)[0], tf.int64)[0]

  def tally(seen, batch):
    total = seen + size(batch)

    message = tf.strings.join([
        what, ' delivered ', tf.strings.as_string(total), ' of ',
        str(expected), ' posters, the others were skipped'])
    short = tf.logical_and(tf.equal(size(batch), 0), total < expected)
    done = tf.cond(short, lambda: _warn(message),
                   lambda: tf.constant(True))
    with tf.control_dependencies([done]):
      return total, tf.nest.map_structure(tf.identity, batch)

  dataset = dataset.concatenate(tf.data.Dataset.from_tensors(empty))
  dataset = dataset.scan(tf.constant(0, tf.int64), tally)
  return dataset.filter(lambda *batch: size(batch) > 0)


def _cardinality(num_posters: int, batch_size: int, training: bool) -> int:
  """Batches the dataset yields: Keras then knows an eval pass's length.

  Training is endless; a finite pass yields ceil(n / batch_size) batches
  (asserted at its end, a last guard that no poster went missing).
  """
  if training:
    return tf.data.INFINITE_CARDINALITY
  return math.ceil(num_posters / batch_size)


def _dataset_options(opts: Options, sharded: bool) -> tf.data.Options:
  """Global tf.data options: order guarantee, thread pool, auto-sharding."""
  options = tf.data.Options()
  options.deterministic = opts.ordered
  if opts.threadpool_size is not None:
    options.threading.private_threadpool_size = opts.threadpool_size
  if sharded:
    # Already sharded by file per input pipeline: tf.distribute must not
    # shard a second time.
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.OFF)
  return options


def make_dataset(manifest: records.Manifest, split: str, batch_size: int,
                 image_size: Sequence[int], input_context=None,
                 **options) -> tf.data.Dataset:
  """The streaming dataset of a records folder's split.

  Args:
    manifest: the records folder, opened once (records.Manifest.read).
    split: 'train' or 'val'.
    batch_size: the global batch size (divided among replicas when an
      input_context is given).
    image_size: (height, width) of the output images.
    input_context: a tf.distribute.InputContext: shard by file per input
      pipeline and use the per-replica batch size.
    **options: the fields of Options: training, shuffle_buffer, cache,
      threadpool_size, ignore_errors, deterministic, num_parallel_calls,
      prefetch, read_batch, cycle_length, dct_method, with_ids, seed,
      stop_after, distributed_pass, augment.

  Returns:
    A dataset of (images uint8 [B, H, W, 3], labels float32 [B, 25]), plus
    ids string [B] with with_ids. Training: endless, shuffled, full batches.
    Otherwise: one ordered pass, every poster exactly once, last batch partial.

  Raises:
    cli.UserError: a missing or unreadable shard; bad option values; fewer
      shards than input workers.
  """
  if not isinstance(manifest, records.Manifest):
    raise TypeError('make_dataset takes the records handle, '
                    f'records.Manifest.read(folder), not {manifest!r}')
  opts = make_options(split, **options)
  paths, counts = shard_list(manifest, split)
  paths, counts = shard_for_worker(paths, counts, input_context)
  batch_size = per_replica_batch_size(batch_size, input_context)
  if batch_size < 1:
    raise cli.UserError(f'batch_size must be >= 1, not {batch_size}')
  plan = decode_plan(manifest.stored_size_range(split), image_size,
                     manifest.store_format)
  per_poster = opts.cache or opts.ignore_errors
  stages = (_per_poster_stages if per_poster else _batched_stages)(
      batch_size, plan, image_size, opts, manifest.records_dir)

  options = _dataset_options(opts, sharded=input_context is not None)

  dataset = read_records(paths, counts, opts, manifest.tfrecord_compression)
  for name, stage in stages:
    dataset = stage(dataset)
    if name == opts.stop_after:
      return dataset.with_options(options)
  if opts.ignore_errors and not opts.training:
    dataset = _count_pass(dataset, sum(counts), f'the {split} pass')
  elif not opts.distributed_pass:
    # Known length: Keras sizes an eval pass without running out of data.
    dataset = dataset.apply(tf.data.experimental.assert_cardinality(
        _cardinality(sum(counts), batch_size, opts.training)))
  if opts.prefetch != 0:
    # Prefetch: the next batches are ready while the model runs a step.
    dataset = dataset.prefetch(opts.prefetch)
  return dataset.with_options(options)


def read_labels(manifest: records.Manifest, split: str) -> tf.Tensor:
  """A split's label rows, float32 [N, 25], in shard order; no poster decoded.

  The same checked reads as make_dataset (a damaged shard is named, see
  as_user_error), then only the label feature is parsed: base rates for a
  split of thousands of posters cost a second, not a decode pass.
  """
  paths, counts = shard_list(manifest, split)
  label_feature = {records.LABELS_KEY: records.FEATURES[records.LABELS_KEY]}
  dataset = read_records(paths, counts, make_options(split, training=False),
                         manifest.tfrecord_compression)
  dataset = dataset.batch(1024).map(
      lambda serialized: tf.io.parse_example(
          serialized, label_feature)[records.LABELS_KEY])
  rows = [tf.zeros([0, len(manifest.genre_names)], tf.float32)]
  rows.extend(dataset)
  return tf.concat(rows, axis=0)


def as_user_error(error: Exception) -> Optional[cli.UserError]:
  """The one-line UserError for a damaged-shard error raised inside tf.data.

  Iterating the dataset (model.fit, evaluate) raises tf.errors.OpError with
  a long message; callers turn it into `error: …` with this:

    except tf.errors.OpError as e:
      raise (input_pipeline.as_user_error(e) or e) from None

  Returns:
    The UserError, or None when the error is not the pipeline's own.
  """
  match = re.search(re.escape(ERROR_TAG) + r'(.*)', str(error))
  if match is None:
    return None
  line = match.group(1).strip()
  # The Assert wraps its message in brackets: `assertion failed: [...]`.
  return cli.UserError(line[:-1] if line.endswith(']') else line)
