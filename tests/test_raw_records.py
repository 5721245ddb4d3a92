"""Raw-pixel records, TFRecord compression and the no-upscale store rule.

The converter, the pipeline and --verify on real files: raw records give the
very pixels the converter decoded; a raw record of the wrong length or shape
is one line naming it; the manifest's store format and compression are what
the readers follow; a poster is never stored larger than it is; a raw
conversion that would not fit on the disk is refused before it writes.
"""

import dataclasses
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

import bad_inputs
import record_fixtures
from posternet import cli
from posternet.data import convert
from posternet.data import decode_ops
from posternet.data import images
from posternet.data import input_errors
from posternet.data import pipeline
from posternet.data import records
from posternet.data import verify
from test_make_records import write_dataset  # the tutorial's CSV + Images/

# Poster sizes (height, width) around a store size of 48x40: taller and
# wider, smaller on one side, smaller on both.
SOURCE_SIZES = ((60, 44), (30, 52), (44, 32), (48, 40), (72, 60), (36, 24))
STORE = (48, 40)


@pytest.fixture(scope='module')
def posters(tmp_path_factory):
  """(csv, Images/, {Id: source bytes}) of posters of SOURCE_SIZES, x2."""
  files = {f'tt{i:07d}': bad_inputs.rgb_jpeg(
      i, *SOURCE_SIZES[i % len(SOURCE_SIZES)]) for i in range(12)}
  csv_path, images_dir = write_dataset(tmp_path_factory.mktemp('posters'),
                                       files)
  return csv_path, images_dir, files


@pytest.fixture(scope='module')
def raw_records(posters, tmp_path_factory) -> records.Manifest:
  out = str(tmp_path_factory.mktemp('raw'))
  convert.convert(posters[0], posters[1], out, store_size=STORE,
                  store_format='raw', val_fraction=0.25, progress=False)
  return records.Manifest.read(out)


def converted_pixels(source: bytes, store_size) -> np.ndarray:
  """What the converter decodes a poster to: its pixels at the stored size."""
  image = images.decode_jpeg(source)
  hw = tuple(image.shape[:2])
  stored = tuple(min(s, t) for s, t in zip(hw, store_size))
  return (images.resize_uint8(image, stored) if stored != hw
          else image).numpy()


def by_id(dataset) -> dict:
  found = {}
  for batch in dataset:
    found.update(zip(batch[pipeline.ID].numpy().tolist(),
                     batch[pipeline.IMAGE].numpy()))
  return found


def test_raw_round_trip_gives_the_pixels_decoded_at_conversion(
    posters, raw_records):
  _, _, files = posters
  assert raw_records.store_format == 'raw'
  assert verify.check(raw_records) == []
  # Stored no larger than the poster, so the sizes vary: per-poster reshape.
  assert raw_records.stored_size_range('train') != (STORE, STORE)
  for options in ({}, {'cache': True}):
    for split in records.SPLITS:
      got = by_id(pipeline.make_dataset(
          raw_records, split, 4, STORE, training=False,
          **options))
      assert len(got) == raw_records.num_examples(split)
      for poster_id, image in got.items():
        stored = converted_pixels(files[poster_id.decode()], STORE)
        if stored.shape[:2] != STORE:
          stored = images.resize_uint8(stored, STORE).numpy()
        np.testing.assert_array_equal(image, stored)


def test_padded_raw_records_are_read_as_their_box(raw_records):
  # Records of one length (the store box): the device path reads a batch
  # with one decode_raw and reshape, and carries each poster's size.
  assert raw_records.raw_box == STORE
  records_by_id = {r[records.ID_KEY]: r
                   for r in record_fixtures.read_split(raw_records, 'val')}
  dataset = pipeline.make_dataset(raw_records, 'val', 4, STORE,
                                  pad_to_box=True)
  assert dataset.element_spec[pipeline.IMAGE].shape[1:] == STORE + (3,)
  seen = 0
  for batch in dataset.as_numpy_iterator():
    for poster_id, box, size in zip(batch[pipeline.ID], batch[pipeline.IMAGE],
                                    batch[pipeline.SIZE]):
      record = records_by_id[poster_id]
      assert tuple(size) == (record[records.HEIGHT_KEY],
                             record[records.WIDTH_KEY])
      assert box.tobytes() == record[records.IMAGE_KEY]
      seen += 1
  assert seen == raw_records.num_examples('val')


