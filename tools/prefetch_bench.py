r"""The prefetch benchmark: how fast posternet's input pipeline feeds a model.

`make bench`, or:

  python -m tools.prefetch_bench --out=bench/bench.json
  python -m tools.make_records --csv=path/train.csv --images=path/Images \
      --out=/tmp/real128 --store_size=128x128
  python -m tools.prefetch_bench --records=/tmp/real128 \
      --images=path/Images --out=bench/real.json
  python -m tools.prefetch_bench --quick   # smoke test, 20-40 s: no numbers

Everything is measured in one run, on the same records and poster bytes:
  ceiling    in-memory decode_jpeg of the records' own JPEG bytes, in parallel
             inside tf.data, with both DCT methods, poster by poster and batch
             by batch (the ceiling is the faster of the two)
  stages     posternet's pipeline built up to each stage (make_dataset's
             stop_after): read, + batch + parse, + decode, + prefetch
  options    the full pipeline with one option changed: parallel calls 1,
             prefetch off, deterministic order, cache
  baselines  the tutorial's loop (load_img → img_to_array → /255 → np.array,
             over a subset, scaled up) and image_dataset_from_directory, both
             at the same image size, on the source posters
  stall      seed_cnn's training step rate fed by the pipeline, over the same
             model fed one in-memory batch again and again
  memory     each variant's peak RSS; a full training epoch at 1× and 4× the
             posters

Each variant runs in a fresh process (--isolate, the default but under
--quick): its peak RSS is its own, and no variant inherits another's threads
or memory. Images are counted inside TensorFlow, many batches per call (a
tf.while_loop pulling from one iterator): a Python loop per poster would cap
the rate at a few thousand per second and hide the pipeline's real speed.
Every variant warms up first (threads started, buffers filled, AUTOTUNE
settled), then runs --seconds.

Without --records, synthetic posters are generated into --work_dir and
converted with --store_size equal to --image_size (the README's way to make
training records: no resize left on the host); later runs reuse them.
"""

import dataclasses
import gc
import glob
import hashlib
import json
import math
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from typing import Callable, Mapping, Optional, Sequence

if __name__ == '__main__':
  # The table is the output; TF's C++ start-up lines would only bury it.
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

from absl import app
from absl import flags
import keras
import numpy as np
import tensorflow as tf

from posternet import cli
from posternet import convert
from posternet import data_service
from posternet import hardware
from posternet import images
from posternet import input_pipeline
from posternet import models
from posternet import records
from posternet import synthetic

AUTOTUNE = tf.data.AUTOTUNE

# The demo's stored size (configs/demo.cfg): thumbnails a CPU trains on.
DEFAULT_IMAGE_SIZE = (128, 128)
DEFAULT_NUM_POSTERS = 7254  # the tutorial's CSV rows

# --quick: a smoke test of every variant, for tests and for checking that
# the benchmark runs at all. Tiny data (seed_cnn needs at least 76 px), a
# blink per variant, all in one process (a fresh TensorFlow process per
# variant costs ~10 s on 2 cores), no verdicts: its numbers measure nothing.
QUICK = {'num_posters': 48, 'image_size': (80, 80), 'batch_size': 8,
         'seconds': 0.1, 'isolate': False}
QUICK_WARMUP_SECONDS = 0.05
QUICK_NOTE = ('--quick is a smoke test: every variant ran once on tiny data '
              'for a blink, so these numbers measure nothing and no target '
              'is checked. Run without --quick to measure.')

DCT_METHODS = ('INTEGER_FAST', 'INTEGER_ACCURATE')

# One counting call pulls about this long: short enough to stop on time,
# long enough that Python's share of the time is nil.
CHUNK_SECONDS = 0.25

# How much more the big data set of the memory check holds.
SCALE = 4

# Row names the summary looks up.
PIPELINE_ROW = 'posternet pipeline (+ prefetch)'
SEED_LOOP_ROW = "baseline: tutorial's loop"
KERAS_DIR_ROW = 'baseline: image_dataset_from_directory'
STALL_MEMORY_ROW = 'seed_cnn fed from memory'
STALL_STREAM_ROW = 'seed_cnn fed by the pipeline'
# A stall round trains at least this long (seed_cnn takes ~0.75 s a step on
# 2 CPU cores: 5 s were ~7 steps, and the ratio moved ±5 % between runs).
STALL_ROUND_SECONDS = 10.0
EPOCH_ROWS = {1: 'epoch 1x', SCALE: f'epoch {SCALE}x'}

