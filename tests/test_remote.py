"""Remote records paths: gs:// is TensorFlow's own; s3/hdfs/http(s) name tensorflow-io.

No network: gs:// is checked as far as TensorFlow's registered filesystems
and the paths posternet builds; the other schemes must fail before any I/O
with a message that says what to install and its TensorFlow 2.17 limit.
"""

import pytest
import tensorflow as tf

from posternet import cli
from posternet.data import pipeline
from posternet.data import records
from posternet import remote
from posternet.train import trainer
from posternet.train import config as train_config
def test_scheme():
  assert remote.scheme('gs://bucket/records') == 'gs'
  assert remote.scheme('S3://Bucket/x') == 's3'
  assert remote.scheme('/data/records') is None
  assert remote.scheme('records') is None
  assert remote.scheme('C:\\records') is None


def test_gs_reaches_tensorflows_gcs_filesystem():
  assert 'gs' in tf.io.gfile.get_registered_schemes()
  remote.check_path('gs://bucket/records', '--records')  # no error
  remote.check_path('/local/records', '--records')


def test_shard_paths_under_gs_stay_urls(tiny_records):
  paths = tiny_records.at('gs://bucket/records').shard_paths('train')
  assert paths == ['gs://bucket/records/train-00000-of-00002.tfrecord',
                   'gs://bucket/records/train-00001-of-00002.tfrecord']
  assert records.manifest_path('gs://b/r') == 'gs://b/r/manifest.json'


@pytest.mark.parametrize('path', ['s3://bucket/records', 'hdfs://nn/records',
                                  'http://host/records',
                                  'https://host/records'])
def test_tensorflow_io_schemes_name_what_to_install(path):
  with pytest.raises(cli.UserError) as error:
    remote.check_path(path, '--records')
  message = str(error.value)
  assert path in message and 'tensorflow-io' in message
  assert "pip install 'posternet[io]'" in message and '2.17' in message
  assert '\n' not in message


def test_unknown_scheme_lists_the_known_ones():
  with pytest.raises(cli.UserError, match=r'ftp:// .*gs://'):
    remote.check_path('ftp://host/records', '--records')


def test_every_reader_and_the_trainer_check_the_scheme(tiny_records):
  with pytest.raises(cli.UserError, match='tensorflow-io'):
    records.Manifest.read('s3://bucket/records')
  with pytest.raises(cli.UserError, match='tensorflow-io'):
    pipeline.make_dataset(records.Manifest.read('hdfs://nn/records'),
                                'train', 4, (32, 32))
  local = tiny_records.records_dir
  with pytest.raises(cli.UserError, match='--logdir s3://b/runs'):
    trainer.run(train_config.build(records=local, logdir='s3://b/runs',
                           model='small_cnn', image_size=(32, 32)))


def test_converter_command_exits_2_with_the_message(tmp_path, run_module):
  result = run_module('tools.make_records', '--csv=s3://b/train.csv',
                      '--images=s3://b/Images', f'--out={tmp_path / "out"}')
  assert result.returncode == 2
  assert 'error: --csv s3://b/train.csv: s3:// needs tensorflow-io' in (
      result.stderr)
  assert 'Traceback' not in result.stderr
  assert not (tmp_path / 'out').exists()


def test_remote_run_folder_needs_a_local_export(tmp_path, tiny_records):
  local = tiny_records.records_dir
  with pytest.raises(cli.UserError, match='--export_dir=LOCAL_FOLDER'):
    train_config.check_config(train_config.build(records=local, logdir='gs://b/runs',
                                    model='small_cnn', image_size=(32, 32)))
  train_config.check_config(train_config.build(records=local, logdir='gs://b/runs',
                                  export_dir=str(tmp_path / 'export'),
                                  model='small_cnn', image_size=(32, 32)))
