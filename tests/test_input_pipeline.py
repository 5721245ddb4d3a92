"""The streaming pipeline: shapes, completeness, sharding, exact pixels, faults.

Every test runs real TensorFlow on real record files written by
record_fixtures; stage functions run both eagerly and inside tf.data.
"""

import io
import os
import shutil

import numpy as np
from PIL import Image
import pytest
import tensorflow as tf

from posternet.data import augment
from posternet import cli
from posternet import genres
from posternet.data import decode_ops
from posternet.data import images
from posternet.data import input_errors
from posternet.data import pipeline
from posternet.data import records
import record_fixtures

SIZE = (32, 32)


@pytest.fixture(scope='module')
def fixed(make_records):
  """30 train and 11 val posters of 32×32, 3 shards per split (the handle)."""
  return make_records('fixed', num_train=30, num_val=11, image_hw=SIZE,
                      num_shards=3, seed=1)


@pytest.fixture(scope='module')
def big(make_records):
  """Posters stored at 64×64: room for DCT-ratio decodes."""
  return make_records('big', num_train=8, num_val=6, image_hw=(64, 64),
                      num_shards=2, seed=2)


@pytest.fixture(scope='module')
def varied(make_records):
  """Posters of varied sizes (heights 40–72, widths 28–52)."""
  return make_records('varied', num_train=8, num_val=9, image_hw=None,
                      num_shards=2, seed=3)


def copy_of(manifest, folder):
  """A copy of a records folder, opened: for tests that damage it."""
  shutil.copytree(manifest.records_dir, folder)
  return records.Manifest.read(folder)


IMAGE, LABELS, ID = pipeline.IMAGE, pipeline.LABELS, pipeline.ID


def batches(dataset, count=None):
  """The dataset's elements: dicts of numpy arrays."""
  if count is not None:
    dataset = dataset.take(count)
  return list(dataset.as_numpy_iterator())


def by_id(dataset):
  """{poster id: (image, labels)} over one pass of the dataset."""
  out = {}
  for b in batches(dataset):
    for image, label, poster_id in zip(b[IMAGE], b[LABELS], b[ID]):
      assert poster_id not in out, f'{poster_id} delivered twice'
      out[poster_id] = (image, label)
  return out


def truth(manifest, split):
  """{poster id: parsed record}, read directly, without the pipeline."""
  return {r[records.ID_KEY]: r
          for r in record_fixtures.read_split(manifest, split)}


# Shapes, batches, completeness.


def test_shapes_and_dtypes(fixed):
  for split in ('train', 'val'):
    dataset = pipeline.make_dataset(fixed, split, 4, SIZE)
    spec = dataset.element_spec
    assert set(spec) == {IMAGE, LABELS, ID}
    image_spec, label_spec = spec[IMAGE], spec[LABELS]
    assert spec[ID].dtype == tf.string and spec[ID].shape.rank == 1
    assert image_spec.dtype == tf.uint8 and label_spec.dtype == tf.float32
    assert image_spec.shape[1:] == (32, 32, 3)
    assert label_spec.shape[1:] == (genres.NUM_GENRES,)
    first = batches(dataset, 1)[0]
    images_, labels = first[IMAGE], first[LABELS]
    assert images_.shape == (4, 32, 32, 3) and images_.dtype == np.uint8
    assert labels.shape == (4, 25) and labels.dtype == np.float32
    assert set(np.unique(labels)) <= {0.0, 1.0}
    assert images_.max() > 1  # uint8 pixels, not rescaled to [0, 1]


def test_train_batches_are_full_static_and_endless(fixed):
  dataset = pipeline.make_dataset(fixed, 'train', 8, SIZE, seed=0)
  assert dataset.element_spec[IMAGE].shape == (8, 32, 32, 3)  # drop_remainder
  assert dataset.cardinality() == tf.data.INFINITE_CARDINALITY
  steps = fixed.steps_per_epoch('train', 8)
  got = batches(dataset, 3 * steps + 1)  # 30 posters: 3 epochs and more
  assert len(got) == 3 * steps + 1
  assert all(b[IMAGE].shape[0] == 8 for b in got)