# The performance targets, checked on every run but --quick.
MAX_EPOCH_RSS_BYTES = 2.5e9
MAX_RSS_GROWTH = 1.10


@dataclasses.dataclass(frozen=True)
class Setup:
  """What every measurement needs, as plain (JSON-able) values."""
  records: str            # the records folder measured
  records_scaled: str     # the same shards listed SCALE times (memory check)
  images: str             # source posters for the baselines
  image_size: tuple       # (height, width) of the model-ready batches
  batch_size: int
  seconds: float          # timed run per variant, after the warm-up
  warmup_seconds: float
  precision: str          # --precision for the stall rows ('auto': trainer's)
  quick: bool = False     # --quick: one short stall round, no verdicts

  @classmethod
  def from_json(cls, data: Mapping) -> 'Setup':
    return cls(**{**data, 'image_size': tuple(data['image_size'])})


# --- Memory: peak RSS per variant. ---


def current_rss() -> int:
  """This process's resident set size now, in bytes."""
  with open('/proc/self/statm') as f:
    return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE')


def reset_peak_rss() -> bool:
  """Resets the kernel's peak RSS (VmHWM) to the current RSS, where allowed.

  Linux >= 4.0 resets it on writing 5 to clear_refs; a variant's peak is then
  its own, not the process's start-up peak.
  """
  try:
    with open('/proc/self/clear_refs', 'w') as f:
      f.write('5')
    return True
  except OSError:
    return False


def peak_rss() -> int:
  """The peak RSS since the last reset_peak_rss (else since start), in bytes."""
  try:
    with open('/proc/self/status') as f:
      match = re.search(r'VmHWM:\s+(\d+)\s+kB', f.read())
    if match:
      return int(match.group(1)) * 1024
  except OSError:
    pass
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def cpu_seconds() -> float:
  """CPU time (user + system) this process has used, all threads.

  Steadier than wall time on a shared machine: per image, it is what a
  variant costs, whoever else runs.
  """
  usage = resource.getrusage(resource.RUSAGE_SELF)
  return usage.ru_utime + usage.ru_stime


# --- Counting images inside TensorFlow. ---


def _images_in(element) -> tf.Tensor:
  """The batch size of an element: its first component's leading dimension."""
  return tf.shape(tf.nest.flatten(element)[0], out_type=tf.int64)[0]


def batch_counter(dataset: tf.data.Dataset) -> Callable[[int], int]:
  """A function that pulls n batches from one iterator and counts their images.

  The loop runs inside one tf.function (a tf.while_loop over get_next), so
  Python is not on the per-batch path, let alone the per-image one; the
  iterator lives on between calls, so its threads and buffers stay warm.
  """
  iterator = iter(dataset)

  @tf.function
  def pull(steps):
    total = tf.constant(0, tf.int64)
    for _ in tf.range(steps):
      total += _images_in(next(iterator))
    return total

  return lambda steps: int(pull(tf.constant(steps, tf.int64)))


def time_dataset(dataset: tf.data.Dataset, seconds: float,
                 warmup_seconds: float, warmup_images: int = 0) -> dict:
  """Images per second of an endless batched dataset, after a warm-up.

  The warm-up runs at least warmup_seconds and warmup_images (e.g. one epoch
  to fill a cache), doubling the batches per call until one call takes about
  CHUNK_SECONDS; the timed part then calls with that many until `seconds`.
  """
  pull = batch_counter(dataset)
  steps, seen, start = 1, 0, time.perf_counter()
  while True:
    call = time.perf_counter()
    seen += pull(steps)
    now = time.perf_counter()
    if now - start >= warmup_seconds and seen >= warmup_images:
      break
    if now - call < CHUNK_SECONDS:
      steps *= 2
  counted, start, cpu = 0, time.perf_counter(), cpu_seconds()
  while time.perf_counter() - start < seconds:
    counted += pull(steps)
  elapsed = time.perf_counter() - start
  return {'images_per_sec': counted / elapsed, 'images': counted,
          'seconds': elapsed,
          'cpu_ms_per_image': 1e3 * (cpu_seconds() - cpu) / counted}


def _batched_for_counting(dataset: tf.data.Dataset,
                          batch_size: int) -> tf.data.Dataset:
  """Batches a dataset of single records so it is counted in batches too."""
  spec = tf.nest.flatten(dataset.element_spec)[0]
  if spec.shape.rank == 0:
    return dataset.batch(batch_size)
  return dataset


