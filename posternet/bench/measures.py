"""What the benchmark measures: one function per kind of row.

Each measure_<kind>(setup, **params) returns its rows (dicts with at least
images_per_sec); posternet/bench/runner.py runs them, here or each in its own
process. Row kinds, on the same records and poster bytes:

  ceiling    in-memory decode_jpeg of the records' own JPEG bytes, in parallel
             inside tf.data, with both DCT methods, poster by poster and batch
             by batch (the ceiling is the faster of the two)
  pipeline   posternet's pipeline built up to each stage (make_dataset's
             stop_after), or in full with one option changed; on the JPEG
             records, or (--real_size) on a set of raw ones
  seed_loop, keras_dir
             the tutorial's loop and image_dataset_from_directory, at the
             same image size, on the source posters
  stall      seed_cnn's training step rate fed by the pipeline, over the same
             model fed one in-memory batch again and again
  epoch      a full training epoch at 1x and SCALE x the posters (memory),
             per record set
  service    the full pipeline fed by a local tf.data service
"""

import dataclasses
import gc
import math
import time
from typing import Mapping, Optional, Sequence

import keras
import numpy as np
import tensorflow as tf

from posternet.data import service as data_service
from posternet.data import service_servers
from posternet.train import hardware
from posternet.data import decode_ops
from posternet.data import images
from posternet.data import pipeline
from posternet.model import networks
from posternet.data import records
from posternet.bench import data
from posternet.bench import timing

AUTOTUNE = tf.data.AUTOTUNE

DCT_METHODS = ('INTEGER_FAST', 'INTEGER_ACCURATE')

# Row names the summary looks up.
PIPELINE_ROW = 'posternet pipeline (+ prefetch)'
PARSE_ROW = '+ batch + parse'
# The pipeline as the trainer runs it by default (--resize_on=device): the
# host decodes and pads each batch to one box, the model resizes.
DEVICE_RESIZE = {'pad_to_box': True}
SEED_LOOP_ROW = "baseline: tutorial's loop"
KERAS_DIR_ROW = 'baseline: image_dataset_from_directory'
STALL_MEMORY_ROW = 'seed_cnn fed from memory'
STALL_STREAM_ROW = 'seed_cnn fed by the pipeline'
# A stall round trains at least this long (seed_cnn takes ~0.75 s a step on
# 2 CPU cores: 5 s were ~7 steps, and the ratio moved ±5 % between runs).
STALL_ROUND_SECONDS = 10.0
EPOCH_ROWS = {1: 'epoch 1x', data.SCALE: f'epoch {data.SCALE}x'}
# --real_size: the raw record sets, and the row of each one's full pipeline.
RAW_SETS = ('raw',) + tuple(f'raw {c}' for c in records.COMPRESSIONS)


def set_row(record_set: Optional[str], name: str) -> str:
  """A row's name on a record set: 'raw: posternet pipeline (+ prefetch)'."""
  return f'{record_set}: {name}' if record_set else name


@dataclasses.dataclass(frozen=True)
class Setup:
  """What every measurement needs, as plain (JSON-able) values."""
  records: str            # the records folder measured
  records_scaled: str     # the shards listed data.SCALE times (memory check)
  images: str             # source posters for the baselines
  image_size: tuple       # (height, width) of the model-ready batches
  batch_size: int
  seconds: float          # timed run per variant, after the warm-up
  warmup_seconds: float
  precision: str          # --precision for the stall rows ('auto': trainer's)
  quick: bool = False     # --quick: one short stall round, no verdicts
  # --real_size: more record sets of the same posters ('raw', 'raw GZIP', …)
  # → folder, and each one's scaled copy (the memory check).
  record_sets: Mapping[str, str] = dataclasses.field(default_factory=dict)
  scaled_sets: Mapping[str, str] = dataclasses.field(default_factory=dict)

  @classmethod
  def from_json(cls, values: Mapping) -> 'Setup':
    return cls(**{**values, 'image_size': tuple(values['image_size'])})

  def folder(self, record_set: Optional[str] = None,
             scaled: bool = False) -> str:
    """The records folder of a set (None: the JPEG records), or its copy."""
    if record_set is None:
      return self.records_scaled if scaled else self.records
    return (self.scaled_sets if scaled else self.record_sets)[record_set]