def test_raw_posters_of_one_size_in_a_larger_box(tmp_path):
  # Every poster 40x30, the store box 64x48: cut out of it on the host,
  # read as the box on the device.
  same = {f'tt000000{i}': bad_inputs.rgb_jpeg(i, 40, 30) for i in range(1, 5)}
  csv_path, images_dir = write_dataset(tmp_path / 'data', same)
  convert.convert(csv_path, images_dir, str(tmp_path / 'raw'),
                  store_size=(64, 48), store_format='raw', val_fraction=0.5,
                  progress=False)
  manifest = records.Manifest.read(str(tmp_path / 'raw'))
  assert manifest.stored_size_range('train') == ((40, 30), (40, 30))
  assert manifest.raw_box == (64, 48)
  host = by_id(pipeline.make_dataset(manifest, 'train', 2, (40, 30),
                                     training=False))
  device = pipeline.make_dataset(manifest, 'train', 2, (40, 30),
                                 training=False, pad_to_box=True)
  for batch in device.as_numpy_iterator():
    for poster_id, box in zip(batch[pipeline.ID], batch[pipeline.IMAGE]):
      np.testing.assert_array_equal(box[:40, :30], host[poster_id])
      np.testing.assert_array_equal(
          host[poster_id], converted_pixels(same[poster_id.decode()],
                                            (64, 48)))


def test_raw_records_of_one_size_are_one_reshape(posters, tmp_path):
  csv_path, images_dir, files = posters
  convert.convert(csv_path, images_dir, str(tmp_path), store_size=(24, 20),
                  store_format='raw', val_fraction=0.25, progress=False)
  manifest = records.Manifest.read(str(tmp_path))
  plan = decode_ops.decode_plan(manifest.stored_size_range('train'),
                                (24, 20), 'raw')
  assert plan == {'format': 'raw', 'stored_hw': (24, 20), 'ratio': None,
                  'decoded_hw': (24, 20)}
  for size in ((24, 20), (16, 16)):  # as stored, then resized
    got = by_id(pipeline.make_dataset(manifest, 'train', 3, size,
                                            training=False))
    for poster_id, image in got.items():
      want = converted_pixels(files[poster_id.decode()], (24, 20))
      if size != (24, 20):
        want = images.resize_uint8(want, size).numpy()
      np.testing.assert_array_equal(image, want)


def test_a_poster_is_never_stored_larger_than_it_is(tmp_path, run_module):
  # The case: a 300x444 poster with --store_size=400x400.
  big, small = bad_inputs.rgb_jpeg(1, 444, 300), bad_inputs.rgb_jpeg(2, 200,
                                                                    150)
  csv_path, images_dir = write_dataset(tmp_path / 'data', {
      'tt0000001': big, 'tt0000002': small, 'tt0000003': big})
  for store_format in ('jpeg', 'raw'):
    out = tmp_path / store_format
    result = run_module('tools.make_records', '--noprogress',
                        f'--csv={csv_path}', f'--images={images_dir}',
                        f'--out={out}', '--store_size=400x400',
                        f'--store_format={store_format}',
                        '--val_fraction=0.34')
    assert result.returncode == 0, result.stderr
    assert f'stored as {store_format}' in result.stdout
    manifest = records.Manifest.read(str(out))
    examples = {r[records.ID_KEY]: r for split in records.SPLITS
                for r in record_fixtures.read_split(manifest, split)}
    for poster_id, source, stored in ((b'tt0000001', big, (400, 300)),
                                      (b'tt0000002', small, (200, 150))):
      record = examples[poster_id]
      hw = (int(record[records.HEIGHT_KEY]), int(record[records.WIDTH_KEY]))
      assert hw == stored  # at most its own pixels, on each side
      data = record[records.IMAGE_KEY]
      if store_format == 'raw':
        # Every raw record is the store box, the poster in its corner.
        assert manifest.raw_box == (400, 400)
        box = np.frombuffer(data, np.uint8).reshape(400, 400, 3)
        np.testing.assert_array_equal(box[:stored[0], :stored[1]],
                                      converted_pixels(source, (400, 400)))
        assert not box[stored[0]:].any() and not box[:, stored[1]:].any()
      elif poster_id == b'tt0000002':
        assert data == small  # within the store size: the original bytes
    assert verify.check(manifest) == []


def _rewrite_record(manifest: records.Manifest, index: int, **changes):
  """Rewrites train record `index` with changed fields; fixes the manifest.

  The shard's size and checksum are listed anew, so only the record itself
  is wrong. Returns the shard's file name.
  """
  path = manifest.shard_paths('train')[0]
  rows = record_fixtures.read_split(manifest, 'train')
  shard = manifest.split_info('train').shards[0]
  with tf.io.TFRecordWriter(path, manifest.tfrecord_compression) as writer:
    for i, row in enumerate(rows[:shard.num_examples]):
      fields = {'image_bytes': row[records.IMAGE_KEY],
                'height': int(row[records.HEIGHT_KEY]),
                'width': int(row[records.WIDTH_KEY])}
      fields.update(changes if i == index else {})
      writer.write(records.make_example(
          poster_id=row[records.ID_KEY].decode(),
          labels=row[records.LABELS_KEY], **fields).SerializeToString())
  info = manifest.split_info('train')
  shards = (records.ShardInfo.of_file(path, shard.num_examples),) + (
      info.shards[1:])
  dataclasses.replace(manifest, splits={
      **manifest.splits, 'train': dataclasses.replace(info, shards=shards)
  }).write(manifest.records_dir)
  return shard.file, rows[index][records.ID_KEY].decode()