# --- The ceiling: in-memory decode of the records' bytes. ---


def load_encoded(manifest: records.Manifest,
                 split: str = 'train') -> tf.Tensor:
  """The JPEG bytes of a split's posters, as one string tensor in memory."""
  paths = manifest.shard_paths(split)
  dataset = tf.data.TFRecordDataset(paths).batch(256).map(
      lambda s: records.parse_examples(s)[records.IMAGE_KEY])
  return tf.concat(list(dataset), axis=0)


def decode_plan(manifest: records.Manifest,
                image_size: Sequence[int]) -> dict:
  """The pipeline's static decode choice (DCT ratio, resize) for these records."""
  return input_pipeline.decode_plan(manifest.stored_size_range('train'),
                                    image_size)


def ceiling_dataset(encoded: tf.Tensor, plan: Mapping, batch_size: int,
                    dct_method: str, batched: bool) -> tf.data.Dataset:
  """Endless uint8 batches decoded from bytes in memory: no files, no parse.

  decode_jpeg at the pipeline's DCT ratio and nothing else: where stored
  sizes vary (no fixed store size), each element is the decoded shape
  instead of the pixels, so the ceiling never includes a resize.
  """
  hw = plan['decoded_hw']

  def one(data):
    image = images.decode_jpeg(data, plan['ratio'], dct_method)
    if hw is None:
      return tf.shape(image)
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
                            setup.batch_size, dct_method, batched)
  row = time_dataset(dataset, setup.seconds, setup.warmup_seconds)
  row.update(dct_method=dct_method, ratio=plan['ratio'])
  return [row]


# --- posternet's pipeline: stage by stage, and under each option. ---


def measure_pipeline(setup: Setup, options: Mapping) -> list:
  """One pipeline row: make_dataset(**options) on the train split, endless."""
  manifest = records.Manifest.read(setup.records)
  dataset = input_pipeline.make_dataset(
      manifest, 'train', setup.batch_size, setup.image_size, **options)
  dataset = _batched_for_counting(dataset, setup.batch_size)
  # A cache is filled during the first epoch: time the epochs after it.
  warmup_images = (manifest.num_examples('train') if options.get('cache')
                   else 0)
  row = time_dataset(dataset, setup.seconds, setup.warmup_seconds,
                     warmup_images)
  row['options'] = dict(options)
  return [row]


# --- Baselines a user would otherwise run. ---


def poster_paths(images_dir: str) -> list:
  """The folder's .jpg posters, in name order (the CSV's order for Ids)."""
  return sorted(glob.glob(os.path.join(images_dir, '*.jpg')))


def measure_seed_loop(setup: Setup) -> list:
  """The tutorial's loading loop, over as many posters as --seconds allows.

  Exactly the tutorial's code (load_img(target_size) → img_to_array → /255,
  appended to a list, then np.array), timed including the final np.array.
  The rate holds for the whole data set; its memory is scaled up to the
  records' poster count (the tutorial loads them all).
  """
  paths = poster_paths(setup.images)
  height, width = setup.image_size
  keras.utils.img_to_array(keras.utils.load_img(paths[0]))  # Warm up PIL.
  rss_start = current_rss()
  start, cpu = time.perf_counter(), cpu_seconds()
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
  peak = peak_rss()
  manifest = records.Manifest.read(setup.records)
  total = sum(manifest.num_examples(split) for split in records.SPLITS)
  scaled = rss_start + (peak - rss_start) * total / len(x)
  return [{'images_per_sec': len(x) / elapsed, 'images': len(x),
           'seconds': elapsed, 'peak_rss_bytes': peak,
           'cpu_ms_per_image': 1e3 * (cpu_seconds() - cpu) / len(x),
           'peak_rss_bytes_all_posters': int(scaled), 'all_posters': total}]


def measure_keras_dir(setup: Setup) -> list:
  """keras.utils.image_dataset_from_directory on the source posters, endless."""
  dataset = keras.utils.image_dataset_from_directory(
      setup.images, labels=None, image_size=setup.image_size,
      batch_size=setup.batch_size, verbose=False)
  return [time_dataset(dataset.repeat(), setup.seconds, setup.warmup_seconds)]


# --- The trainer's input stall. ---