# --- The ceiling: in-memory decode of the records' bytes. ---


def load_encoded(manifest: records.Manifest,
                 split: str = 'train') -> tf.Tensor:
  """The JPEG bytes of a split's posters, as one string tensor in memory."""
  paths = manifest.shard_paths(split)
  dataset = tf.data.TFRecordDataset(
      paths, manifest.tfrecord_compression).batch(256).map(
      lambda s: records.parse_examples(s)[records.IMAGE_KEY])
  return tf.concat(list(dataset), axis=0)


def decode_plan(manifest: records.Manifest,
                image_size: Sequence[int]) -> dict:
  """The pipeline's static decode choice (DCT ratio, resize) for these records."""
  return decode_ops.decode_plan(manifest.stored_size_range('train'),
                                image_size, manifest.store_format)


def ceiling_dataset(encoded: tf.Tensor, plan: Mapping, batch_size: int,
                    dct_method: str, batched: bool,
                    image_size: Sequence[int]) -> tf.data.Dataset:
  """Endless uint8 batches decoded from bytes in memory: no files, no parse.

  decode_jpeg at the pipeline's DCT ratios and nothing else: where stored
  sizes vary (no fixed store size), each element is the decoded shape
  instead of the pixels, so the ceiling never includes a resize.
  """
  hw = plan['decoded_hw']

  def one(jpeg):
    if hw is None:  # sizes vary: the pipeline's ratio, common or each own
      return tf.shape(
          images.decode_jpeg(jpeg, plan['ratio'], dct_method) if plan['ratio']
          else images.decode_jpeg_at_its_ratio(jpeg, image_size, dct_method))
    image = images.decode_jpeg(jpeg, plan['ratio'], dct_method)
    return tf.ensure_shape(image, [hw[0], hw[1], 3])

  dataset = tf.data.Dataset.from_tensor_slices(encoded).repeat()
  if batched:
    spec = (tf.TensorSpec([3], tf.int32) if hw is None
            else tf.TensorSpec([hw[0], hw[1], 3], tf.uint8))
    dataset = dataset.batch(batch_size, drop_remainder=True).map(
        lambda b: tf.map_fn(one, b, fn_output_signature=spec),
        num_parallel_calls=AUTOTUNE, deterministic=False)
  else:
    dataset = dataset.map(one, num_parallel_calls=AUTOTUNE,
                          deterministic=False)
    dataset = dataset.batch(batch_size, drop_remainder=True)
  return dataset.prefetch(AUTOTUNE)


def measure_ceiling(setup: Setup, dct_method: str, batched: bool) -> list:
  """One ceiling row: in-memory parallel decode of the train split's bytes."""
  manifest = records.Manifest.read(setup.records)
  plan = decode_plan(manifest, setup.image_size)
  dataset = ceiling_dataset(load_encoded(manifest), plan,
                            setup.batch_size, dct_method, batched,
                            setup.image_size)
  row = timing.time_dataset(dataset, setup.seconds, setup.warmup_seconds)
  row.update(dct_method=dct_method, ratio=plan['ratio'] or 'per poster')
  return [row]


# --- posternet's pipeline: stage by stage, and under each option. ---


def measure_pipeline(setup: Setup, options: Mapping,
                     record_set: Optional[str] = None) -> list:
  """One pipeline row: make_dataset(**options) on the train split, endless.

  record_set: None for the JPEG records, else one of setup.record_sets.
  """
  manifest = records.Manifest.read(setup.folder(record_set))
  dataset = pipeline.make_dataset(
      manifest, 'train', setup.batch_size, setup.image_size, **options)
  dataset = timing.batched_for_counting(dataset, setup.batch_size)
  # A cache is filled during the first epoch: time the epochs after it.
  warmup_images = (manifest.num_examples('train') if options.get('cache')
                   else 0)
  row = timing.time_dataset(dataset, setup.seconds, setup.warmup_seconds,
                            warmup_images)
  row['options'] = dict(options)
  return [row]


