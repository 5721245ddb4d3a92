"""Synthetic posters in the tutorial's exact format: a CSV and an Images/ folder.

The real dataset cannot ship with posternet, so the demo, the benchmark and
the tests run on posters made here. They imitate the real set where it
matters: the CSV's 27 columns, the label counts and genre frequencies, and
JPEGs of the real sizes, quality and entropy, so that they decode at the speed
of real posters. Each genre leaves a visual trace, so a small CNN learns
something in a few epochs.

Usage:
  python -m posternet.synthetic --out=data/synthetic --num_posters=7254 --seed=0
"""

# (A comment, not the docstring: the docstring is the command's --help.)
# This module writes the data set (the CSV, Images/, the worker processes and
# the command); synthetic_labels.py draws the label vectors and
# synthetic_posters.py draws each poster.

import concurrent.futures
import csv
import ctypes
import io
import multiprocessing
import os
import re
import time
from typing import Optional, Sequence

from absl import app
from absl import flags
import numpy as np
import tensorflow as tf

from posternet import cli
from posternet import files
from posternet import genres
from posternet.data import synthetic_labels
from posternet.data import synthetic_posters
# The tutorial calls its CSV this; the converter also accepts `train.csv`.
CSV_NAME = 'multi_label_train.csv'
IMAGES_DIR = 'Images'

# Random streams: each poster's pixels come from (seed, _POSTER_STREAM, index),
# so the output does not depend on how posters are split across workers.
_LABEL_STREAM, _EXTRA_LABEL_STREAM, _POSTER_STREAM, _DUPLICATE_STREAM = range(4)

# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3

# Posters per task sent to a worker: large enough to amortise the hand-off.
_CHUNK = 32


def poster_id(index: int) -> str:
  """The IMDb-style Id of the poster with this index: tt0000001, …"""
  return f'tt{index + 1:07d}'


def _write_posters(images_dir: str, seed: int, start: int,
                   labels: np.ndarray) -> int:
  """Renders and writes posters start, start + 1, …; returns bytes written."""
  total = 0
  for offset, vector in enumerate(labels):
    rng = np.random.default_rng([seed, _POSTER_STREAM, start + offset])
    data = synthetic_posters.render_poster(rng, vector)
    files.write_atomically(
        os.path.join(images_dir, poster_id(start + offset) + '.jpg'), data)
    total += len(data)
  return total


def _init_worker() -> None:
  """Keeps freed image buffers in the worker's heap instead of unmapping them.

  glibc returns each large buffer (a poster is ~0.4 MB) to the kernel when it
  is freed, and the next poster faults it back in page by page: a sixth of the
  CPU time went to the kernel. Raising the mmap and trim thresholds cuts that
  tenfold. Other C libraries have no mallopt: nothing to do there.
  """
  try:
    libc = ctypes.CDLL(None)
    libc.mallopt(_M_MMAP_THRESHOLD, 32 << 20)
    libc.mallopt(_M_TRIM_THRESHOLD, 64 << 20)
  except (AttributeError, OSError):
    pass


def _write_all_posters(images_dir: str, seed: int, labels: np.ndarray,
                       workers: int) -> int:
  """Writes every poster, in a process pool when workers > 1."""
  starts = range(0, len(labels), _CHUNK)
  if workers == 1:
    return sum(_write_posters(images_dir, seed, s, labels[s:s + _CHUNK])
               for s in starts)
  # spawn: safe even when the caller has already started TensorFlow threads.
  context = multiprocessing.get_context('spawn')
  with concurrent.futures.ProcessPoolExecutor(
      workers, mp_context=context, initializer=_init_worker) as pool:
    futures = [pool.submit(_write_posters, images_dir, seed, s,
                           labels[s:s + _CHUNK]) for s in starts]
    return sum(f.result() for f in futures)


def _csv_rows(labels: np.ndarray, seed: int, duplicate_rows: int) -> list:
  """The CSV's rows; duplicated rows reappear identically later in the file."""
  rows = []
  for index, vector in enumerate(labels):
    rows.append([poster_id(index), genres.genre_string(genres.names_of(vector))]
                + [int(v) for v in vector])
  rng = np.random.default_rng([seed, _DUPLICATE_STREAM])
  for original in np.sort(rng.choice(len(labels), duplicate_rows,
                                     replace=False))[::-1]:
    position = int(rng.integers(original + 1, len(rows) + 1))
    rows.insert(position, list(rows[original]))
  return rows


def _write_csv(path: str, rows: list) -> None:
  """Writes the tutorial's CSV (27 columns, '\\n' line ends) atomically."""
  buffer = io.StringIO()
  writer = csv.writer(buffer, lineterminator='\n')
  writer.writerow(genres.CSV_COLUMNS)
  writer.writerows(rows)
  files.write_atomically(path, buffer.getvalue().encode('utf-8'))


def _remove_stale(images_dir: str, keep: set) -> None:
  """Removes synthetic posters (and temporary files) from an earlier run."""
  pattern = re.compile(r'tt\d{7}\.jpg$')
  for name in os.listdir(images_dir):
    if pattern.match(files.final_name(name)) and name not in keep:
      os.remove(os.path.join(images_dir, name))


