"""Tests of posternet/model/networks.py: architectures, dtypes, resize rule, weights.

--init_weights=imagenet is tested without the network: Keras' cache is a
temporary KERAS_HOME holding a random backbone's weights, and the offline
failure runs the real trainer with proxies on a closed loopback port.
"""

import os
import subprocess
import sys

import keras
from keras.src.applications import efficientnet_v2
import numpy as np
import pytest
import tensorflow as tf

import record_fixtures
from posternet import cli
from posternet import genres
from posternet.data import pipeline
from posternet.model import architectures
from posternet.model import keras_weights
from posternet.model import networks
from posternet.model import optim
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The tutorial's CNN, layer by layer after the input: (class, settings).
SEED_CNN_LAYERS = (
    [('Rescaling', {})]
    + [item for filters in (16, 32, 64, 64) for item in (
        ('Conv2D', {'filters': filters, 'kernel_size': (5, 5),
                    'activation': 'relu', 'padding': 'valid'}),
        ('MaxPooling2D', {'pool_size': (2, 2)}),
        ('Dropout', {'rate': 0.25}))]
    + [('Flatten', {}),
       ('Dense', {'units': 128, 'activation': 'relu'}),
       ('Dropout', {'rate': 0.5}),
       ('Dense', {'units': 64, 'activation': 'relu'}),
       ('Dropout', {'rate': 0.5}),
       ('Dense', {'units': 25, 'activation': 'sigmoid'})])


def inputs_of(posters):
  """The model's inputs for a batch of posters at its size (whole boxes)."""
  return pipeline.model_inputs({pipeline.IMAGE: tf.constant(posters)})


@pytest.fixture
def policy():
  """Sets a global dtype policy for one test and restores the old one."""
  previous = keras.mixed_precision.global_policy()
  yield keras.mixed_precision.set_global_policy
  keras.mixed_precision.set_global_policy(previous)


def test_seed_cnn_is_the_tutorials_model_at_400():
  model = networks.build_model('seed_cnn', (400, 400))
  assert model.count_params() == 3_790_457
  image = model.input[pipeline.IMAGE]
  assert image.dtype == 'uint8' and tuple(image.shape) == (None, None, None, 3)
  assert networks.input_size(model) == '400x400'
  assert tuple(model.output.shape) == (None, genres.NUM_GENRES)
  # After the InputLayers and the input stage (no weights).
  assert [type(l).__name__ for l in model.layers[:4]] == [
      'InputLayer', 'InputLayer', 'InputLayer', 'PosterInput']
  assert not model.get_layer('input_stage').weights
  layers = model.layers[4:]
  assert [type(l).__name__ for l in layers] == [n for n, _ in SEED_CNN_LAYERS]
  for layer, (_, settings) in zip(layers, SEED_CNN_LAYERS):
    config = layer.get_config()
    for key, value in settings.items():
      assert config[key] == value, (layer.name, key)
  assert layers[0].get_config()['scale'] == pytest.approx(1 / 255)


def test_output_is_float32_under_mixed_bfloat16(policy):
  policy('mixed_bfloat16')
  model = networks.build_model('seed_cnn', (80, 80))
  convs = [l for l in model.layers if isinstance(l, keras.layers.Conv2D)]
  assert all(l.compute_dtype == 'bfloat16' for l in convs)
  assert model.get_layer('genres').compute_dtype == 'float32'
  posters = np.random.RandomState(0).randint(0, 256, (2, 80, 80, 3), np.uint8)
  probabilities = model(inputs_of(posters), training=False)
  assert probabilities.dtype == 'float32'
  assert np.all((probabilities.numpy() > 0) & (probabilities.numpy() < 1))


def test_resizing_only_when_model_size_differs():
  same = networks.build_model('small_cnn', (48, 48))
  assert not [l for l in same.layers if isinstance(l, keras.layers.Resizing)]
  resized = networks.build_model('seed_cnn', (32, 32), model_size=(80, 80))
  resize = resized.get_layer('resize')
  assert (resize.height, resize.width) == (80, 80)
  assert networks.input_size(resized) == '32x32'

  # Rescaling runs before it: the resize sees [0, 1] floats, not uint8.
  names = [l.name for l in resized.layers]
  assert names.index('rescale') < names.index('resize')