# --- Baselines a user would otherwise run. ---


def measure_seed_loop(setup: Setup) -> list:
  """The tutorial's loading loop, over as many posters as --seconds allows.

  Exactly the tutorial's code (load_img(target_size) → img_to_array → /255,
  appended to a list, then np.array), timed including the final np.array.
  The rate holds for the whole data set; its memory is scaled up to the
  records' poster count (the tutorial loads them all).
  """
  paths = data.poster_paths(setup.images)
  height, width = setup.image_size
  keras.utils.img_to_array(keras.utils.load_img(paths[0]))  # Warm up PIL.
  rss_start = timing.current_rss()
  start, cpu = time.perf_counter(), timing.cpu_seconds()
  train_image = []
  for path in paths:
    img = keras.utils.load_img(path, target_size=(height, width, 3))
    img = keras.utils.img_to_array(img)
    img = img / 255
    train_image.append(img)
    if time.perf_counter() - start >= setup.seconds:
      break
  x = np.array(train_image)
  elapsed = time.perf_counter() - start
  peak = timing.peak_rss()
  manifest = records.Manifest.read(setup.records)
  total = sum(manifest.num_examples(split) for split in records.SPLITS)
  scaled = rss_start + (peak - rss_start) * total / len(x)
  return [{'images_per_sec': len(x) / elapsed, 'images': len(x),
           'seconds': elapsed, 'peak_rss_bytes': peak,
           'cpu_ms_per_image': 1e3 * (timing.cpu_seconds() - cpu) / len(x),
           'peak_rss_bytes_all_posters': int(scaled), 'all_posters': total}]


def measure_keras_dir(setup: Setup) -> list:
  """keras.utils.image_dataset_from_directory on the source posters, endless."""
  dataset = keras.utils.image_dataset_from_directory(
      setup.images, labels=None, image_size=setup.image_size,
      batch_size=setup.batch_size, verbose=False)
  return [timing.time_dataset(dataset.repeat(), setup.seconds,
                              setup.warmup_seconds)]


# --- The trainer's input stall. ---


class _StepTimes(keras.callbacks.Callback):
  """Records wall and CPU time at the end of every training step."""

  def __init__(self):
    super().__init__()
    self.times = []

  def on_train_batch_end(self, batch, logs=None):
    self.times.append((time.perf_counter(), timing.cpu_seconds()))


def fit_seconds(model: keras.Model, dataset: tf.data.Dataset, warmup: int,
                steps: int) -> tuple:
  """(wall, CPU) seconds of `steps` training steps after `warmup`, in one fit."""
  timer = _StepTimes()
  # shuffle=False: the pipeline shuffles (as in the trainer).
  model.fit(dataset, epochs=1, steps_per_epoch=warmup + steps, shuffle=False,
            verbose=0, callbacks=[timer])
  (wall_0, cpu_0), (wall_1, cpu_1) = timer.times[warmup - 1], timer.times[-1]
  return wall_1 - wall_0, cpu_1 - cpu_0


def _stall_model(image_size: Sequence[int], precision: str) -> tuple:
  """seed_cnn compiled as the trainer compiles it; (model, precision, reason).

  The trainer's own choices (hardware.resolve) and compile
  (networks.compiled_model), at its default learning rate.
  """
  choices = hardware.resolve(precision)
  keras.mixed_precision.set_global_policy(choices.precision)
  model = networks.compiled_model('seed_cnn', image_size,
                                jit_compile=choices.jit_compile)
  return model, choices.precision, choices.precision_reason


