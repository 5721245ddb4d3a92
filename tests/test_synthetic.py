"""Synthetic posters: the tutorial's CSV format, real label statistics, real-like
JPEGs, a learnable trace per genre, determinism and atomic writes."""

import ast
import csv
import os
import re
import signal
import subprocess
import time

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

from posternet import cli
from posternet import genres
from posternet.data import synthetic
from posternet.data import synthetic_labels
from posternet.data import synthetic_posters
# Real shares (real_sample/README.md), in percentage points.
REAL_COUNT_SHARES = {1: 18, 2: 31, 3: 51}
TOLERANCE_POINTS = 1.0


def _read_csv(path):
  with open(path, newline='') as f:
    rows = list(csv.reader(f))
  return rows[0], rows[1:]


def _files(folder):
  """{relative path: bytes} of every file under folder."""
  found = {}
  for root, _, names in os.walk(folder):
    for name in names:
      path = os.path.join(root, name)
      with open(path, 'rb') as f:
        found[os.path.relpath(path, folder)] = f.read()
  return found


def _jpeg_markers(data):
  """The JPEG segment markers before the image data (SOS)."""
  assert data[:2] == b'\xff\xd8', 'not a JPEG'
  markers, position = [], 2
  while data[position + 1] != 0xDA:
    markers.append(data[position + 1])
    position += 2 + int.from_bytes(data[position + 2:position + 4], 'big')
  return markers


def _auc(labels, scores):
  """ROC-AUC by ranks (no scikit-learn)."""
  ranks = np.empty(len(scores))
  ranks[np.argsort(scores, kind='stable')] = np.arange(1, len(scores) + 1)
  positives = labels.sum()
  negatives = len(labels) - positives
  return ((ranks[labels == 1].sum() - positives * (positives + 1) / 2)
          / (positives * negatives))


@pytest.fixture(scope='module')
def dataset(tmp_path_factory):
  """300 posters in a pool of 2 workers, with duplicates and unlisted images."""
  out = tmp_path_factory.mktemp('synthetic')
  csv_path = synthetic.generate(str(out), 300, seed=7, duplicate_rows=3,
                                extra_images=4, workers=2)
  header, rows = _read_csv(csv_path)
  return out, header, rows


@pytest.fixture(scope='module')
def thumbnails(dataset):
  """Unique posters' labels and 64x64 RGB thumbnails (the smallest training
  size)."""
  out, _, rows = dataset
  unique = list({row[0]: row for row in rows}.values())
  labels = np.array([[int(v) for v in row[2:]] for row in unique])
  pixels = np.stack([np.asarray(
      Image.open(out / 'Images' / f'{row[0]}.jpg').convert('RGB').resize(
          (64, 64), Image.BOX)) for row in unique]).astype(np.float32)
  return labels, pixels


def test_csv_has_the_tutorial_format(dataset):
  out, header, rows = dataset
  assert tuple(header) == genres.CSV_COLUMNS
  assert len(header) == 27 and header[17] == 'N/A'
  for row in rows:
    assert len(row) == 27
    assert re.fullmatch(r'tt\d{7}', row[0])
    assert set(row[2:]) <= {'0', '1'}
    names = [g for g, v in zip(genres.GENRES, row[2:]) if v == '1']
    assert ast.literal_eval(row[1]) == names
    assert row[1] == genres.genre_string(names)
    assert 1 <= len(names) <= 3
    assert (out / 'Images' / f'{row[0]}.jpg').is_file()
  with open(out / synthetic.CSV_NAME, 'rb') as f:
    assert b'\r' not in f.read()  # Line ends as in the real CSV.


def test_duplicate_rows_and_extra_images(dataset):
  out, _, rows = dataset
  ids = [row[0] for row in rows]
  assert len(rows) == 303 and len(set(ids)) == 300
  first = {}
  for position, row in enumerate(rows):
    if row[0] in first:  # A repeat: identical, and after its original.
      assert row == rows[first[row[0]]]
    else:
      first[row[0]] = position
  images = set(os.listdir(out / 'Images'))
  assert len(images) == 304
  unlisted = images - {f'{i}.jpg' for i in ids}
  assert len(unlisted) == 4
  for name in unlisted:  # Unlisted images are real posters too.
    with Image.open(out / 'Images' / name) as image:
      assert image.format == 'JPEG'


