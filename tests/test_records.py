"""The record schema and the records handle (records.Manifest).

An Example written by make_example parses back exactly; a Manifest built and
written reads back equal, and its file's bytes are what it writes; a
manifest.json of the wrong shape is one line naming the file and the field,
in every command that opens a records folder (issue 12, case 8).
"""

import json
import os
import re

import numpy as np
import pytest
import tensorflow as tf

import record_fixtures
from posternet import cli
from posternet import genres
from posternet.data import records
from posternet.train import config as train_config
from posternet.train import trainer
from posternet.data import verify
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


# --- The handle: build, write, read. ---


def _manifest(**changes) -> records.Manifest:
  shards = [records.ShardInfo(records.shard_name('train', i, 2), 3 + i,
                              100 + i, f'{i:064x}') for i in range(2)]
  val = [records.ShardInfo(records.shard_name('val', 0, 1), 1, 50, 'f' * 64)]
  fields = dict(
      splits={'train': records.SplitInfo.build(shards, [(40, 30), (72, 52)]),
              'val': records.SplitInfo.build(val, [(44, 28)])},
      source=records.Source(csv='train.csv', csv_sha256='a' * 64, csv_rows=9,
                            unique_ids=8, duplicate_rows=1),
      skipped=records.Skipped(count=1, by_reason={'empty image': 1},
                              report='skipped.csv'))
  return records.Manifest(**{**fields, **changes})


def test_manifest_round_trip_and_version_check(tmp_path):
  manifest = _manifest()
  written = manifest.write(str(tmp_path))
  assert written.records_dir == str(tmp_path)
  read = records.Manifest.read(str(tmp_path))
  assert read == manifest and read.records_dir == str(tmp_path)
  assert (tmp_path / 'manifest.json').read_text() == manifest.to_json()
  assert read.num_examples('train') == 7
  assert read.split_info('train').shards[1].num_examples == 4
  assert read.shard_paths('train') == [
      str(tmp_path / 'train-00000-of-00002.tfrecord'),
      str(tmp_path / 'train-00001-of-00002.tfrecord')]
  assert read.stored_size_range('train') == ((40, 30), (72, 52))
  assert read.split_rule == records.SplitRule(42, 0.1, records.SPLIT_METHOD)
  assert read.skipped.by_reason == {'empty image': 1}
  with pytest.raises(TypeError):
    read.skipped.by_reason['empty image'] = 0  # immutable, all the way down

  data = json.loads(manifest.to_json())
  (tmp_path / 'manifest.json').write_text(json.dumps(
      dict(data, format_version=99)))
  with pytest.raises(cli.UserError, match='format version 99'):
    records.Manifest.read(str(tmp_path))


def test_store_format_and_compression_round_trip(tmp_path):
  manifest = _manifest(store_format='raw', compression='GZIP')
  read = records.Manifest.read(manifest.write(str(tmp_path)).records_dir)
  assert (read.store_format, read.compression) == ('raw', 'GZIP')
  assert read.tfrecord_compression == 'GZIP'
  assert records.Manifest.read(_manifest().write(
      str(tmp_path)).records_dir).tfrecord_compression == ''


def test_a_version_1_manifest_reads_as_jpeg_uncompressed(tmp_path):
  data = json.loads(_manifest().to_json())
  assert data['format_version'] == records.FORMAT_VERSION == 2
  del data['store_format'], data['compression']
  (tmp_path / 'manifest.json').write_text(json.dumps(
      dict(data, format_version=1)))
  read = records.Manifest.read(str(tmp_path))
  assert (read.format_version, read.store_format, read.compression) == (
      1, 'jpeg', None)
  # Optional in version 2 too: left out, they are the defaults.
  (tmp_path / 'manifest.json').write_text(json.dumps(data))
  assert records.Manifest.read(str(tmp_path)).store_format == 'jpeg'