def test_rescaling_maps_uint8_to_unit_range():
  model = networks.build_model('small_cnn', (16, 16))
  rescaled = keras.Model(model.input, model.get_layer('rescale').output)
  posters = np.full((1, 16, 16, 3), 255, np.uint8)
  posters[0, 0, 0] = 0
  out = rescaled(inputs_of(posters)).numpy()
  assert out.dtype == np.float32
  assert out.max() == pytest.approx(1.0) and out.min() == 0.0


def test_efficientnet_does_not_rescale_twice():
  model = networks.build_model('efficientnetv2b0', (64, 64))
  backbone = next(l for l in model.layers if isinstance(l, keras.Model))
  inner = [l for l in backbone.layers
           if isinstance(l, (keras.layers.Rescaling, keras.layers.Normalization))]
  assert not inner  # include_preprocessing=False
  normalize = model.get_layer('imagenet_normalize')
  assert np.allclose(np.ravel(normalize.mean), architectures.IMAGENET_MEAN)
  posters = np.zeros((2, 64, 64, 3), np.uint8)
  assert model(inputs_of(posters)).shape == (2, genres.NUM_GENRES)


def test_too_small_input_is_a_user_error():
  # 4 blocks of valid 5x5 conv + 2x2 pool leave nothing of 64 px.
  with pytest.raises(cli.UserError, match='at least 76x76.*not 64x64'):
    networks.build_model('seed_cnn', (64, 64))
  assert networks.check_input('seed_cnn', (32, 32), (76, 76)) == (76, 76)


def test_unknown_model_is_a_user_error():
  with pytest.raises(cli.UserError, match="unknown model 'resnet'"):
    networks.build_model('resnet', (64, 64))


def test_init_weights_round_trip(tmp_path):
  path = str(tmp_path / 'start.weights.h5')
  trained = networks.build_model('seed_cnn', (80, 80))
  trained.save_weights(path)
  loaded = networks.build_model('seed_cnn', (80, 80), init_weights=path)
  fresh = networks.build_model('seed_cnn', (80, 80))
  for want, got in zip(trained.get_weights(), loaded.get_weights()):
    np.testing.assert_array_equal(got, want)
  assert not np.allclose(trained.get_weights()[0], fresh.get_weights()[0])


def test_init_weights_of_other_shapes_is_a_user_error(tmp_path):
  path = str(tmp_path / 'at80.weights.h5')
  networks.build_model('seed_cnn', (80, 80)).save_weights(path)
  # At 96 px the Flatten gives 256 features instead of 64.
  with pytest.raises(cli.UserError,
                     match=r'does not fit seed_cnn.*\(256, 128\) here, '
                     r'\(64, 128\) in the file'):
    networks.build_model('seed_cnn', (96, 96), init_weights=path)


def test_missing_init_weights_is_a_user_error(tmp_path):
  with pytest.raises(cli.UserError, match='does not exist.*never downloaded'):
    networks.build_model('seed_cnn', (80, 80),
                       init_weights=str(tmp_path / 'none.weights.h5'))
  odd = tmp_path / 'weights.bin'
  odd.write_bytes(b'x')
  with pytest.raises(cli.UserError, match='expected a .keras or .weights.h5'):
    networks.build_model('seed_cnn', (80, 80), init_weights=str(odd))


def test_compiled_model_is_compiled_as_the_trainer_trains(policy):
  policy('mixed_bfloat16')  # compiled under the policy it was built with
  model = networks.compiled_model('small_cnn', (24, 24), jit_compile=False,
                                  steps_per_execution=4)
  # The default recipe's: the tutorial's Adam at 1e-3.
  assert isinstance(model.optimizer, keras.optimizers.Adam)
  assert float(model.optimizer.learning_rate) == pytest.approx(
      optim.Recipe().learning_rate)
  assert isinstance(model.loss, keras.losses.BinaryCrossentropy)
  assert model.jit_compile is False
  assert model.steps_per_execution == 4
  assert model.layers[-1].dtype_policy.name == 'float32'
  posters = np.zeros((8, 24, 24, 3), np.uint8)
  results = model.evaluate(inputs_of(posters), np.zeros((8, genres.NUM_GENRES)),
                           verbose=0, return_dict=True)
  # No Keras metrics: validation is scored by val_scores (posternet.metrics).
  assert set(results) == {'loss'}


# --init_weights=imagenet.


def test_imagenet_file_is_keras_own():
  weights = networks.MODELS['efficientnetv2b0'].imagenet
  file_name = 'efficientnetv2-b0_notop.h5'
  assert weights == keras_weights.KerasWeights(
      file_name, efficientnet_v2.BASE_WEIGHTS_PATH + file_name,
      efficientnet_v2.WEIGHTS_HASHES['b0'][1])


