"""Tests of posternet/quiet.py: TensorFlow's start-up output, off and on."""

import os
import re
import subprocess
import sys

from posternet import quiet

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# TensorFlow's C++ log lines: `I0000 00:00:1796.71 13052 port.cc:153] …`.
CPP_LOG_LINE = re.compile(r'^[IWEF]\d{4} .*\.cc:\d+\]')


def _predict_missing_model(**env):
  """stderr of a command that fails at once (after importing TensorFlow)."""
  environment = {k: v for k, v in os.environ.items()
                 if k not in (quiet.SHOW_TF_LOGS_ENV, 'TF_CPP_MIN_LOG_LEVEL')}
  result = subprocess.run(
      [sys.executable, '-m', 'posternet.predict', '--model=/no/such/model',
       'poster.jpg'], cwd=REPO, env={**environment, **env},
      capture_output=True, text=True, timeout=120, check=False)
  assert result.returncode == 2
  return result.stderr.splitlines()


def test_commands_print_only_their_own_lines():
  assert _predict_missing_model() == [
      'error: model folder /no/such/model does not exist; train one with '
      '`python -m posternet.train`']


def test_the_switch_brings_tensorflow_logs_back():
  lines = _predict_missing_model(**{quiet.SHOW_TF_LOGS_ENV: '1'})
  assert any(CPP_LOG_LINE.match(line) for line in lines), lines
  assert lines[-1].startswith('error: model folder /no/such/model')
