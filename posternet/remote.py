"""Remote paths: which URL schemes TensorFlow can read here, and what to do if not.

Records, run folders and the converter's output go through tf.io.gfile, so any
filesystem TensorFlow has registered works: local paths and `gs://` are built
into TensorFlow. `s3://`, `hdfs://` and `http(s)://` come from tensorflow-io,
whose last release (0.37.1) loads only with TensorFlow 2.17 (BUILD_NOTES.md):
without it TensorFlow fails deep inside with "File system scheme 's3' not
implemented". check_path says instead what to install, before any work starts.
"""

import re
from typing import Optional

import tensorflow as tf

from posternet import cli

# Schemes tensorflow-io registers once imported (with the TF it was built for).
TFIO_SCHEMES = ('s3', 'hdfs', 'viewfs', 'har', 'http', 'https', 'az')

TFIO_HINT = ("pip install 'posternet[io]' installs tensorflow-io 0.37.1, "
             "which loads only with TensorFlow 2.17 (posternet pins 2.21), so "
             "use it in an environment built on TensorFlow 2.17; or copy the "
             "files to a local folder or gs://")

_SCHEME = re.compile(r'^([a-zA-Z][a-zA-Z0-9+.-]*)://')


def scheme(path: str) -> Optional[str]:
  """The URL scheme of a path ('gs' for gs://b/x), or None for a local path."""
  match = _SCHEME.match(str(path))
  return match.group(1).lower() if match else None


def registered_schemes() -> set:
  """The schemes tf.io.gfile can open in this process ('' and 'file': local)."""
  return set(tf.io.gfile.get_registered_schemes())


def check_path(path: str, what: str = 'path') -> None:
  """Raises a one-line UserError when TensorFlow cannot open path's scheme.

  Args:
    path: a local path or a URL such as gs://bucket/records.
    what: what the path is, for the message (e.g. '--records').

  Raises:
    cli.UserError: the scheme is not registered; for tensorflow-io's schemes
      the message says what to install and its TensorFlow 2.17 constraint.
  """
  name = scheme(path)
  if name is None or name in registered_schemes():
    return
  if name in TFIO_SCHEMES:
    problem = _load_tensorflow_io()
    if name in registered_schemes():
      return
    raise cli.UserError(
        f'{what} {path}: {name}:// needs tensorflow-io ({problem}): '
        f'{TFIO_HINT}')
  known = sorted(s for s in registered_schemes() if s not in ('', 'file'))
  raise cli.UserError(
      f'{what} {path}: TensorFlow cannot open {name}:// paths; use a local '
      f'path or one of {", ".join(s + "://" for s in known)}')


def _load_tensorflow_io() -> str:
  """Imports tensorflow-io where installed (it registers its schemes).

  Returns:
    Why the scheme is still missing, for the message: not installed, or the
    import's own error (e.g. its libraries built for another TensorFlow).
  """
  try:
    import tensorflow_io  # pylint: disable=g-import-not-at-top,unused-import
  except ImportError as e:
    if getattr(e, 'name', None) == 'tensorflow_io':
      return 'not installed'
    return f'installed but does not load: {str(e).splitlines()[0]}'
  except Exception as e:  # pylint: disable=broad-except
    return f'installed but does not load: {str(e).splitlines()[0]}'
  return 'loaded, but it did not register this scheme'