class _StepTimes(keras.callbacks.Callback):
  """Records wall and CPU time at the end of every training step."""

  def __init__(self):
    super().__init__()
    self.times = []

  def on_train_batch_end(self, batch, logs=None):
    self.times.append((time.perf_counter(), cpu_seconds()))


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
  (models.compiled_model), at its default learning rate.
  """
  choices = hardware.resolve(precision)
  keras.mixed_precision.set_global_policy(choices.precision)
  model = models.compiled_model('seed_cnn', image_size,
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
  streaming = input_pipeline.make_dataset(
      records.Manifest.read(setup.records), 'train', setup.batch_size,
      setup.image_size)
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
      memory_peak = memory_peak or peak_rss()
  keras.mixed_precision.set_global_policy(previous_policy)
  rows = []
  for name, found in times.items():
    wall, cpu = min(found)  # The fastest round (see best_of).
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


def measure_epoch(setup: Setup, scale: int) -> list:
  """One full training epoch of the default pipeline, from a cold start."""
  folder = setup.records if scale == 1 else setup.records_scaled
  manifest = records.Manifest.read(folder)
  steps = manifest.steps_per_epoch('train', setup.batch_size)
  rss_start = current_rss()
  dataset = input_pipeline.make_dataset(manifest, 'train', setup.batch_size,
                                        setup.image_size)
  start, cpu = time.perf_counter(), cpu_seconds()
  counted = batch_counter(dataset)(steps)
  elapsed = time.perf_counter() - start
  return [{'images_per_sec': counted / elapsed, 'images': counted,
           'seconds': elapsed, 'rss_start_bytes': rss_start,
           'cpu_ms_per_image': 1e3 * (cpu_seconds() - cpu) / counted,
           'posters': manifest.num_examples('train'),
           'scale': scale}]


# --- The tf.data service (--data_service). ---


def service_row(workers: int) -> str:
  return (f'pipeline via tf.data service, {workers} local '
          f'worker{"s" if workers > 1 else ""}')


def measure_service(setup: Setup, workers: int) -> list:
  """The full pipeline run by a local tf.data service (parallel_epochs).

  The dispatcher runs in this process and `workers` worker processes on
  127.0.0.1 (posternet.data_service.LocalService); this process only
  receives the batches, so its CPU per image is the trainer's share.
  """
  with data_service.LocalService(workers) as address:
    dataset = data_service.make_dataset(
        records.Manifest.read(setup.records), 'train', setup.batch_size,
        setup.image_size, address, 'parallel_epochs')
    row = time_dataset(dataset, setup.seconds, setup.warmup_seconds)
    del dataset
    gc.collect()  # the iterator lets go of the workers before they stop
  row['service_workers'] = workers
  return [row]


# --- The variants, and running each one (here or in its own process). ---


MEASURES = {
    'ceiling': measure_ceiling,
    'pipeline': measure_pipeline,
    'seed_loop': measure_seed_loop,
    'keras_dir': measure_keras_dir,
    'stall': measure_stall,
    'epoch': measure_epoch,
    'service': measure_service,
}


def variants(plan: Mapping, service: bool = False) -> list:
  """Every measurement of one run, in order: {name, kind, params}.

  With service, the full pipeline fed by a local tf.data service with 1 and
  2 worker processes follows the option rows.
  """
  ratio = plan['ratio']
  resize = 'no resize' if plan['decoded_hw'] is not None else 'resize if needed'
  out = [{'name': f'ceiling: decode {dct}, per {unit}', 'kind': 'ceiling',
          'params': {'dct_method': dct, 'batched': unit == 'batch'}}
         for dct in DCT_METHODS for unit in ('poster', 'batch')]
  stages = (('read (+ shuffle)', 'read'), ('+ batch + parse', 'parse'),
            (f'+ decode (ratio {ratio}, {resize})', 'decode'),
            (PIPELINE_ROW, 'prefetch'))
  out += [{'name': name, 'kind': 'pipeline',
           'params': {'options': {'stop_after': stage}}}
          for name, stage in stages]
  changes = (('parallel calls 1', {'num_parallel_calls': 1}),
             ('prefetch off', {'prefetch': 0}),
             ('deterministic order', {'deterministic': True}),
             ('cache decoded posters', {'cache': True}))
  out += [{'name': f'pipeline: {name}', 'kind': 'pipeline',
           'params': {'options': options}} for name, options in changes]
  if service:
    out += [{'name': service_row(n), 'kind': 'service',
             'params': {'workers': n}} for n in (1, 2)]
  out += [{'name': SEED_LOOP_ROW, 'kind': 'seed_loop', 'params': {}},
          {'name': KERAS_DIR_ROW, 'kind': 'keras_dir', 'params': {}},
          {'name': 'stall', 'kind': 'stall', 'params': {}}]
  out += [{'name': name, 'kind': 'epoch', 'params': {'scale': scale}}
          for scale, name in EPOCH_ROWS.items()]
  return out


def run_variant(setup: Setup, variant: Mapping) -> list:
  """Runs one variant in this process; its rows, each with a peak RSS."""
  gc.collect()  # Earlier variants' iterators (and their threads) go first.
  load = os.getloadavg()[0]
  reset_peak_rss()
  rows = MEASURES[variant['kind']](setup, **variant['params'])
  peak = peak_rss()
  for row in rows:
    row.setdefault('name', variant['name'])
    row.setdefault('peak_rss_bytes', peak)
    row['load_average'] = load
  return rows


def best_of(runs: Sequence[list]) -> list:
  """Merges repeated runs of the variants: per row, its fastest run.

  Other jobs on a shared machine only ever slow a run down, so the fastest of
  several runs comes closest to what a variant does on free cores. Every
  run's rate and load average are kept beside it; peak RSS is the largest.
  """
  by_name = {}
  for rows in runs:
    for row in rows:
      by_name.setdefault(row['name'], []).append(row)
  merged = []
  for found in by_name.values():
    best = dict(max(found, key=lambda row: row['images_per_sec']))
    best['runs_images_per_sec'] = [row['images_per_sec'] for row in found]
    best['runs_load_average'] = [row['load_average'] for row in found]
    best['peak_rss_bytes'] = max(row['peak_rss_bytes'] for row in found)
    merged.append(best)
  return merged


def run_isolated(setup: Setup, variant: Mapping) -> list:
  """Runs one variant in a fresh Python process (this module, --variant)."""
  with tempfile.TemporaryDirectory(prefix='prefetch_bench_') as folder:
    spec = os.path.join(folder, 'variant.json')
    with open(spec, 'w') as f:
      json.dump({'setup': dataclasses.asdict(setup), 'variant': variant}, f)
    env = dict(os.environ)
    env.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
    process = subprocess.run(
        [sys.executable, '-m', 'tools.prefetch_bench', f'--variant={spec}'],
        capture_output=True, text=True, env=env, check=False)
    if process.returncode != 0:
      lines = (process.stderr or process.stdout).strip().splitlines() or ['']
      raise cli.UserError(f'benchmark variant {variant["name"]!r} failed '
                          f'(exit {process.returncode}): {lines[-1]}')
    with open(spec + '.out') as f:
      return json.load(f)


def run_variant_file(spec_path: str) -> None:
  """The child's side of run_isolated: reads the spec, writes its rows."""
  with open(spec_path) as f:
    spec = json.load(f)
  rows = run_variant(Setup.from_json(spec['setup']), spec['variant'])
  with open(spec_path + '.out', 'w') as f:
    json.dump(rows, f)


