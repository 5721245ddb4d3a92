"""The device path: posters padded to a box on the host, cropped and resized
on the device (posternet.model.input_stage), against the host path.

The two sample differently (corner-aligned bilinear on the device, pixel
centres with antialiasing on the host), so they agree within a stated
interpolation error, not bit for bit: on a photo, enlarged or kept, the
mean absolute difference is under MEAN_LEVELS levels of 255 and 99 % of the
values are within P99_LEVELS. A poster already at the training size goes
through unchanged, exactly.
"""

import numpy as np
import pytest
from skimage import data as skimage_data
import tensorflow as tf

from posternet import cli
from posternet.data import augment
from posternet.data import decode_ops
from posternet.data import images
from posternet.data import pipeline
from posternet.data import records
from posternet.model import input_stage
import record_fixtures

MEAN_LEVELS = 2.5
P99_LEVELS = 12

IMAGE_SIZE = (40, 30)
BOX = (48, 36)
# Posters of several sizes in one box: smaller than the training size on
# both sides, on one side, exactly it, larger, and filling the box.
POSTER_SIZES = ((24, 18), (40, 20), (40, 30), (44, 33), (48, 36))


def _photo(size):
  """A natural photo (scikit-image's cat) at size, uint8 [H, W, 3]."""
  return images.resize_uint8(tf.constant(skimage_data.chelsea()), size)


def _boxed(posters):
  """The host's side: each poster in the top-left corner of the box."""
  boxed = tf.stack([tf.image.pad_to_bounding_box(p, 0, 0, *BOX)
                    for p in posters])
  sizes = tf.constant([p.shape[:2] for p in posters], tf.int32)
  return boxed, augment.poster_boxes(sizes, BOX)


def _assert_close(device, host):
  diff = np.abs(np.asarray(device, np.float64) - np.asarray(host, np.float64))
  assert diff.mean() < MEAN_LEVELS, diff.mean()
  assert np.percentile(diff, 99) <= P99_LEVELS, np.percentile(diff, 99)


def _stage(boxed, boxes, colors=None, image_size=IMAGE_SIZE):
  """The model's input stage on a batch, as the model runs it."""
  if colors is None:
    colors = augment.constant_rows(tf.shape(boxed)[0], augment.UNIT_COLOR)
  return input_stage.PosterInput(image_size)(boxed, boxes, colors)


@pytest.mark.parametrize('in_tf_function', [False, True])
def test_device_path_matches_the_host_resize(in_tf_function):
  posters = [_photo(size) for size in POSTER_SIZES]
  boxed, boxes = _boxed(posters)
  stage = tf.function(_stage) if in_tf_function else _stage
  device = stage(boxed, boxes).numpy()
  assert device.shape == (len(posters), *IMAGE_SIZE, 3)
  assert device.dtype == np.float32
  np.testing.assert_array_equal(device, np.round(device))  # whole levels
  for poster, got in zip(posters, device):
    host = images.resize_uint8(poster, IMAGE_SIZE).numpy()
    _assert_close(got, host)
    # The padding never leaks in: the bottom-right corner is the poster's.
    np.testing.assert_allclose(got[-1, -1], poster.numpy()[-1, -1], atol=1)


def test_a_poster_at_the_training_size_goes_through_unchanged():
  poster = _photo(IMAGE_SIZE)
  boxed, boxes = _boxed([poster])
  np.testing.assert_array_equal(_stage(boxed, boxes)[0].numpy(),
                                poster.numpy())


@pytest.mark.parametrize('dtype', [tf.uint8, tf.float32])
def test_crop_and_resize_is_tensorflows_and_compiles_with_xla(dtype):
  # TensorFlow's CropAndResize has no XLA kernel; images.crop_and_resize
  # samples the same points with gathers, so the XLA train step compiles.
  posters = tf.cast(tf.stack([_photo(BOX), _photo(BOX)[::-1]]), dtype)
  boxes = tf.constant([[0.1, 0.2, 0.9, 0.7], [0.0, 0.8, 0.5, 0.1]])
  want = tf.image.crop_and_resize(posters, boxes, tf.range(2), IMAGE_SIZE)
  got = images.crop_and_resize(posters, boxes, IMAGE_SIZE)
  np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-3)
  compiled = tf.function(lambda p, b: _stage(p, b), jit_compile=True)
  xla, eager = compiled(posters, boxes).numpy(), _stage(posters, boxes).numpy()
  # Float rounding differs under XLA: a value at a half level may round
  # the other way.
  np.testing.assert_allclose(xla, eager, atol=1)
  assert np.mean(xla != eager) < 0.01


def test_poster_boxes_span_each_poster():
  boxes = augment.poster_boxes(tf.constant([[48, 36], [25, 18]]), BOX)
  np.testing.assert_allclose(boxes.numpy(), [[0, 0, 1, 1],
                                             [0, 0, 24 / 47, 17 / 35]])


