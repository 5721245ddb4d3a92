"""Tests of posternet/train/hardware.py: precision, XLA and strategy choices.

Pure functions of what was detected, tested with made-up hardware.
"""

import dataclasses

import pytest

from posternet import cli
from posternet.train import hardware
@pytest.mark.parametrize('gpus, flags, expected', [
    ([], {'avx2', 'fma'}, 'float32'),
    ([], {'avx512f', 'avx512_bf16'}, 'mixed_bfloat16'),
    ([], {'amx_bf16', 'amx_tile'}, 'mixed_bfloat16'),
    ([(7, 0)], set(), 'mixed_float16'),
    ([(8, 0)], {'amx_bf16'}, 'mixed_bfloat16'),
    ([(9, 0), (7, 5)], set(), 'mixed_float16'),  # the oldest GPU decides
    ([None], set(), 'mixed_float16'),
])
def test_auto_precision(gpus, flags, expected):
  policy, reason = hardware.choose_precision('auto', gpus, flags)
  assert policy == expected
  assert reason  # logged: the reason is part of the answer


@pytest.mark.parametrize('forced', ['float32', 'mixed_bfloat16'])
def test_precision_env_forces_auto_only(monkeypatch, forced):
  monkeypatch.setenv(hardware.PRECISION_ENV, forced)
  assert hardware.precision_here('auto') == (
      forced, f'set by {hardware.PRECISION_ENV}')
  assert hardware.precision_here('mixed_float16')[0] == 'mixed_float16'
  monkeypatch.setenv(hardware.PRECISION_ENV, 'bf16')
  with pytest.raises(cli.UserError, match='POSTERNET_PRECISION=bf16'):
    hardware.precision_here('auto')


def test_explicit_precision_wins():
  assert hardware.choose_precision('float32', [(9, 0)], set()) == (
      'float32', 'set by --precision')


def test_jit_and_strategy_choices():
  assert hardware.choose_jit_compile('auto', has_gpu=True)[0] is True
  assert hardware.choose_jit_compile('auto', has_gpu=False)[0] is False
  assert hardware.choose_jit_compile('true', has_gpu=False)[0] is True
  assert hardware.choose_resize_on('auto', has_gpu=True)[0] == 'device'
  assert hardware.choose_resize_on('auto', has_gpu=False)[0] == 'host'
  assert hardware.choose_resize_on('device', has_gpu=False) == (
      'device', 'set by --resize_on')
  assert hardware.choose_strategy('auto', 2)[0] == 'mirrored'
  assert hardware.choose_strategy('auto', 1)[0] == 'default'
  assert hardware.choose_strategy('mirrored', 0)[0] == 'mirrored'


def test_cpu_flags_read_from_cpuinfo(tmp_path):
  cpuinfo = tmp_path / 'cpuinfo'
  cpuinfo.write_text('processor\t: 0\nflags\t\t: fpu avx2 amx_bf16\n\n'
                     'processor\t: 1\nflags\t\t: fpu avx2 amx_bf16\n')
  assert hardware.cpu_flags(str(cpuinfo)) == {'fpu', 'avx2', 'amx_bf16'}
  assert hardware.cpu_flags(str(tmp_path / 'missing')) == set()


def test_resolve_makes_every_choice_with_its_reason(monkeypatch):
  monkeypatch.setenv(hardware.PRECISION_ENV, 'float32')
  choices = hardware.resolve('auto', 'false', 'default')
  assert (choices.precision, choices.jit_compile, choices.strategy) == (
      'float32', False, 'default')
  assert choices.num_gpus == len(hardware.gpu_compute_capabilities())
  for name in ('precision', 'jit_compile', 'strategy'):
    assert getattr(choices, f'{name}_reason')
  with pytest.raises(dataclasses.FrozenInstanceError):
    choices.precision = 'mixed_float16'  # resolved once, then only read
