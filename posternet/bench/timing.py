"""The benchmark's clocks: images counted inside TensorFlow, CPU time, peak RSS.

Images are counted inside TensorFlow, many batches per call (a tf.while_loop
pulling from one iterator): a Python loop per poster would cap the rate at a
few thousand per second and hide the pipeline's real speed. Every timing
warms up first (threads started, buffers filled, AUTOTUNE settled).
"""

import os
import re
import resource
import time
from typing import Callable

import tensorflow as tf

# One counting call pulls about this long: short enough to stop on time,
# long enough that Python's share of the time is nil.
CHUNK_SECONDS = 0.25


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
  """The batch size of an element: the leading dimension of its components.

  Any component will do (images, labels or Ids of a batch, or records).
  """
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


def batched_for_counting(dataset: tf.data.Dataset,
                         batch_size: int) -> tf.data.Dataset:
  """Batches a dataset of single records so it is counted in batches too."""
  spec = tf.nest.flatten(dataset.element_spec)[0]
  if spec.shape.rank == 0:
    return dataset.batch(batch_size)
  return dataset