@pytest.mark.parametrize('ops', [('crop',), ('flip',), ('color',),
                                 augment.OPS])
def test_device_augmentation_is_the_host_augmentation(ops):
  # Posters at the training size: the device's one crop and resize with the
  # host-drawn boxes gives augment_batch's pixels exactly.
  posters = tf.stack([_photo(IMAGE_SIZE), _photo(IMAGE_SIZE)[::-1]])
  config = augment.Augment(ops=ops, seed=3)
  host = augment.augment_batch(posters, config, tf.constant(5, tf.int64))
  boxes, colors = augment.device_draws(
      tf.constant([IMAGE_SIZE] * 2), IMAGE_SIZE, config,
      tf.constant(5, tf.int64))
  device = _stage(posters, boxes, colors)
  assert not np.array_equal(host.numpy(), posters.numpy())
  np.testing.assert_array_equal(device.numpy(), host.numpy())


def test_device_crops_stay_inside_each_poster():
  # A small poster in a large box: every crop samples only the poster.
  config = augment.Augment(ops=('crop', 'flip'), seed=1)
  sizes = tf.constant([[24, 18]] * 64)
  boxes, _ = augment.device_draws(sizes, BOX, config, tf.constant(0))
  boxes = boxes.numpy()
  assert (boxes >= 0).all()
  assert (boxes[:, [0, 2]] <= 23 / 47 + 1e-6).all()
  assert (boxes[:, [1, 3]] <= 17 / 35 + 1e-6).all()
  assert (boxes[:, 1] > boxes[:, 3]).any() and (boxes[:, 1] < boxes[:, 3]).any()


@pytest.fixture(scope='module')
def varied(make_records):
  """Posters of varied sizes (heights 40–72, widths 28–52)."""
  return make_records('varied_box', num_train=6, num_val=9, image_hw=None,
                      num_shards=2, seed=3)


def _by_id(dataset):
  """{poster id: element of one poster} over one pass."""
  out = {}
  for batch in dataset.as_numpy_iterator():
    for i, poster_id in enumerate(batch[pipeline.ID]):
      out[poster_id] = {key: value[i] for key, value in batch.items()}
  return out


@pytest.mark.parametrize('options', [{}, {'cache': True}])
@pytest.mark.parametrize('image_size', [(20, 14), (56, 40)])
def test_padded_pipeline_holds_each_decoded_poster_and_its_size(
    varied, options, image_size):
  plan = decode_ops.decode_plan(varied.stored_size_range('val'), image_size)
  box = decode_ops.box_size(plan, varied.stored_size_range('val'))
  got = _by_id(pipeline.make_dataset(varied, 'val', 4, image_size,
                                     pad_to_box=True, **options))
  truth = {r[records.ID_KEY]: r
           for r in record_fixtures.read_split(varied, 'val')}
  assert got.keys() == truth.keys()
  for poster_id, record in truth.items():
    stored = (record[records.HEIGHT_KEY], record[records.WIDTH_KEY])
    direct = images.decode_jpeg(record[records.IMAGE_KEY],
                                images.jpeg_ratio(stored, image_size)).numpy()
    element = got[poster_id]
    height, width = element[pipeline.SIZE]
    assert (height, width) == direct.shape[:2]
    assert element[pipeline.IMAGE].shape == (*box, 3)
    np.testing.assert_array_equal(element[pipeline.IMAGE][:height, :width],
                                  direct)
    assert not element[pipeline.IMAGE][height:].any()
    assert not element[pipeline.IMAGE][:, width:].any()


def test_padded_pipeline_then_device_matches_the_host_pipeline(varied):
  image_size = (56, 40)  # every poster enlarged on one side at least
  host = _by_id(pipeline.make_dataset(varied, 'val', 4, image_size))
  padded = pipeline.make_dataset(varied, 'val', 4, image_size,
                                 pad_to_box=True)
  for batch in padded:
    device = _stage(batch[pipeline.IMAGE], batch[pipeline.BOX],
                    batch[pipeline.COLOR], image_size)
    for poster_id, pixels in zip(batch[pipeline.ID].numpy(), device.numpy()):
      _assert_close(pixels, host[poster_id][pipeline.IMAGE])


def test_padded_raw_records(make_records):
  raw = make_records('raw_box', num_train=4, num_val=5, image_hw=None,
                     store_format='raw', seed=4)
  got = _by_id(pipeline.make_dataset(raw, 'val', 2, (32, 24),
                                     pad_to_box=True))
  truth = record_fixtures.read_split(raw, 'val')
  assert len(got) == len(truth)
  for record in truth:
    element = got[record[records.ID_KEY]]
    height, width = record[records.HEIGHT_KEY], record[records.WIDTH_KEY]
    assert tuple(element[pipeline.SIZE]) == (height, width)
    np.testing.assert_array_equal(
        element[pipeline.IMAGE][:height, :width].tobytes(),
        record[records.IMAGE_KEY])
