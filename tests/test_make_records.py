"""The converter: the tutorial's split, round trip, determinism, resume, verify
and every kind of bad input.

Real TensorFlow, real files, real processes (for exit codes and kill -9).
Budget: the whole file in about a minute on 2 shared cores.
"""

import collections
import hashlib
import math
import os
import signal
import time

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

import bad_inputs
from posternet import cli
from posternet.data import convert
from posternet.data import csv_rows
from posternet import genres
from posternet.data import images
from posternet.data import poster_files
from posternet.data import records
from posternet.data import shard_plan
from posternet.data import staging
from posternet.data import verify
# ------------------------------------------------------------------ helpers


def _labels(index: int) -> list:
  """One to three genres per poster, varied, never none."""
  row = [0] * genres.NUM_GENRES
  for k in range(1 + index % 3):
    row[(index * 7 + k * 5) % genres.NUM_GENRES] = 1
  return row


def write_dataset(root, files: dict, rows=None, *, extra_files=None) -> tuple:
  """Writes root/multi_label_train.csv and root/Images/<Id>.jpg.

  Args:
    root: a pathlib folder.
    files: {Id: bytes} written as Images/<Id>.jpg (None: no file).
    rows: CSV rows [Id, Genre, 25 labels]; default one per file, in order.
    extra_files: {name: bytes} put in Images/ but not in the CSV.

  Returns:
    (csv_path, images_dir) as strings.
  """
  image_dir = root / 'Images'
  image_dir.mkdir(parents=True, exist_ok=True)
  for poster_id, data in files.items():
    if data is not None:
      (image_dir / f'{poster_id}.jpg').write_bytes(data)
  for name, data in (extra_files or {}).items():
    (image_dir / name).write_bytes(data)
  if rows is None:
    rows = [csv_row(poster_id, _labels(i)) for i, poster_id in enumerate(files)]
  csv_path = root / 'multi_label_train.csv'
  pd.DataFrame(rows, columns=genres.CSV_COLUMNS).to_csv(csv_path, index=False)
  return str(csv_path), str(image_dir)


def csv_row(poster_id: str, labels: list) -> list:
  return [poster_id, genres.genre_string(genres.names_of(labels))] + labels


def jpeg_set(count: int, start: int = 0) -> dict:
  return {f'tt{i:07d}': bad_inputs.rgb_jpeg(i)
          for i in range(start, start + count)}


def read_records(out_dir: str, split: str) -> list:
  """Every record of a split, in shard order, as dicts of numpy values."""
  paths = records.Manifest.read(out_dir).shard_paths(split)
  result = []
  for serialized in tf.data.TFRecordDataset(paths):
    parsed = records.parse_examples(tf.reshape(serialized, [1]))
    result.append({key: value.numpy()[0] for key, value in parsed.items()})
  return result


def folder_bytes(folder) -> dict:
  return {name: (folder / name).read_bytes()
          for name in sorted(os.listdir(folder))
          if not (folder / name).is_dir()}


def _converter(run_module, *args):
  """`python -m tools.make_records --noprogress ARGS`, started."""
  return run_module('tools.make_records', '--noprogress', *args, start=True)


@pytest.fixture(scope='module')
def synthetic_set(tmp_path_factory):
  """40 synthetic posters, tutorial format, 2 duplicate rows, 3 extra images."""
  # Imported here: posternet.synthetic defines absl flags at import.
  from posternet.data import synthetic  # pylint: disable=g-import-not-at-top
  root = tmp_path_factory.mktemp('synthetic')
  csv_path = synthetic.generate(str(root), 40, seed=3, duplicate_rows=2,
                                extra_images=3, workers=1)
  return csv_path, os.path.join(str(root), 'Images')


@pytest.fixture(scope='module')
def converted(synthetic_set, tmp_path_factory):
  out = tmp_path_factory.mktemp('records')
  summary = convert.convert(*synthetic_set, str(out), workers=2,
                                 progress=False)
  return out, summary


# -------------------------------------------------------------------- split


def sklearn_recipe(n: int, test_size: float, random_state: int) -> tuple:
  """train_test_split(range(n), test_size, random_state), as in scikit-learn.

  ShuffleSplit: n_test = ceil(test_size * n), n_train = n - n_test,
  permutation = RandomState(random_state).permutation(n), test first.
  """
  n_test = math.ceil(test_size * n)
  n_train = n - n_test
  permutation = np.random.RandomState(random_state).permutation(n)
  return permutation[n_test:n_test + n_train], permutation[:n_test]