# --- The data: synthetic records made as the README says, or the user's. ---


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


# --- The report. ---


def _rate(rows: Sequence[Mapping], name: str) -> float:
  return next(r['images_per_sec'] for r in rows if r['name'] == name)


def _peak(rows: Sequence[Mapping], name: str) -> int:
  return next(r['peak_rss_bytes'] for r in rows if r['name'] == name)


def targets(report: Mapping) -> list:
  """The performance targets: value, target and whether it is met.

  Under --quick, met is None: tiny data timed for a blink says nothing about
  any target, and a MISSED there would only alarm.
  """
  rss = report['epoch_peak_rss_bytes']
  checks = [
      ('pipeline / ceiling', report['pipeline_images_per_sec'] /
       report['ceiling_images_per_sec'], '>=', 0.9),
      ("pipeline / tutorial's loop", report['pipeline_images_per_sec'] /
       report['seed_loop_images_per_sec'], '>=', 4.0),
      ('pipeline / image_dataset_from_directory',
       report['pipeline_images_per_sec'] / report['keras_dir_images_per_sec'],
       '>=', 3.0),
      ('stall ratio', report['stall_ratio'], '>=', 0.98),
      ('epoch peak RSS 1x (bytes)', rss['1x'], '<=', MAX_EPOCH_RSS_BYTES),
      (f'epoch peak RSS {SCALE}x / 1x', report['rss_growth'], '<=',
       MAX_RSS_GROWTH),
  ]
  quick = report['setup'].get('quick', False)
  return [{'name': name, 'value': value, 'op': op, 'target': target,
           'met': None if quick else
                  (value >= target if op == '>=' else value <= target)}
          for name, value, op, target in checks]


