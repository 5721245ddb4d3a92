"""The streaming tf.data pipeline: a records folder → uint8 model batches.

make_dataset reads top to bottom, one small function per stage, from the
records handle the caller opened once (records.Manifest):

  manifest shard list → worker shard (by file) → file shuffle → interleaved
  reads, checked per shard → example shuffle → batch → batch-wise parse and
  decode (JPEG: DCT ratio; raw pixels: a reshape; resize only where needed,
  or with pad_to_box no resize: each poster into one box, for the model's
  input stage to resize on the device) → augment (training batches, when
  asked: augment.py) → prefetch

This module owns the options, the stage order and the dataset's global
options; the stages it assembles live beside it, one home each:

  shard_reads.py   the shard list, per-worker sharding, interleaved reads
                   with the per-shard count check
  decode_ops.py    the decode plan, batch-wise parse and decode
  augment.py       the training augmentation
  input_errors.py  tagged errors out of tf.data (as_user_error), warnings,
                   the count of a pass with skips (count_pass)

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
tools/prefetch_bench.py times partial pipelines (stop_after=) built from the
very same stage functions.
"""

import dataclasses
import math
from typing import Mapping, Optional, Sequence

import tensorflow as tf

from posternet.data import augment as augment_lib
from posternet import cli
from posternet.data import decode_ops
from posternet.data import images
from posternet.data import input_errors
from posternet.data import records
from posternet.data import shard_reads

AUTOTUNE = tf.data.AUTOTUNE

# The stages make_dataset can stop after, in order (for the benchmark).
STAGES = ('read', 'batch', 'parse', 'decode', 'augment', 'prefetch')