@pytest.mark.parametrize('n,fraction,seed', [
    (7254, 0.1, 42), (101, 0.1, 42), (10, 0.25, 0), (3, 0.5, 7)])
def test_split_is_the_tutorials(n, fraction, seed):
  train, val = csv_rows.tutorial_split(n, fraction, seed)
  expected_train, expected_val = sklearn_recipe(n, fraction, seed)
  np.testing.assert_array_equal(train, expected_train)
  np.testing.assert_array_equal(val, expected_val)
  assert sorted(np.concatenate([train, val])) == list(range(n))


def test_split_known_values():
  # train_test_split(range(10), test_size=0.1, random_state=42) in sklearn.
  train, val = csv_rows.tutorial_split(10)
  assert val.tolist() == [8]
  assert train.tolist() == [1, 5, 0, 7, 2, 9, 4, 3, 6]
  assert len(csv_rows.tutorial_split(7254)[1]) == 726


def test_records_follow_the_split_and_duplicates(tmp_path):
  files = jpeg_set(30)
  ids = list(files)
  rows = [csv_row(poster_id, _labels(i)) for i, poster_id in enumerate(ids)]
  rows.insert(5, rows[20])   # a repeat of a later row: its first row decides
  rows.append(rows[0])
  csv_path, image_dir = write_dataset(tmp_path, files, rows)
  out = str(tmp_path / 'out')
  summary = convert.convert(csv_path, image_dir, out, progress=False)

  row_ids = [row[0] for row in rows]
  first = [row_ids.index(poster_id) == i for i, poster_id in enumerate(row_ids)]
  train, val = sklearn_recipe(len(rows), 0.1, 42)
  for split, indices in (('train', train), ('val', val)):
    expected = [row_ids[i] for i in indices if first[i]]
    got = [r[records.ID_KEY].decode() for r in read_records(out, split)]
    assert got == expected
  assert summary['duplicate_rows'] == 2
  assert summary['train'] + summary['val'] == 30


# --------------------------------------------------------------- round trip


def test_round_trip_of_synthetic_posters(synthetic_set, converted):
  csv_path, image_dir = synthetic_set
  out, summary = converted
  table = pd.read_csv(csv_path, dtype={'Id': str})
  labels_by_id = {row[0]: np.array(row[2:], np.float32)
                  for row in table.itertuples(index=False)}
  seen = []
  for split in records.SPLITS:
    for record in read_records(str(out), split):
      poster_id = record[records.ID_KEY].decode()
      seen.append(poster_id)
      source = open(os.path.join(image_dir, poster_id + '.jpg'), 'rb').read()
      assert record[records.IMAGE_KEY] == source  # baseline JPEGs pass through
      pixels = tf.io.decode_jpeg(record[records.IMAGE_KEY], channels=3)
      np.testing.assert_array_equal(
          pixels, tf.io.decode_image(source, channels=3))
      assert tuple(pixels.shape[:2]) == (record[records.HEIGHT_KEY],
                                         record[records.WIDTH_KEY])
      np.testing.assert_array_equal(record[records.LABELS_KEY],
                                    labels_by_id[poster_id])
  assert sorted(seen) == sorted(labels_by_id)

  manifest = records.Manifest.read(str(out))
  assert manifest.source == records.Source(
      csv='multi_label_train.csv',
      csv_sha256=hashlib.sha256(open(csv_path, 'rb').read()).hexdigest(),
      csv_rows=42, unique_ids=40, duplicate_rows=2, unlisted_images=3)
  assert manifest.split_rule == records.SplitRule(
      seed=42, val_fraction=0.1, method=records.SPLIT_METHOD)
  assert manifest.store_size is None
  assert manifest.skipped == records.Skipped(
      count=0, by_reason={r: 0 for r in poster_files.REASONS}, report=None)
  for split in records.SPLITS:
    info = manifest.split_info(split)
    assert info.num_examples == summary[split]
    for shard in info.shards:
      data = (out / shard.file).read_bytes()
      assert shard.bytes == len(data)
      assert shard.sha256 == hashlib.sha256(data).hexdigest()
  assert summary['train'] + summary['val'] == 40
  assert sorted(os.listdir(out)) == [
      'manifest.json', 'train-00000-of-00001.tfrecord',
      'val-00000-of-00001.tfrecord']