def test_same_seed_gives_identical_bytes_whatever_the_workers(tmp_path):
  kwargs = dict(seed=3, duplicate_rows=2, extra_images=3)
  synthetic.generate(str(tmp_path / 'a'), 40, workers=1, **kwargs)
  synthetic.generate(str(tmp_path / 'b'), 40, workers=2, **kwargs)
  synthetic.generate(str(tmp_path / 'c'), 40, workers=1, seed=4)
  a, b, c = (_files(tmp_path / d) for d in 'abc')
  assert len(a) == 44 and a == b
  assert a[synthetic.CSV_NAME] != c[synthetic.CSV_NAME]
  assert a['Images/tt0000001.jpg'] != c['Images/tt0000001.jpg']


def test_rerun_replaces_an_earlier_run(tmp_path):
  synthetic.generate(str(tmp_path / 'fresh'), 10, seed=5, workers=1)
  synthetic.generate(str(tmp_path / 'reused'), 30, seed=9, workers=1)
  leftover = tmp_path / 'reused' / 'Images' / 'tt0000002.jpg.tmp-12345'
  leftover.write_bytes(b'half a poster')
  user_file = tmp_path / 'reused' / 'Images' / 'notes.txt'
  user_file.write_text('not ours')
  synthetic.generate(str(tmp_path / 'reused'), 10, seed=5, workers=1)
  user_file.unlink()  # Kept, as it is not a synthetic poster.
  assert _files(tmp_path / 'reused') == _files(tmp_path / 'fresh')


def test_labels_have_the_real_statistics():
  labels = synthetic_labels.sample_labels(np.random.default_rng(0), 100_000)
  assert labels.dtype == np.float32 and labels.shape == (100_000, 25)
  assert set(np.unique(labels)) == {0.0, 1.0}
  counts = labels.sum(axis=1)
  for count, share in REAL_COUNT_SHARES.items():
    assert abs(100 * np.mean(counts == count) - share) < TOLERANCE_POINTS
  assert counts.min() == 1 and counts.max() == 3
  frequency = 100 * labels.mean(axis=0)
  for genre, real in synthetic_labels.GENRE_FREQUENCY.items():
    assert abs(frequency[genres.GENRES.index(genre)] - 100 * real) < (
        TOLERANCE_POINTS), genre
  assert labels[:, genres.GENRES.index('Reality-TV')].sum() > 0


def test_posters_are_baseline_jpegs_of_real_sizes(dataset):
  out, _, _ = dataset
  paths = sorted((out / 'Images').iterdir())
  widths, heights, sizes, gray = [], [], [], 0
  for path in paths:
    data = path.read_bytes()
    markers = _jpeg_markers(data)
    assert 0xC0 in markers and 0xC2 not in markers, path  # SOF0: baseline.
    image = tf.io.decode_jpeg(data, channels=0).numpy()
    assert image.shape[2] == 3, path  # Three components, like real posters.
    heights.append(image.shape[0])
    widths.append(image.shape[1])
    sizes.append(len(data))
    channels = image.astype(np.int16)
    gray += int(np.abs(channels - channels[..., 1:2]).max() <= 8)
  widths, heights = np.array(widths), np.array(heights)
  assert 0.75 <= np.mean(widths == 300) <= 0.95
  assert widths.min() >= 89 and widths.max() == 300
  assert 425 <= np.median(heights) <= 455
  assert 0.05 <= np.mean((heights < 330) | (heights > 470)) <= 0.25
  assert 25_000 <= np.median(sizes) <= 42_000
  assert min(sizes) >= 2_000 and max(sizes) <= 80_000
  assert 1 <= gray <= 0.05 * len(paths)


def test_each_genre_colour_marks_its_posters(thumbnails):
  # The share of pixels near a genre's motif colour ranks posters with that
  # genre above those without: the trace exists and survives a 64x64 resize.
  labels, pixels = thumbnails
  for k, genre in enumerate(genres.GENRES):
    if labels[:, k].sum() < 8:
      continue
    color = np.array(synthetic_posters.GENRE_STYLE[genre][0], np.float32)
    near = (((pixels - color) ** 2).sum(axis=-1) < 40**2).mean(axis=(1, 2))
    assert _auc(labels[:, k], near) > 0.75, genre