@pytest.mark.parametrize('case', ['short bytes', 'larger than stored'])
def test_a_raw_record_of_the_wrong_length_or_shape_is_one_line(
    make_records, run_module, case):
  manifest = make_records('raw_bad', num_train=6, num_val=2,
                          image_hw=(16, 16), store_size=(16, 16),
                          store_format='raw')
  changes = ({'image_bytes': b'\0' * 100} if case == 'short bytes' else
             {'image_bytes': b'\0' * 20 * 20 * 3, 'height': 20, 'width': 20})
  shard, poster_id = _rewrite_record(manifest, 1, **changes)
  manifest = records.Manifest.read(manifest.records_dir)
  # --verify names the shard and the record.
  problems = verify.check(manifest)
  assert any(p.startswith(f'{shard} record 1: Id {poster_id}: ')
             for p in problems), problems
  result = run_module('tools.make_records', '--noprogress',
                      f'--verify={manifest.records_dir}')
  assert result.returncode == 2 and 'Traceback' not in result.stderr
  assert f'{shard} record 1: Id {poster_id}' in result.stdout
  # The pipeline stops with one line naming the poster, the folder and the
  # command that names the shard.
  with pytest.raises(tf.errors.OpError) as error:
    for _ in pipeline.make_dataset(manifest, 'train', 2, (16, 16),
                                         training=False):
      pass
  message = str(input_errors.as_user_error(error.value))
  assert '\n' not in message
  assert message.startswith(f'{manifest.records_dir}: poster {poster_id} ')
  assert f'--verify={manifest.records_dir}' in message


def test_the_manifest_format_is_what_readers_follow(make_records, tmp_path):
  jpeg = make_records('as_jpeg', num_train=4, num_val=2, image_hw=(16, 16))
  # JPEG bytes under a manifest that says raw: refused, never misread.
  claims_raw = dataclasses.replace(jpeg, store_format='raw').write(
      jpeg.records_dir)
  assert any('bytes of raw pixels' in p for p in verify.check(claims_raw))
  with pytest.raises(tf.errors.OpError) as error:
    next(iter(pipeline.make_dataset(claims_raw, 'val', 2, (16, 16))))
  assert 'bytes of raw pixels' in str(
      input_errors.as_user_error(error.value))
  # Raw pixels under a manifest that says JPEG: every record is a problem.
  raw = make_records('as_raw', num_train=4, num_val=2, image_hw=(16, 16),
                     store_format='raw')
  claims_jpeg = dataclasses.replace(raw, store_format='jpeg').write(
      raw.records_dir)
  problems = verify.check(claims_jpeg)
  assert len(problems) == 6, problems
  assert all(' record ' in p and 'decode' in p for p in problems), problems


def test_compressed_shards_read_as_their_manifest_says(make_records):
  plain = make_records('plain', num_train=6, num_val=2, image_hw=(16, 12),
                       store_format='raw', seed=4)
  for compression in records.COMPRESSIONS:
    packed = make_records('packed', num_train=6, num_val=2,
                          image_hw=(16, 12), store_format='raw', seed=4,
                          compression=compression)
    assert verify.check(packed) == []
    assert by_id_pixels(packed) == by_id_pixels(plain)
    # The same bytes read as uncompressed: --verify reports every shard.
    wrong = dataclasses.replace(packed, compression=None).write(
        packed.records_dir)
    assert verify.check(wrong)


def by_id_pixels(manifest) -> dict:
  return {k: v.tobytes() for k, v in by_id(pipeline.make_dataset(
      manifest, 'train', 3, (16, 12), training=False)).items()}


def test_a_raw_conversion_that_cannot_fit_is_refused(tmp_path, run_module):
  # Headers of 9000x9000 posters: 243 MB of raw pixels each, more in all
  # than the disk holds, so the estimate alone must refuse the run.
  out = tmp_path / 'out'
  out.mkdir()
  each = 9000 * 9000 * 3
  count = shutil.disk_usage(out).free // each + 2
  if count > 20_000:
    pytest.skip(f'{count} posters would be needed to fill this disk')
  header = bad_inputs.huge_png_header(9000, 9000)
  csv_path, images_dir = write_dataset(
      tmp_path / 'data', {f'tt{i:07d}': header for i in range(count)})
  with pytest.raises(cli.UserError, match='would take about .* GB, but only'):
    convert.convert(csv_path, images_dir, str(out), store_format='raw',
                    progress=False)
  assert not [name for name in os.listdir(out) if name.endswith('.tfrecord')]
  result = run_module('tools.make_records', f'--csv={csv_path}',
                      f'--images={images_dir}', f'--out={out}',
                      '--store_format=raw')
  assert result.returncode == 2 and 'Traceback' not in result.stderr
  lines = result.stderr.strip().splitlines()
  assert lines[-1].startswith('error: the records would take about')
  assert any(line.startswith('expected size on disk: ') for line in lines)