def test_odd_formats_are_reencoded_and_gray_jpegs_pass_through(tmp_path):
  files = jpeg_set(8)
  odd = {f'tt1{i:06d}': make(i) for i, make in
         enumerate(bad_inputs.REENCODED.values())}
  gray = {'tt2000000': bad_inputs.gray_jpeg(1)}
  csv_path, image_dir = write_dataset(tmp_path, {**files, **odd, **gray})
  out = str(tmp_path / 'out')
  convert.convert(csv_path, image_dir, out, val_fraction=0.5,
                       progress=False)
  stored = {r[records.ID_KEY].decode(): r for split in records.SPLITS
            for r in read_records(out, split)}
  assert len(stored) == 16
  for poster_id, source in {**files, **gray}.items():
    assert stored[poster_id][records.IMAGE_KEY] == source
  for poster_id, source in odd.items():
    data = stored[poster_id][records.IMAGE_KEY]
    assert data != source and data.startswith(b'\xff\xd8')
    got = tf.io.decode_jpeg(data, channels=3).numpy().astype(int)
    want = images.decode_rgb(source).numpy().astype(int)
    assert got.shape == want.shape
    assert np.abs(got - want).mean() < 6, poster_id  # JPEG q95, 4:2:0 chroma


def test_store_size_resizes_every_poster(tmp_path):
  files = {**jpeg_set(6), 'tt9000000': bad_inputs.png(9)}
  csv_path, image_dir = write_dataset(tmp_path, files)
  out = str(tmp_path / 'out')
  convert.convert(csv_path, image_dir, out, store_size=(20, 16),
                       val_fraction=0.3, progress=False)
  manifest = records.Manifest.read(out)
  assert manifest.store_size == (20, 16)
  for split in records.SPLITS:
    info = manifest.split_info(split)
    assert (info.min_height, info.max_height) == (20, 20)
    assert (info.min_width, info.max_width) == (16, 16)
    for record in read_records(out, split):
      got = tf.io.decode_jpeg(record[records.IMAGE_KEY], channels=3)
      source = files[record[records.ID_KEY].decode()]
      want = images.resize_uint8(images.decode_rgb(source), (20, 16))
      assert got.shape == (20, 16, 3)
      assert np.abs(got.numpy().astype(int) - want.numpy()).mean() < 4
  assert verify.verify(out) == []


# ------------------------------------------------- determinism and sharding


def test_output_is_byte_identical_whatever_the_workers(synthetic_set, converted,
                                                       tmp_path):
  out, _ = converted
  convert.convert(*synthetic_set, str(tmp_path), workers=1,
                       progress=False)
  assert folder_bytes(tmp_path) == folder_bytes(out)


@pytest.mark.parametrize('n,bytes_,split,expected', [
    (6529, 240e6, 'train', 16), (725, 26e6, 'val', 2), (36, 1e6, 'train', 1),
    (100, 1e6, 'train', 1), (1000, 40e6, 'train', 7),
    (1_000_000, 100e9, 'train', 752), (40, 1e9, 'train', 8),
    (2, 1e9, 'val', 2)])
def test_shard_rule(n, bytes_, split, expected):
  count = shard_plan.num_shards(n, int(bytes_), split, 1)
  assert count == expected
  assert int(bytes_) / count <= shard_plan.MAX_SHARD_BYTES or count == n


@pytest.mark.parametrize('n,split,min_shards,expected', [
    (360, 'train', 4, 4), (40, 'val', 2, 2), (3, 'val', 5, 3),
    (6529, 'train', 4, 16)])
def test_min_shards_raises_the_count_for_small_sets(n, split, min_shards,
                                                   expected):
  assert shard_plan.num_shards(n, int(1e6), split, min_shards) == expected


