"""The record schema: an Example written by make_example parses back exactly."""

import numpy as np
import pytest
import tensorflow as tf

from posternet import cli
from posternet import genres
from posternet import records


def test_example_round_trip():
  labels = np.zeros(genres.NUM_GENRES, np.float32)
  labels[[genres.GENRES.index('Drama'), genres.GENRES.index('N/A')]] = 1
  example = records.make_example(b'\xff\xd8jpeg', 442, 300, 'tt0000042', labels)
  parsed = records.parse_examples(tf.constant([example.SerializeToString()]))
  assert parsed[records.IMAGE_KEY].numpy()[0] == b'\xff\xd8jpeg'
  assert parsed[records.HEIGHT_KEY].numpy()[0] == 442
  assert parsed[records.WIDTH_KEY].numpy()[0] == 300
  assert parsed[records.ID_KEY].numpy()[0] == b'tt0000042'
  np.testing.assert_array_equal(parsed[records.LABELS_KEY].numpy()[0], labels)
  assert genres.names_of(parsed[records.LABELS_KEY].numpy()[0]) == ['Drama', 'N/A']


def test_shard_names_sort_in_order():
  names = [records.shard_name('train', i, 12) for i in range(12)]
  assert names == sorted(names)
  assert names[3] == 'train-00003-of-00012.tfrecord'


def test_manifest_round_trip_and_version_check(tmp_path):
  manifest = {'format_version': records.FORMAT_VERSION,
              'genres': list(genres.GENRES),
              'splits': {'train': {'num_examples': 3, 'shards': [
                  {'file': records.shard_name('train', 0, 1)}]}}}
  records.write_manifest(str(tmp_path), manifest)
  assert records.read_manifest(str(tmp_path)) == manifest
  assert records.num_examples(manifest, 'train') == 3
  assert records.shard_paths(str(tmp_path), manifest, 'train') == [
      str(tmp_path / 'train-00000-of-00001.tfrecord')]

  records.write_manifest(str(tmp_path), dict(manifest, format_version=99))
  with pytest.raises(cli.UserError, match='format version 99'):
    records.read_manifest(str(tmp_path))


def test_missing_manifest_is_a_user_error(tmp_path):
  for folder in (tmp_path, tmp_path / 'absent'):
    with pytest.raises(cli.UserError, match=str(folder)):
      records.read_manifest(str(folder))