def summarize(rows: list, setup: Setup, extra: Mapping) -> dict:
  """The JSON report: the rows with their ratios, top-level numbers, targets."""
  ceiling = max(r['images_per_sec'] for r in rows
                if r.get('dct_method') == images.DCT_METHOD)
  seed_loop = _rate(rows, SEED_LOOP_ROW)
  for row in rows:
    row['x_ceiling'] = row['images_per_sec'] / ceiling
    row['x_seed_loop'] = row['images_per_sec'] / seed_loop
  epoch = {f'{s}x': _peak(rows, name) for s, name in EPOCH_ROWS.items()}
  report = {
      'setup': {**dataclasses.asdict(setup), **extra},
      'ceiling_images_per_sec': ceiling,
      'ceiling_dct_method': images.DCT_METHOD,
      'pipeline_images_per_sec': _rate(rows, PIPELINE_ROW),
      'seed_loop_images_per_sec': seed_loop,
      'keras_dir_images_per_sec': _rate(rows, KERAS_DIR_ROW),
      'stall_ratio': (_rate(rows, STALL_STREAM_ROW) /
                      _rate(rows, STALL_MEMORY_ROW)),
      'epoch_peak_rss_bytes': epoch,
      'rss_growth': epoch[f'{SCALE}x'] / epoch['1x'],
      'rows': rows,
  }
  report['targets'] = targets(report)
  return report


def _note(row: Mapping) -> str:
  """The table's last column: what else a row needs to be read right."""
  if 'steps_per_sec' in row:
    return f'{row["steps_per_sec"]:.3g} steps/s, {row["precision"]}'
  if 'all_posters' in row:
    return (f'{row["images"]} posters; all {row["all_posters"]}: '
            f'~{row["peak_rss_bytes_all_posters"] / 1e9:.2f} GB')
  if 'service_workers' in row:
    return ('CPU and RSS: the trainer process only (decode runs in the '
            'worker processes)')
  if 'scale' in row:
    return (f'{row["posters"]} posters, RSS at start '
            f'{row["rss_start_bytes"] / 1e6:,.0f} MB')
  return ''


def format_table(report: Mapping) -> str:
  """The rows as a Markdown table, then the targets, one line each.

  load: the 1-minute load average when the reported run started (this
  machine's other jobs; on 2 cores, above ~2 they take cores away).
  """
  lines = ['| variant | images/s | × ceiling | × tutorial loop | peak RSS | '
           'CPU ms/image | load | note |',
           '|---|---:|---:|---:|---:|---:|---:|---|']
  for row in report['rows']:
    cpu = row.get('cpu_ms_per_image')
    lines.append(
        f'| {row["name"]} | {row["images_per_sec"]:,.0f} | '
        f'{row["x_ceiling"]:.2f} | {row["x_seed_loop"]:.1f} | '
        f'{row["peak_rss_bytes"] / 1e6:,.0f} MB | '
        f'{"" if cpu is None else f"{cpu:.3f}"} | '
        f'{row["load_average"]:.1f} | {_note(row)} |')
  lines.append('')
  if report['setup'].get('quick'):
    lines.append(QUICK_NOTE)
    return '\n'.join(lines)
  for check in report['targets']:
    value = check['value']
    shown = f'{value / 1e9:.2f} GB' if 'bytes' in check['name'] else (
        f'{value:.3f}')
    target = (f'{check["target"] / 1e9:.1f} GB' if 'bytes' in check['name']
              else f'{check["target"]:g}')
    verdict = 'met' if check['met'] else 'MISSED'
    lines.append(f'- {check["name"]}: {shown} (target {check["op"]} '
                 f'{target}): {verdict}')
  return '\n'.join(lines)


def _write_json(path: str, report: Mapping) -> None:
  """Writes the report atomically (temporary name, then rename)."""
  folder = os.path.dirname(os.path.abspath(path))
  try:
    os.makedirs(folder, exist_ok=True)
    with open(path + '.tmp', 'w') as f:
      json.dump(report, f, indent=2)
      f.write('\n')
    os.replace(path + '.tmp', path)
  except OSError as e:
    raise cli.UserError(f'cannot write {path}: {e.strerror}') from None