def test_training_shuffles_eval_is_ordered(fixed):
  ids = lambda count=None, **kw: [i for b in batches(
      pipeline.make_dataset(fixed, 'val', 11, SIZE,
                                  **kw), count) for i in b[ID]]
  eval_order = ids()
  assert ids() == eval_order  # deterministic
  shuffled = ids(1, training=True, seed=7)  # endless: one batch
  assert set(shuffled) <= set(eval_order) and shuffled != eval_order


def test_eval_sees_each_val_poster_exactly_once(fixed):
  dataset = pipeline.make_dataset(fixed, 'val', 4, SIZE)
  sizes = [b[IMAGE].shape[0] for b in batches(dataset)]
  assert sizes == [4, 4, 3]  # the last batch is kept, partial
  assert int(dataset.cardinality()) == 3 == fixed.steps_per_epoch(
      'val', 4)  # known to Keras
  assert sorted(by_id(dataset)) == sorted(truth(fixed, 'val'))


def test_two_workers_shards_are_disjoint_and_cover_all(fixed):
  seen = []
  for worker in (0, 1):
    context = tf.distribute.InputContext(
        num_input_pipelines=2, input_pipeline_id=worker,
        num_replicas_in_sync=2)
    dataset = pipeline.make_dataset(
        fixed, 'val', 4, SIZE, input_context=context)
    assert max(b[IMAGE].shape[0] for b in batches(dataset)) == 2  # per replica
    seen.append(set(by_id(dataset)))
  assert seen[0] and seen[1] and not seen[0] & seen[1]
  assert seen[0] | seen[1] == set(truth(fixed, 'val'))


def test_more_workers_than_shards_is_a_clear_error(fixed):
  context = tf.distribute.InputContext(num_input_pipelines=4,
                                       input_pipeline_id=0)
  with pytest.raises(cli.UserError,
                     match='3 shard files .* 4 input workers.*--min_shards=4'):
    pipeline.make_dataset(fixed, 'val', 4, SIZE,
                                input_context=context)


# Exact pixels: the decode paths.


def test_pixels_and_labels_equal_a_direct_decode(fixed):
  expected = truth(fixed, 'val')
  for options in ({}, {'cache': True}, {'num_parallel_calls': 1,
                                         'prefetch': 0},
                  {'num_parallel_calls': 4}):  # more than the cycle length
    got = by_id(pipeline.make_dataset(fixed, 'val', 4, SIZE,
                                            **options))
    assert sorted(got) == sorted(expected)
    for poster_id, (image, labels) in got.items():
      record = expected[poster_id]
      direct = tf.io.decode_jpeg(record[records.IMAGE_KEY], channels=3,
                                 dct_method=images.DCT_METHOD)
      np.testing.assert_array_equal(image, direct.numpy())
      np.testing.assert_array_equal(labels, record[records.LABELS_KEY])


@pytest.mark.parametrize('size,ratio,resized', [
    ((32, 32), 2, False), ((16, 16), 4, False), ((8, 8), 8, False),
    ((24, 20), 2, True), ((40, 40), 1, True)])
def test_ratio_decode_path(big, size, ratio, resized):
  plan = decode_ops.decode_plan(big.stored_size_range('val'), size)
  assert plan['ratio'] == ratio
  assert (tuple(plan['decoded_hw']) != size) == resized
  got = by_id(pipeline.make_dataset(big, 'val', 4, size))
  for poster_id, record in truth(big, 'val').items():
    direct = tf.io.decode_jpeg(record[records.IMAGE_KEY], channels=3,
                               ratio=ratio, dct_method=images.DCT_METHOD)
    if resized:
      direct = images.resize_uint8(direct, size)
    np.testing.assert_array_equal(got[poster_id][0], direct.numpy())