def test_store_size_and_steps_per_epoch():
  manifest = _manifest(store_size=[48, 40])
  assert manifest.store_size == (48, 40)
  assert manifest.to_dict()['store_size'] == [48, 40]
  # The store size is a bound: the split's own sizes are what is stored.
  assert manifest.stored_size_range('val') == ((44, 28), (44, 28))
  assert manifest.steps_per_epoch('train', 2) == 3  # 7 // 2
  assert manifest.steps_per_epoch('train', 2, drop_remainder=False) == 4
  assert manifest.steps_per_epoch('val', 4) == 1  # ceil(1 / 4)
  with pytest.raises(cli.UserError, match='fewer than one batch of 8'):
    manifest.steps_per_epoch('train', 8)
  with pytest.raises(cli.UserError, match="no split 'test'"):
    manifest.steps_per_epoch('test', 4)


def test_a_manifest_without_a_folder_has_no_shard_paths():
  manifest = _manifest()
  with pytest.raises(ValueError, match='no folder'):
    manifest.shard_paths('train')
  assert manifest.at('gs://b/r').shard_paths('val') == [
      'gs://b/r/val-00000-of-00001.tfrecord']


def test_fixture_manifest_reads_back_equal(tmp_path):
  manifest = record_fixtures.write_records(str(tmp_path), num_train=5,
                                           num_val=3, image_hw=None)
  assert records.Manifest.read(str(tmp_path)) == manifest
  info = manifest.split_info('train')
  assert info.num_examples == 5 == sum(s.num_examples for s in info.shards)
  for shard, path in zip(info.shards, manifest.shard_paths('train')):
    assert records.size_and_sha256(path) == (shard.bytes, shard.sha256)


def test_missing_manifest_is_a_user_error(tmp_path):
  for folder in (tmp_path, tmp_path / 'absent'):
    with pytest.raises(cli.UserError, match=str(folder)):
      records.Manifest.read(str(folder))


def test_records_that_is_a_file_says_so(good_records, tmp_path):
  """Issue 12, case 14: not 'does not exist', for train and verify alike."""
  manifest_file = records.manifest_path(good_records)
  other_file = tmp_path / 'notes.txt'
  other_file.write_text('not records')
  config = dict(logdir=str(tmp_path / 'runs'), model='small_cnn',
                image_size=(32, 32), batch_size=2, epochs=1)
  for path, hint in ((str(other_file), ''),
                     (manifest_file, f'; give its folder, {good_records}')):
    expected = (f'{path} is a file, not a records folder (the folder `make '
                f'records` wrote, with manifest.json and the shards){hint}')
    for open_records in (records.Manifest.read, verify.verify,
                         lambda p: trainer.run(train_config.build(records=p,
                                                          **config))):
      with pytest.raises(cli.UserError) as error:
        open_records(path)
      assert str(error.value) == expected
  assert not os.path.exists(tmp_path / 'runs')  # nothing started


# --- Issue 12, case 8: valid JSON of the wrong shape. ---


def _set(*path_and_value):
  """A change to the manifest's JSON: set the value at a path of keys."""
  *path, key, value = path_and_value

  def change(data):
    for part in path:
      data = data[part]
    if value is _DELETE:
      del data[key]
    else:
      data[key] = value

  return change


_DELETE = object()