def run_benchmark(*, out: str, records_dir: Optional[str] = None,
                  images_dir: Optional[str] = None,
                  num_posters: int = DEFAULT_NUM_POSTERS,
                  image_size: Sequence[int] = DEFAULT_IMAGE_SIZE,
                  batch_size: int = 64, seconds: float = 5.0,
                  precision: str = 'auto', work_dir: str = 'bench/work',
                  isolate: bool = True, repeats: int = 1,
                  service: bool = False, quick: bool = False) -> dict:
  """Runs every measurement, writes the JSON report and returns it.

  Args:
    out: the JSON report's path.
    records_dir: records to measure; None: synthetic ones in work_dir.
    images_dir: source posters for the baselines; default: the synthetic
      Images/, or the records' own posters written out as files.
    num_posters: synthetic posters to make (without records_dir).
    image_size: (height, width) of the model-ready batches.
    batch_size: images per batch, for every variant.
    seconds: timed run per variant, after its warm-up.
    precision: the stall rows' Keras policy ('auto': the trainer's choice).
    work_dir: synthetic data, the scaled records, posters written out.
    isolate: each variant in its own process (its own peak RSS).
    repeats: runs of every variant, round-robin; each row reports the
      fastest (see best_of).
    service: add the rows fed by a local tf.data service (1 and 2 workers).
    quick: a smoke test (--quick): short warm-ups, one stall round, and the
      targets get no verdict.

  Returns:
    The report (see summarize), also written to `out`.

  Raises:
    cli.UserError: bad records or images folder, unwritable out or work_dir,
      a failed variant.
  """
  image_size = tuple(int(s) for s in image_size)
  models.check_input('seed_cnn', image_size)
  load_start = os.getloadavg()
  manifest, images_dir = prepare(records_dir, images_dir, work_dir,
                                 num_posters, image_size)
  records_dir = manifest.records_dir
  setup = Setup(
      records=records_dir, images=images_dir, image_size=image_size,
      records_scaled=scaled_records(manifest, os.path.join(
          work_dir, f'{os.path.basename(os.path.normpath(records_dir))}-'
          f'{SCALE}x')),
      batch_size=batch_size, seconds=seconds,
      warmup_seconds=(QUICK_WARMUP_SECONDS if quick
                      else min(3.0, max(0.2, seconds / 2))),
      precision=precision, quick=quick)
  plan = decode_plan(manifest, image_size)
  todo = variants(plan, service)
  runs = []
  for repeat in range(repeats):
    # Round-robin: a busy spell on a shared machine hits one run of a
    # variant, not all of them.
    for index, variant in enumerate(todo, 1):
      start = time.perf_counter()
      found = (run_isolated if isolate else run_variant)(setup, variant)
      for row in found:
        print(f'[{index}/{len(todo)}, run {repeat + 1}/{repeats}] '
              f'{row["name"]}: {row["images_per_sec"]:,.0f} images/s '
              f'({time.perf_counter() - start:.1f} s, load '
              f'{row["load_average"]:.1f})', file=sys.stderr)
      runs.append(found)
  rows = best_of(runs)
  report = summarize(rows, setup, {
      'cpu_cores': len(os.sched_getaffinity(0)), 'isolate': isolate,
      'repeats': repeats,
      'load_average_start': load_start, 'load_average_end': os.getloadavg(),
      'decode_plan': plan})
  _write_json(out, report)
  return report


# --- Command line. ---

FLAGS = flags.FLAGS