def test_a_generic_learner_finds_the_genres(thumbnails):
  # Knowing nothing of the styles, a colour histogram and a nearest-centroid
  # direction fitted on one half rank the other half by genre well above
  # chance (0.5), in both directions.
  labels, pixels = thumbnails
  bins = (pixels // 64).reshape(len(pixels), -1, 3).astype(np.int64)
  index = bins[..., 0] * 16 + bins[..., 1] * 4 + bins[..., 2]
  histograms = np.stack([np.bincount(i, minlength=64) for i in index])
  half = len(labels) // 2
  folds = ((slice(None, half), slice(half, None)),
           (slice(half, None), slice(None, half)))
  aucs = {}
  for k, genre in enumerate(genres.GENRES):
    if labels[:, k].sum() < 24:
      continue
    scores = []
    for fit, test in folds:
      y = labels[fit, k]
      direction = (histograms[fit][y == 1].mean(axis=0)
                   - histograms[fit][y == 0].mean(axis=0))
      scores.append(_auc(labels[test, k], histograms[test] @ direction))
    aucs[genre] = np.mean(scores)
  assert len(aucs) >= 6, aucs
  assert np.mean(list(aucs.values())) > 0.7, aucs


def test_no_single_pixel_gives_a_genre_away(thumbnails):
  labels, pixels = thumbnails
  flat = pixels.reshape(len(pixels), -1)
  ranks = np.argsort(np.argsort(flat, axis=0), axis=0) + 1.0
  checked = 0
  for k, genre in enumerate(genres.GENRES):
    positive = labels[:, k] == 1
    n_pos, n_neg = positive.sum(), (~positive).sum()
    if n_pos < 10:
      continue
    checked += 1
    pos, neg = flat[positive], flat[~positive]
    separates = (pos.min(axis=0) > neg.max(axis=0)) | (
        pos.max(axis=0) < neg.min(axis=0))
    assert not separates.any(), genre
    if n_pos >= 30:  # Enough positives for a stable AUC: none near 1.
      auc = (ranks[positive].sum(axis=0) - n_pos * (n_pos + 1) / 2) / (
          n_pos * n_neg)
      assert np.max(np.maximum(auc, 1 - auc)) < 0.9, genre
  assert checked >= 10


def test_bad_arguments_raise_user_errors(tmp_path):
  for kwargs in (dict(num_posters=0), dict(num_posters=5, duplicate_rows=6),
                 dict(num_posters=5, extra_images=-1),
                 dict(num_posters=5, workers=0)):
    with pytest.raises(cli.UserError):
      synthetic.generate(str(tmp_path / 'x'), **kwargs)
  blocker = tmp_path / 'file'
  blocker.write_text('a file, not a folder')
  with pytest.raises(cli.UserError, match='cannot write'):
    synthetic.generate(str(blocker / 'out'), 2, workers=1)


def test_command_line(tmp_path, run_module):
  done = run_module('posternet.synthetic', f'--out={tmp_path}',
                    '--num_posters=3', '--workers=1', '--duplicate_rows=1')
  assert done.returncode == 0, done.stderr
  assert re.search(r'wrote 3 posters .* in [\d.]+ s .*' +
                   re.escape(synthetic.CSV_NAME), done.stdout)
  assert len(_read_csv(tmp_path / synthetic.CSV_NAME)[1]) == 4
  bad = run_module('posternet.synthetic', f'--out={tmp_path}',
                   '--num_posters=0')
  assert bad.returncode == cli.EXIT_USER_ERROR
  assert bad.stderr.strip().splitlines() == [
      'error: --num_posters must be at least 1, not 0']
  stray = run_module('posternet.synthetic', f'--out={tmp_path}', 'extra')
  assert stray.returncode != 0 and 'unexpected arguments' in stray.stderr


def test_a_killed_run_leaves_no_half_written_poster(tmp_path, run_module):
  run = run_module('posternet.synthetic', f'--out={tmp_path}',
                   '--num_posters=5000', '--workers=1', start=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  images = tmp_path / 'Images'
  deadline = time.monotonic() + 30
  while time.monotonic() < deadline and (
      not images.is_dir() or len(os.listdir(images)) < 20):
    time.sleep(0.05)
  run.send_signal(signal.SIGKILL)
  run.wait()
  assert not (tmp_path / synthetic.CSV_NAME).exists()  # Written last.
  posters = [n for n in os.listdir(images) if n.endswith('.jpg')]
  assert len(posters) >= 20
  for name in posters:
    with Image.open(images / name) as image:
      image.load()  # Raises on a truncated file.
