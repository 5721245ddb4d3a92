"""Quiets TensorFlow's start-up output, which users read as errors.

Importing TensorFlow prints lines such as `oneDNN custom operations are on`,
`Could not find cuda drivers` and, at the first device query on a machine
without a GPU, `E… failed call to cuInit: … UNKNOWN ERROR (303)`. None of
them is the user's concern. The first ones are written by C++ before its
logging is configured, so TF_CPP_MIN_LOG_LEVEL does not reach them: they are
caught by pointing file descriptor 2 elsewhere while TensorFlow loads, and
replayed if the import fails. Later C++ messages obey TF_CPP_MIN_LOG_LEVEL;
TensorFlow's Python warnings (`Function serve contains input name(s)…`)
obey its logger's level.

POSTERNET_TF_LOGS=1 brings all of it back. Real failures still surface:
they arrive as Python exceptions, which posternet turns into messages.
"""

import contextlib
import logging
import os
import sys
import tempfile

from absl import logging as absl_logging

SHOW_TF_LOGS_ENV = 'POSTERNET_TF_LOGS'


def quiet_tensorflow_startup() -> None:
  """Imports TensorFlow quietly, unless the user asked for its logs."""
  if os.environ.get(SHOW_TF_LOGS_ENV, '') not in ('', '0'):
    return
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
  if 'tensorflow' not in sys.modules:
    with _stderr_held_back():
      import tensorflow  # pylint: disable=import-outside-toplevel,unused-import
  logging.getLogger('tensorflow').setLevel(logging.ERROR)
  # TensorFlow's Python code also logs INFO lines through absl, the logger
  # posternet's own progress lines use: keep ours, drop its.
  absl_logging.get_absl_handler().addFilter(_only_warnings_from_libraries)


def _only_warnings_from_libraries(record: logging.LogRecord) -> bool:
  """Passes every record but INFO (and below) from TensorFlow or Keras."""
  if record.levelno >= logging.WARNING:
    return True
  path = record.pathname.replace(os.sep, '/')
  return not any(f'/{package}/' in path for package in _CHATTY_PACKAGES)


_CHATTY_PACKAGES = ('tensorflow', 'keras', 'tf_keras')


@contextlib.contextmanager
def _stderr_held_back():
  """Sends file descriptor 2 to a temporary file; replays it on an error."""
  try:
    sys.stderr.flush()
    saved = os.dup(2)
  except (OSError, ValueError):  # no real stderr (embedded interpreters)
    yield
    return
  with tempfile.TemporaryFile() as held:
    os.dup2(held.fileno(), 2)
    try:
      yield
    except BaseException:
      os.dup2(saved, 2)
      held.seek(0)
      sys.stderr.write(held.read().decode(errors='replace'))
      raise
    finally:
      os.dup2(saved, 2)
      os.close(saved)