def test_varied_sizes_get_each_its_own_ratio(varied):
  # The widest posters just allow ratio 4, the narrower ones only ratio 2.
  (min_h, _), (_, max_w) = varied.stored_size_range('val')
  size = (min_h // 4, max_w // 4)
  assert decode_ops.decode_plan(varied.stored_size_range('val'),
                                size)['ratio'] is None
  got = by_id(pipeline.make_dataset(varied, 'val', 4, size))
  ratios = set()
  for poster_id, record in truth(varied, 'val').items():
    stored = (record[records.HEIGHT_KEY], record[records.WIDTH_KEY])
    ratio = images.jpeg_ratio(stored, size)
    ratios.add(ratio)
    direct = images.resize_uint8(
        tf.io.decode_jpeg(record[records.IMAGE_KEY], channels=3, ratio=ratio,
                          dct_method=images.DCT_METHOD), size)
    np.testing.assert_array_equal(got[poster_id][0], direct.numpy())
  assert len(ratios) > 1


def test_varied_sizes_of_one_ratio_read_no_header(varied):
  # Every poster of 40-72 x 28-52 decodes at ratio 2 for 20x14: the plan
  # says so once; the pixels are still the per-poster rule's.
  size = (20, 14)
  plan = decode_ops.decode_plan(varied.stored_size_range('val'), size)
  assert plan == {'format': 'jpeg', 'stored_hw': None, 'ratio': 2,
                  'decoded_hw': None}
  got = by_id(pipeline.make_dataset(varied, 'val', 4, size))
  for poster_id, record in truth(varied, 'val').items():
    np.testing.assert_array_equal(
        got[poster_id][0],
        images.decode_for_model(record[records.IMAGE_KEY], size).numpy())


def test_store_size_in_manifest_drives_the_plan(make_records):
  # Varied posters of at least 40x28: every one is shrunk to the store size.
  manifest = make_records(num_train=2, num_val=2, image_hw=None,
                          store_size=(40, 28))
  assert manifest.store_size == (40, 28)
  stored = manifest.stored_size_range('train')
  assert stored == ((40, 28), (40, 28))
  assert decode_ops.decode_plan(stored, (20, 14)) == {
      'format': 'jpeg', 'stored_hw': (40, 28), 'ratio': 2,
      'decoded_hw': (20, 14)}


# Stage functions, eagerly and inside tf.data.


def test_decode_stages_agree_eagerly_and_in_tf_data(big):
  encoded = [r[records.IMAGE_KEY] for r in record_fixtures.read_split(
      big, 'val')]
  plan = decode_ops.decode_plan(big.stored_size_range('val'), (24, 24))
  assert plan == {'format': 'jpeg', 'stored_hw': (64, 64), 'ratio': 2,
                  'decoded_hw': (32, 32)}
  one = decode_ops.decode_one(plan, (24, 24))
  batch = decode_ops.decode_batch(plan, (24, 24))
  eager = np.stack([one(tf.constant(e)).numpy() for e in encoded])
  np.testing.assert_array_equal(batch(tf.constant(encoded)).numpy(), eager)
  inside = tf.data.Dataset.from_tensor_slices(encoded)
  np.testing.assert_array_equal(
      np.stack(list(inside.map(one).as_numpy_iterator())), eager)
  np.testing.assert_array_equal(
      next(inside.batch(len(encoded)).map(batch).as_numpy_iterator()), eager)


def test_parse_agrees_eagerly_and_in_tf_data(fixed):
  paths = fixed.shard_paths('val')
  serialized = list(tf.data.TFRecordDataset(paths).as_numpy_iterator())
  eager = decode_ops.parse(tf.constant(serialized))
  inside = next(tf.data.Dataset.from_tensor_slices(serialized).batch(
      len(serialized)).map(decode_ops.parse).as_numpy_iterator())
  for key in records.FEATURES:
    np.testing.assert_array_equal(eager[key].numpy(), inside[key])


def _png(pixels):
  buffer = io.BytesIO()
  Image.fromarray(pixels).save(buffer, 'PNG')
  return buffer.getvalue()


def _cmyk_jpeg(pixels):
  buffer = io.BytesIO()
  Image.fromarray(pixels).convert('CMYK').save(buffer, 'JPEG', quality=95)
  return buffer.getvalue()


def test_decode_for_model_matches_the_pipeline_path():
  pixels = np.random.RandomState(0).randint(0, 256, (90, 60, 3), np.uint8)
  jpeg = images.encode_jpeg(pixels)
  size = (40, 30)  # 90×60 // 2 = 45×30 still covers it: ratio 2
  expected = images.resize_uint8(tf.io.decode_jpeg(
      jpeg, channels=3, ratio=2, dct_method=images.DCT_METHOD), size).numpy()
  in_graph = tf.function(lambda e: images.decode_for_model(e, size))
  mapped = lambda e: next(tf.data.Dataset.from_tensors(e).map(
      lambda x: images.decode_for_model(x, size)).as_numpy_iterator())
  for decode in (lambda e: images.decode_for_model(tf.constant(e), size),
                 in_graph, mapped):
    np.testing.assert_array_equal(np.asarray(decode(jpeg)), expected)
    png = np.asarray(decode(_png(pixels)))
    np.testing.assert_array_equal(
        png, images.resize_uint8(pixels, size).numpy())
    assert np.asarray(decode(_cmyk_jpeg(pixels))).shape == (40, 30, 3)
  same_size = images.decode_for_model(tf.constant(jpeg), (90, 60))
  np.testing.assert_array_equal(same_size, tf.io.decode_jpeg(
      jpeg, dct_method=images.DCT_METHOD).numpy())


# The manifest: steps, errors.


def test_steps_per_epoch_from_the_manifest(fixed):
  assert fixed.steps_per_epoch('train', 8) == 3  # 30 // 8
  assert fixed.steps_per_epoch('val', 4) == 3  # ceil 11/4
  assert fixed.steps_per_epoch('val', 4, drop_remainder=True) == 2
  with pytest.raises(cli.UserError, match='fewer than one batch of 64'):
    fixed.steps_per_epoch('train', 64)
  with pytest.raises(cli.UserError, match="no split 'test'"):
    fixed.steps_per_epoch('test', 4)


def test_clear_errors_for_bad_folders_shards_and_options(fixed, tmp_path):
  with pytest.raises(cli.UserError, match='does not exist'):
    records.Manifest.read(str(tmp_path / 'nowhere'))
  with pytest.raises(TypeError, match=r'records.Manifest.read\(folder\)'):
    pipeline.make_dataset(fixed.records_dir, 'val', 4, SIZE)
  copy = copy_of(fixed, str(tmp_path / 'copy'))
  os.remove(os.path.join(copy.records_dir, 'val-00001-of-00003.tfrecord'))
  with pytest.raises(cli.UserError,
                     match='val-00001-of-00003.tfrecord .*cannot be read'):
    pipeline.make_dataset(copy, 'val', 4, SIZE)
  with pytest.raises(cli.UserError, match='shuffle_buffer must be >= 1'):
    pipeline.make_dataset(fixed, 'train', 4, SIZE, shuffle_buffer=0)
  with pytest.raises(TypeError, match='shuffle_bufer'):
    pipeline.make_dataset(fixed, 'train', 4, SIZE, shuffle_bufer=8)


def test_shard_vanishing_after_the_check_is_an_error_not_a_hang(tmp_path):
  folder = str(tmp_path / 'vanishing[1]')  # glob characters in the path too
  manifest = record_fixtures.write_records(folder, num_train=4, num_val=4,
                                           num_shards=2)
  dataset = pipeline.make_dataset(manifest, 'val', 2, SIZE)
  os.remove(os.path.join(folder, 'val-00001-of-00002.tfrecord'))
  with pytest.raises(tf.errors.OpError) as raised:
    batches(dataset)
  assert 'val-00001-of-00002.tfrecord has disappeared' in str(
      input_errors.as_user_error(raised.value))


# Damaged data.


def _damage_shard(manifest, name, how='flip'):
  """Flips bytes mid-shard (a CRC error), or cuts the shard short."""
  path = os.path.join(manifest.records_dir, name)
  data = bytearray(open(path, 'rb').read())
  if how == 'flip':
    for offset in range(len(data) // 2, len(data) // 2 + 4):
      data[offset] ^= 0xFF
  else:
    del data[len(data) // 2:]
  with open(path, 'wb') as f:
    f.write(bytes(data))


@pytest.mark.parametrize('how', ['flip', 'truncate'])
def test_damaged_record_fails_naming_the_shard_or_is_skipped_and_counted(
    fixed, tmp_path, capfd, how):
  folder = copy_of(fixed, str(tmp_path / 'damaged'))
  _damage_shard(folder, 'val-00002-of-00003.tfrecord', how)
  expected = set(truth(fixed, 'val'))

  dataset = pipeline.make_dataset(folder, 'val', 4, SIZE)
  with pytest.raises(tf.errors.OpError) as raised:
    batches(dataset)
  error = input_errors.as_user_error(raised.value)
  assert error is not None and '\n' not in str(error)
  assert str(error).startswith('shard val-00002-of-00003.tfrecord: ')
  assert 'could not be read' in str(error)

  capfd.readouterr()
  got = by_id(pipeline.make_dataset(folder, 'val', 4, SIZE,
                                          ignore_errors=True))
  log = capfd.readouterr().err
  assert set(got) < expected  # lost records missing, nothing else, no repeats
  lost = len(expected) - len(got)
  assert (f'warning: posternet input: shard val-00002-of-00003.tfrecord: '
          f'{lost} of 3 records could not be read') in log
  assert f'the val pass delivered {len(got)} of 11 posters' in log


def test_damaged_training_shard_is_skipped_and_training_goes_on(
    fixed, tmp_path, capfd):
  folder = copy_of(fixed, str(tmp_path / 'damaged'))
  _damage_shard(folder, 'train-00000-of-00003.tfrecord')
  dataset = pipeline.make_dataset(folder, 'train', 8, SIZE,
                                        ignore_errors=True)
  assert len(batches(dataset, 8)) == 8  # more than two epochs of batches
  assert 'shard train-00000-of-00003.tfrecord: ' in capfd.readouterr().err


def test_undecodable_poster_fails_or_is_skipped_and_counted(
    fixed, tmp_path, capfd):
  folder = copy_of(fixed, str(tmp_path / 'bad_jpeg'))
  path = folder.shard_paths('val')[0]
  parsed = [records.parse_examples(tf.constant(s)) for s in
            tf.data.TFRecordDataset(path).as_numpy_iterator()]
  with tf.io.TFRecordWriter(path) as writer:
    for index, p in enumerate(parsed):
      encoded = b'\xff\xd8 not a jpeg' if index == 0 else (
          p[records.IMAGE_KEY].numpy())
      writer.write(records.make_example(
          encoded, 32, 32, p[records.ID_KEY].numpy().decode(),
          p[records.LABELS_KEY].numpy()).SerializeToString())

  with pytest.raises(tf.errors.InvalidArgumentError):
    batches(pipeline.make_dataset(folder, 'val', 4, SIZE))
  capfd.readouterr()
  got = by_id(pipeline.make_dataset(folder, 'val', 4, SIZE,
                                          ignore_errors=True))
  assert len(got) == 10
  assert parsed[0][records.ID_KEY].numpy() not in got
  assert 'the val pass delivered 10 of 11 posters' in capfd.readouterr().err


# Options the trainer and the benchmark use.


def test_cache_and_serial_options_deliver_whole_epochs(fixed):
  # Epochs stay apart with the cache (shuffle, then repeat) and with a
  # one-record buffer; a large buffer on the endless stream blends epochs.
  for options in ({'cache': True},
                  {'num_parallel_calls': 1, 'prefetch': 0, 'threadpool_size': 1,
                   'cycle_length': 1, 'shuffle_buffer': 1}):
    dataset = pipeline.make_dataset(fixed, 'train', 10, SIZE,
                                          seed=0, **options)
    got = batches(dataset, 6)  # two epochs of 30
    assert all(b[IMAGE].shape == (10, 32, 32, 3) for b in got)
    ids = [i for b in got for i in b[ID]]
    assert sorted(ids) == sorted(2 * list(truth(fixed, 'train')))


def test_stop_after_builds_each_stage(fixed):
  build = lambda stage: pipeline.make_dataset(
      fixed, 'val', 4, SIZE, stop_after=stage).element_spec
  assert build('read') == tf.TensorSpec([], tf.string)
  assert build('batch') == tf.TensorSpec([None], tf.string)
  assert set(build('parse')) == set(records.FEATURES)
  assert build('decode')[IMAGE] == tf.TensorSpec([None, 32, 32, 3], tf.uint8)
  assert build('augment')[IMAGE] == tf.TensorSpec([None, 32, 32, 3],
                                                  tf.uint8)
  with pytest.raises(cli.UserError, match='stop_after'):
    build('resize')


def test_distributed_pass_is_one_shuffled_complete_pass(fixed):
  # The tf.data service's distributed epoch (posternet.data_service).
  dataset = pipeline.make_dataset(fixed, 'train', 8, SIZE,
                                        seed=0,
                                        distributed_pass=True)
  got = batches(dataset)
  # The partial batch is kept (out of order: training decodes unordered).
  assert sorted(b[IMAGE].shape[0] for b in got) == [6, 8, 8, 8]
  ids = [i for b in got for i in b[ID]]
  assert sorted(ids) == sorted(truth(fixed, 'train'))


def _augmented_epochs(manifest, seed, cache, epochs=2):
  """Per epoch, {poster id: pixels} of a deterministic, augmented stream."""
  steps = manifest.steps_per_epoch('train', 10)
  dataset = pipeline.make_dataset(
      manifest, 'train', 10, SIZE, cache=cache, deterministic=True, seed=0,
      augment=augment.Augment(seed=seed))
  stream = batches(dataset, steps * epochs)
  return [{poster_id: image
           for b in stream[e * steps:(e + 1) * steps]
           for image, poster_id in zip(b[IMAGE], b[ID])}
          for e in range(epochs)]


@pytest.mark.parametrize('cache', [False, True])
def test_augmentation_is_seeded_and_new_every_epoch(fixed, cache):
  first, second = _augmented_epochs(fixed, seed=1, cache=cache)
  image = next(iter(first.values()))
  assert image.dtype == np.uint8 and image.shape == SIZE + (3,)
  again, _ = _augmented_epochs(fixed, seed=1, cache=cache)
  assert first.keys() == again.keys()
  for poster_id, pixels in first.items():  # the same seed repeats
    np.testing.assert_array_equal(again[poster_id], pixels)
  other, _ = _augmented_epochs(fixed, seed=2, cache=cache)
  assert any(not np.array_equal(other[i], first[i]) for i in first)
  # The same poster looks different in the next epoch (even from the cache).
  both = first.keys() & second.keys()
  assert len(both) >= 10
  changed = [not np.array_equal(first[i], second[i]) for i in both]
  assert np.mean(changed) > 0.8


def test_validation_never_sees_augmentation(fixed):
  plain = batches(pipeline.make_dataset(fixed, 'val', 4, SIZE))
  asked = batches(pipeline.make_dataset(
      fixed, 'val', 4, SIZE, augment=augment.Augment(seed=1)))
  for want, got in zip(plain, asked):
    for key in (IMAGE, LABELS, ID):
      np.testing.assert_array_equal(got[key], want[key])