def _define_flags() -> None:
  """Defines the command's flags (only when run as a command).

  Importing the module (tests, other tools) must not claim flag names such
  as --records or --out that other entry points use.
  """
  flags.DEFINE_string('records', None, 'Records folder to measure (made by '
                      '`make records`). Default: synthetic posters, generated '
                      'and converted into --work_dir first.')
  flags.DEFINE_string('images', None, 'Source Images/ folder of --records, for '
                      "the baselines (the tutorial's loop, "
                      'image_dataset_from_directory). Default: the synthetic '
                      "Images/, or the records' own posters written out.")
  flags.DEFINE_integer('num_posters', DEFAULT_NUM_POSTERS, 'Synthetic posters '
                       'to generate when --records is not given.')
  flags.DEFINE_string('image_size', None, 'HxW (or one number) of the '
                      'model-ready batches; also the synthetic records\' '
                      "--store_size. Default: --records' store size, else "
                      f'{DEFAULT_IMAGE_SIZE[0]}x{DEFAULT_IMAGE_SIZE[1]}.')
  flags.DEFINE_integer('batch_size', 64, 'Images per batch (the tutorial: 64).')
  flags.DEFINE_float('seconds', 5.0, 'Timed seconds per variant, after its '
                     'warm-up.')
  flags.DEFINE_string('out', 'bench/bench.json', 'Where to write the JSON '
                      'report.')
  flags.DEFINE_bool('quick', False, 'Smoke test: every variant once, in this '
                    'process, on tiny data (48 posters, 80x80, batch 8, '
                    '0.1 s per variant; flags given explicitly win). Its '
                    'numbers measure nothing: no target verdicts.')
  flags.DEFINE_enum('precision', 'auto', hardware.PRECISIONS, 'Keras dtype '
                    "policy of the stall rows' seed_cnn; auto: the trainer's "
                    'choice.')
  flags.DEFINE_string('work_dir', 'bench/work', 'Folder for synthetic data, '
                      'the scaled records of the memory check, and posters '
                      'written out of --records; reused between runs.')
  flags.DEFINE_bool('isolate', True, 'Run each variant in its own process, so '
                    'its peak RSS is its own (default: on, but off under '
                    '--quick). --noisolate is faster; RSS is then reset per '
                    'variant where Linux allows.')
  flags.DEFINE_integer('repeats', 1, 'Runs of every variant, round-robin; '
                       'each row reports its fastest run (on a shared machine '
                       'other jobs only slow runs down).')
  flags.DEFINE_string('variant', None, 'Internal: run the one measurement '
                      'described in this JSON file and write its rows beside '
                      'it (how --isolate runs each variant).')
  flags.DEFINE_bool('data_service', False, 'Also time the full pipeline fed '
                    'by a tf.data service on this machine: a dispatcher and '
                    '1, then 2, worker processes on 127.0.0.1 '
                    '(posternet.data_service, parallel_epochs).')


def _value(name: str):
  """A flag's value; under --quick, QUICK's value unless given explicitly."""
  if FLAGS.quick and name in QUICK and not FLAGS[name].present:
    return QUICK[name]
  return FLAGS[name].value


def _image_size() -> tuple:
  """--image_size, else --records' store size, else the default."""
  if FLAGS.image_size:
    return cli.parse_size(FLAGS.image_size, 'image_size')
  if FLAGS.quick:
    return QUICK['image_size']
  if FLAGS.records:
    store_size = records.Manifest.read(FLAGS.records).store_size
    if store_size:
      return store_size
  return DEFAULT_IMAGE_SIZE


def _check_flags() -> None:
  if FLAGS.repeats < 1:
    raise app.UsageError(f'--repeats={FLAGS.repeats}: must be at least 1')
  for name in ('num_posters', 'batch_size'):
    if _value(name) < 1:
      raise app.UsageError(f'--{name}={_value(name)}: must be at least 1')
  if not _value('seconds') > 0:
    raise app.UsageError(f'--seconds={_value("seconds")}: must be positive')


def main(argv: Sequence[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  if FLAGS.variant:
    run_variant_file(FLAGS.variant)
    return
  _check_flags()
  report = run_benchmark(
      out=FLAGS.out, records_dir=FLAGS.records, images_dir=FLAGS.images,
      num_posters=_value('num_posters'), image_size=_image_size(),
      batch_size=_value('batch_size'), seconds=_value('seconds'),
      precision=FLAGS.precision, work_dir=FLAGS.work_dir,
      isolate=_value('isolate'), repeats=FLAGS.repeats,
      service=FLAGS.data_service, quick=FLAGS.quick)
  setup = report['setup']
  print(f'{setup["records"]}: {setup["image_size"][0]}x'
        f'{setup["image_size"][1]}, batch {setup["batch_size"]}, '
        f'{setup["seconds"]:g} s per variant, {setup["cpu_cores"]} cores, '
        f'load average {setup["load_average_start"][0]:.1f} → '
        f'{setup["load_average_end"][0]:.1f}\n')
  print(format_table(report))
  print(f'\nwrote {FLAGS.out}')


def entry() -> None:
  """`python -m tools.prefetch_bench` (`make bench`)."""
  _define_flags()
  cli.run(main)


if __name__ == '__main__':
  entry()