def test_min_shards_flag_gives_every_split_enough_shards(synthetic_set,
                                                         tmp_path, run_module):
  csv_path, image_dir = synthetic_set
  process = _converter(run_module, f'--csv={csv_path}',
                       f'--images={image_dir}', f'--out={tmp_path}',
                       '--min_shards=3')
  _, stderr = process.communicate(timeout=120)
  assert process.returncode == 0, stderr
  manifest = records.Manifest.read(str(tmp_path))
  for split in records.SPLITS:
    assert len(manifest.split_info(split).shards) == 3
  bad = _converter(run_module, f'--csv={csv_path}', f'--images={image_dir}',
                   f'--out={tmp_path / "bad"}', '--min_shards=0')
  _, stderr = bad.communicate(timeout=120)
  assert bad.returncode != 0 and '--min_shards must be at least 1, not 0' in stderr


def test_bad_store_size_is_a_one_line_error(synthetic_set, tmp_path,
                                            run_module):
  csv_path, image_dir = synthetic_set
  process = _converter(run_module, f'--csv={csv_path}',
                       f'--images={image_dir}', f'--out={tmp_path}',
                       '--store_size=big')
  _, stderr = process.communicate(timeout=120)
  assert process.returncode == 2
  assert stderr.strip().splitlines()[-1].startswith('error: --store_size=big')


# ------------------------------------------------------------------- resume


def _slow_dataset(root, count: int) -> tuple:
  """count posters of 300x440 (20 distinct files, repeated): with --store_size
  each needs a decode, a resize and an encode, so a run takes a few seconds."""
  distinct = [bad_inputs.rgb_jpeg(i, height=440, width=300) for i in range(20)]
  files = {f'tt{i:07d}': distinct[i % 20] for i in range(count)}
  return write_dataset(root, files)


def test_resume_after_kill_equals_an_uninterrupted_run(tmp_path, run_module):
  csv_path, image_dir = _slow_dataset(tmp_path / 'data', 480)
  killed, whole = tmp_path / 'killed', tmp_path / 'whole'
  process = _converter(run_module, f'--csv={csv_path}',
                       f'--images={image_dir}', f'--out={killed}',
                       '--store_size=256x256', '--workers=1')
  state = killed / staging.STATE_DIR
  deadline = time.monotonic() + 60
  while time.monotonic() < deadline and process.poll() is None:
    if state.is_dir() and len(list(state.glob('*.tfrecord.json'))) >= 2:
      break
    time.sleep(0.005)
  process.send_signal(signal.SIGKILL)
  process.wait()
  assert process.returncode == -signal.SIGKILL, 'finished before the kill'
  assert not (killed / records.MANIFEST_NAME).exists()

  summary = convert.convert(csv_path, image_dir, str(killed),
                                 store_size=(256, 256), progress=False)
  assert summary['shards_reused'] >= 2
  convert.convert(csv_path, image_dir, str(whole), store_size=(256, 256),
                       progress=False)
  assert folder_bytes(killed) == folder_bytes(whole)
  assert not (killed / staging.STATE_DIR).exists()
  assert summary['shards'] == {'train': 3, 'val': 1}


def test_other_flags_start_afresh(tmp_path):
  csv_path, image_dir = write_dataset(tmp_path, jpeg_set(12))
  out = tmp_path / 'out'
  convert.convert(csv_path, image_dir, str(out), progress=False)
  (out / 'train-00000-of-00009.tfrecord').write_bytes(b'stale')  # ours: goes
  (out / 'notes.txt').write_bytes(b'the user\'s')
  convert.convert(csv_path, image_dir, str(out), val_fraction=0.5,
                       progress=False)
  assert records.Manifest.read(str(out)).num_examples('val') == 6
  assert sorted(os.listdir(out)) == [
      'manifest.json', 'notes.txt', 'train-00000-of-00001.tfrecord',
      'val-00000-of-00001.tfrecord']


# ------------------------------------------------------------------- verify


def _record_offset(data: bytes, index: int) -> int:
  """Where record `index`'s payload starts in TFRecord bytes."""
  offset = 0
  for _ in range(index):
    length = int.from_bytes(data[offset:offset + 8], 'little')
    offset += 12 + length + 4
  return offset + 12