def measure_stall(setup: Setup, rounds: int = 3) -> list:
  """seed_cnn's step rate fed by the pipeline vs. one in-memory batch repeated.

  Same model, precision, batch size and compiled step. Rounds alternate
  (memory, pipeline, memory, pipeline, …), each at least --seconds and
  STALL_ROUND_SECONDS long; each feed's fastest round counts (a
  passing load on a shared machine only slows a round down); each round
  starts with warm-up steps (a fit builds a new iterator: the pipeline
  restarts). The in-memory row's peak RSS is taken before the pipeline ran.
  """
  previous_policy = keras.mixed_precision.global_policy()
  model, policy, reason = _stall_model(setup.image_size, setup.precision)
  streaming = pipeline.for_keras(pipeline.make_dataset(
      records.Manifest.read(setup.records), 'train', setup.batch_size,
      setup.image_size, **DEVICE_RESIZE))
  one_batch = next(iter(streaming))
  in_memory = tf.data.Dataset.from_tensors(one_batch).repeat()
  quick = setup.quick  # one short round: it only has to run
  warmup = 1 if quick else 2
  step = fit_seconds(model, in_memory, warmup, 2)[0] / 2  # Also compiles.
  round_seconds = setup.seconds if quick else max(setup.seconds,
                                                  STALL_ROUND_SECONDS)
  steps = min(200, max(2, math.ceil(round_seconds / step)))
  rounds = 1 if quick else rounds
  feeds = {STALL_MEMORY_ROW: in_memory, STALL_STREAM_ROW: streaming}
  times = {name: [] for name in feeds}
  memory_peak = None
  for _ in range(rounds):
    for name, dataset in feeds.items():
      times[name].append(fit_seconds(model, dataset, warmup, steps))
      memory_peak = memory_peak or timing.peak_rss()
  keras.mixed_precision.set_global_policy(previous_policy)
  rows = []
  for name, found in times.items():
    wall, cpu = min(found)  # The fastest round (see runner.best_of).
    rate = steps / wall
    rows.append({'name': name, 'steps_per_sec': rate,
                 'images_per_sec': rate * setup.batch_size,
                 'steps': steps, 'seconds': wall,
                 'round_seconds': [t[0] for t in found],
                 'cpu_ms_per_image': 1e3 * cpu / (steps * setup.batch_size),
                 'precision': policy, 'precision_reason': reason})
  rows[0]['peak_rss_bytes'] = memory_peak
  return rows


# --- Memory over a full epoch, at 1x and SCALE x the posters. ---


def measure_epoch(setup: Setup, scale: int,
                  record_set: Optional[str] = None) -> list:
  """One full training epoch of the default pipeline, from a cold start."""
  manifest = records.Manifest.read(setup.folder(record_set, scale != 1))
  steps = manifest.steps_per_epoch('train', setup.batch_size)
  rss_start = timing.current_rss()
  dataset = pipeline.make_dataset(manifest, 'train', setup.batch_size,
                                  setup.image_size, **DEVICE_RESIZE)
  start, cpu = time.perf_counter(), timing.cpu_seconds()
  counted = timing.batch_counter(dataset)(steps)
  elapsed = time.perf_counter() - start
  return [{'images_per_sec': counted / elapsed, 'images': counted,
           'seconds': elapsed, 'rss_start_bytes': rss_start,
           'cpu_ms_per_image': 1e3 * (timing.cpu_seconds() - cpu) / counted,
           'posters': manifest.num_examples('train'),
           'scale': scale, 'record_set': record_set}]


# --- The tf.data service (--data_service). ---


def service_row(workers: int) -> str:
  return (f'pipeline via tf.data service, {workers} local '
          f'worker{"s" if workers > 1 else ""}')


def measure_service(setup: Setup, workers: int) -> list:
  """The full pipeline run by a local tf.data service (parallel_epochs).

  The dispatcher runs in this process and `workers` worker processes on
  127.0.0.1 (service_servers.LocalService); this process only
  receives the batches, so its CPU per image is the trainer's share.
  """
  with service_servers.LocalService(workers) as address:
    dataset = data_service.make_dataset(
        records.Manifest.read(setup.records), 'train', setup.batch_size,
        setup.image_size, address, 'parallel_epochs', **DEVICE_RESIZE)
    row = timing.time_dataset(dataset, setup.seconds, setup.warmup_seconds)
    del dataset
    gc.collect()  # the iterator lets go of the workers before they stop
  row['service_workers'] = workers
  return [row]