# A dataset element is a dict of named features, as Keras' and TF Model
# Garden's pipelines have them; for_keras makes Keras' (x, y) pairs.
IMAGE = 'image'    # uint8 [B, H, W, 3]
LABELS = 'labels'  # float32 [B, 25], 1.0 where the genre applies
ID = 'id'          # string [B], the poster's Id from the CSV
# With pad_to_box, IMAGE is a box of posters, and the model's input stage
# (posternet.model.input_stage) cuts each out and resizes it by these:
SIZE = 'size'      # int32 [B, 2], each poster's (height, width) in the box
BOX = 'box'        # float32 [B, 4], its crop box (augment.device_draws)
COLOR = 'color'    # float32 [B, 3], its colour factors
# What the model takes, by these names (networks.build_model).
MODEL_INPUTS = (IMAGE, BOX, COLOR)


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
    seed: seeds the file and example shuffles (reproducible tests).
    stop_after: the last stage to build, one of STAGES (benchmark only).
    augment: the training augmentation (posternet.augment), applied to
      uint8 batches after decode and after the cache; None for none.
      Ignored unless training: validation and prediction never see it.
    pad_to_box: the host only decodes: each poster at its stored size (at
      the DCT ratio for image_size), put in one box per split (the largest
      decoded poster, decode_ops.box_size) with its size, crop box and
      colour factors (SIZE, BOX, COLOR; augment's draws when training); the
      model's input stage crops, resizes and colours on the device.
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
  seed: Optional[int] = None
  stop_after: str = 'prefetch'
  distributed_pass: bool = False
  augment: Optional[augment_lib.Augment] = None
  pad_to_box: bool = False

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


# Distribution: the batch size per replica (shard_reads.py shards by file).


def per_replica_batch_size(batch_size: int, input_context=None) -> int:
  """The batch one replica gets: batch_size is global when distributed."""
  if input_context is None:
    return batch_size
  return input_context.get_per_replica_batch_size(batch_size)


# The pipeline.


def to_element(features: Mapping, decoded) -> dict:
  """The dataset's element: the decoded posters, their labels and Ids.

  decoded: the posters, or with pad_to_box a dict of IMAGE (the box) and
  the features that go with it.
  """
  element = {LABELS: features[records.LABELS_KEY],
             ID: features[records.ID_KEY]}
  element.update(decoded if isinstance(decoded, dict) else {IMAGE: decoded})
  return element


def _decode_fn(plan, image_size, opts: Options, batched: bool, box_hw,
               manifest: records.Manifest):
  """The decode stage's function of parsed features, by the options.

  With pad_to_box: the box of posters, their sizes, and the whole posters'
  crop boxes and unit colours (augmentation draws others, _augment_stage).
  """
  if not opts.pad_to_box:
    return decode_ops.decode_features(plan, image_size, opts.dct_method,
                                      batched, manifest.records_dir,
                                      manifest.raw_box)
  decode = decode_ops.decode_padded(plan, image_size, box_hw,
                                    opts.dct_method, batched,
                                    manifest.records_dir, manifest.raw_box)

  def padded(features):
    posters, sizes = decode(features)
    boxes = augment_lib.poster_boxes(sizes, box_hw)
    return {IMAGE: posters, SIZE: sizes, BOX: boxes,
            COLOR: tf.ones_like(boxes[..., :3])}

  return padded


def model_inputs(element: Mapping) -> dict:
  """The model's inputs (MODEL_INPUTS) of a batch.

  A batch of posters already at the training size (pad_to_box off) gets
  each poster's whole box and unit colours: the input stage then passes it
  through unchanged.
  """
  images = tf.convert_to_tensor(element[IMAGE])  # a NumPy batch too
  batch = tf.shape(images)[0]
  return {IMAGE: images,
          BOX: element.get(BOX, augment_lib.constant_rows(
              batch, augment_lib.WHOLE_BOX)),
          COLOR: element.get(COLOR, augment_lib.constant_rows(
              batch, augment_lib.UNIT_COLOR))}


def for_keras(dataset: tf.data.Dataset) -> tf.data.Dataset:
  """(model inputs, labels) batches: what Keras' fit takes as (x, y)."""
  # A plain map: a few look-ups per batch, on the consumer's call.
  return dataset.map(lambda element: (model_inputs(element),
                                      element[LABELS]))


def _batched_stages(batch_size, decode, opts: Options, box_hw):
  """The default path: shuffle, batch, then parse and decode whole batches."""
  return [
      # Bounded example shuffle: encoded records are small, pixels are not.
      ('read', lambda ds: ds.shuffle(opts.shuffle_buffer, seed=opts.seed)
       if opts.training else ds),
      # drop_remainder when training: static shapes for the compiled step.
      ('batch', lambda ds: ds.batch(batch_size, drop_remainder=opts.repeats)),
      # Batch-wise parse: one parse_example call per batch.
      ('parse', lambda ds: ds.map(decode_ops.parse,
                                  num_parallel_calls=opts.num_parallel_calls,
                                  deterministic=opts.ordered)),
      # Parallel decode across batches; the CPU floor of the whole pipeline.
      ('decode', lambda ds: ds.map(
          lambda f: to_element(f, decode(f)),
          num_parallel_calls=opts.num_parallel_calls,
          deterministic=opts.ordered)),
      _augment_stage(opts, box_hw),
  ]


def _augment_stage(opts: Options, box_hw) -> tuple:
  """('augment', stage): uint8 batches in and out; training only.

  With pad_to_box (box_hw: the box) augmentation draws each batch's crop
  boxes and colour factors here, for the device to apply.
  """
  if opts.augment is None or not opts.training:
    return ('augment', lambda ds: ds)
  if opts.pad_to_box:

    def draw(index, batch):
      boxes, colors = augment_lib.device_draws(batch[SIZE], box_hw,
                                               opts.augment, index)
      return {**batch, BOX: boxes, COLOR: colors}

    return ('augment', lambda ds: ds.enumerate().map(
        draw, num_parallel_calls=AUTOTUNE))
  return ('augment', lambda ds: augment_lib.apply(ds, opts.augment, IMAGE))


def _per_poster_stages(batch_size, decode, opts: Options, box_hw):
  """For cache and ignore_errors: decode poster by poster, then batch."""

  def decode_stage(ds):
    ds = ds.map(lambda f: to_element(f, decode(f)),
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
      ('parse', lambda ds: ds.batch(opts.read_batch).map(
          decode_ops.parse).unbatch()),
      ('decode', decode_stage),
      # drop_remainder when training: static shapes for the compiled step.
      ('batch', lambda ds: ds.batch(batch_size, drop_remainder=opts.repeats)),
      # After the cache: cached posters still change every epoch.
      _augment_stage(opts, box_hw),
  ]


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


def _stages(manifest: records.Manifest, split: str, batch_size: int,
            image_size: Sequence[int], opts: Options) -> list:
  """The (name, stage) list after the reads, by the decode plan and options.

  The plan (DCT ratio, resize) and, with pad_to_box, the box are decided
  once here from the manifest's stored sizes.
  """
  plan = decode_ops.decode_plan(manifest.stored_size_range(split),
                                image_size, manifest.store_format)
  box_hw = (decode_ops.box_size(plan, manifest.stored_size_range(split),
                                manifest.raw_box)
            if opts.pad_to_box else None)
  per_poster = opts.cache or opts.ignore_errors
  decode = _decode_fn(plan, image_size, opts, not per_poster, box_hw,
                      manifest)
  return (_per_poster_stages if per_poster else _batched_stages)(
      batch_size, decode, opts, box_hw)


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
      prefetch, read_batch, cycle_length, dct_method, seed, stop_after,
      distributed_pass, augment, pad_to_box.

  Returns:
    A dataset of dicts: {IMAGE: uint8 [B, H, W, 3], LABELS: float32 [B, 25],
    ID: string [B]}; with pad_to_box IMAGE is the box, and SIZE, BOX and
    COLOR come along (for_keras makes Keras' (x, y) of them). Training:
    endless, shuffled, full batches.
    Otherwise: one ordered pass, every poster exactly once, last batch partial.

  Raises:
    cli.UserError: a missing or unreadable shard; bad option values; fewer
      shards than input workers.
  """
  if not isinstance(manifest, records.Manifest):
    raise TypeError('make_dataset takes the records handle, '
                    f'records.Manifest.read(folder), not {manifest!r}')
  opts = make_options(split, **options)
  paths, counts = shard_reads.shard_list(manifest, split)
  paths, counts = shard_reads.shard_for_worker(paths, counts, input_context)
  batch_size = per_replica_batch_size(batch_size, input_context)
  if batch_size < 1:
    raise cli.UserError(f'batch_size must be >= 1, not {batch_size}')
  options = _dataset_options(opts, sharded=input_context is not None)
  dataset = shard_reads.read_records(paths, counts, opts,
                                     manifest.tfrecord_compression)
  for name, stage in _stages(manifest, split, batch_size, image_size, opts):
    dataset = stage(dataset)
    if name == opts.stop_after:
      return dataset.with_options(options)
  if opts.ignore_errors and not opts.training:
    dataset = input_errors.count_pass(dataset, sum(counts),
                                      f'the {split} pass', ID)
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
  paths, counts = shard_reads.shard_list(manifest, split)
  label_feature = {records.LABELS_KEY: records.FEATURES[records.LABELS_KEY]}
  dataset = shard_reads.read_records(
      paths, counts, make_options(split, training=False),
      manifest.tfrecord_compression)
  dataset = dataset.batch(1024).map(
      lambda serialized: tf.io.parse_example(
          serialized, label_feature)[records.LABELS_KEY])
  rows = [tf.zeros([0, len(manifest.genre_names)], tf.float32)]
  rows.extend(dataset)
  return tf.concat(rows, axis=0)