def _fake_keras_cache(home) -> keras.Model:
  """A random EfficientNetV2-B0 backbone saved as Keras' cached notop file."""
  keras.utils.set_random_seed(3)
  backbone = keras.applications.EfficientNetV2B0(
      include_top=False, weights=None, input_shape=(64, 64, 3),
      pooling='avg', include_preprocessing=False)
  os.makedirs(home / 'models')
  backbone.save(str(home / 'models' / 'efficientnetv2-b0_notop.h5'))
  return backbone


def test_imagenet_weights_come_from_keras_cache(tmp_path, monkeypatch):
  saved = _fake_keras_cache(tmp_path)
  monkeypatch.setenv('KERAS_HOME', str(tmp_path))

  def no_network(*args, **kwargs):
    raise AssertionError('the cached file must be used, not downloaded')

  monkeypatch.setattr(keras.utils, 'get_file', no_network)
  assert networks.imagenet_weights('efficientnetv2b0') == str(
      tmp_path / 'models' / 'efficientnetv2-b0_notop.h5')
  model = networks.build_model('efficientnetv2b0', (64, 64),
                             init_weights='imagenet')
  backbone = next(l for l in model.layers if isinstance(l, keras.Model))
  assert len(backbone.weights) == len(saved.weights)
  for want, got in zip(saved.weights, backbone.weights):
    np.testing.assert_array_equal(got.numpy(), want.numpy())


def test_a_damaged_cached_file_is_a_user_error(tmp_path, monkeypatch):
  (tmp_path / 'models').mkdir()
  cached = tmp_path / 'models' / 'efficientnetv2-b0_notop.h5'
  cached.write_bytes(b'\x89HDF\r\n\x1a\n' + b'\0' * 100)  # cut short
  monkeypatch.setenv('KERAS_HOME', str(tmp_path))
  with pytest.raises(cli.UserError, match=(
      rf'^--init_weights {cached} does not fit the backbone: .*; delete it '
      r"\(Keras' cache\) to download it again$")):
    networks.build_model('efficientnetv2b0', (64, 64), init_weights='imagenet')


def test_imagenet_for_a_model_without_it_is_a_user_error():
  with pytest.raises(cli.UserError, match=r'^--init_weights=imagenet: '
                     r'seed_cnn has no ImageNet weights \(only '
                     r'efficientnetv2b0 has\)'):
    networks.build_model('seed_cnn', (80, 80), init_weights='imagenet')


def test_imagenet_offline_is_one_line_and_downloads_nothing(tmp_path):
  records_dir = str(tmp_path / 'records')
  record_fixtures.write_records(records_dir, num_train=8, num_val=4,
                                image_hw=(64, 64), num_shards=1)
  home = tmp_path / 'keras_home'
  home.mkdir()
  env = {key: value for key, value in os.environ.items()
         if key.lower() not in ('http_proxy', 'https_proxy', 'no_proxy',
                                'all_proxy')}
  # Port 9 on loopback is closed: the download is refused at once, and no
  # request leaves the machine.
  env.update(KERAS_HOME=str(home), HTTPS_PROXY='http://127.0.0.1:9',
             HTTP_PROXY='http://127.0.0.1:9', PYTHONPATH=REPO,
             TF_CPP_MIN_LOG_LEVEL='3')
  run = subprocess.run(
      [sys.executable, '-m', 'posternet.train', f'--records={records_dir}',
       f'--logdir={tmp_path / "runs"}', '--model=efficientnetv2b0',
       '--image_size=64', '--batch_size=4', '--epochs=1',
       '--init_weights=imagenet'],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert run.returncode == cli.EXIT_USER_ERROR, run.stderr
  assert 'Traceback' not in run.stderr
  errors = [l for l in run.stderr.splitlines() if l.startswith('error:')]
  assert errors == [run.stderr.strip().splitlines()[-1]]
  assert errors[0].startswith(
      'error: cannot download efficientnetv2-b0_notop.h5 (ImageNet weights '
      'for efficientnetv2b0) from https://storage.googleapis.com/')
  assert errors[0].endswith(
      '; download it where you have internet and pass '
      '--init_weights=/path/to/efficientnetv2-b0_notop.h5')
  assert not os.listdir(home / 'models')