def test_verify_passes_then_catches_a_flipped_byte(converted, tmp_path):
  out, _ = converted
  copy = tmp_path / 'copy'
  copy.mkdir()
  for name, data in folder_bytes(out).items():
    (copy / name).write_bytes(data)
  assert verify.verify(str(copy)) == []

  manifest = records.Manifest.read(str(copy))
  name = manifest.split_info('train').shards[0].file
  data = bytearray((copy / name).read_bytes())
  position = _record_offset(bytes(data), 3) + 200
  data[position] ^= 0x40
  (copy / name).write_bytes(bytes(data))
  problems = verify.verify(str(copy))
  assert any(p.startswith(f'{name}: sha256') for p in problems), problems
  assert any(p.startswith(f'{name} record 3:') for p in problems), problems


def test_verify_catches_a_missing_shard_and_count(converted, tmp_path):
  out, _ = converted
  copy = tmp_path / 'copy'
  copy.mkdir()
  for name, data in folder_bytes(out).items():
    if not name.startswith('val-'):
      (copy / name).write_bytes(data)
  problems = verify.verify(str(copy))
  assert problems == ['val-00000-of-00001.tfrecord: missing']
  with pytest.raises(cli.UserError, match='absent does not exist'):
    verify.verify(str(tmp_path / 'absent'))


# ---------------------------------------------------------------- bad input


def _header_without(name):
  return [c for c in genres.CSV_COLUMNS if c != name]


CSV_CASES = {
    # name: (CSV text builder, expected message part)
    'empty': (lambda rows: '', 'is empty'),
    'header only': (lambda rows: ','.join(genres.CSV_COLUMNS) + '\n',
                    'no rows'),
    'missing column': (
        lambda rows: _csv_text(_header_without('Western'),
                               [r[:-1] for r in rows]),
        "missing column(s) 'Western'"),
    'extra column': (
        lambda rows: _csv_text(list(genres.CSV_COLUMNS) + ['Extra'],
                               [r + [0] for r in rows]),
        "unknown column(s) 'Extra'"),
    'misnamed column': (
        lambda rows: _csv_text([c if c != 'Sport' else 'Sprot'
                                for c in genres.CSV_COLUMNS], rows),
        "missing column(s) 'Sport'; unknown column(s) 'Sprot'"),
    'label 2': (lambda rows: _csv_text(genres.CSV_COLUMNS,
                                       _set(rows, 2, 'Drama', 2)),
                "line 4 (Id 'tt0000002'): column 'Drama' is '2'"),
    'label NaN': (lambda rows: _csv_text(genres.CSV_COLUMNS,
                                         _set(rows, 1, 'War', 'NaN')),
                  "line 3 (Id 'tt0000001'): column 'War' is 'NaN'"),
    'label empty': (lambda rows: _csv_text(genres.CSV_COLUMNS,
                                           _set(rows, 1, 'War', '')),
                    "line 3 (Id 'tt0000001'): column 'War' is ''"),
    'no genre': (lambda rows: _csv_text(genres.CSV_COLUMNS,
                                        [rows[0], rows[1][:2] + [0] * 25]),
                 "line 3 (Id 'tt0000001') has no genre"),
    'same Id other labels': (
        lambda rows: _csv_text(genres.CSV_COLUMNS,
                               rows + [_with_genre(rows[0], 'War')]),
        "Id 'tt0000000' on line 5 has other labels than on line 2"),
    'Id ../x': (lambda rows: _csv_text(genres.CSV_COLUMNS,
                                       _set(rows, 1, 'Id', '../secret')),
                "line 3: Id '../secret' is not a plain file name"),
    'Id /etc/x': (lambda rows: _csv_text(genres.CSV_COLUMNS,
                                         _set(rows, 1, 'Id', '/etc/passwd')),
                  "line 3: Id '/etc/passwd' is not a plain file name"),
    'Id empty': (lambda rows: _csv_text(genres.CSV_COLUMNS,
                                        _set(rows, 2, 'Id', '')),
                 "line 4: Id '' is not a plain file name"),
}


def _csv_text(header, rows) -> str:
  return pd.DataFrame(rows, columns=list(header)).to_csv(index=False)


def _with_genre(row, genre) -> list:
  """The row with one more genre, in its columns and its Genre cell."""
  labels = list(row[2:])
  labels[genres.GENRES.index(genre)] = 1
  return csv_row(row[0], labels)


def _set(rows, index, column, value) -> list:
  rows = [list(r) for r in rows]
  rows[index][list(genres.CSV_COLUMNS).index(column)] = value
  return rows