def _check_arguments(num_posters: int, duplicate_rows: int, extra_images: int,
                     workers: Optional[int]) -> None:
  """Raises cli.UserError for values that cannot make a dataset."""
  if num_posters < 1:
    raise cli.UserError(f'--num_posters must be at least 1, not {num_posters}')
  if not 0 <= duplicate_rows <= num_posters:
    raise cli.UserError(f'--duplicate_rows must be between 0 and --num_posters'
                        f' ({num_posters}), not {duplicate_rows}')
  if extra_images < 0:
    raise cli.UserError(f'--extra_images must be >= 0, not {extra_images}')
  if num_posters + extra_images > 9_999_999:
    raise cli.UserError('at most 9,999,999 posters fit in 7-digit Ids')
  if workers is not None and workers < 1:
    raise cli.UserError(f'--workers must be at least 1, not {workers}')


def default_workers() -> int:
  """The number of CPU cores this process may use."""
  return len(os.sched_getaffinity(0))


def generate(out_dir: str, num_posters: int, seed: int = 0, *,
             duplicate_rows: int = 0, extra_images: int = 0,
             workers: Optional[int] = None) -> str:
  """Writes out_dir/multi_label_train.csv and out_dir/Images/<Id>.jpg.

  The CSV comes last, so a CSV present means every poster it names is there.

  Args:
    out_dir: the folder to write (created if missing). Synthetic posters left
      there by an earlier run are removed.
    num_posters: unique posters the CSV names (Ids tt0000001, …).
    seed: the same seed gives byte-identical output, whatever `workers` is.
    duplicate_rows: CSV rows repeated identically (the real CSV has 12); the
      CSV has num_posters + duplicate_rows rows.
    extra_images: posters in Images/ that the CSV does not name (the real
      folder has 625).
    workers: processes rendering posters; default: all usable cores.

  Returns:
    The CSV's path.

  Raises:
    cli.UserError: for impossible arguments or an unwritable out_dir.
  """
  _check_arguments(num_posters, duplicate_rows, extra_images, workers)
  labels = synthetic_labels.sample_labels(
      np.random.default_rng([seed, _LABEL_STREAM]), num_posters)
  extra = synthetic_labels.sample_labels(
      np.random.default_rng([seed, _EXTRA_LABEL_STREAM]), extra_images)
  images_dir = os.path.join(out_dir, IMAGES_DIR)
  csv_path = os.path.join(out_dir, CSV_NAME)
  try:
    os.makedirs(images_dir, exist_ok=True)
    if os.path.exists(csv_path):
      os.remove(csv_path)  # Absent until every poster is written again.
    total = num_posters + extra_images
    _remove_stale(images_dir, {poster_id(i) + '.jpg' for i in range(total)})
    _write_all_posters(images_dir, seed, np.concatenate([labels, extra]),
                       workers or default_workers())
    _write_csv(csv_path, _csv_rows(labels, seed, duplicate_rows))
  except (OSError, tf.errors.OpError) as e:
    raise cli.UserError(f'cannot write synthetic data to {out_dir}: {e}') from e
  return csv_path


FLAGS = flags.FLAGS


def _define_flags() -> None:
  """Defines the command's flags (only when run as a command).

  Tests and other tools import generate(); importing must not claim flag
  names (--out, --seed, --workers) that their own entry points use.
  """
  flags.DEFINE_string('out', 'data/synthetic',
                      'Folder for multi_label_train.csv and Images/.')
  flags.DEFINE_integer('num_posters', 7254,
                       'Unique posters (CSV rows without the duplicates).')
  flags.DEFINE_integer('seed', 0, 'Random seed; the same seed gives '
                       'byte-identical output.')
  flags.DEFINE_integer('duplicate_rows', 0, 'CSV rows to repeat identically '
                       '(the real CSV has 12).')
  flags.DEFINE_integer('extra_images', 0, 'Posters in Images/ that the CSV '
                       'does not name (the real folder has 625).')
  flags.DEFINE_integer('workers', None, 'Processes that render posters; '
                       'default: all usable cores. The output does not '
                       'depend on it.')


def main(argv: Sequence[str]) -> None:
  """Checks the flags, generates the data set, prints a one-line summary."""
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  workers = FLAGS.workers or default_workers()
  start = time.perf_counter()
  csv_path = generate(FLAGS.out, FLAGS.num_posters, FLAGS.seed,
                      duplicate_rows=FLAGS.duplicate_rows,
                      extra_images=FLAGS.extra_images, workers=FLAGS.workers)
  seconds = time.perf_counter() - start
  print(f'wrote {FLAGS.num_posters} posters (+{FLAGS.duplicate_rows} duplicate '
        f'rows, +{FLAGS.extra_images} unlisted images) in {seconds:.1f} s '
        f'with {workers} workers: {csv_path}')


def entry() -> None:
  """The console script `posternet-synthetic` and `python -m`."""
  _define_flags()
  cli.run(main)


if __name__ == '__main__':
  entry()
