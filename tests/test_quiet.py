"""Tests of posternet/quiet.py: TensorFlow's start-up output, off and on."""

import re

from posternet import quiet

# TensorFlow's C++ log lines: `I0000 00:00:1796.71 13052 port.cc:153] …`.
CPP_LOG_LINE = re.compile(r'^[IWEF]\d{4} .*\.cc:\d+\]')


def _predict_missing_model(run_module, **env):
  """stderr of a command that fails at once (after importing TensorFlow)."""
  result = run_module(
      'posternet.predict', '--model=/no/such/model', 'poster.jpg',
      env={quiet.SHOW_TF_LOGS_ENV: None, 'TF_CPP_MIN_LOG_LEVEL': None, **env})
  assert result.returncode == 2
  return result.stderr.splitlines()


def test_commands_print_only_their_own_lines(run_module):
  assert _predict_missing_model(run_module) == [
      'error: model folder /no/such/model does not exist; train one with '
      '`python -m posternet.train`']


def test_the_switch_brings_tensorflow_logs_back(run_module):
  lines = _predict_missing_model(run_module, **{quiet.SHOW_TF_LOGS_ENV: '1'})
  assert any(CPP_LOG_LINE.match(line) for line in lines), lines
  assert lines[-1].startswith('error: model folder /no/such/model')