@pytest.mark.parametrize('case', sorted(CSV_CASES))
def test_bad_csv_is_one_clear_error(case, tmp_path):
  files = jpeg_set(3)
  csv_path, image_dir = write_dataset(tmp_path, files)
  (tmp_path / 'secret.jpg').write_bytes(bad_inputs.rgb_jpeg(5))  # ../secret
  rows = [csv_row(poster_id, _labels(i)) for i, poster_id in enumerate(files)]
  build, message = CSV_CASES[case]
  with open(csv_path, 'w') as f:
    f.write(build(rows))
  out = tmp_path / 'out'
  with pytest.raises(cli.UserError) as error:
    convert.convert(csv_path, image_dir, str(out), progress=False)
  assert message in str(error.value)
  assert csv_path in str(error.value)
  assert '\n' not in str(error.value)
  assert not out.exists()  # nothing written before the CSV is known good


def test_missing_csv_and_images_folder(tmp_path):
  csv_path, image_dir = write_dataset(tmp_path, jpeg_set(3))
  with pytest.raises(cli.UserError, match='CSV file .*absent.csv not found'):
    convert.convert(str(tmp_path / 'absent.csv'), image_dir,
                         str(tmp_path / 'out'), progress=False)
  with pytest.raises(cli.UserError, match='images folder .*nowhere not found'):
    convert.convert(csv_path, str(tmp_path / 'nowhere'),
                         str(tmp_path / 'out'), progress=False)


def test_header_names_are_compared_without_spaces(tmp_path):
  files = jpeg_set(4)
  csv_path, image_dir = write_dataset(tmp_path, files)
  text = open(csv_path).read().replace(',Sport,', ', Sport ,', 1)
  assert ' Sport ' in text
  open(csv_path, 'w').write(text)
  summary = convert.convert(csv_path, image_dir, str(tmp_path / 'out'),
                                 val_fraction=0.25, progress=False)
  assert summary['train'] + summary['val'] == 4


BAD_IMAGES = {
    # Id suffix: (bytes or None for no file, reason)
    'missing': (None, 'missing image'),
    'empty': (b'', 'empty image'),
    'truncated': (bad_inputs.truncated_jpeg(), 'truncated or corrupt image'),
    'cut_header': (bad_inputs.rgb_jpeg()[:40], 'truncated or corrupt image'),
    'text': (bad_inputs.text_file(), 'not an image'),
    'bomb': (bad_inputs.huge_png_header(8000, 6000), 'too large'),  # ours
    'huge': (bad_inputs.huge_png_header(30000, 30000), 'too large'),  # Pillow's
    'tiff': (bad_inputs.tiff(), 'unsupported format'),
}


@pytest.mark.parametrize('kind', sorted(BAD_IMAGES))
def test_bad_image_is_one_clear_error(kind, tmp_path):
  data, reason = BAD_IMAGES[kind]
  files = {**jpeg_set(4), 'ttbad': data}
  csv_path, image_dir = write_dataset(tmp_path, files)
  with pytest.raises(cli.UserError) as error:
    convert.convert(csv_path, image_dir, str(tmp_path / 'out'),
                         progress=False)
  message = str(error.value)
  assert message.startswith(os.path.join(image_dir, 'ttbad.jpg') +
                            ' (line 6, Id ttbad): ' + reason), message
  assert '--skip_bad_images' in message and '\n' not in message


def test_skip_bad_images_counts_and_lists_them(tmp_path):
  bad = {f'ttbad{kind}': data for kind, (data, _) in BAD_IMAGES.items()}
  files = {**jpeg_set(30), **bad}
  csv_path, image_dir = write_dataset(tmp_path, files)
  out = tmp_path / 'out'
  summary = convert.convert(csv_path, image_dir, str(out),
                                 skip_bad_images=True, val_fraction=0.3,
                                 progress=False)
  assert summary['train'] + summary['val'] == 30
  assert summary['skipped'] == len(BAD_IMAGES)
  manifest = records.Manifest.read(str(out))
  reasons = collections.Counter(reason for _, reason in BAD_IMAGES.values())
  assert manifest.skipped == records.Skipped(
      count=len(BAD_IMAGES), report='skipped.csv',
      by_reason={r: reasons[r] for r in poster_files.REASONS})
  report = pd.read_csv(out / 'skipped.csv', dtype=str, keep_default_na=False)
  assert list(report.columns) == ['line', 'Id', 'file', 'reason', 'detail']
  assert sorted(zip(report['Id'], report['reason'])) == sorted(
      (f'ttbad{kind}', reason) for kind, (_, reason) in BAD_IMAGES.items())
  source = manifest.source
  assert source.csv_rows == (summary['train'] + summary['val']
                             + manifest.skipped.count + source.duplicate_rows)
  assert verify.verify(str(out)) == []


