"""Tests of posternet/data/augment.py, eagerly and inside tf.data."""

import numpy as np
import pytest
import tensorflow as tf

from posternet.data import augment
SHAPE = (6, 48, 32, 3)  # tall posters, as real ones are


def _posters(seed=0):
  return tf.constant(np.random.RandomState(seed).randint(
      0, 256, SHAPE, dtype=np.uint8))


def _run(images, config, index, in_tf_data):
  if not in_tf_data:
    return augment.augment_batch(images, config, tf.constant(index, tf.int64))
  dataset = tf.data.Dataset.from_tensors({'image': images,
                                          'labels': tf.zeros([SHAPE[0], 25])})
  dataset = augment.apply(dataset.repeat(index + 1), config, 'image')
  return list(dataset)[index]['image']


@pytest.mark.parametrize('in_tf_data', [False, True])
@pytest.mark.parametrize('ops', [('crop',), ('flip',), ('color',),
                                 augment.OPS])
def test_shape_dtype_range_and_change(ops, in_tf_data):
  images = _posters()
  result = _run(images, augment.Augment(ops=ops), 0, in_tf_data)
  assert result.dtype == tf.uint8 and result.shape == SHAPE
  assert not np.array_equal(result.numpy(), images.numpy())


@pytest.mark.parametrize('in_tf_data', [False, True])
def test_same_seed_repeats_other_batches_differ(in_tf_data):
  images, config = _posters(), augment.Augment(seed=5)
  first = _run(images, config, 3, in_tf_data).numpy()
  np.testing.assert_array_equal(first, _run(images, config, 3,
                                            in_tf_data).numpy())
  # Another batch index (the next epoch's batch) and another seed differ.
  assert not np.array_equal(first, _run(images, config, 4, in_tf_data))
  assert not np.array_equal(first, _run(images, augment.Augment(seed=6), 3,
                                        in_tf_data))


def test_eager_and_tf_data_agree():
  images, config = _posters(), augment.Augment(seed=1)
  np.testing.assert_array_equal(_run(images, config, 2, False),
                                _run(images, config, 2, True))


def test_no_ops_is_the_identity():
  images = _posters()
  result = augment.augment_batch(images, augment.Augment(ops=()), 0)
  np.testing.assert_array_equal(result, images)


def test_flip_mirrors_whole_posters():
  images = _posters()
  result = augment.augment_batch(images, augment.Augment(ops=('flip',)), 0)
  for original, out in zip(images.numpy(), result.numpy()):
    assert (np.array_equal(out, original)
            or np.array_equal(out, original[:, ::-1]))


def test_full_crop_keeps_the_poster():
  # Area share 1 and the poster's own aspect: the box is the whole poster.
  images = _posters()
  config = augment.Augment(ops=('crop',), crop_area=(1.0, 1.0),
                           crop_aspect=(1.0, 1.0))
  np.testing.assert_array_equal(augment.augment_batch(images, config, 0),
                                images)


def test_color_keeps_gray_gray_and_shifts_brightness():
  gray = tf.fill(SHAPE, tf.constant(100, tf.uint8))
  result = augment.augment_batch(
      gray, augment.Augment(ops=('color',), color=0.3), 0).numpy()
  assert (result.max(axis=-1) == result.min(axis=-1)).all()  # still gray
  levels = result[:, 0, 0, 0].astype(int)
  assert 70 <= levels.min() and levels.max() <= 130 and len(set(levels)) > 1


def test_parse_ops_and_bad_values():
  assert augment.parse_ops('flip, crop') == ('crop', 'flip')
  assert augment.parse_ops('none') == () and augment.parse_ops('') == ()
  with pytest.raises(ValueError, match='unknown augmentation rotate'):
    augment.parse_ops('crop,rotate')
  with pytest.raises(ValueError, match='crop area'):
    augment.Augment(crop_area=(0.0, 1.0))