BAD_SHAPES = {
    # case: (change to the JSON, what the one-line message says)
    'top-level list': (lambda data: [data],
                       'the top level is a list, not an object'),
    'top-level number': (lambda data: 7, 'the top level is 7 (a number)'),
    'split without shards': (_set('splits', 'train', 'shards', _DELETE),
                             "splits.train has no 'shards'"),
    'count not an integer': (
        _set('splits', 'train', 'shards', 0, 'num_examples', '12'),
        'splits.train.shards[0].num_examples is "12" (a string), not a whole '
        'number'),
    'split count a float': (_set('splits', 'val', 'num_examples', 1.5),
                            'splits.val.num_examples is 1.5'),
    'negative count': (_set('splits', 'val', 'num_examples', -1),
                       'splits.val.num_examples is -1'),
    'splits a list': (_set('splits', []), 'splits is a list, not an object'),
    'shards an object': (_set('splits', 'val', 'shards', {}),
                         'splits.val.shards is an object, not a list'),
    'shard a string': (_set('splits', 'val', 'shards', 0, 'x'),
                       'splits.val.shards[0] is "x" (a string)'),
    'shard outside the folder': (
        _set('splits', 'val', 'shards', 0, 'file', '../../etc/passwd'),
        "splits.val.shards[0].file '../../etc/passwd' is not a file name"),
    'store size a string': (_set('store_size', 'big'),
                            'store_size is "big" (a string), not a list'),
    'store size of three': (_set('store_size', [1, 2, 3]),
                            'store_size has 3 values, not 2'),
    'no source': (_set('source', _DELETE), "the top level has no 'source'"),
    'unknown store format': (_set('store_format', 'png'),
                             "store_format is 'png', not one of jpeg, raw"),
    'store format a number': (_set('store_format', 3),
                              'store_format is 3 (a number), not a string'),
    'unknown compression': (_set('compression', 'LZ4'),
                            "compression is 'LZ4', not null or one of GZIP"),
    'size a bool': (_set('splits', 'train', 'min_height', True),
                    'splits.train.min_height is true (a bool)'),
}


@pytest.fixture(scope='module')
def good_records(make_records):
  return make_records('good', num_train=4, num_val=2).records_dir


def _bad_copy(good_records, folder, case) -> str:
  """A records folder whose manifest.json has the case's mistake."""
  os.makedirs(folder)
  for name in os.listdir(good_records):
    with open(os.path.join(good_records, name), 'rb') as f:
      data = f.read()
    with open(os.path.join(folder, name), 'wb') as f:
      f.write(data)
  with open(records.manifest_path(folder)) as f:
    data = json.load(f)
  change, _ = BAD_SHAPES[case]
  data = change(data) or data  # in place, or a new value
  with open(records.manifest_path(folder), 'w') as f:
    json.dump(data, f)
  return folder


@pytest.mark.parametrize('case', sorted(BAD_SHAPES))
def test_wrong_shape_is_one_line_naming_the_file_and_field(
    good_records, tmp_path, case):
  folder = _bad_copy(good_records, str(tmp_path / 'bad'), case)
  _, message = BAD_SHAPES[case]
  for open_folder in (records.Manifest.read, verify.verify):
    with pytest.raises(cli.UserError) as error:
      open_folder(folder)
    text = str(error.value)
    assert text.startswith(records.manifest_path(folder) + ': '), text
    assert message in text and '\n' not in text, text
    assert 'make records' in text


def test_train_on_a_wrong_shape_is_a_user_error(good_records, tmp_path):
  for case in ('top-level list', 'split without shards',
               'count not an integer'):
    folder = _bad_copy(good_records, str(tmp_path / case.replace(' ', '_')),
                       case)
    config = train_config.build(records=folder, logdir=str(tmp_path / 'runs'),
                          model='small_cnn', image_size=(32, 32),
                          batch_size=2, epochs=1)
    with pytest.raises(cli.UserError, match=re.escape(BAD_SHAPES[case][1])):
      trainer.run(config)
  assert not os.path.exists(tmp_path / 'runs')  # nothing started


def test_verify_command_on_a_wrong_shape_exits_2_with_one_line(
    good_records, tmp_path, run_module):
  folder = _bad_copy(good_records, str(tmp_path / 'bad'),
                     'split without shards')
  result = run_module('tools.make_records', '--noprogress',
                      f'--verify={folder}')
  assert result.returncode == 2, result.stderr
  assert 'Traceback' not in result.stderr
  assert result.stderr.strip().splitlines()[-1] == (
      f'error: {records.manifest_path(folder)}: splits.train has no '
      "'shards'; convert the data again with `make records`")