def test_unwritable_output_folder(tmp_path):
  csv_path, image_dir = write_dataset(tmp_path, jpeg_set(3))
  blocker = tmp_path / 'a_file'
  blocker.write_bytes(b'')
  with pytest.raises(cli.UserError, match='cannot write to .*a_file/out'):
    convert.convert(csv_path, image_dir, str(blocker / 'out'),
                         progress=False)


# ------------------------------------------------------ the command, for real


def test_command_exit_codes_and_one_line_errors(converted, tmp_path,
                                                run_module):
  """Real processes: exit 0 when all is well; 2 and one line on bad input.

  (The other bad inputs raise the same cli.UserError, tested in-process.)
  """
  out, _ = converted
  write_dataset(tmp_path / 'data',
                {**jpeg_set(5), 'ttbad': bad_inputs.truncated_jpeg()})
  os.rename(tmp_path / 'data' / 'multi_label_train.csv',
            tmp_path / 'data' / 'train.csv')  # the archive's name
  (tmp_path / 'flags.cfg').write_text(
      f'--data_dir={tmp_path / "data"}\n--out={tmp_path / "ok"}\n'
      '--skip_bad_images\n--val_fraction=0.2\n')
  corrupt = tmp_path / 'corrupt'
  corrupt.mkdir()
  for name, data in folder_bytes(out).items():
    if name.startswith('val-'):
      data = data[:-3] + bytes([data[-3] ^ 1]) + data[-2:]
    (corrupt / name).write_bytes(data)
  cases = {
      'flagfile': ([f'--flagfile={tmp_path / "flags.cfg"}'], 0,
                   'skipped 1 poster(s): 1 truncated or corrupt image'),
      'bad image': ([f'--data_dir={tmp_path / "data"}',
                     f'--out={tmp_path / "bad"}'], 2,
                    str(tmp_path / 'data' / 'Images' / 'ttbad.jpg')),
      'verify corrupt': ([f'--verify={corrupt}'], 2, 'problem(s) in'),
  }
  processes = {name: _converter(run_module, *args)
               for name, (args, _, _) in cases.items()}
  outputs = {}
  for name, process in processes.items():
    stdout, stderr = outputs[name] = process.communicate(timeout=120)
    _, code, text = cases[name]
    assert process.returncode == code, (name, stdout, stderr)
    assert 'Traceback' not in stderr, (name, stderr)
    if code:
      last = stderr.strip().splitlines()[-1]
      assert last.startswith('error: ') and text in last, (name, stderr)
    else:
      assert text in stdout, (name, stdout)
  assert 'val-00000-of-00001.tfrecord record' in outputs['verify corrupt'][0]
  manifest = records.Manifest.read(str(tmp_path / 'ok'))
  assert manifest.source.csv == 'train.csv'
  assert sum(manifest.num_examples(s) for s in records.SPLITS) == 5


def test_a_split_with_every_poster_skipped_is_an_error(tmp_path):
  files = {**jpeg_set(9), 'ttempty': b''}
  rows = [csv_row(poster_id, _labels(i)) for i, poster_id in enumerate(files)]
  # The tutorial split of 10 rows puts row 8 alone in val: make it the bad one.
  assert csv_rows.tutorial_split(10)[1].tolist() == [8]
  rows[8], rows[9] = rows[9], rows[8]
  csv_path, image_dir = write_dataset(tmp_path, files, rows)
  out = tmp_path / 'out'
  with pytest.raises(cli.UserError, match='every poster of the val split was '
                     'skipped; see .*skipped.csv'):
    convert.convert(csv_path, image_dir, str(out), skip_bad_images=True,
                         progress=False)
  assert 'ttempty' in (out / staging.STATE_DIR / 'skipped.csv').read_text()
  assert not (out / records.MANIFEST_NAME).exists()
