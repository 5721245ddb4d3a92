"""Files written whole or not at all: under a temporary name, then renamed.

A run killed mid-write leaves at most `<name>.tmp` beside the file, never a
torn file under the final name. The temporary name is fixed, so the next run
that writes the same file overwrites it, and cleanup code knows a leftover
by its final_name. Everything goes through tf.io.gfile, so gs:// (and any
scheme TensorFlow has registered) works as local paths do.
"""

import contextlib
import re
from typing import Iterator, Union

import tensorflow as tf

TEMPORARY_SUFFIX = '.tmp'

# A leftover temporary file: this module's, or an older release's
# `<name>.tmp-<pid>`.
_TEMPORARY = re.compile(r'\.tmp(-\d+)?$')


def temporary_name(path: str) -> str:
  """Where `path` is written before it is renamed into place."""
  return path + TEMPORARY_SUFFIX


def final_name(name: str) -> str:
  """The name a temporary file was to get; any other name as it is."""
  return _TEMPORARY.sub('', name)


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
  """Yields the temporary name to write; renames it to `path` at the end.

  For writers that need a path (a TFRecordWriter). When the block raises,
  nothing is renamed and the error goes on.
  """
  temporary = temporary_name(path)
  yield temporary
  tf.io.gfile.rename(temporary, path, overwrite=True)


def write_atomically(path: str, data: Union[str, bytes]) -> None:
  """Writes text (UTF-8) or bytes to path: all of it, or nothing new there.

  Raises:
    tf.errors.OpError: the folder is missing or not writable.
  """
  with atomic_path(path) as temporary:
    with tf.io.gfile.GFile(temporary,
                           'wb' if isinstance(data, bytes) else 'w') as f:
      f.write(data)
